//! `ensemble-bench`: a load generator for Ensemble, and (with the `compare`
//! feature) for ZooKeeper and etcd driven the same way, so the numbers of
//! the three come from one tool.
//!
//! Every benchmark client is its own session (for etcd: its own connection
//! and, where a workload needs one, its own lease), pinned round-robin to
//! one endpoint so the load spreads evenly over the nodes. A run prints a
//! table (ops/s, latency percentiles in ms, errors) and, with `--json`, one
//! JSON line that `tests/bench/compare.sh` collects.
//!
//! The modules, one concern each:
//!
//! - `backend`: one connection to one of the three systems, and the few
//!   operations the workloads need, spoken the same way to each;
//! - `report`: latency histograms, the result of a run, the table and the JSON line;
//! - `steady`: the throughput workloads (create, set, get, mixed, session);
//! - `watch`: N watchers on one znode, time from a set to the last event;
//! - `idle`: N idle heartbeating sessions, each server's CPU and memory;
//! - `failover`: steady writes while the leader is killed;
//! - `expiry`: a killed session holder, time until its ephemeral is gone everywhere;
//! - `procs`: finding server processes and reading their CPU and RSS from `/proc`.

mod backend;
mod expiry;
mod failover;
mod idle;
mod procs;
mod report;
mod steady;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::Report;

/// Benchmarks an Ensemble cluster (or, built with `--features compare`,
/// ZooKeeper and etcd the same way).
#[derive(Parser, Debug)]
#[command(name = "ensemble-bench", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

/// Settings every workload shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The cluster's client endpoints, HOST:PORT comma separated. The local
    /// cluster (deploy/local-cluster.sh) listens on 2181-2183, the
    /// containers (deploy/cluster) on 12181-12183.
    #[arg(
        long,
        global = true,
        env = "ENSEMBLE_ENDPOINTS",
        default_value = "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183"
    )]
    endpoints: String,
    /// Concurrent clients, each its own session, spread round-robin over the endpoints.
    #[arg(long, short = 'c', global = true, default_value_t = 16)]
    clients: usize,
    /// Seconds measured.
    #[arg(long, short = 'd', global = true, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, short = 'w', global = true, default_value_t = 2.0)]
    warmup: f64,
    /// Bytes of data written by create and set.
    #[arg(long, global = true, default_value_t = 100)]
    value_size: usize,
    /// Session timeout asked for, in ms (default 10000; 4000 for `expiry`).
    #[arg(long, global = true)]
    session_timeout_ms: Option<u64>,
    /// Print one JSON line per run after the table.
    #[arg(long, global = true)]
    json: bool,
    /// The system under test. zookeeper and etcd need a build with `--features compare`.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Ensemble)]
    backend: BackendKind,
    /// No progress line on stderr.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

