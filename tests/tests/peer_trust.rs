//! Only members speak on the peer port (issue 15, acceptance 1-3): an
//! outsider without the cluster's peer secret, or with a client
//! certificate of the cluster's CA, or a certificate of another CA, is
//! refused on every peer call and changes nothing; a member refuses to
//! start with `--require-auth` and an open peer port unless told; and a
//! member that sends impossible Raft terms can not wedge the cluster.
//!
//! The forged messages are the real wire format (bincode of the server's
//! own types), so each refusal is checked against a control: the same
//! message with a member's credentials does take effect.

#![allow(clippy::result_large_err)] // tonic::Status is large by design.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ensemble_client::{Client, CreateMode, Options};
use ensemble_proto::peer::peer_client::PeerClient;
use ensemble_proto::peer::Payload;
use ensemble_proto::SessionId;
use ensemble_server::consensus::TypeConfig;
use ensemble_server::state::acl::Identity;
use ensemble_server::state::sessions::Secret;
use ensemble_server::state::{Command as Cmd, Op};
use ensemble_tests::{bin, dev_certs, poll_until, write_users_file, Cluster, ClusterOptions, ClusterTls};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "peer-secret-0123456789abcdef0123456789abcdef";
const ROOT_PW: &str = "root-Secret-9d1e44";
const PEER_SECRET_KEY: &str = "x-ensemble-peer-secret";

/// A cluster with auth required (root is the super user) and, when
/// `secret`, the peer secret; the files live in the returned dir.
fn auth_options(secret: bool, tls: bool) -> (tempfile::TempDir, ClusterOptions) {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(dir.path(), &[("root", ROOT_PW)]);
    let mut extra_args = vec![
        "--users".to_string(),
        users.display().to_string(),
        "--super-user".to_string(),
        "root".to_string(),
        "--require-auth".to_string(),
    ];
    if secret {
        let path = dir.path().join("peer-secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        extra_args.extend(["--peer-secret-file".to_string(), path.display().to_string()]);
    }
    let options = ClusterOptions {
        extra_args,
        tls: tls.then(ClusterTls::default),
        ..ClusterOptions::default()
    };
    (dir, options)
}

async fn root(cluster: &Cluster) -> Client {
    let mut options = Options::default().with_user("root", ROOT_PW);
    if let Some(tls) = cluster.tls() {
        options.tls = Some(tls);
    }
    options.session_timeout = Duration::from_secs(10);
    Client::connect(&cluster.endpoints(), options).await.unwrap()
}

/// A raw client of a peer port; `tls` names the certificate it presents.
async fn peer(addr: &str, tls: Option<ClientTlsConfig>) -> Result<PeerClient<Channel>, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(PeerClient::new(channel))
}

fn tls_as(certs: &Path, ca_dir: &Path, name: &str) -> ClientTlsConfig {
    let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca_dir, "ca.pem")))
        .identity(TlsIdentity::from_pem(
            read(certs, &format!("{name}.pem")),
            read(certs, &format!("{name}.key")),
        ))
        // The members' certificates name ensembleN, localhost, 127.0.0.1.
        .domain_name("localhost")
}

fn payload<T: serde::Serialize>(v: &T) -> Payload {
    Payload {
        data: bincode::serialize(v).unwrap(),
    }
}

fn request(p: Payload, secret: Option<&str>) -> tonic::Request<Payload> {
    let mut r = tonic::Request::new(p);
    if let Some(s) = secret {
        r.metadata_mut().insert(PEER_SECRET_KEY, s.parse().unwrap());
    }
    r
}

fn super_identity() -> Identity {
    Identity {
        scheme: "super".into(),
        id: "root".into(),
    }
}

fn forged_create(path: &str, victim: SessionId) -> Cmd {
    Cmd::Txn {
        session_id: victim,
        ops: vec![Op::Create {
            path: path.into(),
            data: b"forged".to_vec(),
            ephemeral: false,
            sequential: false,
            acl: vec![],
        }],
        multi: false,
        client_ip: None,
    }
}

/// Every peer call an attacker would make, each with `secret` in its
/// metadata (None: none); returns each call's name and its outcome.
async fn every_peer_call(
    c: &mut PeerClient<Channel>,
    secret: Option<&str>,
    victim: SessionId,
    term: u64,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let r = |p: Payload| request(p, secret);
    let ok = |x: Result<tonic::Response<Payload>, tonic::Status>| x.map(|_| ());
    let forged_session = Cmd::CreateSession {
        secret: Secret::new(vec![7; 16]),
        timeout_ms: 30_000,
        identities: vec![super_identity()],
    };
    let big = LogId::new(CommittedLeaderId::new(term, 1), 1 << 40);
    vec![
        (
            "forward create-session as super",
            ok(c.forward(r(payload(&vec![forged_session]))).await),
        ),
        (
            "forward a txn as another session",
            ok(c.forward(r(payload(&vec![forged_create("/forged", victim)])))
                .await),
        ),
        (
            "forward add-identity super",
            ok(c.forward(r(payload(&vec![Cmd::AddIdentity {
                session_id: victim,
                identity: super_identity(),
            }])))
            .await),
        ),
        (
            "forward close-session",
            ok(
                c.forward(r(payload(&vec![Cmd::CloseSession { session_id: victim }])))
                    .await,
            ),
        ),
        ("touch", ok(c.touch(r(payload(&vec![(victim, 0u64)]))).await)),
        ("evidence", ok(c.evidence(r(payload(&1u64))).await)),
        ("read index", ok(c.read_index(r(payload(&()))).await)),
        ("watch leader", c.watch_leader(r(payload(&()))).await.map(|_| ())),
        (
            "vote",
            ok(c.vote(r(payload(&VoteRequest::<u64> {
                vote: Vote::new(term, 9),
                last_log_id: Some(big),
            })))
            .await),
        ),
        (
            "append entries",
            ok(c.append_entries(r(payload(&AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(term, 9),
                prev_log_id: None,
                leader_commit: None,
                entries: vec![],
            })))
            .await),
        ),
    ]
}

