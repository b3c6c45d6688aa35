//! The metrics endpoint, scraped over HTTP on every node of a real cluster
//! while it works: the text parses (strictly, `ensemble_tests::scrape`),
//! any other path is 404, and the counters move with the load: requests by
//! operation and their refusals, forwarded writes, proposals and commit
//! latency on the leader, log flushes everywhere, sessions created, closed
//! and expired, heartbeats coalesced, watches registered and fired.

use std::time::{Duration, Instant};

use ensemble_client::{CreateMode, ErrorCode};
use ensemble_tests::scrape::{self, Kind, Metrics};
use ensemble_tests::{Cluster, ClusterOptions};

/// How long the counters may take to catch up with the load (apply on the
/// followers, a session's expiry).
const DEADLINE: Duration = Duration::from_secs(30);

/// Node `id`'s metrics, checked: 200, the 0.0.4 content type, and text that parses.
async fn metrics_of(cluster: &Cluster, id: u64) -> Metrics {
    let addr = cluster.metrics_addr(id);
    let answer = scrape::get(&addr, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"));
    assert_eq!(answer.status, 200, "node {id}: {answer:?}");
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "node {id}: content type {content_type:?}"
    );
    scrape::parse(&answer.body)
        .unwrap_or_else(|e| panic!("node {id}: the metrics do not parse: {e}\n{}", answer.body))
}

/// How much a series grew since `before`.
fn grew(now: &Metrics, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    now.get(name, labels) - before.get(name, labels)
}

