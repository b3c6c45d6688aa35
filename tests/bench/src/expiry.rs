//! `expiry`: how soon a dead client's ephemeral goes. A holder process
//! (this binary, re-run as `ensemble-bench hold`) opens a session, creates
//! an ephemeral and sends a request every `--touch-ms`, printing for each
//! answer when it sent the request and when the answer came (on
//! CLOCK_MONOTONIC, which both processes share); it is killed with SIGKILL,
//! and every node is then asked
//! every `--poll-ms` (through its own pinned observer session) whether the
//! ephemeral still exists. Reported per kill: time from the kill, and from
//! the holder's last acknowledged request (an upper bound of the last time
//! the cluster heard from it), until the ephemeral is gone on every node,
//! also as a multiple of the granted timeout T.

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ensemble_client::{Client, CreateMode, Options, StateEvent};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::backend::ensemble_options;
use crate::report::{record, Report, Tally};
use crate::steady::Rng;
use crate::Settings;

/// Now on CLOCK_MONOTONIC, in nanoseconds: one clock for the holder and
/// the benchmark, which are different processes.
fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn since(earlier_ns: u64, later_ns: u64) -> Duration {
    Duration::from_nanos(later_ns.saturating_sub(earlier_ns))
}

/// The holder: runs until killed (exit 3 if its session expires first).
/// Prints `READY <session> <timeout ms>`, then `ACK <sent ns> <answered ns>`
/// for each request answered.
pub async fn hold(s: &Settings, path: &str, touch_ms: u64) -> Result<()> {
    let all: Vec<&str> = s.endpoints.iter().map(String::as_str).collect();
    let client = Client::connect(&all, ensemble_options(s)).await?;
    let mut events = client.state_events();
    client
        .create(path, b"held".to_vec(), CreateMode::Ephemeral)
        .await?;
    let say = |line: &str| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    say(&format!(
        "READY {} {}",
        client.session_id(),
        client.session().timeout.as_millis()
    ))?;
    let mut tick = tokio::time::interval(Duration::from_millis(touch_ms.max(1)));
    loop {
        tokio::select! {
            e = events.recv() => {
                if matches!(e, Ok(StateEvent::Expired) | Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    say("EXPIRED")?;
                    std::process::exit(3);
                }
            }
            _ = tick.tick(), if touch_ms > 0 => {
                let sent = mono_ns();
                if client.exists(path).await.is_ok() {
                    say(&format!("ACK {sent} {}", mono_ns()))?;
                }
            }
        }
    }
}

/// One kill and what followed.
struct Round {
    timeout: Duration,
    kill_to_gone: Duration,
    ack_to_gone: Duration,
    first_gone: Duration,
}

async fn observers(s: &Settings) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for e in &s.endpoints {
        let options = Options {
            session_timeout: Duration::from_secs(30),
            ..Options::default()
        };
        out.push(
            Client::connect(&[e.as_str()], options)
                .await
                .with_context(|| format!("opening an observer on {e}"))?,
        );
    }
    Ok(out)
}

async fn one_round(
    s: &Settings,
    exe: &std::path::Path,
    obs: &[Client],
    path: &str,
    poll: Duration,
    touch_ms: u64,
    rng: &mut Rng,
) -> Result<Round> {
    let mut child = tokio::process::Command::new(exe)
        .arg("--endpoints")
        .arg(s.endpoints.join(","))
        .arg("--session-timeout-ms")
        .arg(s.session_timeout.as_millis().to_string())
        .arg("--quiet")
        .arg("hold")
        .arg("--path")
        .arg(path)
        .arg("--touch-ms")
        .arg(touch_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the holder")?;
    let mut lines = BufReader::new(child.stdout.take().context("holder stdout")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| anyhow!("the holder did not open its session within 30 s"))??
        .ok_or_else(|| anyhow!("the holder exited before it was ready"))?;
    let ready_at = mono_ns();
    let words: Vec<&str> = ready.split_whitespace().collect();
    let timeout = match words.as_slice() {
        ["READY", _, ms] => Duration::from_millis(ms.parse().context("holder's timeout")?),
        _ => bail!("the holder said {ready:?}"),
    };
    // The holder's last answered request: when it was answered.
    let last_ack = Arc::new(Mutex::new(ready_at));
    let acks = last_ack.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(answered) = line.split_whitespace().nth(2).and_then(|w| w.parse().ok()) {
                *acks.lock().unwrap_or_else(|p| p.into_inner()) = answered;
            }
        }
    });

    // Wait until every node has the ephemeral, then a little longer, by a
    // random part of a heartbeat interval so kills fall anywhere in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for o in obs {
        while !matches!(o.exists(path).await, Ok(Some(_))) {
            if Instant::now() > deadline {
                bail!("{path} did not appear on {} within 10 s", o.current_endpoint());
            }
            tokio::time::sleep(poll).await;
        }
    }
    let third = (timeout / 3).as_millis().max(1) as u64;
    tokio::time::sleep(Duration::from_millis(500 + rng.below(third))).await;

    child.start_kill().context("killing the holder")?;
    let killed_at = mono_ns();
    let _ = child.wait().await;
    // Read what the holder wrote before it died (its pipe is closed now).
    if tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        bail!("the holder's output did not end after it was killed");
    }
    let last_ack = *last_ack.lock().unwrap_or_else(|p| p.into_inner());

    let mut gone: Vec<Option<u64>> = vec![None; obs.len()];
    let give_up = Instant::now() + timeout * 3 + Duration::from_secs(10);
    while gone.iter().any(Option::is_none) {
        if Instant::now() > give_up {
            bail!(
                "{path} still exists on some node {:?} after the kill",
                timeout * 3 + Duration::from_secs(10)
            );
        }
        for (i, o) in obs.iter().enumerate() {
            if gone[i].is_none() && matches!(o.exists(path).await, Ok(None)) {
                gone[i] = Some(mono_ns());
            }
        }
        tokio::time::sleep(poll).await;
    }
    let all_gone = gone.iter().flatten().max().copied().unwrap_or(killed_at);
    let first = gone.iter().flatten().min().copied().unwrap_or(killed_at);
    Ok(Round {
        timeout,
        kill_to_gone: since(killed_at, all_gone),
        ack_to_gone: since(last_ack, all_gone),
        first_gone: since(killed_at, first),
    })
}

