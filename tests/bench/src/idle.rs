//! `idle-sessions N`: what idle sessions cost the servers. Each server's
//! resident memory is read before the sessions open; N sessions are opened
//! (round-robin over the nodes) and left alone but for their heartbeats;
//! after the warmup, each server's CPU time is read over the duration, and
//! its memory again at the end. Reported per server: CPU % of one core and
//! RSS growth per session (every node holds every session in its table;
//! the node serving a session's stream holds that stream too).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ensemble_client::Client;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::backend::ensemble_options;
use crate::procs;
use crate::report::{record, Counters, Progress, Report, Tally};
use crate::Settings;

struct Server {
    endpoint: String,
    pid: u32,
    rss_before: u64,
}

fn cpu_all(servers: &[Server]) -> Result<Vec<f64>> {
    servers
        .iter()
        .map(|s| {
            procs::cpu_seconds(s.pid)
                .with_context(|| format!("reading CPU time of pid {} ({})", s.pid, s.endpoint))
        })
        .collect()
}

pub async fn run(s: &Settings, sessions: usize, given_pids: &[u32], concurrency: usize) -> Result<Report> {
    if sessions == 0 {
        bail!("idle-sessions needs a number of sessions above 0");
    }
    // No check of the open-file limit: the client library shares one
    // connection per node among this process's sessions.
    let pids = procs::server_pids(&s.endpoints, given_pids)?;
    let servers: Vec<Server> = s
        .endpoints
        .iter()
        .zip(pids)
        .map(|(e, pid)| Server {
            endpoint: e.clone(),
            pid,
            rss_before: procs::rss_kib(pid).unwrap_or(0),
        })
        .collect();

    // The idle cluster's own CPU, over a short window, for comparison.
    let base_window = s.duration.min(Duration::from_secs(3));
    let c0 = cpu_all(&servers)?;
    tokio::time::sleep(base_window).await;
    let c1 = cpu_all(&servers)?;
    let base_pct: Vec<f64> = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| (b - a) / base_window.as_secs_f64() * 100.0)
        .collect();

    // Open the sessions.
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(
        s.progress,
        "opening sessions".into(),
        Duration::from_secs(3600),
        counters.clone(),
    );
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut opening = tokio::task::JoinSet::new();
    let opened_at = Instant::now();
    for i in 0..sessions {
        let (endpoint, options, gate, counters) = (
            s.endpoint_for(i).to_string(),
            ensemble_options(s),
            gate.clone(),
            counters.clone(),
        );
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let r = Client::connect(&[endpoint.as_str()], options).await;
            match &r {
                Ok(_) => counters.ops.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
            };
            (r, t0.elapsed())
        });
    }
    let mut clients = Vec::with_capacity(sessions);
    let mut tally = Tally::default();
    while let Some(r) = opening.join_next().await {
        match r.context("session task")? {
            (Ok(c), took) => {
                record(&mut tally.hist, took);
                clients.push(c);
            }
            (Err(e), _) => {
                crate::steady::report_error(&e.clone().into());
                tally.error(e.code().name().to_string());
            }
        }
    }
    progress.finish().await;
    let open_secs = opened_at.elapsed().as_secs_f64();
    if clients.is_empty() {
        bail!("no session could be opened");
    }
    eprintln!(
        "ensemble-bench: {} sessions open after {open_secs:.1} s; idle for {:.0} s of warmup, then {:.0} s measured",
        clients.len(),
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64()
    );

    tokio::time::sleep(s.warmup).await;
    let c0 = cpu_all(&servers)?;
    let t0 = Instant::now();
    tokio::time::sleep(s.duration).await;
    let c1 = cpu_all(&servers)?;
    let secs = t0.elapsed().as_secs_f64();
    let expired = clients.iter().filter(|c| c.is_expired()).count();

    let held = clients.len() as f64;
    let mut rows = Vec::new();
    let (mut cpu_total, mut rss_growth_total) = (0.0, 0.0);
    for (i, srv) in servers.iter().enumerate() {
        let cpu = (c1[i] - c0[i]) / secs * 100.0;
        let rss_after = procs::rss_kib(srv.pid).unwrap_or(0);
        let growth = rss_after as f64 - srv.rss_before as f64;
        cpu_total += cpu;
        rss_growth_total += growth;
        rows.push(json!({
            "endpoint": srv.endpoint,
            "pid": srv.pid,
            "cpu_pct": (cpu * 10.0).round() / 10.0,
            "cpu_pct_before": (base_pct[i] * 10.0).round() / 10.0,
            "rss_before_mib": (srv.rss_before as f64 / 1024.0).round(),
            "rss_after_mib": (rss_after as f64 / 1024.0).round(),
            "kib_per_session": (growth / held * 100.0).round() / 100.0,
        }));
    }

    // Opening time per session is the latency; the rate is sessions opened per second.
    let mut report = Report::new(s, "idle-sessions", Duration::from_secs_f64(open_secs), tally);
    report.clients = sessions;
    report.set("sessions_held", clients.len() as u64);
    report.set("sessions_expired", expired as u64);
    report.set("measured_s", (secs * 10.0).round() / 10.0);
    report.set("cpu_pct_total", (cpu_total * 10.0).round() / 10.0);
    report.set("rss_growth_mib_total", (rss_growth_total / 1024.0).round());
    report.set(
        "kib_per_session_per_node",
        (rss_growth_total / held / servers.len() as f64 * 100.0).round() / 100.0,
    );
    report.set("servers", serde_json::Value::Array(rows));

    // Close them, a few at a time, so the cluster is left as it was found.
    let mut closing = tokio::task::JoinSet::new();
    for c in clients {
        let gate = gate.clone();
        closing.spawn(async move {
            let _permit = gate.acquire_owned().await;
            c.close().await
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    Ok(report)
}
