//! Runs the `ensemble-bench` binary against a real three-node cluster (the
//! `ensemble-tests` harness) and checks what it reports.
//!
//! The harness starts `ensemble-test-server`, a binary of the
//! `ensemble-tests` package: `cargo test --workspace` builds it; on its own,
//! run `cargo build -p ensemble-tests --bins` first.

use std::time::Duration;

use ensemble_tests::{Cluster, ClusterOptions};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_ensemble-bench");

/// Runs ensemble-bench; returns its exit code, stdout and stderr.
async fn bench(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BENCH)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ensemble-bench finished within 60 s")
    .expect("ensemble-bench ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one JSON line of a run's output.
fn json_line(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "one JSON line expected in:\n{stdout}");
    serde_json::from_str(lines[0]).expect("the JSON line parses")
}

/// Starts a cluster, runs ensemble-bench against it with `args`, checks
/// that it succeeded and returns its JSON line.
async fn run_against_cluster(args: &[&str]) -> (Value, String) {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    assert!(
        dir.join("ensemble-test-server").exists(),
        "{} is missing: build it with `cargo build -p ensemble-tests --bins` (cargo test --workspace does)",
        dir.join("ensemble-test-server").display()
    );
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let endpoints = cluster.endpoints().join(",");
    let mut all = vec!["--endpoints", endpoints.as_str(), "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = bench(&all).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    (json_line(&out), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_reports_ops_and_no_errors() {
    let (r, out) =
        run_against_cluster(&["create", "--clients", "4", "--duration", "1", "--warmup", "0.2"]).await;
    assert_eq!(r["backend"], "ensemble");
    assert_eq!(r["workload"], "create");
    assert_eq!(r["clients"], 4);
    assert!(r["ops"].as_u64().expect("ops") > 0, "{r}");
    assert!(r["ops_per_sec"].as_f64().expect("ops_per_sec") > 0.0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let p99 = r["latency_ms"]["p99"].as_f64().expect("p99");
    assert!(
        p99 > 0.0 && p99 <= r["latency_ms"]["max"].as_f64().expect("max"),
        "{r}"
    );
    // The table is printed too.
    assert!(out.contains("ops/s") && out.contains("create"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_takes_about_the_session_timeout() {
    let (r, _) = run_against_cluster(&["--session-timeout-ms", "2000", "expiry", "--rounds", "1"]).await;
    assert_eq!(r["workload"], "expiry");
    assert_eq!(r["errors"], 0, "{r}");
    let t = r["extra"]["timeout_ms"].as_f64().expect("timeout_ms");
    assert_eq!(t, 2000.0, "{r}");
    let round = &r["extra"]["rounds"][0];
    let after_ack = round["last_ack_to_gone_ms"]
        .as_f64()
        .expect("last_ack_to_gone_ms");
    let after_kill = round["kill_to_gone_ms"].as_f64().expect("kill_to_gone_ms");
    // About T after the cluster last heard from the holder (a few tens of
    // ms early have been seen: the bound here is loose), and not much
    // later (this cluster's tick is 50 ms).
    assert!(
        after_ack >= 0.9 * t,
        "gone {after_ack} ms after the last ack, T = {t}: {r}"
    );
    assert!(
        after_kill <= t + 1500.0,
        "gone {after_kill} ms after the kill, T = {t}: {r}"
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let (code, _, err) = bench(&["frobnicate"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("frobnicate"), "{err}");
    let (code, _, err) = bench(&["--endpoints", "localhost", "set"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bad endpoint \"localhost\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = bench(&["--backend", "etcd", "watch"]).await;
    assert_eq!(code, 1);
    assert!(!err.contains("panicked"), "{err}");
}
