//! `watch`: `--clients` watchers (each its own session, round-robin over
//! the nodes) hold a persistent watch on one znode; one more client sets
//! it, one set after another. Each round measures the time from sending
//! the set to the moment the last watcher received its event.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ensemble_client::{Client, EventType};
use tokio::sync::mpsc;

use crate::backend::ensemble_options;
use crate::report::{record, Counters, Progress, Report, Tally};
use crate::Settings;

/// How long one round may wait for every watcher's event.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(s: &Settings) -> Result<Report> {
    let setter = crate::backend::ensemble_admin(s).await?;
    let path = format!("{}/watched", s.root);
    setter
        .create(&path, Vec::new(), ensemble_client::CreateMode::Persistent)
        .await
        .with_context(|| format!("creating {path}"))?;

    // Every watcher forwards (zxid, arrival) of each data change it sees.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut watchers = Vec::with_capacity(s.clients);
    let mut opened = tokio::task::JoinSet::new();
    for i in 0..s.clients {
        let (endpoint, options, path) = (s.endpoint_for(i).to_string(), ensemble_options(s), path.clone());
        opened.spawn(async move {
            let c = Client::connect(&[endpoint.as_str()], options).await?;
            let w = c.add_watch(&path, false).await?;
            Ok::<_, ensemble_client::Error>((c, w))
        });
    }
    while let Some(r) = opened.join_next().await {
        let (client, mut w) = r.context("watcher task")?.context("opening a watcher")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = w.next().await {
                if e.kind == EventType::NodeDataChanged && tx.send((e.zxid.0, Instant::now())).is_err() {
                    break;
                }
            }
        });
        watchers.push(client);
    }

    let counters = Arc::new(Counters::default());
    let progress = Progress::start(
        s.progress,
        "watch".into(),
        s.warmup + s.duration,
        counters.clone(),
    );
    let start = Instant::now() + s.warmup;
    let end = start + s.duration;
    let mut tally = Tally::default();
    let value = s.value();
    let mut fanout = Tally::default();
    while Instant::now() < end {
        let t0 = Instant::now();
        let measured = t0 >= start;
        let zxid = match setter.set(&path, value.clone(), -1).await {
            Ok(stat) => stat.mzxid.0,
            Err(e) => {
                if measured {
                    crate::steady::report_error(&e.clone().into());
                    tally.error(e.code().name().to_string());
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let set_done = Instant::now();
        let mut seen = 0;
        let mut last = t0;
        let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
        while seen < s.clients {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((z, at))) if z == zxid => {
                    seen += 1;
                    last = last.max(at);
                }
                Ok(Some(_)) => {} // a late event of an earlier round
                Ok(None) | Err(_) => break,
            }
        }
        if !measured {
            continue;
        }
        if seen == s.clients {
            record(&mut tally.hist, last - t0);
            record(&mut fanout.hist, last.saturating_duration_since(set_done));
            counters.ops.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.error(format!("EVENTS_MISSING({seen}/{})", s.clients));
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    progress.finish().await;
    let measured = Instant::now().saturating_duration_since(start).min(s.duration);
    let mut report = Report::new(s, "watch", measured, tally);
    report.set("watchers", s.clients as u64);
    if let Some(l) = crate::report::Latency::of(&fanout.hist) {
        report.set(
            "after_set_ack_ms",
            serde_json::json!({"p50": l.p50, "p99": l.p99, "max": l.max}),
        );
    }
    let _ = setter.close().await;
    let mut closing = tokio::task::JoinSet::new();
    for c in watchers {
        closing.spawn(async move { c.close().await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    Ok(report)
}
