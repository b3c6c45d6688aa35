//! Authentication and ACLs against real clusters (issue 10): credentials
//! checked when a session opens (`--users`, `--require-auth`) and never
//! logged; every permission × every scheme allowed and denied (the super
//! user passing all), still so after a leader change; malformed ACLs and
//! ACL versions; and the CLI's `--user`, `getacl`, `setacl`, `create --acl`,
//! `whoami` and `addauth`.

use std::time::{Duration, Instant};

use base64::Engine;
use ensemble_client::acl::{ADMIN, ALL, CREATE, DELETE, READ, WRITE};
use ensemble_client::{
    Acl, Client, CreateMode, Error, ErrorCode, Identity, Options, SessionState, StateEvent,
};
use ensemble_proto::acl::{perm_name, perms_to_string};
use ensemble_tests::{poll_until, run_cli, run_cli_env, write_users_file, Cluster, ClusterOptions};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

// Distinctive, so the log check can not pass by accident.
const ALICE_PW: &str = "alice-Secret-7f3c9d";
const BOB_PW: &str = "bob-Secret-2a61e0";
const ROOT_PW: &str = "root-Secret-c4d8b5";
const WRONG_PW: &str = "wrong-Secret-51be77";

/// A users file (alice, bob, root) in its own temp dir, and the flags that
/// make root the super user; `more` flags are added.
fn auth_options(more: &[&str]) -> (tempfile::TempDir, ClusterOptions) {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(
        dir.path(),
        &[("alice", ALICE_PW), ("bob", BOB_PW), ("root", ROOT_PW)],
    );
    // Members of these clusters speak with a peer secret, as
    // --require-auth asks of a member without TLS.
    let secret = dir.path().join("peer-secret");
    std::fs::write(&secret, "auth-test-peer-secret-0123456789abcdef\n").unwrap();
    let mut extra_args = vec![
        "--users".to_string(),
        users.display().to_string(),
        "--super-user".to_string(),
        "root".to_string(),
        "--peer-secret-file".to_string(),
        secret.display().to_string(),
    ];
    extra_args.extend(more.iter().map(|s| s.to_string()));
    let options = ClusterOptions {
        extra_args,
        ..ClusterOptions::default()
    };
    (dir, options)
}

fn user_options(user: Option<(&str, &str)>) -> Options {
    match user {
        Some((name, password)) => Options::default().with_user(name, password),
        None => Options::default(),
    }
}

async fn try_connect(endpoints: &[String], user: Option<(&str, &str)>) -> Result<Client, Error> {
    Client::connect(endpoints, user_options(user)).await
}

async fn connect(endpoints: &[String], user: Option<(&str, &str)>) -> Client {
    try_connect(endpoints, user)
        .await
        .unwrap_or_else(|e| panic!("connect as {:?}: {e}", user.map(|u| u.0)))
}

fn identity(scheme: &str, id: &str) -> Identity {
    Identity {
        scheme: scheme.into(),
        id: id.into(),
    }
}

