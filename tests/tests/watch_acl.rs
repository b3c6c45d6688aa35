//! Watches are reads (issue 15, acceptance 5; ZooKeeper's CVE-2024-23944):
//! a persistent or recursive watch hears of a change only if its session
//! may READ the changed znode, through `add_watch` on `/`, on a missing
//! path or on the znode itself, and through `SetWatches` replaying history
//! from `last_zxid = 1` on a raw session stream and when the Rust client
//! moves to another node. The owner and the super user hear of
//! everything; one-shot watches keep ZooKeeper's rules.

use std::time::Duration;

use ensemble_client::acl::ALL;
use ensemble_client::{Acl, Client, CreateMode, ErrorCode, EventType, Options, PersistentWatch, WatchEvent};
use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_tests::{write_users_file, Cluster, ClusterOptions};
use tokio::sync::mpsc;
use tonic::Streaming;

const ALICE_PW: &str = "alice-Watch-8d21";
const BOB_PW: &str = "bob-Watch-47ac";
const ROOT_PW: &str = "root-Watch-e90b";

/// Generous: events arrive in milliseconds.
const T: Duration = Duration::from_secs(20);

/// A cluster with users alice, bob and root (the super user).
async fn cluster() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users_file(
        dir.path(),
        &[("alice", ALICE_PW), ("bob", BOB_PW), ("root", ROOT_PW)],
    );
    let options = ClusterOptions {
        extra_args: vec![
            "--users".into(),
            users.display().to_string(),
            "--super-user".into(),
            "root".into(),
        ],
        ..ClusterOptions::default()
    };
    (dir, Cluster::start(options).await)
}

/// A client whose session stream is up: a watch set right after connect
/// could otherwise go out in the stream's first `SetWatches` (as of zxid
/// 0) and be answered from history before its own request arrives.
async fn connect(eps: &[String], user: &str, password: &str) -> Client {
    let c = Client::connect(eps, Options::default().with_user(user, password))
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    c.exists("/").await.unwrap();
    c
}

fn alice_only() -> Vec<Acl> {
    vec![Acl::new("digest", "alice", ALL)]
}