/// Acceptance 1: plaintext, `--require-auth` and a peer secret: every
/// peer call of an outsider (no secret, or a wrong one) is refused and
/// changes nothing; the same forged txn with the secret does take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_peer_secret_every_peer_call_is_refused_and_changes_nothing() {
    let (_files, options) = auth_options(true, false);
    let cluster = Cluster::start(options).await;
    let admin = root(&cluster).await;
    let victim = root(&cluster).await;
    let (_, stat) = victim
        .create_with_stat("/victim", vec![], CreateMode::Ephemeral)
        .await
        .unwrap();
    cluster.wait_applied_everywhere(stat.mzxid, T).await;
    let leader = cluster.wait_for_leader(T).await;
    let term_before = cluster.status(leader).await.unwrap().term;
    let sessions_before = cluster.status(leader).await.unwrap().session_count;

    for node in &cluster.nodes {
        let mut c = peer(&node.peer_addr, None).await.unwrap();
        let huge = u64::MAX;
        for secret in [None, Some("not-the-secret-0123456789abcdef0123456789")] {
            for (name, outcome) in every_peer_call(&mut c, secret, victim.session_id(), huge).await {
                match outcome {
                    Err(s) => assert_eq!(
                        s.code(),
                        tonic::Code::Unauthenticated,
                        "node {} {name} ({secret:?}): {s:?}",
                        node.id
                    ),
                    Ok(()) => panic!("node {}: {name} without the peer secret was accepted", node.id),
                }
            }
        }
    }

    // Nothing changed: the victim's session and ephemeral are there, no
    // znode was forged, no session was added, the term did not move.
    assert!(admin.exists("/victim").await.unwrap().is_some());
    assert!(admin.exists("/forged").await.unwrap().is_none());
    victim.set("/victim", b"still mine".to_vec(), -1).await.unwrap();
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.term, term_before, "the outsider moved the term");
    assert_eq!(
        status.session_count, sessions_before,
        "the outsider changed the sessions"
    );
    assert!(
        cluster.log(leader).contains("peer call without the peer secret"),
        "the refusal is logged"
    );

    // Control: the same forged txn with the secret is a member's call, and
    // takes effect (so the refusals above are the gate's doing).
    let leader_peer = cluster.nodes[(leader - 1) as usize].peer_addr.clone();
    let mut c = peer(&leader_peer, None).await.unwrap();
    c.forward(request(
        payload(&vec![forged_create("/forged", victim.session_id())]),
        Some(SECRET),
    ))
    .await
    .expect("a member's forward is served");
    poll_until(T, "the member's forwarded create applies", || async {
        admin.exists("/forged").await.unwrap().is_some()
    })
    .await;
}

