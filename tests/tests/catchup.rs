//! Replication sized by bytes (hardening, acceptance 4): a follower that
//! was down while hundreds of MiB were written catches up, by log or by
//! snapshot, within 60 s of its restart, with no change of term, and holds
//! the same state as the others.

use std::time::{Duration, Instant};

use ensemble_client::{CreateMode, ErrorCode, Zxid};
use ensemble_tests::fault::workload::converged;
use ensemble_tests::{poll_until, Cluster, ClusterOptions};

const T: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

/// Stops a follower, writes `count` znodes of 1 MiB through the others,
/// restarts the follower and checks how it catches up.
async fn catch_up(options: ClusterOptions, count: usize, by_snapshot: bool) {
    let mut cluster = Cluster::start(options).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let behind_from = cluster.status(victim).await.expect("status").last_log_zxid;
    cluster.kill(victim);

    let setup = cluster.client_on(&others, T).await;
    setup
        .create("/big", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let started = Instant::now();
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = cluster.client_on(&others, T).await;
        tasks.push(tokio::spawn(async move {
            let mut unknown = 0;
            for i in (w..count).step_by(writers) {
                let path = format!("/big/z{i:04}");
                let mut retried = false;
                loop {
                    match c.create(&path, vec![i as u8; MIB], CreateMode::Persistent).await {
                        Ok(_) => break,
                        // The earlier attempt was still on its way and landed.
                        Err(e) if retried && e.code() == ErrorCode::NodeExists => break,
                        // An outcome the client could not know: find out.
                        Err(e)
                            if e.code() == ErrorCode::ConnectionLoss
                                || e.code() == ErrorCode::OperationTimeout =>
                        {
                            unknown += 1;
                            if matches!(c.exists(&path).await, Ok(Some(_))) {
                                break;
                            }
                            retried = true;
                        }
                        Err(e) => panic!("write {i}: {e}"),
                    }
                }
            }
            (c.last_zxid(), unknown)
        }));
    }
    let (mut zxid, mut unknown) = (Zxid(0), 0);
    for t in tasks {
        let (z, u) = t.await.expect("writer");
        zxid = zxid.max(z);
        unknown += u;
    }
    eprintln!(
        "{count} MiB written in {:?} while node {victim} was down ({unknown} writes with an unknown outcome, checked)",
        started.elapsed()
    );
    cluster
        .wait_applied_everywhere(zxid, Duration::from_secs(60))
        .await;
    if by_snapshot {
        // The snapshot is taken and the log purged in the background.
        poll_until(
            Duration::from_secs(60),
            "the leader purged its log past the follower's end",
            || async {
                cluster
                    .status(leader)
                    .await
                    .is_some_and(|s| s.purged_zxid > behind_from)
            },
        )
        .await;
    }
    let before = cluster.status(leader).await.expect("leader status");

    cluster.start_node(victim);
    let restarted = Instant::now();
    poll_until(Duration::from_secs(60), "the follower caught up", || async {
        cluster
            .status(victim)
            .await
            .is_some_and(|s| s.ready && s.applied_zxid >= zxid)
    })
    .await;
    let took = restarted.elapsed();
    let after = cluster.status(victim).await.expect("status");
    eprintln!(
        "node {victim} ({} entries behind, purged {} on the leader) ready {took:?} after its restart; snapshot at {}",
        zxid.0 - behind_from.0,
        before.purged_zxid,
        after.snapshot_zxid
    );
    for id in 1..=3 {
        let s = cluster.status(id).await.expect("status");
        assert_eq!(
            s.term, before.term,
            "node {id}: the term changed while the follower caught up"
        );
    }
    let problems = converged(&cluster.endpoints()).await;
    assert!(problems.is_empty(), "{problems:?}");
    let c = cluster.client_on(&[victim], T).await;
    assert_eq!(c.children("/big").await.unwrap().0.len(), count);
    assert_eq!(c.get("/big/z0007").await.unwrap().0, vec![7u8; MIB]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_200_mib_behind_catches_up_by_log_without_an_election() {
    catch_up(ClusterOptions::default(), 200, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_500_mib_snapshot_catches_up_without_an_election() {
    // One snapshot, after about 500 entries of 1 MiB, and the log purged
    // behind it: the follower can only catch up from the snapshot.
    let options = ClusterOptions {
        snapshot_entries: 500,
        log_keep_entries: 10,
        ..ClusterOptions::default()
    };
    catch_up(options, 520, true).await;
}