/// Which system the clients talk to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Ensemble,
    Zookeeper,
    Etcd,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Ensemble => "ensemble",
            BackendKind::Zookeeper => "zookeeper",
            BackendKind::Etcd => "etcd",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Each client creates sequential znodes under one parent (etcd: unique keys, create-if-absent).
    Create,
    /// Each client sets its own znode.
    Set,
    /// Each client reads its own znode from its node's state (etcd: serializable range).
    Get {
        /// Read linearizably (Ensemble and ZooKeeper: sync + get; etcd: a linearizable range).
        #[arg(long)]
        linearizable: bool,
    },
    /// create 1 %, set 8 %, get 45 %, children 45 %, delete 1 %, each client in its own subtree.
    Mixed,
    /// Loops of: open a session, create an ephemeral, close (etcd: grant a lease, put with it, revoke).
    Session,
    /// `--clients` watchers on one znode and one setter: time from a set to the last watcher's event.
    Watch,
    /// Hold N idle heartbeating sessions for the duration; report each server's CPU % and RSS.
    IdleSessions {
        /// Sessions to hold.
        sessions: usize,
        /// Server pids, in the order of --endpoints (default: found through /proc by port).
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
        /// Sessions opened at once.
        #[arg(long, default_value_t = 64)]
        open_concurrency: usize,
    },
    /// Clients set steadily; the leader is killed: longest gap without a write, kill to first write.
    Failover {
        /// Kill command, run with `sh -c`; `{id}`, `{pid}`, `{endpoint}` and `{port}` name the
        /// leader. E.g. 'deploy/local-cluster.sh kill {id}'. Default: SIGKILL to the
        /// leader's pid, found through /proc.
        #[arg(long)]
        kill_cmd: Option<String>,
        /// Run after the measurement to bring the node back, with the same placeholders,
        /// e.g. 'deploy/local-cluster.sh start-node {id}'; then wait until every node is ready.
        #[arg(long)]
        restart_cmd: Option<String>,
        /// Seconds after measuring starts when the leader is killed (default: a third of --duration).
        #[arg(long)]
        kill_after: Option<f64>,
        /// Server pids, in the order of --endpoints (default: found through /proc by port).
        #[arg(long, value_delimiter = ',')]
        server_pids: Vec<u32>,
    },
    /// A holder process creates an ephemeral and is killed (SIGKILL): time until it is gone on every node.
    Expiry {
        /// How often each node is asked whether the ephemeral is gone, in ms.
        #[arg(long, default_value_t = 10)]
        poll_ms: u64,
        /// The holder sends a request this often (ms), so its last contact is known; 0: only heartbeats.
        #[arg(long, default_value_t = 100)]
        touch_ms: u64,
        /// Kills to measure (default: as many as fit in --duration, at least one).
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// (internal) The holder `expiry` starts and kills.
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 100)]
        touch_ms: u64,
    },
}

impl Workload {
    /// The throughput workload this is, if it is one.
    fn steady(&self) -> Option<steady::Kind> {
        Some(match self {
            Workload::Create => steady::Kind::Create,
            Workload::Set => steady::Kind::Set,
            Workload::Get { linearizable } => steady::Kind::Get {
                linearizable: *linearizable,
            },
            Workload::Mixed => steady::Kind::Mixed,
            Workload::Session => steady::Kind::Session,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        if let Some(kind) = self.steady() {
            return kind.name();
        }
        match self {
            Workload::Watch => "watch",
            Workload::IdleSessions { .. } => "idle-sessions",
            Workload::Failover { .. } => "failover",
            Workload::Expiry { .. } => "expiry",
            Workload::Hold { .. } => "hold",
            _ => unreachable!("throughput workloads are named by their kind"),
        }
    }
}

/// The checked settings a workload runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: BackendKind,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub value_size: usize,
    pub session_timeout: Duration,
    pub progress: bool,
    /// Where this run's znodes live: `/ensemble-bench/<run id>`.
    pub root: String,
}

impl Settings {
    /// The endpoint client `i` is pinned to.
    pub fn endpoint_for(&self, i: usize) -> &str {
        &self.endpoints[i % self.endpoints.len()]
    }

    pub fn value(&self) -> Vec<u8> {
        vec![b'x'; self.value_size]
    }
}

fn parse_endpoints(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let e = e.strip_prefix("http://").unwrap_or(e);
        match e.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => out.push(e.to_string()),
            _ => bail!("bad endpoint {e:?}: expected HOST:PORT"),
        }
    }
    if out.is_empty() {
        bail!("no endpoints given (--endpoints HOST:PORT,...)");
    }
    Ok(out)
}

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if !(0.0..=1e6).contains(&v) {
        bail!("--{name} must be a number of seconds between 0 and 1000000, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn settings(common: &Common, workload: &Workload) -> Result<Settings> {
    let endpoints = parse_endpoints(&common.endpoints)?;
    if common.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if common.value_size > 1 << 20 {
        bail!("--value-size must be at most 1 MiB");
    }
    let duration = seconds("duration", common.duration)?;
    if duration.is_zero() {
        bail!("--duration must be more than 0 s");
    }
    let default_timeout = if matches!(workload, Workload::Expiry { .. }) {
        4000
    } else {
        10_000
    };
    let session_timeout = Duration::from_millis(common.session_timeout_ms.unwrap_or(default_timeout));
    if session_timeout < Duration::from_millis(100) {
        bail!("--session-timeout-ms must be at least 100");
    }
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        std::process::id()
    );
    Ok(Settings {
        backend: common.backend,
        endpoints,
        clients: common.clients,
        duration,
        warmup: seconds("warmup", common.warmup)?,
        value_size: common.value_size,
        session_timeout,
        progress: !common.quiet,
        root: format!("/ensemble-bench/{}-{run_id}", workload.name()),
    })
}

