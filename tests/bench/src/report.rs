//! What a run measured and how it is shown: latency histograms
//! (microseconds, HdrHistogram), error counts by kind, the human table and
//! the JSON line `compare.sh` collects.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// Latencies in microseconds, up to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds inside hdrhistogram's rules (low >= 1, high >= 2 * low,
    // at most 5 significant digits): this can not fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration into a histogram of microseconds.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// One client's share of a run: its latencies and its failures.
pub struct Tally {
    pub hist: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            hist: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean().round() / 1000.0,
        })
    }
}

/// The result of one run, as printed and as the JSON line.
#[derive(Serialize, Debug)]
pub struct Report {
    pub bench: &'static str,
    pub backend: &'static str,
    pub workload: String,
    pub clients: usize,
    pub endpoints: Vec<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub value_size: usize,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Per-operation latency (for `watch`: set to last event; for
    /// `expiry`: kill to gone everywhere), None when nothing completed.
    pub latency_ms: Option<Latency>,
    /// What only this workload measures (failover gap, per-server CPU, ...).
    pub extra: Map<String, Value>,
}

impl Report {
    pub fn new(s: &crate::Settings, workload: &str, measured: Duration, tally: Tally) -> Report {
        let ops = tally.hist.len();
        let secs = measured.as_secs_f64().max(1e-9);
        Report {
            bench: "ensemble-bench",
            backend: s.backend.name(),
            workload: workload.to_string(),
            clients: s.clients,
            endpoints: s.endpoints.clone(),
            duration_s: (secs * 1000.0).round() / 1000.0,
            warmup_s: s.warmup.as_secs_f64(),
            value_size: s.value_size,
            ops,
            ops_per_sec: (ops as f64 / secs * 10.0).round() / 10.0,
            errors: tally.errors.values().sum(),
            error_kinds: tally.errors,
            latency_ms: Latency::of(&tally.hist),
            extra: Map::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.to_string(), value.into());
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn print_table(&self) {
        println!(
            "{:<10} {:<17} {:>7} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "backend",
            "workload",
            "clients",
            "ops",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors"
        );
        let (p50, p90, p99, max) = match &self.latency_ms {
            Some(l) => (fmt_ms(l.p50), fmt_ms(l.p90), fmt_ms(l.p99), fmt_ms(l.max)),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<10} {:<17} {:>7} {:>9} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>7}",
            self.backend,
            self.workload,
            self.clients,
            self.ops,
            self.ops_per_sec,
            p50,
            p90,
            p99,
            max,
            self.errors
        );
        for (k, v) in &self.error_kinds {
            println!("  error {k}: {v}");
        }
        for (k, v) in &self.extra {
            match v {
                Value::Array(rows) => {
                    println!("  {k}:");
                    for r in rows {
                        println!("    {}", one_line(r));
                    }
                }
                other => println!("  {k}: {}", one_line(other)),
            }
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn one_line(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", one_line(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Counters the workers bump and the progress line reads.
#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

/// A progress line on stderr, once a second on a terminal (rewritten in
/// place), every ten seconds otherwise; for runs of more than 3 s only.
pub struct Progress {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(enabled: bool, label: String, total: Duration, counters: Arc<Counters>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || total <= Duration::from_secs(3) {
            return Progress { stop, task: None };
        }
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last_ops = 0;
            let mut last = start;
            loop {
                tokio::time::sleep(every).await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let ops = counters.ops.load(Ordering::Relaxed);
                let errors = counters.errors.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (ops - last_ops) as f64 / now.duration_since(last).as_secs_f64();
                let of = if total < Duration::from_secs(3600) {
                    format!("/{:.0}", total.as_secs_f64())
                } else {
                    String::new()
                };
                let line = format!(
                    "[{label}] {:>4.0}{of} s  ops {ops}  {rate:.0}/s  errors {errors}",
                    now.duration_since(start).as_secs_f64()
                );
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
                last_ops = ops;
                last = now;
            }
            if tty {
                eprint!("\r{:80}\r", "");
            }
        });
        Progress {
            stop,
            task: Some(task),
        }
    }

    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
            if std::io::stderr().is_terminal() {
                eprint!("\r{:80}\r", "");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut t = Tally::default();
        for ms in 1..=100 {
            record(&mut t.hist, Duration::from_millis(ms));
        }
        t.error("NODE_EXISTS".into());
        let l = Latency::of(&t.hist).unwrap();
        assert!((l.p50 - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99 - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max - 100.0).abs() < 0.1, "{l:?}");
        assert_eq!(t.errors["NODE_EXISTS"], 1);
    }
}
