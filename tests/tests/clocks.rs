//! Clocks that lie: a leader killed and restarted at once with its clock an
//! hour ahead or behind (libfaketime, the monotonic clock faked or not)
//! expires no live session, on followers or on the leader, and a client
//! killed before the fault is still expired within T + 8 s (hardening,
//! acceptance 2). Needs Debian's `faketime` package.

use std::time::{Duration, Instant};

use ensemble_client::Client;
use ensemble_tests::{faketime_env, poll_until, Cluster, ClusterOptions, Holder};

const T: Duration = Duration::from_secs(4);
const READER_T: Duration = Duration::from_secs(30);
const ROUNDS: usize = 3;

async fn exists_on(c: &Client, path: &str) -> bool {
    c.sync(path).await.expect("sync");
    c.exists(path).await.expect("exists").is_some()
}

async fn leader_restarts_with_its_clock_moved(offset: &str, fake_monotonic: bool) {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    // One client bound to each node, so some sit on followers and one on
    // the leader, whichever node leads.
    let mut live: Vec<(String, Holder)> = Vec::new();
    for id in 1..=3 {
        let path = format!("/live{id}");
        live.push((path.clone(), cluster.spawn_holder(&[id], T, &path)));
    }
    let mut dead = cluster.spawn_holder(&[1, 2, 3], T, "/dead");
    let mut readers = Vec::new();
    for id in 1..=3 {
        readers.push((id, cluster.client_on(&[id], READER_T).await));
    }
    for (_, r) in &readers {
        assert!(exists_on(r, "/dead").await);
    }
    let killed = dead.kill();
    let watcher = cluster.client(READER_T).await;
    let dead_gone = tokio::spawn(async move {
        poll_until(T + Duration::from_secs(8), "/dead gone", || async {
            matches!(watcher.exists("/dead").await, Ok(None))
        })
        .await
    });

    let env = faketime_env(offset, fake_monotonic);
    let mut led_again = 0;
    for round in 0..ROUNDS {
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
        cluster.kill(leader);
        cluster.start_node_with(leader, &env);
        let now_leading = cluster.wait_for_leader(Duration::from_secs(15)).await;
        if now_leading == leader {
            led_again += 1;
        }
        eprintln!("round {round}: leader {leader} restarted with its clock {offset} (monotonic faked: {fake_monotonic}); {now_leading} leads");
        // Longer than a session timeout: an expiry on bad evidence shows.
        let until = Instant::now() + T + Duration::from_secs(1);
        while Instant::now() < until {
            for (id, r) in &readers {
                for (path, _) in &live {
                    assert!(
                        exists_on(r, path).await,
                        "round {round}: live session's {path} is gone on node {id}"
                    );
                }
            }
            for (path, h) in &mut live {
                assert!(
                    h.is_alive(),
                    "round {round}: the client holding {path} saw its session expire"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let gone = dead_gone.await.expect("poll task");
    eprintln!(
        "dead client's ephemeral gone {:?} after its kill (T {T:?}); the restarted node led again in {led_again} of {ROUNDS} rounds",
        gone.duration_since(killed)
    );
    assert!(
        led_again > 0,
        "the restarted node never led again: the fault was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_an_hour_ahead_expires_no_live_session() {
    leader_restarts_with_its_clock_moved("+1h", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_an_hour_ahead_on_the_wall_clock_only_expires_no_live_session() {
    leader_restarts_with_its_clock_moved("+1h", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_an_hour_behind_expires_no_live_session() {
    leader_restarts_with_its_clock_moved("-1h", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_an_hour_behind_on_the_wall_clock_only_expires_no_live_session() {
    leader_restarts_with_its_clock_moved("-1h", false).await;
}