fn check_backend(s: &Settings, workload: &Workload) -> Result<()> {
    if s.backend != BackendKind::Ensemble && !cfg!(feature = "compare") {
        bail!(
            "backend {} needs a build with the compare feature: cargo build --release -p ensemble-bench --features compare",
            s.backend.name()
        );
    }
    let ensemble_only = matches!(
        workload,
        Workload::Watch | Workload::IdleSessions { .. } | Workload::Failover { .. } | Workload::Expiry { .. }
    );
    if ensemble_only && s.backend != BackendKind::Ensemble {
        bail!("workload {} runs against ensemble only", workload.name());
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let s = settings(&cli.common, &cli.workload)?;
    check_backend(&s, &cli.workload)?;
    procs::raise_fd_limit();
    if let Some(kind) = cli.workload.steady() {
        let report = steady::run(&s, kind).await?;
        return print(&report, cli.common.json);
    }
    let report: Report = match &cli.workload {
        Workload::Watch => watch::run(&s).await?,
        Workload::IdleSessions {
            sessions,
            server_pids,
            open_concurrency,
        } => idle::run(&s, *sessions, server_pids, (*open_concurrency).max(1)).await?,
        Workload::Failover {
            kill_cmd,
            restart_cmd,
            kill_after,
            server_pids,
        } => {
            let kill_after = match kill_after {
                Some(v) => seconds("kill-after", *v)?,
                None => s.duration / 3,
            };
            if kill_after >= s.duration {
                bail!("--kill-after must be shorter than --duration");
            }
            let plan = failover::Plan {
                kill_cmd: kill_cmd.clone(),
                restart_cmd: restart_cmd.clone(),
                kill_after,
                server_pids: server_pids.clone(),
            };
            failover::run(&s, &plan).await?
        }
        Workload::Expiry {
            poll_ms,
            touch_ms,
            rounds,
        } => {
            let exe = std::env::current_exe().context("finding ensemble-bench's own executable")?;
            expiry::run(
                &s,
                &exe,
                Duration::from_millis((*poll_ms).max(1)),
                *touch_ms,
                *rounds,
            )
            .await?
        }
        Workload::Hold { path, touch_ms } => {
            expiry::hold(&s, path, *touch_ms).await?;
            return Ok(());
        }
        _ => unreachable!("throughput workloads ran above"),
    };
    print(&report, cli.common.json)
}

fn print(report: &Report, json: bool) -> Result<()> {
    report.print_table();
    if json {
        println!("{}", report.json_line());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ensemble-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Sessions still open are dropped, not closed: do not wait for their tasks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ensemble-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2181, localhost:2182").unwrap(),
            vec!["127.0.0.1:2181", "localhost:2182"]
        );
        for bad in ["", "127.0.0.1", ":2181", "host:port", "host:70000"] {
            assert!(parse_endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_workload_is_a_usage_error() {
        assert!(Cli::try_parse_from(["ensemble-bench", "frobnicate"]).is_err());
        let cli = Cli::try_parse_from(["ensemble-bench", "get", "--linearizable", "--clients", "8"]).unwrap();
        assert_eq!(cli.workload.name(), "get-linearizable");
        assert_eq!(cli.common.clients, 8);
    }
}
