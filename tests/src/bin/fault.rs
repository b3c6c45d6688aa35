//! `ensemble-fault`: the fault suite's workload and checker, and the
//! attackers of the `hostile-outsider` scenario. `tests/fault/run.sh` starts
//! it beside the faults of a scenario.
//!
//! - `ensemble-fault [--endpoints A,B,C --duration-s 30 --history FILE]`:
//!   the workload; records every operation, checks the history and prints
//!   one summary line.
//! - `ensemble-fault hostile-peer --peers NAME=HOST:PORT,...`: peer calls
//!   from an outsider without the peer secret; each must be refused.
//! - `ensemble-fault flood-streams --endpoint HOST:PORT`: session streams
//!   without limit on one client connection; the member must keep answering.
//!
//! Exit codes, the same for every command, so that `run.sh --retry-failed`
//! retries only what never started and never hides a violation:
//! 0 nothing wrong; 1 a VIOLATION (the checker's, an accepted peer call, a
//! wedged member); 2 bad usage or configuration; 3 COULD NOT START (the
//! cluster did not answer when the run began: infrastructure, not a verdict).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ensemble_client::Options;
use ensemble_tests::fault::hostile::{PeerTarget, PeerTls, Verdict};
use ensemble_tests::fault::{checker, flood, history::Status, hostile, options_from_env, workload};

/// A violation: the checker found one, a peer call was accepted, a member wedged.
const EXIT_VIOLATION: u8 = 1;
/// Bad flags, environment or files.
const EXIT_USAGE: u8 = 2;
/// The run could not start (the cluster did not answer at the start).
const EXIT_NOT_STARTED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "ensemble-fault",
    about = "Workload and checker for the fault suite, and its hostile outsider",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    workload: WorkloadArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Tries every peer call an attacker would on each member's peer port,
    /// without the peer secret; every call must be refused.
    HostilePeer(HostileArgs),
    /// Opens session streams without limit on one connection to a member's
    /// client port; the member must keep answering others.
    FloodStreams(FloodArgs),
}

#[derive(Args, Debug)]
struct WorkloadArgs {
    #[arg(long, default_value = "127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183")]
    endpoints: String,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[arg(long, default_value_t = 6)]
    clients: u32,
    #[arg(long, default_value_t = 4000)]
    session_timeout_ms: u64,
    #[arg(long, default_value_t = 4)]
    holders: u32,
    #[arg(long, default_value_t = 2)]
    kill_holders: u32,
    /// Allowed expiry delay beyond the session timeout (elections plus slack).
    #[arg(long, default_value_t = 5000)]
    expiry_slack_ms: u64,
    /// Where to write the history (JSON lines).
    #[arg(long)]
    history: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct HostileArgs {
    /// Members' peer ports, comma separated: NAME=HOST:PORT (NAME is the
    /// member's certificate name in secure mode) or HOST:PORT.
    #[arg(long, required = true)]
    peers: String,
    /// Client endpoints, where the outsider opens the sessions it names.
    #[arg(long, default_value = "127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183")]
    endpoints: String,
    /// Attack rounds go on this long.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Pause between rounds.
    #[arg(long, default_value_t = 3000)]
    every_ms: u64,
    /// In secure mode (ENSEMBLE_TLS_CA set), the certificate presented to
    /// the peer ports: one the cluster's CA signed that names no member.
    #[arg(long, requires = "peer_tls_key")]
    peer_tls_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, requires = "peer_tls_cert")]
    peer_tls_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FloodArgs {
    /// The member's client port.
    #[arg(long, default_value = "127.0.0.1:12181")]
    endpoint: String,
    /// Streams to open on the one connection.
    #[arg(long, default_value_t = 20_000)]
    streams: u32,
    /// How long to hold them.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// The most streams the member may hold open on one connection (its
    /// HTTP/2 limit); more is a violation. Unset: not checked.
    #[arg(long)]
    max_open: Option<u64>,
}

fn holder_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("ensemble-test-holder")
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("ensemble-fault: {e}");
            ExitCode::from(EXIT_USAGE)
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_workload(cli.workload),
        Some(Cmd::HostilePeer(args)) => hostile_peer(args),
        Some(Cmd::FloodStreams(args)) => flood_streams(args),
    }
}