pub async fn run(
    s: &Settings,
    exe: &std::path::Path,
    poll: Duration,
    touch_ms: u64,
    rounds: Option<usize>,
) -> Result<Report> {
    let admin = crate::backend::ensemble_admin(s).await?;
    let obs = observers(s).await?;
    let started = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    let mut rng = Rng::new(seed ^ std::process::id() as u64);
    let mut tally = Tally::default();
    let mut after_ack = Tally::default();
    let mut rows = Vec::new();
    let mut timeout = s.session_timeout;
    let mut n = 0;
    loop {
        let enough = match rounds {
            Some(r) => n >= r,
            None => n > 0 && started.elapsed() >= s.duration,
        };
        if enough {
            break;
        }
        let path = format!("{}/holder-{n}", s.root);
        let r = one_round(s, exe, &obs, &path, poll, touch_ms, &mut rng).await?;
        let t = r.timeout.as_secs_f64();
        let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
        eprintln!(
            "ensemble-bench: round {n}: T={:.0} ms, gone everywhere {:.0} ms after the kill ({:.2}·T), {:.0} ms after the last ack ({:.2}·T)",
            t * 1000.0,
            ms(r.kill_to_gone),
            r.kill_to_gone.as_secs_f64() / t,
            ms(r.ack_to_gone),
            r.ack_to_gone.as_secs_f64() / t
        );
        rows.push(json!({
            "round": n,
            "timeout_ms": ms(r.timeout),
            "kill_to_gone_ms": ms(r.kill_to_gone),
            "kill_to_gone_t": (r.kill_to_gone.as_secs_f64() / t * 1000.0).round() / 1000.0,
            "last_ack_to_gone_ms": ms(r.ack_to_gone),
            "last_ack_to_gone_t": (r.ack_to_gone.as_secs_f64() / t * 1000.0).round() / 1000.0,
            "kill_to_first_node_ms": ms(r.first_gone),
        }));
        record(&mut tally.hist, r.kill_to_gone);
        record(&mut after_ack.hist, r.ack_to_gone);
        timeout = r.timeout;
        n += 1;
    }
    let _ = admin.close().await;
    for o in obs {
        let _ = o.close().await;
    }
    let mut report = Report::new(s, "expiry", started.elapsed(), tally);
    report.clients = 1;
    report.set("timeout_ms", timeout.as_millis() as u64);
    report.set("touch_ms", touch_ms);
    if let Some(l) = crate::report::Latency::of(&after_ack.hist) {
        report.set(
            "last_ack_to_gone_ms",
            json!({"min": after_ack.hist.min() as f64 / 1000.0, "p50": l.p50, "max": l.max}),
        );
        report.set(
            "last_ack_to_gone_over_t",
            json!({"min": (after_ack.hist.min() as f64 / 1000.0 / timeout.as_millis() as f64 * 1000.0).round() / 1000.0,
                   "max": (l.max / timeout.as_millis() as f64 * 1000.0).round() / 1000.0}),
        );
    }
    report.set("rounds", serde_json::Value::Array(rows));
    Ok(report)
}