/// A one-member server with these arguments; its stderr goes to `log`.
fn server(args: &[&str], data: &Path, log: &Path) -> std::process::Child {
    Command::new(bin("ensemble-test-server"))
        .args([
            "--id",
            "1",
            "--peers",
            "1=127.0.0.1:1/127.0.0.1:2",
            "--metrics-addr",
            "off",
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn output(args: &[&str], dir: &Path, name: &str) -> (Option<i32>, String) {
    let log = dir.join(format!("{name}.log"));
    let status = server(args, &dir.join(name), &log).wait().unwrap();
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

/// Acceptance 1, second half: `--require-auth` with neither TLS nor a
/// peer secret is refused at startup; `--allow-open-peer-port` starts it,
/// with a warning; so does a member without `--require-auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_peer_port_is_refused_with_require_auth_unless_allowed_and_always_warned() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(dir.path(), &[("root", ROOT_PW)]);
    let users = users.to_str().unwrap();
    let (code, err) = output(&["--users", users, "--require-auth"], dir.path(), "a");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--peer-secret-file") && err.contains("--allow-open-peer-port"),
        "{err}"
    );

    let short = dir.path().join("short-secret");
    std::fs::write(&short, "too-short").unwrap();
    let (code, err) = output(
        &[
            "--users",
            users,
            "--require-auth",
            "--peer-secret-file",
            short.to_str().unwrap(),
        ],
        dir.path(),
        "b",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--peer-secret-file") && !err.contains("too-short"),
        "{err}"
    );

    for (args, name) in [
        (
            vec!["--users", users, "--require-auth", "--allow-open-peer-port"],
            "c",
        ),
        (vec![], "d"),
    ] {
        let ports = ensemble_tests::free_ports(2);
        let peers = format!("1=127.0.0.1:{}/127.0.0.1:{}", ports[0], ports[1]);
        let log = dir.path().join(format!("{name}.log"));
        let mut child = server(
            &[&["--peers", &peers], &args[..]].concat(),
            &dir.path().join(name),
            &log,
        );
        poll_until(T, "the open-peer-port warning", || async {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("THE PEER PORT IS OPEN"))
        })
        .await;
        let running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        assert!(running, "{name}: the member did not keep running");
    }
}

/// Acceptance 2: with TLS, a client certificate of the cluster's CA and
/// a certificate of another CA are refused by the peer port; a member's
/// certificate is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_only_member_certificates_reach_the_peer_port() {
    let (_files, options) = auth_options(false, true);
    let cluster = Cluster::start(options).await;
    let certs = cluster.certs_dir();
    let other = cluster.dir().join("other-ca");
    dev_certs(&other, &["ensemble1".to_string()]);
    let victim = root(&cluster).await;
    let leader = cluster.wait_for_leader(T).await;
    let leader_peer = cluster.nodes[(leader - 1) as usize].peer_addr.clone();

    for (who, tls) in [
        (
            "a client certificate of the cluster's CA",
            tls_as(&certs, &certs, "client"),
        ),
        (
            "a member certificate of another CA",
            tls_as(&other, &certs, "ensemble1"),
        ),
    ] {
        match peer(&leader_peer, Some(tls)).await {
            Err(_) => {}
            Ok(mut c) => {
                for (name, outcome) in every_peer_call(&mut c, None, victim.session_id(), 1).await {
                    assert!(outcome.is_err(), "{who}: {name} was accepted");
                }
            }
        }
    }
    let admin = root(&cluster).await;
    assert!(admin.exists("/forged").await.unwrap().is_none());

    // A member's certificate is served: the forged txn takes effect.
    let mut c = peer(&leader_peer, Some(tls_as(&certs, &certs, "ensemble2")))
        .await
        .expect("a member's certificate connects");
    c.forward(request(
        payload(&vec![forged_create("/forged", victim.session_id())]),
        None,
    ))
    .await
    .expect("a member's forward is served");
    poll_until(T, "the member's forwarded create applies", || async {
        admin.exists("/forged").await.unwrap().is_some()
    })
    .await;
}

/// Acceptance 3: a member (it has the peer secret) that sends term
/// u64::MAX in an AppendEntries and a vote is refused; one that jumps the
/// term by a million is obeyed; either way the next leader kill leaves a
/// cluster that elects a leader and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_terms_are_refused_and_a_huge_jump_does_not_wedge_the_cluster() {
    let (_files, options) = auth_options(true, false);
    let mut cluster = Cluster::start(options).await;
    let leader = cluster.wait_for_leader(T).await;
    let term = cluster.status(leader).await.unwrap().term;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    let append = |t: u64| {
        payload(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(t, leader),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        })
    };
    let vote = |t: u64, by: u64| {
        payload(&VoteRequest::<u64> {
            vote: Vote::new(t, by),
            last_log_id: Some(LogId::new(CommittedLeaderId::new(t, by), 1 << 30)),
        })
    };
    for id in [leader, followers[0], followers[1]] {
        let mut c = peer(&cluster.nodes[(id - 1) as usize].peer_addr, None)
            .await
            .unwrap();
        let refused = c
            .append_entries(request(append(u64::MAX), Some(SECRET)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("term"), "{refused:?}");
        let refused = c
            .vote(request(vote(u64::MAX, followers[0]), Some(SECRET)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    for id in 1..=3 {
        let s = cluster.status(id).await.unwrap();
        assert!(s.term < 1 << 48, "node {id} adopted term {}", s.term);
    }

    // A huge (possible) jump, from a follower's name, to the leader.
    let jump = term + 1_000_000;
    let mut c = peer(&cluster.nodes[(leader - 1) as usize].peer_addr, None)
        .await
        .unwrap();
    c.vote(request(vote(jump, followers[0]), Some(SECRET)))
        .await
        .expect("a possible vote request is answered");

    // Kill whoever leads now: the rest elect a leader and take writes.
    let leader = cluster.wait_for_leader(T).await;
    cluster.kill(leader);
    let next = cluster.wait_for_leader(T).await;
    assert_ne!(next, leader);
    let admin = root(&cluster).await;
    admin
        .create("/after-the-kill", vec![], CreateMode::Persistent)
        .await
        .expect("the cluster takes writes after the leader kill");
    for id in (1..=3).filter(|id| *id != leader) {
        assert!(cluster.is_running(id), "node {id} stopped");
        assert!(
            !cluster.log(id).contains("panicked"),
            "node {id} panicked:\n{}",
            cluster.log(id)
        );
    }
}