/// base64(sha1("user:password")): ZooKeeper's digest id hash.
fn zk_digest(user: &str, password: &str) -> String {
    let hash = Sha1::digest(format!("{user}:{password}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// Runs the CLI off the async workers.
async fn cli(args: Vec<String>, env: Vec<(String, String)>, stdin: String) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli_env(&args, &env, &stdin)
    })
    .await
    .unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn env_password(password: &str) -> Vec<(String, String)> {
    vec![("ENSEMBLE_PASSWORD".to_string(), password.to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_when_a_session_opens_and_never_logged() {
    let (_users, mut options) = auth_options(&["--require-auth"]);
    // Debug logging: even then no password may reach a log.
    options.env = vec![("RUST_LOG".into(), "debug".into())];
    let cluster = Cluster::start(options).await;
    let eps = cluster.endpoints();
    let default_connect_timeout = Options::default().connect_timeout;
    assert!(default_connect_timeout >= Duration::from_secs(15));

    // A wrong password: refused at once (no retry until the connect
    // timeout), and the listener sees AUTH_FAILED.
    let (tx, mut events) = mpsc::unbounded_channel();
    let started = Instant::now();
    let e = Client::connect(
        &eps,
        Options {
            listener: Some(tx),
            ..Options::default().with_user("alice", WRONG_PW)
        },
    )
    .await
    .map(drop)
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), ErrorCode::AuthFailed, "{e}");
    assert!(e.to_string().starts_with("AUTH_FAILED"), "{e}");
    assert!(
        took < Duration::from_secs(5),
        "AUTH_FAILED took {took:?} (connect timeout {default_connect_timeout:?}): retried?"
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert!(
        seen.contains(&StateEvent::State(SessionState::AuthFailed)),
        "the listener saw {seen:?}"
    );
    assert!(
        !seen.contains(&StateEvent::State(SessionState::Connected)),
        "the listener saw {seen:?}"
    );

    // An unknown user, and (with --require-auth) no credentials at all.
    for user in [Some(("mallory", ALICE_PW)), None] {
        let started = Instant::now();
        let e = try_connect(&eps, user).await.map(drop).unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthFailed, "{user:?}: {e}");
        assert!(started.elapsed() < Duration::from_secs(5), "{user:?}: retried?");
    }

    // The right password: connected as alice (and the address the node sees).
    let alice = connect(&eps, Some(("alice", ALICE_PW))).await;
    assert_eq!(alice.state(), SessionState::Connected);
    let me = alice.who_am_i().await.unwrap();
    assert!(me.contains(&identity("digest", "alice")), "{me:?}");
    assert!(me.contains(&identity("ip", "127.0.0.1")), "{me:?}");
    assert!(!me.iter().any(|i| i.scheme == "super"), "{me:?}");
    alice
        .create("/alice-was-here", vec![], CreateMode::Persistent)
        .await
        .unwrap();

    // The super user says so.
    let root = connect(&eps, Some(("root", ROOT_PW))).await;
    let me = root.who_am_i().await.unwrap();
    assert!(me.contains(&identity("digest", "root")), "{me:?}");
    assert!(me.contains(&identity("super", "root")), "{me:?}");

    // addauth: a wrong password fails that call only; a right one adds bob.
    let e = alice
        .add_auth("digest", format!("bob:{WRONG_PW}").as_bytes())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::AuthFailed, "{e}");
    assert_eq!(alice.state(), SessionState::Connected);
    let me = alice.who_am_i().await.unwrap();
    assert!(!me.contains(&identity("digest", "bob")), "{me:?}");
    alice
        .add_auth("digest", format!("bob:{BOB_PW}").as_bytes())
        .await
        .unwrap();
    let me = alice.who_am_i().await.unwrap();
    assert!(me.contains(&identity("digest", "alice")), "{me:?}");
    assert!(me.contains(&identity("digest", "bob")), "{me:?}");
    alice.get("/alice-was-here").await.unwrap();

    // The CLI: wrong password, right password, none, no terminal to ask on.
    let joined = eps.join(",");
    let args = |rest: &[&str]| {
        let mut v = strings(&["--endpoints", &joined]);
        v.extend(strings(rest));
        v
    };
    let (code, _, err) = cli(
        args(&["--user", "alice", "get", "/"]),
        env_password(WRONG_PW),
        String::new(),
    )
    .await;
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("AUTH_FAILED"), "{err}");
    let (code, out, err) = cli(
        args(&["--user", "alice", "get", "/alice-was-here"]),
        env_password(ALICE_PW),
        String::new(),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "\n"), "stderr: {err}");
    let (code, out, err) = cli(
        args(&["whoami"]),
        vec![
            ("ENSEMBLE_USER".into(), "alice".into()),
            ("ENSEMBLE_PASSWORD".into(), ALICE_PW.into()),
        ],
        String::new(),
    )
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.lines().any(|l| l == "digest:alice"), "{out}");
    let (code, _, err) = cli(args(&["get", "/"]), vec![], String::new()).await;
    assert_eq!(code, 1, "anonymous under --require-auth: {err}");
    assert!(err.contains("AUTH_FAILED"), "{err}");
    let (code, _, err) = cli(
        args(&["--user", "alice", "get", "/"]),
        vec![],
        format!("{ALICE_PW}\n"),
    )
    .await;
    assert_eq!(code, 1, "no ENSEMBLE_PASSWORD and no terminal: {err}");
    assert!(err.contains("ENSEMBLE_PASSWORD"), "{err}");

    // No password, right or wrong, in any node's log.
    for id in 1..=3 {
        let log = cluster.log(id);
        assert!(log.contains("DEBUG"), "node {id} logs at debug level");
        for secret in [ALICE_PW, BOB_PW, ROOT_PW, WRONG_PW] {
            assert!(
                !log.contains(secret),
                "node {id}'s log holds a password ({secret})"
            );
        }
    }
    alice.close().await.unwrap();
    root.close().await.unwrap();
}

