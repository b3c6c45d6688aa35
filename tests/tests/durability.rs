//! Crashes and catch-up: acknowledged writes survive `kill -9` of every node,
//! and a follower that missed thousands of writes catches up by snapshot
//! (acceptance points 6 and 9 of the replicated core).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_client::{Client, CreateMode, Options};
use ensemble_tests::{poll_until, Cluster, ClusterOptions};

const T: Duration = Duration::from_secs(10);

fn quick() -> Options {
    Options {
        session_timeout: T,
        connect_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// Writers that create znodes until stopped; returns what was acknowledged.
async fn write_load(
    cluster: &Cluster,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, Vec<u8>)>>> {
    let mut handles = Vec::new();
    for w in 0..writers {
        let client = Client::connect(&cluster.endpoints(), quick())
            .await
            .expect("connect");
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/load/w{w}-{i}");
                let data = format!("{w}:{i}").into_bytes();
                match client.create(&path, data.clone(), CreateMode::Persistent).await {
                    Ok(p) => acked.push((p, data)),
                    // Unknown outcomes and refusals are fine; only acks count.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                i += 1;
            }
            acked
        }));
    }
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let setup = cluster.client(T).await;
    setup
        .create("/load", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let mut acked = Vec::new();
    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = write_load(&cluster, 8, stop.clone()).await;
        // Let the load run until plenty is acknowledged, then crash everything mid-load.
        let probe = cluster.client(T).await;
        poll_until(Duration::from_secs(30), "load under way", || async {
            probe
                .children("/load")
                .await
                .map(|(c, _)| c.len() >= 300 * (round + 1))
                .unwrap_or(false)
        })
        .await;
        for id in 1..=3 {
            cluster.kill(id);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            acked.extend(w.await.expect("writer"));
        }
        for id in 1..=3 {
            cluster.start_node(id);
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        eprintln!("round {round}: {} writes acknowledged so far", acked.len());
    }
    let check = Client::connect(&cluster.endpoints(), quick()).await.unwrap();
    for (path, data) in &acked {
        let got = check
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {path} lost: {e}"));
        assert_eq!(&got.0, data, "{path}");
    }
    for id in 1..=3 {
        assert!(cluster.status(id).await.is_some(), "node {id} did not come back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_catches_up_by_snapshot() {
    let options = ClusterOptions {
        snapshot_entries: 200,
        log_keep_entries: 20,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let lagging_at = cluster.status(follower).await.unwrap().last_log_zxid;
    cluster.kill(follower);

    let live: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    let setup = cluster.client_on(&live, T).await;
    setup
        .create("/bulk", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let done = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let c = cluster.client_on(&live, T).await;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                c.create(
                    &format!("/bulk/{w}-{i}"),
                    vec![w as u8; 16],
                    CreateMode::Persistent,
                )
                .await
                .unwrap();
                *done.lock().unwrap() += 1;
            }
            c.set("/bulk", vec![w as u8], -1).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "10000 creates by 16 clients in {elapsed:?} ({:.0}/s)",
        10_000.0 / elapsed.as_secs_f64()
    );
    let leader_status = cluster.status(leader).await.unwrap();
    assert!(
        leader_status.purged_zxid > lagging_at,
        "the leader purged its log past the follower's end ({} <= {lagging_at})",
        leader_status.purged_zxid
    );

    cluster.start_node(follower);
    let target = leader_status.applied_zxid;
    cluster
        .wait_applied_everywhere(target, Duration::from_secs(60))
        .await;
    let caught_up = cluster.status(follower).await.unwrap();
    assert!(
        caught_up.snapshot_zxid > lagging_at,
        "the follower installed a snapshot"
    );

    // No writes in flight: every node holds the same tree.
    let problems = ensemble_tests::fault::workload::converged(&cluster.endpoints()).await;
    assert!(problems.is_empty(), "{problems:?}");
    let on_follower = cluster.client_on(&[follower], T).await;
    assert_eq!(on_follower.children("/bulk").await.unwrap().0.len(), 10_000);
}
