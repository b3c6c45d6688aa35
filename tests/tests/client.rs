//! The client library against real clusters: the session states a listener
//! sees, and watches across changes, reconnects and node moves (issue 3,
//! acceptance points 1 and 2).

use std::time::{Duration, Instant};

use ensemble_client::{
    Client, CreateMode, Error, ErrorCode, EventType, OpResult, Options, SessionState, StateEvent, WatchEvent,
};
use ensemble_tests::{poll_until, Cluster, ClusterOptions};
use tokio::sync::mpsc;

/// Receives the next state event within `within`.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<StateEvent>, within: Duration) -> StateEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("a state event in time")
        .expect("listener open")
}

fn listened(t: Duration) -> (Options, mpsc::UnboundedReceiver<StateEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = Options {
        session_timeout: t,
        connect_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(20),
        listener: Some(tx),
        ..Options::default()
    };
    (options, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_sees_every_state_in_order() {
    let t = Duration::from_secs(3);
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let (options, mut events) = listened(t);
    let client = Client::connect(&cluster.endpoints(), options).await.unwrap();
    let id = client.session_id();
    assert_eq!(
        next_event(&mut events, t).await,
        StateEvent::State(SessionState::Connecting)
    );
    assert_eq!(
        next_event(&mut events, t).await,
        StateEvent::State(SessionState::Connected)
    );
    assert_eq!(client.state(), SessionState::Connected);

    // Kill the node it is on: it moves to another node with the same session.
    let first = cluster.id_of(client.current_endpoint());
    cluster.kill(first);
    assert_eq!(
        next_event(&mut events, t).await,
        StateEvent::State(SessionState::NotConnected)
    );
    assert_eq!(
        next_event(&mut events, t * 3).await,
        StateEvent::State(SessionState::Connected)
    );
    assert_eq!(client.session_id(), id);
    assert_ne!(cluster.id_of(client.current_endpoint()), first);
    // A write during failover may end with CONNECTION_LOSS (outcome
    // unknown), as ZooKeeper's would: retry it, accepting that it landed.
    let deadline = Instant::now() + t * 3;
    loop {
        match client.create("/still-here", vec![], CreateMode::Ephemeral).await {
            Ok(_) => break,
            Err(e) if e.code() == ErrorCode::NodeExists => break,
            Err(e) if e.code() == ErrorCode::ConnectionLoss && Instant::now() < deadline => continue,
            Err(e) => panic!("create after the move: {e}"),
        }
    }
    let (_, stat) = client.get("/still-here").await.unwrap();
    assert_eq!(
        stat.ephemeral_owner,
        Some(id),
        "the ephemeral belongs to the moved session"
    );

    client.close().await.unwrap();
    // While the cluster elects a new leader the client may have bounced
    // between nodes again; then comes CLOSED.
    loop {
        match next_event(&mut events, t).await {
            StateEvent::State(SessionState::Closed) => break,
            StateEvent::State(SessionState::NotConnected | SessionState::Connected) => {}
            other => panic!("unexpected {other:?} before CLOSED"),
        }
    }
    assert!(client.get("/").await.is_err(), "a closed client serves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_for_longer_than_4_3_t_expires_itself() {
    let t = Duration::from_secs(2);
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let (options, mut events) = listened(t);
    let client = Client::connect(&cluster.endpoints(), options).await.unwrap();
    let session = client.session().clone();
    client
        .create("/mine", vec![], CreateMode::Ephemeral)
        .await
        .unwrap();
    // A node that has not yet heard the new leader's heartbeats may refuse
    // the client right after the election, so it can have bounced once:
    // skip whatever the start-up produced.
    while events.try_recv().is_ok() {}
    let stopped = Instant::now();
    for id in 1..=3 {
        cluster.kill(id);
    }
    let mut lost_contact = false;
    loop {
        match next_event(&mut events, t * 3).await {
            StateEvent::Expired => break,
            StateEvent::State(SessionState::NotConnected) => lost_contact = true,
            other => panic!("unexpected {other:?} while every node is down"),
        }
    }
    assert!(lost_contact, "NOT_CONNECTED comes before the local expiry");
    let expired_after = stopped.elapsed();
    assert_eq!(
        next_event(&mut events, t).await,
        StateEvent::State(SessionState::Closed)
    );
    eprintln!(
        "local expiry {expired_after:?} after the cluster stopped (4/3 T = {:?})",
        t * 4 / 3
    );
    assert!(expired_after >= t * 4 / 3 - Duration::from_millis(100));
    assert!(client.is_expired());
    assert_eq!(
        client.get("/").await.unwrap_err().code(),
        ErrorCode::SessionExpired
    );

    // Back up: the leader expires the session (its ephemeral goes), and a
    // resume is refused. (Resuming is a heartbeat, so look only afterwards.)
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let other = cluster.client(Duration::from_secs(10)).await;
    poll_until(t * 3, "the ephemeral deleted", || async {
        other.exists("/mine").await.unwrap().is_none()
    })
    .await;
    let resumed = Client::resume(&cluster.endpoints(), session, Options::default()).await;
    assert_eq!(resumed.err().map(|e| e.code()), Some(ErrorCode::SessionExpired));
}

fn kinds(events: &[WatchEvent]) -> Vec<(EventType, String)> {
    events.iter().map(|e| (e.kind, e.path.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_and_persistent_watches_fire_once_per_change_in_order() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(Duration::from_secs(10)).await;
    let writer = cluster.client(Duration::from_secs(10)).await;
    c.create("/w", b"0".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();

    let (_, _, once) = c.get_watch("/w").await.unwrap();
    let mut all = c.add_watch("/w", false).await.unwrap();
    let mut tree = c.add_watch("/w", true).await.unwrap();
    let (missing, created) = c.exists_watch("/w/new").await.unwrap();
    assert!(missing.is_none());
    let (_, _, kids) = c.children_watch("/w").await.unwrap();

    writer.set("/w", b"1".to_vec(), -1).await.unwrap();
    writer.set("/w", b"2".to_vec(), -1).await.unwrap();
    writer
        .create("/w/new", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    writer.set("/w/new", b"x".to_vec(), -1).await.unwrap();
    writer.delete("/w/new", -1).await.unwrap();
    // A read after the writes: every event came before this reply.
    c.sync("/w").await.unwrap();

    let first = once.wait().await.unwrap();
    assert_eq!(first.kind, EventType::NodeDataChanged);
    let created = created.wait().await.unwrap();
    assert_eq!(
        (created.kind, created.path.as_str()),
        (EventType::NodeCreated, "/w/new")
    );
    assert_eq!(kids.wait().await.unwrap().kind, EventType::NodeChildrenChanged);

    let mut exact = Vec::new();
    while let Some(e) = all.try_next() {
        exact.push(e);
    }
    assert_eq!(
        kinds(&exact),
        vec![
            (EventType::NodeDataChanged, "/w".into()),
            (EventType::NodeDataChanged, "/w".into()),
            (EventType::NodeChildrenChanged, "/w".into()),
            (EventType::NodeChildrenChanged, "/w".into()),
        ]
    );
    let mut sub = Vec::new();
    while let Some(e) = tree.try_next() {
        sub.push(e);
    }
    assert_eq!(
        kinds(&sub),
        vec![
            (EventType::NodeDataChanged, "/w".into()),
            (EventType::NodeDataChanged, "/w".into()),
            (EventType::NodeCreated, "/w/new".into()),
            (EventType::NodeDataChanged, "/w/new".into()),
            (EventType::NodeDeleted, "/w/new".into()),
        ]
    );
    assert!(
        sub.windows(2).all(|w| w[0].zxid < w[1].zxid),
        "zxid order: {sub:?}"
    );
    assert!(
        first.zxid == sub[0].zxid,
        "the one-shot fired on the first change only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_a_move_to_another_node() {
    let t = Duration::from_secs(3);
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (a, b) = (followers[0], followers[1]);
    let setup = cluster.client_on(&[leader], t).await;
    setup
        .create("/m", b"0".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    setup.create("/r", vec![], CreateMode::Persistent).await.unwrap();

    // The watching client may use the two followers; freeze the one it is on.
    let (options, mut states) = listened(t);
    let c = Client::connect(&[cluster.endpoint(a), cluster.endpoint(b)], options)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(e) = states.recv().await {
            eprintln!("watching client: {e:?}");
        }
    });
    let on = cluster.id_of(c.current_endpoint());
    let (_, _, once) = c.get_watch("/m").await.unwrap();
    let mut tree = c.add_watch("/r", true).await.unwrap();
    // Frozen, its node answers nothing and the client must move. The changes
    // land while it is between nodes, so they reach it only through the other.
    cluster.pause(on);
    setup.set("/m", b"1".to_vec(), -1).await.unwrap();
    for i in 0..3 {
        setup
            .create(&format!("/r/c{i}"), vec![], CreateMode::Persistent)
            .await
            .unwrap();
    }
    let ev = tokio::time::timeout(t * 3, once.wait())
        .await
        .expect("one-shot fired")
        .unwrap();
    assert_eq!((ev.kind, ev.path.as_str()), (EventType::NodeDataChanged, "/m"));
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = tokio::time::timeout(t * 3, tree.next())
            .await
            .expect("replayed event")
            .unwrap();
        got.push(e);
    }
    assert_eq!(
        kinds(&got),
        (0..3)
            .map(|i| (EventType::NodeCreated, format!("/r/c{i}")))
            .collect::<Vec<_>>()
    );
    assert!(tree.try_next().is_none(), "no duplicates");
    assert_ne!(cluster.id_of(c.current_endpoint()), on, "the client moved");
    cluster.resume(on);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_path_can_not_be_escaped() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let root = cluster.client(Duration::from_secs(10)).await;
    root.create("/app", vec![], CreateMode::Persistent).await.unwrap();
    let before = root.children("/").await.unwrap().0;
    let app = Client::connect(
        &cluster.endpoints(),
        Options {
            base_path: "/app".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();

    // `x` under `/app` is not `/appx`: refused before anything is sent.
    for bad in ["x", "", "/../x", "/x/", "//x"] {
        let e = app
            .create(bad, b"escaped".to_vec(), CreateMode::Persistent)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BadArguments(_)), "{bad:?}: {e:?}");
        assert_eq!(e.code(), ErrorCode::BadArguments, "{bad:?}");
    }
    let e = app
        .create("x", vec![], CreateMode::PersistentSequential)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadArguments(_)), "sequential: {e:?}");
    assert!(matches!(app.get("x").await, Err(Error::BadArguments(_))));
    let e = app
        .multi()
        .create("/ok", vec![], CreateMode::Persistent)
        .create("x", vec![], CreateMode::Persistent)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadArguments(_)), "multi: {e:?}");
    // The checker may sit on another node: catch up before looking.
    root.sync("/").await.unwrap();
    assert!(
        root.exists("/app/ok").await.unwrap().is_none(),
        "nothing of the multi was sent"
    );
    assert!(
        root.exists("/appx").await.unwrap().is_none(),
        "nothing was created beside /app"
    );
    assert_eq!(
        root.children("/").await.unwrap().0,
        before,
        "nothing outside /app"
    );

    // Paths that are under the base work, and come back without it.
    assert_eq!(
        app.create("/y", b"in".to_vec(), CreateMode::Persistent)
            .await
            .unwrap(),
        "/y"
    );
    root.sync("/app").await.unwrap();
    assert_eq!(root.get("/app/y").await.unwrap().0, b"in");
    assert_eq!(app.children("/").await.unwrap().0, vec!["y"]);
    let results = app
        .multi()
        .create("/s-", vec![], CreateMode::PersistentSequential)
        .check("/y", 0)
        .run()
        .await
        .unwrap();
    root.sync("/app").await.unwrap();
    assert_eq!(
        results[0],
        OpResult::Create {
            path: "/s-0000000001".into(),
            stat: root
                .exists("/app/s-0000000001")
                .await
                .unwrap()
                .expect("created under /app"),
        }
    );
    assert_eq!(root.children("/app").await.unwrap().0, vec!["s-0000000001", "y"]);
}

/// Established TCP connections to `port` on this machine, from /proc (the
/// client ends: their remote port is the node's).
fn connections_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3
                        && f[3] == "01"
                        && f[2]
                            .rsplit(':')
                            .next()
                            .and_then(|p| u16::from_str_radix(p, 16).ok())
                            == Some(port)
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_one_process_share_a_connection_and_stay_independent() {
    let t = Duration::from_secs(3);
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let endpoint = cluster.endpoint(1);
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let one = [endpoint.as_str()];
    let options = || Options {
        session_timeout: t,
        ..Options::default()
    };

    // Twenty sessions on one node: twenty streams, one connection (the
    // harness's own status calls may hold another).
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(&one, options()).await.unwrap());
    }
    for (i, c) in clients.iter().enumerate() {
        c.create(&format!("/s{i}"), vec![], CreateMode::Ephemeral)
            .await
            .unwrap();
    }
    let open = connections_to(port);
    assert!((1..=2).contains(&open), "{open} connections for 20 sessions");

    // One session closing ends its stream, not the connection: the others
    // see its ephemeral go and keep working.
    let watcher = clients.pop().unwrap();
    let (_, watch) = watcher.exists_watch("/s0").await.unwrap();
    clients.remove(0).close().await.unwrap();
    let event = tokio::time::timeout(t, watch.wait()).await.unwrap().unwrap();
    assert_eq!((event.kind, event.path.as_str()), (EventType::NodeDeleted, "/s0"));
    for c in &clients {
        c.set(&format!("/s{}", 1), b"still here".to_vec(), -1)
            .await
            .unwrap();
    }
    assert_eq!(watcher.state(), SessionState::Connected);

    // When every session is gone the connection closes; a new session dials again.
    for c in clients {
        c.close().await.unwrap();
    }
    watcher.close().await.unwrap();
    poll_until(
        Duration::from_secs(10),
        "the shared connection to close",
        || async { connections_to(port) == 0 },
    )
    .await;
    let again = Client::connect(&one, options()).await.unwrap();
    again
        .create("/again", vec![], CreateMode::Ephemeral)
        .await
        .unwrap();
    again.close().await.unwrap();
}
