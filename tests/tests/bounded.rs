//! What one stranger can hold on a member's client port is bounded
//! (issue 15, acceptance 6): one connection opening 100 000 session
//! streams, and 5 000 connections that never start their TLS handshake,
//! while a normal client goes on reading. The member advertises at most
//! `max_streams_per_connection` streams, closes connections past
//! `max_connections` at once and handshakes that outlast
//! `tls_handshake_timeout_ms`; its memory stays within a stated bound and
//! the normal client's reads stay fast. The figures are printed.

use std::time::{Duration, Instant};

use ensemble_client::{Client, CreateMode, Options};
use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_tests::{poll_until, Cluster, ClusterOptions, ClusterTls};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const STREAMS: usize = 100_000;
const STALLED: usize = 5_000;
const MAX_CONNECTIONS: usize = 3_000;
const HANDSHAKE_MS: u64 = 5_000;
/// The most the member's resident memory may grow by under both floods.
const MEMORY_BOUND_MIB: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_streams_and_stalled_handshakes_stay_bounded_and_reads_stay_fast() {
    let options = ClusterOptions {
        tls: Some(ClusterTls::default()),
        extra_args: vec![
            "--max-connections".into(),
            MAX_CONNECTIONS.to_string(),
            "--tls-handshake-timeout-ms".into(),
            HANDSHAKE_MS.to_string(),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await;
    let target = 1;
    let addr = cluster.endpoint(target);
    let client_options = Options {
        tls: cluster.tls(),
        ..Options::default()
    };
    let reader = Client::connect(std::slice::from_ref(&addr), client_options)
        .await
        .unwrap();
    reader
        .create("/probe", b"x".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    let rss_before = cluster.rss_kib(target).unwrap();
    let fds_before = cluster.open_fds(target).unwrap();

    // Flood 1: one connection, 100 000 session streams that never speak.
    let ca = std::fs::read(cluster.certs_dir().join("ca.pem")).unwrap();
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let mut c = EnsembleClient::new(channel.clone());
        let mut stop = stop_rx.clone();
        let opened = opened.clone();
        flood.spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::SessionRequest>(1);
            let answer = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
            if answer.is_ok() {
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = stop.wait_for(|s| *s).await;
            drop((tx, answer));
        });
    }

    // Flood 2: 5 000 connections that never start a TLS handshake.
    let flood_start = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            stalled.push(s);
        }
    }
    let connected = stalled.len();
    let connect_took = flood_start.elapsed();

    // Connections past the limit are closed at once: they read end of
    // stream, while those within it wait for their handshake to time out.
    let over = connected.saturating_sub(MAX_CONNECTIONS);
    let mut closed = vec![false; connected];
    let closed_at_once = {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            for (i, s) in stalled.iter_mut().enumerate() {
                let mut b = [0u8; 1];
                if !closed[i] && matches!(s.try_read(&mut b), Ok(0)) {
                    closed[i] = true;
                }
            }
            let n = closed.iter().filter(|c| **c).count();
            if n >= over || Instant::now() >= deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let open_at_once = connected - closed_at_once;

    // Meanwhile a normal client reads.
    let mut took = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let start = Instant::now();
        reader
            .get("/probe")
            .await
            .expect("a normal read during the floods");
        took.push(start.elapsed());
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    let rss_during = cluster.rss_kib(target).unwrap();
    let streams_open = opened.load(std::sync::atomic::Ordering::Relaxed);

    // Stalled handshakes are dropped after the timeout: the member's file
    // descriptors come back to about where they were.
    let dropped = poll_until(
        Duration::from_millis(HANDSHAKE_MS) + Duration::from_secs(15),
        "stalled handshakes dropped",
        || async { cluster.open_fds(target).unwrap() < fds_before + 200 },
    )
    .await;
    let _ = stop_tx.send(true);
    while flood.join_next().await.is_some() {}
    drop(channel);
    drop(stalled);
    let rss_after = cluster.rss_kib(target).unwrap();

    println!(
        "bounded: {streams_open} of {STREAMS} streams opened on one connection; {connected} stalled connections (in {connect_took:?}), \
         {closed_at_once} closed at once, {open_at_once} left to time out; get p99 {:.2} ms ({} reads); member RSS {} MiB before, {} MiB during, \
         {} MiB after; stalled handshakes dropped {:?} after the reads",
        p99.as_secs_f64() * 1000.0,
        took.len(),
        rss_before / 1024,
        rss_during / 1024,
        rss_after / 1024,
        dropped.duration_since(end),
    );
    assert!(
        streams_open <= 1000,
        "{streams_open} streams open on one connection: the limit is 1000"
    );
    assert!(streams_open > 0, "no stream opened at all: nothing was tested");
    assert!(
        closed_at_once >= over,
        "only {closed_at_once} of {connected} connections were closed at once (limit {MAX_CONNECTIONS})"
    );
    if connect_took < Duration::from_millis(HANDSHAKE_MS / 2) {
        // Those within the limit waited for the handshake's time limit.
        assert!(
            open_at_once + 50 >= MAX_CONNECTIONS.min(connected) - 10,
            "connections within the limit were closed before their handshake timed out"
        );
    }
    assert!(
        rss_during.saturating_sub(rss_before) < MEMORY_BOUND_MIB * 1024,
        "the member grew by {} MiB under the floods (bound {MEMORY_BOUND_MIB} MiB)",
        (rss_during - rss_before) / 1024
    );
    assert!(
        p99 < Duration::from_millis(10),
        "get p99 {p99:?} during the floods"
    );
    assert!(cluster.is_running(target));
}