/// Who attempts an operation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    Alice,
    Bob,
}

struct Clients {
    anonymous: Client,
    alice: Client,
    bob: Client,
    root: Client,
}

impl Clients {
    async fn connect(endpoints: &[String]) -> Clients {
        Clients {
            anonymous: connect(endpoints, None).await,
            alice: connect(endpoints, Some(("alice", ALICE_PW))).await,
            bob: connect(endpoints, Some(("bob", BOB_PW))).await,
            root: connect(endpoints, Some(("root", ROOT_PW))).await,
        }
    }

    fn get(&self, who: Who) -> &Client {
        match who {
            Who::Anonymous => &self.anonymous,
            Who::Alice => &self.alice,
            Who::Bob => &self.bob,
        }
    }

    async fn close(self) {
        for c in [self.anonymous, self.alice, self.bob, self.root] {
            let _ = c.close().await;
        }
    }
}

/// One znode of the matrix: its ACL grants `perms` through one scheme;
/// `who` is allowed `perm` on it or not.
#[derive(Clone)]
struct Check {
    path: String,
    perm: u32,
    who: Who,
    allowed: bool,
}

/// Everything a denied attempt must leave as it was.
async fn state_of(root: &Client, path: &str) -> (Vec<u8>, i32, i32, i32, Vec<String>, Vec<Acl>) {
    let (data, stat) = root.get(path).await.unwrap();
    let mut children = root.children(path).await.unwrap().0;
    children.sort();
    let (acl, _) = root.get_acl(path).await.unwrap();
    (data, stat.version, stat.aversion, stat.cversion, children, acl)
}

/// Puts back the child a DELETE check deletes, as the super user.
async fn put_back_victim(root: &Client, path: &str) -> Result<(), Error> {
    match root
        .create(&format!("{path}/victim"), vec![], CreateMode::Persistent)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == ErrorCode::NodeExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Tries `perm` on `path` as `client`: READ gets it, WRITE sets it, CREATE
/// creates a child, DELETE deletes its child `victim` (which the super user
/// puts back first), ADMIN sets its ACL to what it is. A CONNECTION_LOSS
/// (around the leader change) is retried.
async fn attempt(client: &Client, root: &Client, perm: u32, path: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = async {
            match perm {
                READ => client.get(path).await.map(drop),
                WRITE => client.set(path, b"written".to_vec(), -1).await.map(drop),
                CREATE => client
                    .create(&format!("{path}/c-"), vec![], CreateMode::PersistentSequential)
                    .await
                    .map(drop),
                DELETE => {
                    put_back_victim(root, path).await?;
                    client.delete(&format!("{path}/victim"), -1).await
                }
                ADMIN => {
                    let (acl, _) = root.get_acl(path).await?;
                    client.set_acl(path, &acl, -1).await.map(drop)
                }
                _ => unreachable!("one permission"),
            }
        }
        .await;
        match result {
            Err(e) if e.code() == ErrorCode::ConnectionLoss && Instant::now() < deadline => continue,
            other => return other,
        }
    }
}

