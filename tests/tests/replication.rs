//! Writes through any node, reads on every node, and the error codes of bad
//! requests: acceptance points 1, 7 and 8 of the replicated core.

use std::time::Duration;

use ensemble_client::ErrorCode;
use ensemble_client::{Client, CreateMode, Error, OpResult, SessionId};
use ensemble_tests::{Cluster, ClusterOptions};

const T: Duration = Duration::from_secs(5);

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Err(e) => e.code(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Data and version of `path` as each node sees it (None: absent).
async fn on_every_node(cluster: &Cluster, clients: &[Client], path: &str) -> Vec<Option<(Vec<u8>, i32)>> {
    let _ = cluster;
    let mut seen = Vec::new();
    for c in clients {
        c.sync(path).await.expect("sync");
        seen.push(match c.get(path).await {
            Ok((d, s)) => Some((d, s.version)),
            Err(e) if e.code() == ErrorCode::NoNode => None,
            Err(e) => panic!("get {path} on {}: {e}", c.current_endpoint()),
        });
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_leader_and_follower_are_read_on_every_node() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let on_leader = cluster.client_on(&[leader], T).await;
    let on_follower = cluster.client_on(&[follower], T).await;
    let readers: Vec<Client> = futures_readers(&cluster).await;

    on_leader
        .create("/from-leader", b"L".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    on_follower
        .create("/from-follower", b"F".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    on_follower.set("/from-leader", b"L2".to_vec(), 0).await.unwrap();
    // The writer reads its own write on its node at once (it answered after applying).
    assert_eq!(on_follower.get("/from-follower").await.unwrap().0, b"F");

    for (path, data, version) in [("/from-leader", &b"L2"[..], 1), ("/from-follower", &b"F"[..], 0)] {
        let seen = on_every_node(&cluster, &readers, path).await;
        assert_eq!(seen, vec![Some((data.to_vec(), version)); 3], "{path}");
    }
}

async fn futures_readers(cluster: &Cluster) -> Vec<Client> {
    let mut v = Vec::new();
    for id in 1..=3 {
        v.push(cluster.client_on(&[id], T).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_code_and_change_nothing() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/a", b"v0".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    c.create("/a/child", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    c.create("/eph", vec![], CreateMode::Ephemeral).await.unwrap();
    let before = c.get("/a").await.unwrap();

    assert_eq!(code(c.set("/a", b"x".to_vec(), 7).await), ErrorCode::BadVersion);
    assert_eq!(code(c.delete("/a", 3).await), ErrorCode::BadVersion);
    assert_eq!(code(c.delete("/a", -1).await), ErrorCode::NotEmpty);
    assert_eq!(
        code(c.create("/a", vec![], CreateMode::Persistent).await),
        ErrorCode::NodeExists
    );
    assert_eq!(
        code(c.create("/no/parent", vec![], CreateMode::Persistent).await),
        ErrorCode::NoNode
    );
    assert_eq!(code(c.get("/missing").await), ErrorCode::NoNode);
    assert_eq!(code(c.set("/missing", vec![], -1).await), ErrorCode::NoNode);
    assert_eq!(code(c.delete("/missing", -1).await), ErrorCode::NoNode);
    assert_eq!(
        code(c.create("/eph/child", vec![], CreateMode::Persistent).await),
        ErrorCode::NoChildrenForEphemerals
    );
    for bad in ["", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a\0"] {
        assert_eq!(
            code(c.create(bad, vec![], CreateMode::Persistent).await),
            ErrorCode::BadArguments,
            "{bad:?}"
        );
        assert_eq!(code(c.get(bad).await), ErrorCode::BadArguments, "{bad:?}");
    }
    let oversized = vec![0u8; 1024 * 1024 + 1];
    assert_eq!(
        code(c.set("/a", oversized.clone(), -1).await),
        ErrorCode::BadArguments
    );
    assert_eq!(
        code(c.create("/big", oversized, CreateMode::Persistent).await),
        ErrorCode::BadArguments
    );
    // Exactly the limit is fine.
    c.create("/big", vec![1u8; 1024 * 1024], CreateMode::Persistent)
        .await
        .unwrap();

    // The error message names the path.
    let e = c.delete("/a", -1).await.unwrap_err();
    assert!(e.to_string().contains("/a"), "{e}");

    // Nothing changed.
    let after = c.get("/a").await.unwrap();
    assert_eq!(before, after);
    assert_eq!(c.children("/a").await.unwrap().0, vec!["child"]);
    assert!(c.exists("/no").await.unwrap().is_none());

    // An unknown session is refused as expired, for reads and writes alike.
    let ghost = ensemble_client::SessionInfo {
        session_id: SessionId(0x7777_0000),
        secret: vec![1; 16],
        timeout: T,
    };
    let resumed = Client::resume(&cluster.endpoints(), ghost, Default::default()).await;
    assert_eq!(code(resumed.map(|_| ())), ErrorCode::SessionExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_multi_changes_nothing() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/m", b"0".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    let before = c.get("/m").await.unwrap();
    let e = c
        .multi()
        .create("/m/a", vec![], CreateMode::Persistent)
        .set("/m", b"1".to_vec(), -1)
        .create("/m/b", vec![], CreateMode::Ephemeral)
        .delete("/m/missing", -1)
        .run()
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoNode);
    match e {
        Error::Server { op_index, .. } => assert_eq!(op_index, Some(3)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(c.get("/m").await.unwrap(), before);
    assert!(c.exists("/m/a").await.unwrap().is_none());
    assert!(c.exists("/m/b").await.unwrap().is_none());

    // The same ops minus the failing one all apply in one zxid.
    let results = c
        .multi()
        .create("/m/a", vec![], CreateMode::Persistent)
        .set("/m/a", b"x".to_vec(), 0)
        .check("/m", 0)
        .run()
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], OpResult::Create { path, .. } if path == "/m/a"),
        "{results:?}"
    );
    assert!(matches!(results[1], OpResult::Set { stat } if stat.version == 1));
    assert_eq!(results[2], OpResult::Check);
    let (data, stat) = c.get("/m/a").await.unwrap();
    assert_eq!(data, b"x");
    assert_eq!(stat.version, 1);
    assert_eq!(stat.czxid, stat.mzxid, "create and set share the multi's zxid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_names_and_parent_stat_follow_zookeeper() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/q", vec![], CreateMode::Persistent).await.unwrap();
    let s0 = c
        .create("/q/s", vec![], CreateMode::PersistentSequential)
        .await
        .unwrap();
    let s1 = c
        .create("/q/s", vec![], CreateMode::PersistentSequential)
        .await
        .unwrap();
    assert_eq!((s0.as_str(), s1.as_str()), ("/q/s0000000000", "/q/s0000000001"));
    let parent_before = c.get("/q").await.unwrap().1;
    c.delete(&s0, -1).await.unwrap();
    let s2 = c
        .create("/q/s", vec![], CreateMode::EphemeralSequential)
        .await
        .unwrap();
    assert_eq!(s2, "/q/s0000000002");
    let trailing = c
        .create("/q/", vec![], CreateMode::PersistentSequential)
        .await
        .unwrap();
    assert_eq!(trailing, "/q/0000000003");
    let parent = c.get("/q").await.unwrap().1;
    assert_eq!(parent.cversion, 5, "4 creates and 1 delete");
    assert_eq!(parent.num_children, 3);
    assert_eq!(
        parent.version, parent_before.version,
        "children do not change the parent's version"
    );
    assert_eq!(parent.mzxid, parent_before.mzxid);
    assert!(parent.pzxid > parent_before.pzxid);
    let eph = c.exists(&s2).await.unwrap().unwrap();
    assert_eq!(eph.ephemeral_owner, Some(c.session_id()));
}