fn run_workload(args: WorkloadArgs) -> ExitCode {
    // TLS and credentials for a secure cluster, from ENSEMBLE_TLS_* and
    // ENSEMBLE_USER / ENSEMBLE_PASSWORD (the holders inherit them).
    let options = match options_from_env(Options::default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ensemble-fault: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cfg = workload::Config {
        endpoints: args.endpoints.split(',').map(|s| s.trim().to_string()).collect(),
        clients: args.clients,
        duration: Duration::from_secs(args.duration_s),
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        keys: 5,
        holders: args.holders,
        kill_holders: args.kill_holders.min(args.holders),
        holder_bin: holder_bin(),
        expiry_slack: Duration::from_millis(args.expiry_slack_ms),
        prefix: format!("/run-{}", std::process::id()),
        options,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // The workload's setup (its registers, before any operation is
    // recorded) is the only failure that means "could not start".
    let report = match runtime.block_on(workload::run(cfg)) {
        Ok(r) => r,
        Err(e) => {
            println!("not started: the workload's setup failed: {e}");
            return ExitCode::from(EXIT_NOT_STARTED);
        }
    };
    if let Some(path) = &args.history {
        let lines: Vec<String> = report
            .history
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect();
        if let Err(e) = std::fs::write(path, lines.join("\n")) {
            eprintln!("ensemble-fault: can not write {}: {e}", path.display());
        }
    }
    let mut violations = report.violations.clone();
    violations.extend(checker::check(&report.history, &report.finals));
    let count = |s: Status| report.history.iter().filter(|r| r.status == s).count();
    let max_expiry = report.expiry_delays_ms.iter().max().copied().unwrap_or(0);
    for v in &violations {
        eprintln!("violation: {v}");
    }
    println!(
        "ops={} ok={} unknown={} fail={} unavailable_max_ms={} expiry_delay_max_ms={} T_ms={} violations={}",
        report.history.len(),
        count(Status::Ok),
        count(Status::Unknown),
        count(Status::Fail),
        report.max_gap_ms,
        max_expiry,
        args.session_timeout_ms,
        violations.len()
    );
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATION)
    }
}

fn read(what: &str, path: &PathBuf) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("ensemble-fault: {what}: can not read {}: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

fn hostile_peer(args: HostileArgs) -> ExitCode {
    let peers: Result<Vec<PeerTarget>, _> = args
        .peers
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(PeerTarget::parse)
        .collect();
    let peers = match peers {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("hostile-peer: --peers names no member");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("hostile-peer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The sessions it names are opened like any client's, in the cluster's
    // mode; the peer ports get TLS exactly when the client ports do.
    let options = match options_from_env(Options::default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hostile-peer: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let peer_tls = match &options.tls {
        None => None,
        Some(tls) => {
            let identity = match (&args.peer_tls_cert, &args.peer_tls_key) {
                (Some(c), Some(k)) => match (read("--peer-tls-cert", c), read("--peer-tls-key", k)) {
                    (Ok(c), Ok(k)) => Some((c, k)),
                    (Err(code), _) | (_, Err(code)) => return code,
                },
                _ => None,
            };
            Some(PeerTls {
                ca_pem: tls.ca_pem.clone(),
                identity,
            })
        }
    };
    let cfg = hostile::Config {
        peers,
        endpoints: args.endpoints.split(',').map(|s| s.trim().to_string()).collect(),
        options,
        peer_tls,
        duration: Duration::from_secs(args.duration_s),
        every: Duration::from_millis(args.every_ms.max(100)),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = match runtime.block_on(hostile::run(cfg)) {
        Ok(r) => r,
        Err(e @ hostile::HostileError::BadPeer(_)) | Err(e @ hostile::HostileError::Tls(_)) => {
            eprintln!("hostile-peer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            println!("hostile-peer: not started: {e}");
            return ExitCode::from(EXIT_NOT_STARTED);
        }
    };
    let violations = report.violations();
    for v in &violations {
        eprintln!("violation: hostile peer call: {v}");
    }
    println!(
        "hostile-peer: rounds={} calls={} refused={} accepted={} unexpected={}",
        report.rounds,
        report.attempts.len(),
        report.count(Verdict::Refused),
        report.count(Verdict::Accepted),
        report.count(Verdict::Unexpected)
    );
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATION)
    }
}

fn flood_streams(args: FloodArgs) -> ExitCode {
    let tls = match options_from_env(Options::default()) {
        Ok(o) => o.tls,
        Err(e) => {
            eprintln!("flood-streams: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cfg = flood::Config {
        endpoint: args.endpoint,
        streams: args.streams,
        duration: Duration::from_secs(args.duration_s),
        tls,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = match runtime.block_on(flood::run(cfg)) {
        Ok(r) => r,
        Err(e @ flood::FloodError::BadEndpoint(_)) => {
            eprintln!("flood-streams: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            println!("flood-streams: not started: {e}");
            return ExitCode::from(EXIT_NOT_STARTED);
        }
    };
    let violations = report.violations(args.max_open);
    for v in &violations {
        eprintln!("violation: flooded member: {v}");
    }
    println!(
        "flood-streams: attempted={} opened={} max_open_at_once={} refused={} (first: {}) pending={} probes={} unanswered={}",
        report.attempted,
        report.opened,
        report.max_opened,
        report.refused,
        report.first_refusal.as_deref().unwrap_or("none"),
        report.pending(),
        report.probes,
        report.failed_probes.len()
    );
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATION)
    }
}
