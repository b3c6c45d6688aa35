//! Election and lock recipes against a real cluster (issue 3, acceptance
//! points 3 and 4): one leader at a time, fencing tokens that only grow,
//! mutual exclusion under contention.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_client::recipes::ensure_path;
use ensemble_client::recipes::lock::Lock;
use ensemble_client::{Client, CreateMode};
use ensemble_tests::{poll_until, CliProc, Cluster, ClusterOptions};

fn token_of(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("token="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_to_one_leader_at_a_time() {
    let t = Duration::from_secs(2);
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let endpoints = cluster.endpoints().join(",");
    let timeout = t.as_millis().to_string();
    let mut candidates: Vec<CliProc> = (0..3)
        .map(|i| {
            let value = format!("candidate-{i}");
            CliProc::spawn(&[
                "--endpoints",
                &endpoints,
                "--session-timeout",
                &timeout,
                "elect",
                "e1",
                "--value",
                &value,
            ])
        })
        .collect();
    let mut alive: Vec<usize> = vec![0, 1, 2];
    let mut tokens = Vec::new();
    let mut killed_at: Option<Instant> = None;
    for round in 0..3 {
        // Exactly one live candidate leads.
        let leader = {
            let within = if round == 0 {
                Duration::from_secs(20)
            } else {
                t + Duration::from_secs(2)
            };
            let deadline = Instant::now() + within;
            loop {
                let leading: Vec<usize> = alive
                    .iter()
                    .copied()
                    .filter(|i| candidates[*i].line_starting("LEADER").is_some())
                    .collect();
                assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
                if let Some(l) = leading.first() {
                    break *l;
                }
                assert!(
                    Instant::now() < deadline,
                    "no new leader within {within:?} (round {round})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (at, line) = candidates[leader].line_starting("LEADER").unwrap();
        if let Some(k) = killed_at {
            let gap = at.duration_since(k);
            eprintln!("round {round}: candidate {leader} leads {gap:?} after the previous leader was killed");
            assert!(gap <= t + Duration::from_secs(2), "handover took {gap:?}");
        }
        tokens.push(token_of(&line));
        killed_at = Some(candidates[leader].kill());
        alive.retain(|i| *i != leader);
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must increase: {tokens:?}"
    );
}

/// The resource the lock protects: it refuses stale tokens and notices overlap.
#[derive(Default)]
struct Guarded {
    counter: u64,
    highest_token: u64,
    holder: Option<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_gives_exclusive_access_and_growing_tokens() {
    const CONTENDERS: usize = 10;
    const ROUNDS: usize = 50;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let resource = Arc::new(Mutex::new(Guarded::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for who in 0..CONTENDERS {
        let client: Client = cluster.client(Duration::from_secs(10)).await;
        let resource = resource.clone();
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(&client, "/locks/counter");
            for _ in 0..ROUNDS {
                let guard = lock.acquire().await.expect("acquire");
                let before = {
                    let mut r = resource.lock().unwrap();
                    assert!(
                        r.holder.is_none(),
                        "{who} got the lock while {:?} held it",
                        r.holder
                    );
                    assert!(
                        guard.token() > r.highest_token,
                        "stale token {} <= {}",
                        guard.token(),
                        r.highest_token
                    );
                    r.highest_token = guard.token();
                    r.holder = Some(who);
                    r.counter
                };
                // Read-modify-write with a gap: only exclusion keeps it exact.
                tokio::task::yield_now().await;
                {
                    let mut r = resource.lock().unwrap();
                    r.counter = before + 1;
                    r.holder = None;
                }
                guard.release().await.expect("release");
            }
            client.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("contender");
    }
    let elapsed = started.elapsed();
    let total = (CONTENDERS * ROUNDS) as u64;
    eprintln!(
        "{total} lock acquisitions in {elapsed:?} ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(resource.lock().unwrap().counter, total);
    let check = cluster.client(Duration::from_secs(10)).await;
    poll_until(Duration::from_secs(5), "the lock directory is empty", || async {
        check
            .children("/locks/counter")
            .await
            .map(|(c, _)| c.is_empty())
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_ignores_children_that_are_not_tickets() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let a = cluster.client(Duration::from_secs(10)).await;
    let b = cluster.client(Duration::from_secs(10)).await;
    ensure_path(&a, "/locks/intl").await.unwrap();
    // Names that are not tickets, some non-ASCII (no byte offset of them
    // may be sliced), one ending like a ticket's sequence number.
    for name in ["é", "日本", "日本語のロック", "n-日本-0000000000", "0000000000"] {
        a.create(&format!("/locks/intl/{name}"), vec![], CreateMode::Persistent)
            .await
            .unwrap();
    }
    let within = Duration::from_secs(10);
    let first = tokio::time::timeout(within, Lock::new(&a, "/locks/intl").acquire())
        .await
        .expect("the first contender gets the lock in time")
        .expect("acquire");
    let second = Lock::new(&b, "/locks/intl");
    assert!(
        second
            .acquire_within(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "the lock is held"
    );
    let waiting = tokio::spawn(async move { second.acquire().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first_token = first.token();
    first.release().await.unwrap();
    let next = tokio::time::timeout(within, waiting)
        .await
        .expect("the second contender gets the lock in time")
        .unwrap()
        .expect("acquire");
    assert!(next.token() > first_token, "tokens grow");
    next.release().await.unwrap();
}
