//! TLS for client and peer traffic (issue 10): with TLS on, a plaintext
//! client is refused and a TLS client works; members elect and replicate
//! over mutual TLS; a member whose certificate an untrusted CA signed can
//! not take part; client certificates are required when asked for; the CLI
//! and the health check speak TLS.
//!
//! Certificates come from `deploy/dev-certs` (openssl), a second run of it
//! into another directory being the untrusted CA.

use std::process::Command;
use std::time::{Duration, Instant};

use ensemble_client::{node_status_tls, Client, CreateMode, Options, TlsOptions};
use ensemble_tests::{bin, dev_certs, run_cli, tls_options, Cluster, ClusterOptions, ClusterTls};

const T: Duration = Duration::from_secs(5);

fn tls_cluster(client_auth: bool) -> ClusterOptions {
    ClusterOptions {
        tls: Some(ClusterTls { client_auth }),
        ..ClusterOptions::default()
    }
}

/// Opening a session with these TLS options must fail, and within the
/// connect timeout (plus slack), not hang.
async fn refused(cluster: &Cluster, tls: Option<TlsOptions>, what: &str) {
    let connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let result = Client::connect(
        &cluster.endpoints(),
        Options {
            session_timeout: T,
            connect_timeout,
            tls,
            ..Options::default()
        },
    )
    .await;
    let took = started.elapsed();
    assert!(result.is_err(), "{what}: a session was opened");
    assert!(
        took < connect_timeout + Duration::from_secs(5),
        "{what}: refusing took {took:?}"
    );
}

