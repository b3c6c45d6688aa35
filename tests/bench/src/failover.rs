//! `failover`: clients set their own znodes steadily; partway through, the
//! leader is killed. Reported: the longest stretch without an acknowledged
//! write, and the time from the kill to the first acknowledged write sent
//! after it; also how many sessions expired (none should).
//!
//! Clients get every endpoint (they must be able to move), so they spread
//! over the nodes at random, as the client library places them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ensemble_client::{node_status, Client, Role};
use serde_json::json;

use crate::backend::ensemble_options;
use crate::procs;
use crate::report::{record, Counters, Progress, Report, Tally};
use crate::Settings;

/// How the leader is killed and brought back.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kill_cmd: Option<String>,
    pub restart_cmd: Option<String>,
    pub kill_after: Duration,
    pub server_pids: Vec<u32>,
}

/// The leader, as the nodes report it.
#[derive(Debug, Clone)]
pub struct Leader {
    pub id: u64,
    pub endpoint: String,
    pub index: usize,
}

/// Asks every endpoint for its status; the leader is the node that says it
/// leads in the highest term.
pub async fn find_leader(endpoints: &[String]) -> Result<Leader> {
    let mut best: Option<(u64, Leader)> = None;
    for (index, e) in endpoints.iter().enumerate() {
        if let Ok(st) = node_status(e, Duration::from_secs(2)).await {
            if st.role == Role::Leader && !matches!(&best, Some((term, _)) if st.term <= *term) {
                best = Some((
                    st.term,
                    Leader {
                        id: st.node_id,
                        endpoint: e.clone(),
                        index,
                    },
                ));
            }
        }
    }
    best.map(|(_, l)| l)
        .ok_or_else(|| anyhow!("no endpoint of {} says it leads", endpoints.join(",")))
}

/// Waits until every endpoint answers and is ready.
pub async fn wait_all_ready(endpoints: &[String], within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut ready = 0;
        for e in endpoints {
            if node_status(e, Duration::from_secs(1))
                .await
                .is_ok_and(|s| s.ready)
            {
                ready += 1;
            }
        }
        if ready == endpoints.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {} nodes ready after {within:?}", endpoints.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn fill(template: &str, leader: &Leader, pid: Option<u32>) -> String {
    let port = leader.endpoint.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
    template
        .replace("{id}", &leader.id.to_string())
        .replace("{endpoint}", &leader.endpoint)
        .replace("{port}", port)
        .replace("{pid}", &pid.map(|p| p.to_string()).unwrap_or_default())
}

/// Runs a shell command; fails if it exits non-zero.
pub async fn shell(cmd: &str) -> Result<()> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// SIGKILL to a process.
pub fn sigkill(pid: u32) -> Result<()> {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One client's record: its latencies and errors, and for each acknowledged
/// write when it was sent and when it was acknowledged.
struct Part {
    tally: Tally,
    acks: Vec<(Instant, Instant)>,
    expired: bool,
}

pub async fn run(s: &Settings, plan: &Plan) -> Result<Report> {
    let leader = find_leader(&s.endpoints).await?;
    let needs_pid = match plan.kill_cmd.as_deref() {
        None => true,
        Some(cmd) => cmd.contains("{pid}"),
    };
    let pid = if needs_pid {
        let pids = procs::server_pids(&s.endpoints, &plan.server_pids)?;
        Some(pids[leader.index])
    } else {
        None
    };
    eprintln!(
        "ensemble-bench: leader is node {} at {}{}",
        leader.id,
        leader.endpoint,
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    );

    let all: Vec<&str> = s.endpoints.iter().map(String::as_str).collect();
    let admin = crate::backend::ensemble_admin(s).await?;
    let mut clients = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        let c = Client::connect(&all, ensemble_options(s))
            .await
            .context("opening a client")?;
        let path = format!("{}/c{i}", s.root);
        c.create(&path, s.value(), ensemble_client::CreateMode::Persistent)
            .await
            .with_context(|| format!("creating {path}"))?;
        clients.push((c, path));
    }

    let counters = Arc::new(Counters::default());
    let start = Instant::now() + s.warmup;
    let end = start + s.duration;
    let mut tasks = Vec::new();
    for (c, path) in clients {
        let (counters, value) = (counters.clone(), s.value());
        tasks.push(tokio::spawn(async move {
            let mut part = Part {
                tally: Tally::default(),
                acks: Vec::new(),
                expired: false,
            };
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = c.set(&path, value.clone(), -1).await;
                let t1 = Instant::now();
                let measured = t0 >= start && t1 <= end;
                match r {
                    Ok(_) if measured => {
                        record(&mut part.tally.hist, t1 - t0);
                        part.acks.push((t0, t1));
                        counters.ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if measured {
                            part.tally.error(e.code().name().to_string());
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if c.is_expired() {
                            part.expired = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            part.expired |= c.is_expired();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
            part
        }));
    }

    let progress = Progress::start(
        s.progress,
        "failover".into(),
        s.warmup + s.duration,
        counters.clone(),
    );
    tokio::time::sleep_until((start + plan.kill_after).into()).await;
    let killed_at = match &plan.kill_cmd {
        Some(t) => {
            let cmd = fill(t, &leader, pid);
            shell(&cmd).await?;
            Instant::now()
        }
        None => {
            let pid = pid.ok_or_else(|| anyhow!("no pid for the leader"))?;
            sigkill(pid)?;
            Instant::now()
        }
    };

    let mut tally = Tally::default();
    let mut acks = Vec::new();
    let mut expired = 0u64;
    for t in tasks {
        let part = t.await.context("client task")?;
        tally.merge(part.tally);
        acks.extend(part.acks);
        expired += part.expired as u64;
    }
    progress.finish().await;
    let new_leader = find_leader(&s.endpoints).await.ok();
    let _ = admin.close().await;

    // The longest stretch of the window without an acknowledgement.
    let mut done: Vec<Instant> = acks.iter().map(|(_, t1)| *t1).collect();
    done.sort();
    let mut gap = Duration::ZERO;
    let mut prev = start;
    for t in done.iter().copied().chain([end]) {
        gap = gap.max(t.saturating_duration_since(prev));
        prev = t;
    }
    // The first write sent after the kill that was acknowledged.
    let first = acks
        .iter()
        .filter(|(t0, _)| *t0 >= killed_at)
        .map(|(_, t1)| *t1)
        .min();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;

    let mut report = Report::new(s, "failover", s.duration, tally);
    report.set(
        "killed_leader",
        json!({"id": leader.id, "endpoint": leader.endpoint}),
    );
    report.set(
        "kill_at_s",
        (plan.kill_after.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    report.set("longest_gap_ms", ms(gap));
    report.set(
        "kill_to_first_write_ms",
        first.map(|t| json!(ms(t - killed_at))).unwrap_or(json!(null)),
    );
    report.set("sessions_expired", expired);
    report.set(
        "new_leader",
        new_leader.map(|l| json!(l.id)).unwrap_or(json!(null)),
    );

    if let Some(t) = &plan.restart_cmd {
        shell(&fill(t, &leader, pid)).await?;
        wait_all_ready(&s.endpoints, Duration::from_secs(60)).await?;
        eprintln!(
            "ensemble-bench: node {} restarted and every node is ready",
            leader.id
        );
    }
    Ok(report)
}
