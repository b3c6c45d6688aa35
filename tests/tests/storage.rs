//! Storage faults (hardening, acceptance 5 and 6): a full disk stops the
//! node at once, non-zero, and it rejoins once space is freed with nothing
//! acknowledged lost; a node whose log lost its tail refuses to start; a
//! wiped lowest-id node joins the cluster it belongs to instead of
//! initializing a new one. The full-disk test mounts a tmpfs (root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ensemble_client::{Client, CreateMode, Zxid};
use ensemble_tests::fault::workload::converged;
use ensemble_tests::{Cluster, ClusterOptions};

const T: Duration = Duration::from_secs(10);

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("ensemble-disk-")
            .tempdir()
            .expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk, leaving `free` bytes; returns the filler file.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(free)).expect("shrink filler");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

async fn a_follower(cluster: &Cluster) -> (u64, Vec<u64>) {
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let others = (1..=3).filter(|id| *id != follower).collect();
    (follower, others)
}

/// Waits until node `id` is ready and has applied `zxid`; every node then
/// holds the same state.
async fn caught_up(cluster: &Cluster, id: u64, zxid: Zxid, within: Duration) -> Duration {
    let start = Instant::now();
    ensemble_tests::poll_until(within, &format!("node {id} caught up"), || async {
        cluster
            .status(id)
            .await
            .is_some_and(|s| s.ready && s.applied_zxid >= zxid)
    })
    .await;
    let problems = converged(&cluster.endpoints()).await;
    assert!(problems.is_empty(), "{problems:?}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_and_it_rejoins_once_space_is_freed() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let (victim, others) = a_follower(&cluster).await;
    cluster.kill(victim);
    let disk = Tmpfs::mount(96);
    cluster.move_data_dir(victim, disk.path());
    cluster.start_node(victim);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let writer = cluster.client_on(&others, T).await;
    writer
        .create("/full", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let filler = disk.fill_leaving(3 << 20);

    // Big writes until the node's disk refuses them; the others go on.
    let started = Instant::now();
    let mut acked = Vec::new();
    let mut exited = None;
    for i in 0..60 {
        let path = format!("/full/z{i:03}");
        writer
            .create(&path, vec![i as u8; 1 << 20], CreateMode::Persistent)
            .await
            .unwrap_or_else(|e| panic!("write {i} while node {victim}'s disk is full: {e}"));
        acked.push(path);
        if let Some(e) = cluster.wait_exit(victim, Duration::from_millis(10)).await {
            exited = Some(e);
            break;
        }
    }
    let (code, at) = match exited {
        Some(e) => e,
        None => cluster
            .wait_exit(victim, Duration::from_secs(10))
            .await
            .expect("the node with the full disk did not stop"),
    };
    eprintln!(
        "node {victim} exited with {code} {:?} after the big writes began ({} acknowledged)",
        at - started,
        acked.len()
    );
    assert_ne!(code, 0);
    let log = cluster.log(victim);
    assert!(log.contains("No space left on device"), "the log names the cause");
    assert!(
        log.contains(&disk.path().display().to_string()),
        "the log names the data directory"
    );
    // The others keep acknowledging writes.
    writer
        .create("/full/after", vec![1], CreateMode::Persistent)
        .await
        .unwrap();
    acked.push("/full/after".into());

    std::fs::remove_file(filler).expect("free the space");
    cluster.start_node(victim);
    let zxid = writer.last_zxid();
    let took = caught_up(&cluster, victim, zxid, Duration::from_secs(60)).await;
    eprintln!("node {victim} rejoined and caught up {took:?} after its restart");
    let on_victim = cluster.client_on(&[victim], T).await;
    for path in &acked {
        assert!(
            on_victim.exists(path).await.unwrap().is_some(),
            "acknowledged {path} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_lost_its_tail_refuses_to_start() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let (victim, others) = a_follower(&cluster).await;
    let writer = cluster.client_on(&others, T).await;
    for i in 0..40 {
        writer
            .create(&format!("/w{i}"), vec![], CreateMode::Persistent)
            .await
            .unwrap();
    }
    cluster
        .wait_applied_everywhere(writer.last_zxid(), Duration::from_secs(10))
        .await;
    cluster.kill(victim);
    // What sled does to a damaged tail when it opens: the newest entries
    // are gone, silently.
    {
        let db = sled::open(cluster.data_dir(victim).join("sled")).expect("open the stopped node's sled");
        let log = db.open_tree("log").expect("log tree");
        for _ in 0..10 {
            log.pop_max().expect("pop");
        }
        db.flush().expect("flush");
    }
    cluster.start_node(victim);
    let (code, _) = cluster
        .wait_exit(victim, Duration::from_secs(20))
        .await
        .expect("the node started with a shorter log");
    assert_ne!(code, 0);
    let log = cluster.log(victim);
    assert!(
        log.contains("holds less than this node acknowledged") && log.contains("remove the data directory"),
        "the message names the problem and the fix"
    );
    writer
        .create("/meanwhile", vec![], CreateMode::Persistent)
        .await
        .unwrap();

    // The fix the message names: an empty data directory rejoins.
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wipe");
    cluster.start_node(victim);
    caught_up(&cluster, victim, writer.last_zxid(), Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_lowest_id_node_joins_its_cluster_instead_of_starting_a_new_one() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    for i in 0..20 {
        c.create(&format!("/kept{i}"), vec![i], CreateMode::Persistent)
            .await
            .unwrap();
    }
    cluster.kill(1);
    std::fs::remove_dir_all(cluster.data_dir(1)).expect("wipe node 1");
    let log_before = cluster.log(1).len();
    cluster.start_node(1);
    let survivor = (2..=3u64).collect::<Vec<_>>();
    let w = cluster.client_on(&survivor, T).await;
    w.create("/after-wipe", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    caught_up(&cluster, 1, w.last_zxid(), Duration::from_secs(60)).await;
    let since = cluster.log(1)[log_before..].to_string();
    assert!(!since.contains("initializing a new cluster"), "{since}");
    assert!(since.contains("already belongs to a cluster"), "{since}");
    let on_1 = Client::connect(&[cluster.endpoint(1)], Default::default())
        .await
        .unwrap();
    assert_eq!(on_1.get("/kept7").await.unwrap().0, vec![7]);
}