fn secret(path: &str) -> bool {
    ["/secret", "/later"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// Events of `w` up to and including the first on `marker`.
async fn until(w: &mut PersistentWatch, marker: &str, who: &str) -> Vec<(EventType, String)> {
    let mut out = Vec::new();
    loop {
        let e: WatchEvent = tokio::time::timeout(T, w.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: no event on {marker} within {T:?}; saw {out:?}"))
            .unwrap_or_else(|| panic!("{who}: the client ended"));
        let done = e.path == marker;
        out.push((e.kind, e.path));
        if done {
            return out;
        }
    }
}

/// Events that have already arrived on `w`.
fn arrived(w: &mut PersistentWatch) -> Vec<(EventType, String)> {
    std::iter::from_fn(|| w.try_next())
        .map(|e| (e.kind, e.path))
        .collect()
}

fn ev(kind: EventType, path: &str) -> (EventType, String) {
    (kind, path.to_string())
}

/// One session's persistent watches, set before anything below exists.
struct Watches {
    root: PersistentWatch,
    missing: PersistentWatch,
    exact: PersistentWatch,
}

async fn watch(c: &Client) -> Watches {
    Watches {
        root: c.add_watch("/", true).await.unwrap(),
        missing: c.add_watch("/later", true).await.unwrap(),
        exact: c.add_watch("/secret", false).await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_watches_name_only_what_their_session_may_read() {
    let (_users, cluster) = cluster().await;
    let eps = cluster.endpoints();
    let alice = connect(&eps, "alice", ALICE_PW).await;
    let bob = connect(&eps, "bob", BOB_PW).await;
    let root = connect(&eps, "root", ROOT_PW).await;
    alice
        .create("/open", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    // Every member has /open before the watches are set, wherever they are.
    cluster.wait_applied_everywhere(alice.last_zxid(), T).await;

    let mut w_alice = watch(&alice).await;
    let mut w_bob = watch(&bob).await;
    let mut w_root = watch(&root).await;
    // One-shot watches keep ZooKeeper's rules: exists needs no permission,
    // a child watch needs READ on the parent only. (On a session of their
    // own: the client hands an event to every local watch it satisfies.)
    let bob_once = connect(&eps, "bob", BOB_PW).await;
    let (missing, bob_exists) = bob_once.exists_watch("/secret").await.unwrap();
    assert!(missing.is_none());
    let (_, _, bob_children) = bob_once.children_watch("/open").await.unwrap();

    let acl = alice_only();
    alice
        .create_with_acl("/secret", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create_with_acl("/secret/child", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice.set("/secret/child", b"x".to_vec(), -1).await.unwrap();
    alice
        .create_with_acl("/later", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create_with_acl("/later/child", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice.delete("/secret/child", -1).await.unwrap();
    alice.set("/secret", b"y".to_vec(), -1).await.unwrap();
    alice
        .create_with_acl("/open/hidden", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create("/end", vec![], CreateMode::Persistent)
        .await
        .unwrap();

    use EventType::*;
    let everything = vec![
        ev(NodeCreated, "/secret"),
        ev(NodeCreated, "/secret/child"),
        ev(NodeDataChanged, "/secret/child"),
        ev(NodeCreated, "/later"),
        ev(NodeCreated, "/later/child"),
        ev(NodeDeleted, "/secret/child"),
        ev(NodeDataChanged, "/secret"),
        ev(NodeCreated, "/open/hidden"),
        ev(NodeCreated, "/end"),
    ];
    let on_later = vec![ev(NodeCreated, "/later"), ev(NodeCreated, "/later/child")];
    let on_secret = vec![
        ev(NodeCreated, "/secret"),
        ev(NodeChildrenChanged, "/secret"),
        ev(NodeChildrenChanged, "/secret"),
        ev(NodeDataChanged, "/secret"),
    ];
    for (who, w) in [("alice", &mut w_alice), ("root", &mut w_root)] {
        assert_eq!(until(&mut w.root, "/end", who).await, everything, "{who} on /");
        // A session's events come in zxid order on one stream, so all the
        // earlier ones have arrived once /end has.
        assert_eq!(arrived(&mut w.missing), on_later, "{who} on /later");
        assert_eq!(arrived(&mut w.exact), on_secret, "{who} on /secret");
    }
    let seen = until(&mut w_bob.root, "/end", "bob").await;
    assert_eq!(seen, vec![ev(NodeCreated, "/end")], "bob on /");
    assert_eq!(arrived(&mut w_bob.missing), vec![], "bob on /later");
    assert_eq!(arrived(&mut w_bob.exact), vec![], "bob on /secret");
    let e = bob_exists.wait().await.unwrap();
    assert_eq!((e.kind, e.path.as_str()), (NodeCreated, "/secret"));
    let e = bob_children.wait().await.unwrap();
    assert_eq!((e.kind, e.path.as_str()), (NodeChildrenChanged, "/open"));
    // A watch on the znode itself is refused once it exists.
    let e = bob.add_watch("/secret", true).await.map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoAuth, "{e}");

    // Identities count as they are when the event is sent: once bob proves
    // he is alice too, he hears of alice's znodes.
    bob.add_auth("digest", format!("alice:{ALICE_PW}").as_bytes())
        .await
        .unwrap();
    alice.set("/secret", b"z".to_vec(), -1).await.unwrap();
    alice
        .create("/end2", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let seen = until(&mut w_bob.root, "/end2", "bob").await;
    assert_eq!(
        seen,
        vec![ev(NodeDataChanged, "/secret"), ev(NodeCreated, "/end2")]
    );
    assert_eq!(arrived(&mut w_bob.exact), vec![ev(NodeDataChanged, "/secret")]);
}

/// A session stream as any gRPC client drives it.
struct Raw {
    tx: mpsc::Sender<pb::SessionRequest>,
    rx: Streaming<pb::SessionResponse>,
    xid: u64,
}

impl Raw {
    /// Opens a session as `user` on the node at `endpoint` and resumes it on a stream.
    async fn open(endpoint: &str, user: &str, password: &str) -> Raw {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = EnsembleClient::new(channel);
        let session = grpc
            .create_session(pb::CreateSessionRequest {
                timeout_ms: 30_000,
                auth: vec![pb::AuthInfo {
                    scheme: "digest".into(),
                    auth: format!("{user}:{password}").into_bytes(),
                }],
            })
            .await
            .unwrap()
            .into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut raw = Raw {
            tx,
            rx: grpc
                .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner(),
            xid: 0,
        };
        let header = pb::RequestHeader {
            session_id: session.session_id,
            last_zxid: 0,
            secret: session.secret,
        };
        let (_, reply) = raw
            .call(Req::Resume(pb::ResumeSessionRequest {
                header: Some(header),
                secret: vec![],
            }))
            .await;
        assert!(matches!(reply, Resp::Resume(_)), "{reply:?}");
        raw
    }

    async fn next(&mut self) -> pb::SessionResponse {
        tokio::time::timeout(T, self.rx.message())
            .await
            .expect("a message within the bound")
            .expect("the stream is fine")
            .expect("the stream is open")
    }

    /// Sends a request; the events that came before its reply, and the reply.
    async fn call(&mut self, request: Req) -> (Vec<pb::WatchEvent>, Resp) {
        self.xid += 1;
        let xid = self.xid;
        self.tx
            .send(pb::SessionRequest {
                xid,
                request: Some(request),
            })
            .await
            .unwrap();
        let mut events = Vec::new();
        loop {
            let m = self.next().await;
            match m.response {
                Some(Resp::Event(e)) => events.push(e),
                Some(r) if m.xid == xid => return (events, r),
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Events up to and including the first on `marker`.
    async fn until(&mut self, marker: &str) -> Vec<pb::WatchEvent> {
        let mut out = Vec::new();
        loop {
            match self.next().await.response {
                Some(Resp::Event(e)) => {
                    let done = e.path == marker;
                    out.push(e);
                    if done {
                        return out;
                    }
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
    }
}

fn set_watches() -> pb::SetWatchesRequest {
    pb::SetWatchesRequest {
        last_zxid: 1,
        children: vec!["/secret".into()],
        persistent: vec!["/secret".into()],
        persistent_recursive: vec!["/".into(), "/secret".into(), "/later".into()],
        ..Default::default()
    }
}

fn paths(events: &[pb::WatchEvent]) -> Vec<&str> {
    events.iter().map(|e| e.path.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_watches_registers_and_replays_only_what_the_session_may_read() {
    let (_users, cluster) = cluster().await;
    let eps = cluster.endpoints();
    let alice = connect(&eps, "alice", ALICE_PW).await;
    let acl = alice_only();
    alice
        .create_with_acl("/secret", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create_with_acl("/secret/child", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice.set("/secret/child", b"x".to_vec(), -1).await.unwrap();
    alice
        .create("/open", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    alice
        .create_with_acl("/later", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice.delete("/secret/child", -1).await.unwrap();
    alice
        .create("/open/pub", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let endpoint = cluster.endpoint(1);
    // Node 1 must have applied the history the replay is checked against.
    let last = alice.last_zxid();
    cluster.wait_applied_everywhere(last, T).await;

    // bob: no READ on /secret or /later.
    let mut bob = Raw::open(&endpoint, "bob", BOB_PW).await;
    let (replayed, reply) = bob.call(Req::SetWatches(set_watches())).await;
    assert!(matches!(reply, Resp::SetWatches(_)), "{reply:?}");
    assert_eq!(paths(&replayed), vec!["/open", "/open/pub"], "bob's replay");
    // Nothing was registered on /secret: later changes there stay unheard.
    alice
        .create_with_acl("/secret/after", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice.set("/secret", b"y".to_vec(), -1).await.unwrap();
    alice
        .create("/open/end", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let live = bob.until("/open/end").await;
    assert_eq!(paths(&live), vec!["/open/end"], "bob, live");
    // A path that is no path fails the request, naming it.
    let bad = pb::SetWatchesRequest {
        persistent_recursive: vec!["no-slash".into()],
        ..Default::default()
    };
    match bob.call(Req::SetWatches(bad)).await {
        (_, Resp::Error(e)) => {
            assert_eq!(e.code, pb::ErrorCode::BadArguments as i32, "{}", e.message);
            assert!(e.message.contains("no-slash"), "{}", e.message);
        }
        other => panic!("a bad path in set_watches: {other:?}"),
    }

    // The super user (and alice) hear everything, replayed and live.
    for (user, password) in [("root", ROOT_PW), ("alice", ALICE_PW)] {
        let mut s = Raw::open(&endpoint, user, password).await;
        let (replayed, reply) = s.call(Req::SetWatches(set_watches())).await;
        assert!(matches!(reply, Resp::SetWatches(_)), "{reply:?}");
        let got = paths(&replayed);
        for p in ["/secret/child", "/later", "/secret/after", "/open/pub"] {
            assert!(got.contains(&p), "{user}'s replay lacks {p}: {got:?}");
        }
        assert!(
            replayed
                .iter()
                .any(|e| e.path == "/secret" && e.r#type == pb::EventType::NodeChildrenChanged as i32),
            "{user}: the child watch on /secret fires at once: {got:?}"
        );
        let marker = format!("/open/{user}");
        alice
            .create_with_acl("/secret/more", vec![], CreateMode::Persistent, &acl)
            .await
            .unwrap();
        alice
            .create(&marker, vec![], CreateMode::Persistent)
            .await
            .unwrap();
        let live = s.until(&marker).await;
        assert!(
            paths(&live).contains(&"/secret/more"),
            "{user}, live: {:?}",
            paths(&live)
        );
        alice.delete("/secret/more", -1).await.unwrap();
    }
    // And bob never heard of any of it.
    alice
        .create("/open/last", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let live = bob.until("/open/last").await;
    let named: Vec<&str> = paths(&live).into_iter().filter(|p| secret(p)).collect();
    assert!(named.is_empty(), "bob heard of {named:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_node_replays_nothing_unreadable() {
    let t = Duration::from_secs(3);
    let (_users, cluster) = cluster().await;
    let leader = cluster.wait_for_leader(T).await;
    let followers: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.endpoint(id))
        .collect();
    let alice = connect(&[cluster.endpoint(leader)], "alice", ALICE_PW).await;
    alice
        .create("/open", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    cluster.wait_applied_everywhere(alice.last_zxid(), T).await;

    // bob may use either follower; freeze the one he is on, so what
    // follows reaches him only through SetWatches on the other.
    let options = Options {
        session_timeout: t,
        ..Options::default().with_user("bob", BOB_PW)
    };
    let bob = Client::connect(&followers, options).await.unwrap();
    bob.exists("/").await.unwrap();
    let mut everything = bob.add_watch("/", true).await.unwrap();
    let mut missing = bob.add_watch("/later", true).await.unwrap();
    let on = cluster.id_of(bob.current_endpoint());
    cluster.pause(on);
    let acl = alice_only();
    alice
        .create_with_acl("/secret", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create_with_acl("/secret/child", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create("/open/x", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    alice
        .create_with_acl("/later", vec![], CreateMode::Persistent, &acl)
        .await
        .unwrap();
    alice
        .create("/end", vec![], CreateMode::Persistent)
        .await
        .unwrap();

    let seen = until(&mut everything, "/end", "bob").await;
    use EventType::*;
    assert_eq!(seen, vec![ev(NodeCreated, "/open/x"), ev(NodeCreated, "/end")]);
    assert_eq!(arrived(&mut missing), vec![], "bob on /later");
    assert_ne!(cluster.id_of(bob.current_endpoint()), on, "bob moved");
    cluster.resume(on);
}