/// Runs every check: the allowed succeed, the denied fail with NO_AUTH
/// naming the path and the permission and change nothing; the super user
/// passes every one.
async fn run_matrix(clients: &Clients, checks: &[Check], phase: &str) {
    let root = &clients.root;
    for c in checks {
        let client = clients.get(c.who);
        let what = format!("{phase}: {:?} {} on {}", c.who, perm_name(c.perm), c.path);
        if c.allowed {
            attempt(client, root, c.perm, &c.path)
                .await
                .unwrap_or_else(|e| panic!("{what}: allowed, but {e}"));
        } else {
            if c.perm == DELETE {
                put_back_victim(root, &c.path).await.unwrap();
            }
            let before = state_of(root, &c.path).await;
            let e = attempt(client, root, c.perm, &c.path)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what}: denied, but it succeeded"));
            assert_eq!(e.code(), ErrorCode::NoAuth, "{what}: {e}");
            let message = e.to_string();
            assert!(message.starts_with("NO_AUTH"), "{what}: {message}");
            assert!(
                message.contains(&c.path),
                "{what}: the message names the path: {message}"
            );
            assert!(
                message.contains(perm_name(c.perm)),
                "{what}: the message names the permission: {message}"
            );
            assert_eq!(
                state_of(root, &c.path).await,
                before,
                "{what}: a denied attempt changed the znode"
            );
        }
        attempt(root, root, c.perm, &c.path)
            .await
            .unwrap_or_else(|e| panic!("{phase}: the super user {} on {}: {e}", perm_name(c.perm), c.path));
    }
}