/// A series (name and labels) and how much it must grow (or read).
type Want<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Scrapes node `id` until every `(series, labels, at least)` grew by at
/// least that much since `before` (or, for a gauge, reads at least that
/// much: `before` is then None); fails naming the ones that did not.
async fn until_grown(cluster: &Cluster, id: u64, before: Option<&Metrics>, wants: &[Want<'_>]) -> Metrics {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = metrics_of(cluster, id).await;
        let short: Vec<String> = wants
            .iter()
            .filter_map(|(name, labels, least)| {
                let got = match before {
                    Some(b) => grew(&now, b, name, labels),
                    None => now.get(name, labels),
                };
                (got < *least).then(|| format!("{name}{labels:?}: {got} < {least}"))
            })
            .collect();
        if short.is_empty() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: not within {DEADLINE:?}:\n{}",
            short.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The families every node serves from the start, with their types.
/// (`ensemble_request_errors_total` has no series, and so is not listed,
/// until the first refusal.)
const FAMILIES: &[(&str, Kind)] = &[
    ("ensemble_requests_total", Kind::Counter),
    ("ensemble_request_latency_seconds", Kind::Histogram),
    ("ensemble_outstanding_requests", Kind::Gauge),
    ("ensemble_num_alive_connections", Kind::Gauge),
    ("ensemble_watch_count", Kind::Gauge),
    ("ensemble_watches_registered_total", Kind::Counter),
    ("ensemble_watches_fired_total", Kind::Counter),
    ("ensemble_proposal_count_total", Kind::Counter),
    ("ensemble_proposal_batch_size", Kind::Histogram),
    ("ensemble_commit_latency_seconds", Kind::Histogram),
    ("ensemble_fsynctime_seconds", Kind::Histogram),
    ("ensemble_log_flushed_bytes_total", Kind::Counter),
    ("ensemble_apply_lag", Kind::Gauge),
    ("ensemble_forwarded_writes_total", Kind::Counter),
    ("ensemble_leader_changes_total", Kind::Counter),
    ("ensemble_election_time_seconds", Kind::Histogram),
    ("ensemble_raft_term", Kind::Gauge),
    ("ensemble_server_state", Kind::Gauge),
    ("ensemble_znode_count", Kind::Gauge),
    ("ensemble_ephemerals_count", Kind::Gauge),
    ("ensemble_global_sessions", Kind::Gauge),
    ("ensemble_sessions_created_total", Kind::Counter),
    ("ensemble_sessions_closed_total", Kind::Counter),
    ("ensemble_sessions_expired_total", Kind::Counter),
    ("ensemble_touches_total", Kind::Counter),
    ("ensemble_heartbeats_coalesced", Kind::Histogram),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_metrics_that_parse_and_move_with_the_load() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    // Every node serves every family, and nothing but /metrics.
    let mut before = Vec::new();
    for id in 1..=3 {
        let m = metrics_of(&cluster, id).await;
        for (family, kind) in FAMILIES {
            assert_eq!(m.types.get(*family), Some(kind), "node {id}: {family}");
        }
        // The first election: from start until a leader was known.
        assert!(
            m.get("ensemble_election_time_seconds_count", &[]) >= 1.0,
            "node {id}"
        );
        for path in ["/", "/metric", "/metrics/x", "/status"] {
            let answer = scrape::get(&cluster.metrics_addr(id), path).await.expect("GET");
            assert_eq!(answer.status, 404, "node {id}: GET {path}");
        }
        before.push(m);
    }
    let (at_leader, at_follower) = (&before[(leader - 1) as usize], &before[(follower - 1) as usize]);
    assert_eq!(
        at_leader.get("ensemble_server_state", &[("state", "leader")]),
        1.0
    );
    assert_eq!(
        at_leader.get("ensemble_server_state", &[("state", "follower")]),
        0.0
    );
    assert_eq!(
        at_follower.get("ensemble_server_state", &[("state", "follower")]),
        1.0
    );
    assert!(at_follower.get("ensemble_leader_changes_total", &[]) >= 1.0);
    assert!(at_leader.get("ensemble_raft_term", &[]) >= 1.0);

    // Load through a follower, so its writes are forwarded to the leader.
    let timeout = Duration::from_secs(10);
    let c = cluster.client_on(&[follower], timeout).await;
    c.create("/m", b"0".to_vec(), CreateMode::Persistent)
        .await
        .expect("create");
    for i in 1..=5 {
        c.set("/m", i.to_string().into_bytes(), -1).await.expect("set");
        c.get("/m").await.expect("get");
    }
    let refused = c.create("/m", vec![], CreateMode::Persistent).await;
    assert_eq!(refused.err().map(|e| e.code()), Some(ErrorCode::NodeExists));
    let (_, _, watch) = c.get_watch("/m").await.expect("get_watch");
    c.set("/m", b"fire".to_vec(), -1).await.expect("set");
    tokio::time::timeout(timeout, watch.wait())
        .await
        .expect("the watch fires in time")
        .expect("watch event");
    let _persistent = c.add_watch("/m", true).await.expect("add_watch");
    let other = cluster.client_on(&[follower], timeout).await;
    other
        .create("/m/e", vec![], CreateMode::Ephemeral)
        .await
        .expect("create ephemeral");
    other.close().await.expect("close");

    let f = until_grown(
        &cluster,
        follower,
        Some(at_follower),
        &[
            ("ensemble_requests_total", &[("op", "create")], 3.0),
            ("ensemble_requests_total", &[("op", "set")], 6.0),
            ("ensemble_requests_total", &[("op", "get")], 6.0),
            ("ensemble_requests_total", &[("op", "create_session")], 2.0),
            ("ensemble_requests_total", &[("op", "resume_session")], 2.0),
            ("ensemble_requests_total", &[("op", "close_session")], 1.0),
            ("ensemble_request_latency_seconds_count", &[("op", "set")], 6.0),
            (
                "ensemble_request_errors_total",
                &[("op", "create"), ("code", "NODE_EXISTS")],
                1.0,
            ),
            ("ensemble_forwarded_writes_total", &[], 10.0),
            ("ensemble_watches_registered_total", &[], 2.0),
            ("ensemble_watches_fired_total", &[], 1.0),
            ("ensemble_touches_total", &[], 10.0),
        ],
    )
    .await;
    assert_eq!(f.types.get("ensemble_request_errors_total"), Some(&Kind::Counter));
    // Gauges read when scraped: the follower holds c's stream and its watch.
    for (name, least) in [
        ("ensemble_num_alive_connections", 1.0),
        ("ensemble_watch_count", 1.0),
        ("ensemble_global_sessions", 1.0),
        ("ensemble_znode_count", 2.0),
    ] {
        assert!(f.get(name, &[]) >= least, "follower {name}: {}", f.get(name, &[]));
    }
    // Only the scrape's own neighbours (a heartbeat, say) may be in flight.
    let outstanding = f.get("ensemble_outstanding_requests", &[]);
    assert!((0.0..10.0).contains(&outstanding), "outstanding {outstanding}");

    // Group commit on the leader: proposals, and the forwarded commands timed.
    let leader_wants: &[Want] = &[
        ("ensemble_proposal_count_total", &[], 1.0),
        ("ensemble_proposal_batch_size_count", &[], 1.0),
        ("ensemble_commit_latency_seconds_count", &[], 10.0),
    ];
    until_grown(&cluster, leader, Some(at_leader), leader_wants).await;
    // Every node flushed the entries and applied the sessions' creation and close.
    for id in 1..=3 {
        let wants: &[Want] = &[
            ("ensemble_fsynctime_seconds_count", &[], 1.0),
            ("ensemble_log_flushed_bytes_total", &[], 100.0),
            ("ensemble_sessions_created_total", &[], 2.0),
            ("ensemble_sessions_closed_total", &[], 1.0),
        ];
        until_grown(&cluster, id, Some(&before[(id - 1) as usize]), wants).await;
    }

    // A client that dies: its session is expired, on every node; while it
    // lived, the leader coalesced its heartbeats into Heartbeats entries.
    let mut holder = cluster.spawn_holder(&[follower], Duration::from_secs(1), "/m/held");
    let alive = metrics_of(&cluster, leader).await;
    until_grown(
        &cluster,
        leader,
        Some(&alive),
        &[("ensemble_heartbeats_coalesced_count", &[], 1.0)],
    )
    .await;
    holder.kill();
    for id in 1..=3 {
        until_grown(
            &cluster,
            id,
            Some(&before[(id - 1) as usize]),
            &[("ensemble_sessions_expired_total", &[], 1.0)],
        )
        .await;
    }
    let last = metrics_of(&cluster, leader).await;
    assert!(last.get("ensemble_heartbeats_coalesced_sum", &[]) >= 1.0);
    assert_eq!(last.get("ensemble_ephemerals_count", &[]), 0.0);
}
