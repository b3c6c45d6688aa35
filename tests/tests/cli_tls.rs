//! The CLI says when it and the cluster disagree about TLS (issue 15,
//! point 7): without `--tls-ca` against a TLS cluster, and with it against
//! a plaintext one, a command fails within 2 s with a non-zero exit and a
//! message that names TLS and the flag to change, instead of waiting out
//! the connect timeout and reporting a lost connection.

use std::time::{Duration, Instant};

use ensemble_client::{Client, Error, Options};
use ensemble_tests::{dev_certs, run_cli, Cluster, ClusterOptions, ClusterTls};

/// Runs the CLI off the async workers; (exit code, stdout, stderr, time taken).
async fn cli(args: Vec<String>) -> (i32, String, String, Duration) {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (code, out, err) = run_cli(&refs, "");
        (code, out, err, started.elapsed())
    })
    .await
    .unwrap()
}

/// The CLI's budget: 2 s to say what is wrong (plus process start-up).
const WITHIN: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn a_plaintext_cli_against_a_tls_cluster_says_pass_tls_ca() {
    let cluster = Cluster::start(ClusterOptions {
        tls: Some(ClusterTls::default()),
        ..ClusterOptions::default()
    })
    .await;
    let endpoints = cluster.endpoints().join(",");

    let (code, out, err, took) = cli(vec![
        "--endpoints".into(),
        endpoints.clone(),
        "get".into(),
        "/".into(),
    ])
    .await;
    assert_ne!(code, 0, "stdout: {out}");
    assert!(took < WITHIN, "the CLI took {took:?} to fail: {err}");
    assert!(
        err.contains("speaks TLS") && err.contains("--tls-ca"),
        "stderr: {err}"
    );
    assert!(
        err.contains(&cluster.endpoint(1))
            || err.contains(&cluster.endpoint(2))
            || err.contains(&cluster.endpoint(3)),
        "{err}"
    );
    assert!(!err.contains("operation was canceled"), "{err}");

    // `cluster status` says it per node.
    let (_, out, err, took) = cli(vec![
        "--endpoints".into(),
        endpoints,
        "cluster".into(),
        "status".into(),
    ])
    .await;
    assert!(took < Duration::from_secs(5), "cluster status took {took:?}");
    assert_eq!(
        out.matches("speaks TLS").count(),
        3,
        "stdout: {out}\nstderr: {err}"
    );

    // The library: a terminal error, not CONNECTION_LOSS after the 15 s timeout.
    let started = Instant::now();
    let e = Client::connect(&cluster.endpoints(), Options::default())
        .await
        .err()
        .expect("a session over plaintext");
    assert!(matches!(e, Error::TlsMismatch(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // With the CA the same command works.
    let ca = cluster.certs_dir().join("ca.pem").display().to_string();
    let (code, _, err, _) = cli(vec![
        "--endpoints".into(),
        cluster.endpoints().join(","),
        "--tls-ca".into(),
        ca,
        "get".into(),
        "/".into(),
    ])
    .await;
    assert_eq!(code, 0, "stderr: {err}");
}

#[tokio::test]
async fn a_tls_cli_against_a_plaintext_cluster_says_it_does_not_speak_tls() {
    let certs = tempfile::tempdir().unwrap();
    dev_certs(certs.path(), &[]);
    let ca = certs.path().join("ca.pem").display().to_string();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    })
    .await;

    let (code, out, err, took) = cli(vec![
        "--endpoints".into(),
        cluster.endpoint(1),
        "--tls-ca".into(),
        ca,
        "get".into(),
        "/".into(),
    ])
    .await;
    assert_ne!(code, 0, "stdout: {out}");
    assert!(took < WITHIN, "the CLI took {took:?} to fail: {err}");
    assert!(
        err.contains(&format!("{} does not speak TLS", cluster.endpoint(1))) && err.contains("--tls-ca"),
        "stderr: {err}"
    );
}

/// A TLS cluster whose certificates another CA signed: the message says
/// the certificate is not trusted and names --tls-ca.
#[tokio::test]
async fn a_cli_trusting_another_ca_says_the_certificate_is_not_trusted() {
    let other = tempfile::tempdir().unwrap();
    dev_certs(other.path(), &[]);
    let wrong_ca = other.path().join("ca.pem").display().to_string();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        tls: Some(ClusterTls::default()),
        ..ClusterOptions::default()
    })
    .await;
    let (code, out, err, took) = cli(vec![
        "--endpoints".into(),
        cluster.endpoint(1),
        "--tls-ca".into(),
        wrong_ca,
        "get".into(),
        "/".into(),
    ])
    .await;
    assert_ne!(code, 0, "stdout: {out}");
    assert!(took < WITHIN, "the CLI took {took:?} to fail: {err}");
    assert!(
        err.contains("not trusted") && err.contains("--tls-ca"),
        "stderr: {err}"
    );
}