/// One scheme of the matrix: its name, the granting `scheme:id`, who it
/// grants, and the `scheme:id`s that do not match, each with who is then
/// denied.
type SchemeCase = (&'static str, String, Who, Vec<(String, Who)>);

/// Creates the matrix's znodes under `/m` (as alice, so `auth` means her)
/// and lists its checks.
async fn build_matrix(alice: &Client) -> Vec<Check> {
    let hash = zk_digest("alice", ALICE_PW);
    let wrong_hash = zk_digest("alice", WRONG_PW);
    let schemes: Vec<SchemeCase> = vec![
        ("world", "world:anyone".into(), Who::Anonymous, vec![]),
        (
            "auth",
            "auth:".into(),
            Who::Alice,
            vec![("auth:".into(), Who::Anonymous), ("auth:".into(), Who::Bob)],
        ),
        (
            "digest",
            "digest:alice".into(),
            Who::Alice,
            vec![
                ("digest:alice".into(), Who::Anonymous),
                ("digest:alice".into(), Who::Bob),
            ],
        ),
        (
            "zkdigest",
            format!("digest:alice:{hash}"),
            Who::Alice,
            vec![
                (format!("digest:alice:{hash}"), Who::Anonymous),
                (format!("digest:alice:{hash}"), Who::Bob),
                (format!("digest:alice:{wrong_hash}"), Who::Alice),
            ],
        ),
        (
            "ip",
            "ip:127.0.0.1".into(),
            Who::Anonymous,
            vec![("ip:10.0.0.1".into(), Who::Anonymous)],
        ),
        (
            "cidr",
            "ip:127.0.0.0/8".into(),
            Who::Anonymous,
            vec![("ip:10.0.0.0/8".into(), Who::Anonymous)],
        ),
    ];
    alice.create("/m", vec![], CreateMode::Persistent).await.unwrap();
    let mut checks = Vec::new();
    for (name, grant, allowed, others) in &schemes {
        for perm in [READ, WRITE, CREATE, DELETE, ADMIN] {
            let p = perm_name(perm).to_lowercase();
            // (path, scheme:id, perms, who, allowed)
            let mut nodes = vec![
                (format!("/m/{name}-{p}"), grant.clone(), perm, *allowed, true),
                (
                    format!("/m/{name}-{p}-allbut"),
                    grant.clone(),
                    ALL & !perm,
                    *allowed,
                    false,
                ),
            ];
            for (i, (id, who)) in others.iter().enumerate() {
                nodes.push((format!("/m/{name}-{p}-other{i}"), id.clone(), perm, *who, false));
            }
            for (path, id, perms, who, ok) in nodes {
                let acl: Acl = format!("{id}:{}", perms_to_string(perms)).parse().unwrap();
                alice
                    .create_with_acl(&path, b"initial".to_vec(), CreateMode::Persistent, &[acl])
                    .await
                    .unwrap_or_else(|e| panic!("create {path} with {id}: {e}"));
                checks.push(Check {
                    path,
                    perm,
                    who,
                    allowed: ok,
                });
            }
        }
    }
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_permission_of_every_scheme_is_enforced_before_and_after_a_leader_change() {
    let (_users, options) = auth_options(&[]);
    let mut cluster = Cluster::start(options).await;
    let eps = cluster.endpoints();
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let clients = Clients::connect(&eps).await;
    let checks = build_matrix(&clients.alice).await;
    assert!(checks.len() > 60, "{} checks", checks.len());
    run_matrix(&clients, &checks, "before").await;

    // An alice session on the leader: killing it moves the session, which
    // must stay alice.
    let leader_ep = cluster.endpoint(leader);
    let mut moving = None;
    for _ in 0..40 {
        let c = connect(&eps, Some(("alice", ALICE_PW))).await;
        if c.current_endpoint() == leader_ep {
            moving = Some(c);
            break;
        }
        c.close().await.unwrap();
    }
    let moving = moving.expect("an alice session on the leader within 40 tries");
    let session = moving.session_id();
    // Every node has applied the matrix before the leader goes.
    let stat = clients.root.set("/m", b"done".to_vec(), -1).await.unwrap();
    cluster
        .wait_applied_everywhere(stat.mzxid, Duration::from_secs(10))
        .await;

    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader);
    poll_until(Duration::from_secs(20), "the moved session answers", || async {
        moving.state() == SessionState::Connected && moving.who_am_i().await.is_ok()
    })
    .await;
    assert_eq!(moving.session_id(), session);
    assert_ne!(moving.current_endpoint(), leader_ep);
    let me = moving.who_am_i().await.unwrap();
    assert!(
        me.contains(&identity("digest", "alice")),
        "the moved session: {me:?}"
    );

    // Fresh sessions on the survivors, and the moved one as alice.
    let survivors: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.endpoint(id))
        .collect();
    let fresh = Clients::connect(&survivors).await;
    run_matrix(&fresh, &checks, "after, fresh sessions").await;
    let moved = Clients {
        anonymous: connect(&survivors, None).await,
        alice: moving,
        bob: connect(&survivors, Some(("bob", BOB_PW))).await,
        root: connect(&survivors, Some(("root", ROOT_PW))).await,
    };
    let alice_checks: Vec<Check> = checks.iter().filter(|c| c.who == Who::Alice).cloned().collect();
    run_matrix(&moved, &alice_checks, "after, the moved session").await;
    clients.close().await;
    fresh.close().await;
    moved.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_acls_and_stale_acl_versions_change_nothing() {
    let (_users, options) = auth_options(&[]);
    let cluster = Cluster::start(options).await;
    let eps = cluster.endpoints();
    let anonymous = connect(&eps, None).await;
    let alice = connect(&eps, Some(("alice", ALICE_PW))).await;

    let bad: Vec<(&str, Acl)> = vec![
        ("unknown scheme", Acl::new("kerberos", "bob", ALL)),
        ("world:someone", Acl::new("world", "someone", ALL)),
        ("no permissions", Acl::new("world", "anyone", 0)),
        ("bad CIDR", Acl::new("ip", "10.0.0.0/33", READ)),
        ("bad address", Acl::new("ip", "not-an-address", READ)),
    ];
    let anonymous_auth = ("auth from an anonymous session", Acl::creator(ALL));
    for (what, acl) in bad.iter().chain([&anonymous_auth]) {
        for list in [vec![acl.clone()], vec![Acl::open(), acl.clone()]] {
            let e = anonymous
                .create_with_acl("/bad", vec![], CreateMode::Persistent, &list)
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidAcl, "create, {what}: {e}");
            assert!(e.to_string().starts_with("INVALID_ACL"), "{e}");
            assert!(
                anonymous.exists("/bad").await.unwrap().is_none(),
                "create, {what}: created"
            );
        }
    }

    // In a multi too: a malformed ACL fails the multi at its op, nothing
    // is created; a good one is the new znode's.
    let e = anonymous
        .multi()
        .create("/m1", vec![], CreateMode::Persistent)
        .create_with_acl("/m2", vec![], CreateMode::Persistent, &[bad[0].1.clone()])
        .run()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidAcl, "{e}");
    assert!(
        matches!(
            e,
            Error::Server {
                op_index: Some(1),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(anonymous.exists("/m1").await.unwrap().is_none(), "multi: created");
    let only_alice = [Acl::new("digest", "alice", ALL)];
    anonymous
        .multi()
        .create_with_acl("/m3", vec![], CreateMode::Persistent, &only_alice)
        .run()
        .await
        .unwrap();
    alice.sync("/m3").await.unwrap(); // alice's node may not have applied it yet
    assert_eq!(alice.get_acl("/m3").await.unwrap().0, only_alice);
    assert_eq!(anonymous.get("/m3").await.unwrap_err().code(), ErrorCode::NoAuth);

    // A znode made without an ACL is open; set_acl with a malformed ACL
    // leaves the ACL and its version.
    anonymous
        .create("/x", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let (acl, stat) = anonymous.get_acl("/x").await.unwrap();
    assert_eq!(acl, vec![Acl::open()]);
    assert_eq!(stat.aversion, 0);
    for (what, acl) in bad.iter().chain([&anonymous_auth]) {
        let e = anonymous
            .set_acl("/x", std::slice::from_ref(acl), -1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidAcl, "set_acl, {what}: {e}");
        let (now, stat) = anonymous.get_acl("/x").await.unwrap();
        assert_eq!((now, stat.aversion), (vec![Acl::open()], 0), "set_acl, {what}");
    }

    // The ACL version: a stale one is BAD_VERSION, the right one bumps it.
    let readable = vec![Acl::new("world", "anyone", READ | ADMIN)];
    let e = anonymous.set_acl("/x", &readable, 3).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadVersion, "{e}");
    assert_eq!(anonymous.get_acl("/x").await.unwrap().1.aversion, 0);
    let stat = anonymous.set_acl("/x", &readable, 0).await.unwrap();
    assert_eq!(stat.aversion, 1);
    let (acl, stat) = anonymous.get_acl("/x").await.unwrap();
    assert_eq!((acl, stat.aversion), (readable.clone(), 1));
    let e = anonymous.set_acl("/x", &[Acl::open()], 0).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadVersion, "{e}");
    assert_eq!(
        anonymous.set_acl("/x", &[Acl::open()], 1).await.unwrap().aversion,
        2
    );
    assert_eq!(anonymous.exists("/x").await.unwrap().unwrap().aversion, 2);

    // `auth` from an authenticated session stands for its user.
    alice
        .create_with_acl("/alices", vec![], CreateMode::Persistent, &[Acl::creator(ALL)])
        .await
        .unwrap();
    let (acl, _) = alice.get_acl("/alices").await.unwrap();
    assert!(
        !acl.is_empty()
            && acl
                .iter()
                .all(|a| a.scheme == "digest" && a.id.starts_with("alice") && a.perms == ALL),
        "auth expanded to {acl:?}"
    );

    // The CLI.
    let joined = eps.join(",");
    let args = |rest: &[&str]| {
        let mut v = strings(&["--endpoints", &joined]);
        v.extend(strings(rest));
        v
    };
    anonymous
        .create("/plain", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let (code, out, err) = cli(args(&["getacl", "/plain"]), vec![], String::new()).await;
    assert_eq!((code, out.as_str()), (0, "world:anyone:cdrwa\n"), "stderr: {err}");
    for bad in [
        "world:anyone:",
        "kerberos:bob:r",
        "ip:10.0.0.0/33:r",
        "world:someone:r",
    ] {
        let (code, _, err) = cli(args(&["setacl", "/plain", bad]), vec![], String::new()).await;
        assert_eq!(code, 1, "setacl {bad}: {err}");
        assert!(err.contains("INVALID_ACL"), "setacl {bad}: {err}");
        let (code, _, err) = cli(args(&["create", "--acl", bad, "/never"]), vec![], String::new()).await;
        assert_eq!(code, 1, "create --acl {bad}: {err}");
        assert!(err.contains("INVALID_ACL"), "create --acl {bad}: {err}");
    }
    let (acl, stat) = anonymous.get_acl("/plain").await.unwrap();
    assert_eq!((acl, stat.aversion), (vec![Acl::open()], 0));
    assert!(anonymous.exists("/never").await.unwrap().is_none());

    let (code, out, err) = cli(
        args(&["create", "--acl", "digest:alice:cdrwa", "/y", "data"]),
        vec![],
        String::new(),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "/y\n"), "stderr: {err}");
    let (code, _, err) = cli(args(&["getacl", "/y"]), vec![], String::new()).await;
    assert_eq!(code, 1, "anonymous getacl on alice's znode: {err}");
    assert!(err.contains("NO_AUTH"), "{err}");
    let as_alice = |rest: &[&str]| {
        let mut v = args(&["--user", "alice"]);
        v.extend(strings(rest));
        v
    };
    let (code, out, err) = cli(as_alice(&["getacl", "/y"]), env_password(ALICE_PW), String::new()).await;
    assert_eq!((code, out.as_str()), (0, "digest:alice:cdrwa\n"), "stderr: {err}");
    let (code, _, err) = cli(
        as_alice(&["setacl", "/y", "world:anyone:r", "-v", "7"]),
        env_password(ALICE_PW),
        String::new(),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("BAD_VERSION"), "{err}");
    let (code, _, err) = cli(
        as_alice(&["setacl", "/y", "digest:alice:cdrwa,world:anyone:r", "-v", "0"]),
        env_password(ALICE_PW),
        String::new(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(args(&["getacl", "/y"]), vec![], String::new()).await;
    assert_eq!(code, 0, "world:anyone:r lets anyone read the ACL: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["digest:alice:cdrwa", "world:anyone:r"]);
    assert_eq!(anonymous.get_acl("/y").await.unwrap().1.aversion, 1);

    // whoami and addauth in the shell.
    let script = format!(
        "whoami\naddauth digest bob:{WRONG_PW}\naddauth digest bob:{BOB_PW}\nwhoami\n\
         create --acl auth::cdrwa /bobs\ngetacl /bobs\n"
    );
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_cli(&["--endpoints", &joined, "shell"], &script))
            .await
            .unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(
        out.lines().filter(|l| *l == "digest:bob").count(),
        1,
        "bob appears after addauth only:\n{out}"
    );
    assert!(out.lines().any(|l| l == "/bobs"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("digest:bob") && l.ends_with(":cdrwa")),
        "getacl /bobs:\n{out}"
    );
    assert_eq!(
        err.matches("AUTH_FAILED").count(),
        1,
        "only the wrong addauth fails: {err}"
    );
    anonymous.close().await.unwrap();
    alice.close().await.unwrap();
}