/// A client on `ids` with these TLS options.
async fn client(cluster: &Cluster, ids: &[u64], tls: TlsOptions) -> Client {
    let endpoints: Vec<String> = ids.iter().map(|id| cluster.endpoint(*id)).collect();
    Client::connect(
        &endpoints,
        Options {
            session_timeout: T,
            tls: Some(tls),
            ..Options::default()
        },
    )
    .await
    .expect("a TLS client opens a session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_on_plaintext_is_refused_and_tls_clients_work() {
    // Cluster::start waits for a ready leader that every member names, so
    // three members have elected and heard each other over mutual TLS.
    let cluster = Cluster::start(tls_cluster(false)).await;
    let tls = cluster.tls().unwrap();

    let writer = client(&cluster, &[1], tls.clone()).await;
    let (_, stat) = writer
        .create_with_stat("/secure", b"over tls".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    cluster.wait_applied_everywhere(stat.mzxid, T).await;
    let reader = client(&cluster, &[3], tls.clone()).await;
    reader.sync("/secure").await.unwrap();
    assert_eq!(reader.get("/secure").await.unwrap().0, b"over tls");

    refused(&cluster, None, "a plaintext client").await;
    let plain = node_status_tls(&cluster.endpoint(1), Duration::from_secs(1), false, None).await;
    assert!(plain.is_err(), "a plaintext status call was answered");
    // A client that trusts another CA does not accept the members.
    let other = cluster.dir().join("other-ca");
    dev_certs(&other, &[]);
    refused(
        &cluster,
        Some(tls_options(&other, false)),
        "a client trusting another CA",
    )
    .await;

    // The CLI: a one-shot command and `cluster status`, with --tls-ca.
    let endpoints = cluster.endpoints().join(",");
    let ca = cluster.certs_dir().join("ca.pem");
    let ca = ca.to_str().unwrap().to_string();
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&refs, "")
        })
    };
    let with = |rest: &[&str]| {
        let mut v = vec!["--endpoints".to_string(), endpoints.clone()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let (code, out, err) = cli(with(&["--tls-ca", &ca, "get", "/secure"])).await.unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("over tls"), "{out}");
    let (code, out, err) = cli(with(&["--tls-ca", &ca, "cluster", "status"])).await.unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.lines().filter(|l| !l.contains(" down")).count(), 3, "{out}");
    assert!(out.contains(" leader "), "{out}");
    let (code, out, _) = cli(with(&["cluster", "status"])).await.unwrap();
    assert_eq!(code, 1, "plaintext status answered: {out}");
    let (code, _, err) = cli(with(&["--tls-ca", "/no/such/ca.pem", "get", "/secure"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: ") && err.contains("--tls-ca") && err.contains("/no/such/ca.pem"),
        "{err}"
    );

    // The container health check: TLS flags (or ENSEMBLE_TLS_* variables).
    let health = |tls: bool| {
        let mut cmd = Command::new(bin("ensemble-test-server"));
        cmd.args(["healthcheck", "--ready", "--addr", &cluster.endpoint(2)]);
        cmd.env_remove("ENSEMBLE_TLS_CA")
            .env_remove("ENSEMBLE_TLS_CERT")
            .env_remove("ENSEMBLE_TLS_KEY");
        if tls {
            cmd.env("ENSEMBLE_TLS_CA", &ca);
        }
        cmd.output().unwrap()
    };
    let ok = health(true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!health(false).status.success(), "a plaintext health check passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_asked_for() {
    // The harness's own probes present client.pem here.
    let cluster = Cluster::start(tls_cluster(true)).await;
    let certs = cluster.certs_dir();

    refused(
        &cluster,
        Some(tls_options(&certs, false)),
        "a client without a certificate",
    )
    .await;
    let other = cluster.dir().join("other-ca");
    dev_certs(&other, &[]);
    // Its own CA plus the cluster's, so only its certificate is wrong.
    let mut foreign = tls_options(&other, true);
    foreign.ca_pem = tls_options(&certs, false).ca_pem;
    refused(
        &cluster,
        Some(foreign),
        "a client whose certificate another CA signed",
    )
    .await;
    let without = node_status_tls(
        &cluster.endpoint(1),
        Duration::from_secs(1),
        false,
        Some(&tls_options(&certs, false)),
    )
    .await;
    assert!(
        without.is_err(),
        "a status call without a certificate was answered"
    );

    let c = client(&cluster, &[1, 2, 3], tls_options(&certs, true)).await;
    c.create("/mtls", b"ok".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    assert_eq!(c.get("/mtls").await.unwrap().0, b"ok");

    // The CLI with a client certificate.
    let arg = |name: &str| certs.join(name).to_str().unwrap().to_string();
    let args = vec![
        "--endpoints".to_string(),
        cluster.endpoints().join(","),
        "--tls-ca".into(),
        arg("ca.pem"),
        "--tls-cert".into(),
        arg("client.pem"),
        "--tls-key".into(),
        arg("client.key"),
        "get".into(),
        "/mtls".into(),
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&refs, "")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("ok"), "{out}");

    // A container's health check presents the member's own certificate
    // (its ENSEMBLE_TLS_* variables), which passes client authentication.
    let health = |identity: bool| {
        let mut cmd = Command::new(bin("ensemble-test-server"));
        cmd.args(["healthcheck", "--ready", "--addr", &cluster.endpoint(2)])
            .env("ENSEMBLE_TLS_CA", arg("ca.pem"))
            .env_remove("ENSEMBLE_TLS_CERT")
            .env_remove("ENSEMBLE_TLS_KEY");
        if identity {
            cmd.env("ENSEMBLE_TLS_CERT", arg("ensemble2.pem"))
                .env("ENSEMBLE_TLS_KEY", arg("ensemble2.key"));
        }
        cmd.output().unwrap()
    };
    let ok = health(true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        !health(false).status.success(),
        "a health check without a certificate passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_an_untrusted_certificate_can_not_take_part() {
    let mut cluster = Cluster::start(tls_cluster(false)).await;
    let tls = cluster.tls().unwrap();
    let writer = client(&cluster, &[1, 2], tls.clone()).await;
    let (_, stat) = writer
        .create_with_stat("/before", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    cluster.wait_applied_everywhere(stat.mzxid, T).await;

    // Node 3 comes back with a certificate of another CA (it still trusts
    // the cluster's CA, so it is its certificate, not its trust, that is
    // wrong): the others refuse it as a caller and do not trust it as a
    // server.
    cluster.kill(3);
    let untrusted = cluster.dir().join("untrusted");
    dev_certs(&untrusted, &["ensemble3".to_string()]);
    let file = |name: &str| untrusted.join(name).to_str().unwrap().to_string();
    cluster.set_node_args(
        3,
        vec![
            "--tls-cert".into(),
            file("ensemble3.pem"),
            "--tls-key".into(),
            file("ensemble3.key"),
        ],
    );
    cluster.start_node(3);
    // Node 3's own listener shows the untrusted certificate: probe it
    // trusting both CAs.
    let mut probe_tls = tls.clone();
    probe_tls
        .ca_pem
        .extend(std::fs::read(untrusted.join("ca.pem")).unwrap());
    let node3 = cluster.endpoint(3);
    let probe = || node_status_tls(&node3, Duration::from_secs(1), false, Some(&probe_tls));
    let before = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = probe().await {
                break s;
            }
            assert!(Instant::now() < deadline, "node 3 did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // The other two go on committing without it.
    let (_, stat) = writer
        .create_with_stat("/after", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let after = stat.mzxid;
    for id in [1, 2] {
        ensemble_tests::poll_until(T, "nodes 1 and 2 apply the write", || async {
            cluster.status(id).await.is_some_and(|s| s.applied_zxid >= after)
        })
        .await;
    }
    assert!(before.applied_zxid < after);

    // Observation window: a member that could talk to the leader would
    // apply the write within a heartbeat or two (100 ms here); for 30
    // heartbeats node 3 answers probes but never applies it.
    let window = Duration::from_secs(3);
    let end = Instant::now() + window;
    let mut answers = 0;
    while Instant::now() < end {
        if let Ok(s) = probe().await {
            answers += 1;
            assert!(
                s.applied_zxid < after,
                "node 3 applied {} (>= {after}) with an untrusted certificate",
                s.applied_zxid
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answers >= 10,
        "node 3 answered only {answers} probes: nothing was observed"
    );

    // Control: with the cluster's certificate again it catches up, so the
    // window above was long enough to see it apply had it been trusted.
    cluster.kill(3);
    cluster.set_node_args(3, vec![]);
    cluster.start_node(3);
    cluster
        .wait_applied_everywhere(after, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refuses_to_start_with_unusable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    dev_certs(&certs, &["ensemble1".to_string()]);
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    for (cert, key, ca, says) in [
        (
            "certs/ensemble1.pem",
            "certs/ensemble1.key",
            "garbage.pem",
            "--tls-ca",
        ),
        ("certs/ensemble1.pem", "no-such.key", "certs/ca.pem", "--tls-key"),
        ("garbage.pem", "certs/ensemble1.key", "certs/ca.pem", "--tls-cert"),
        // Both valid PEM, but the key is not the certificate's.
        (
            "certs/ensemble1.pem",
            "certs/client.key",
            "certs/ca.pem",
            "--tls-key",
        ),
    ] {
        let out = Command::new(bin("ensemble-test-server"))
            .args([
                "--id",
                "1",
                "--peers",
                "1=127.0.0.1:1/127.0.0.1:2",
                "--metrics-addr",
                "off",
            ])
            .args(["--data-dir", &path("data")])
            .args([
                "--tls-cert",
                &path(cert),
                "--tls-key",
                &path(key),
                "--tls-ca",
                &path(ca),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
