//! `ensemble-fault`: the fault suite's workload and checker. `tests/fault/run.sh`
//! starts it beside the faults of a scenario; it records every operation,
//! checks the history and prints one summary line.
//!
//! Usage: ensemble-fault --endpoints A,B,C --duration-s 30 --history FILE

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ensemble_client::Options;
use ensemble_tests::fault::{checker, history::Status, options_from_env, workload};

#[derive(Parser, Debug)]
#[command(name = "ensemble-fault", about = "Workload and checker for the fault suite")]
struct Args {
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

fn holder_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("ensemble-test-holder")
}

fn main() -> ExitCode {
    let args = Args::parse();
    // TLS and credentials for a secure cluster, from ENSEMBLE_TLS_* and
    // ENSEMBLE_USER / ENSEMBLE_PASSWORD (the holders inherit them).
    let options = match options_from_env(Options::default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ensemble-fault: {e:#}");
            return ExitCode::from(2);
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ensemble-fault: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(workload::run(cfg)) {
        Ok(r) => r,
        Err(e) => {
            println!("violations=1 setup failed: {e}");
            return ExitCode::from(1);
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
        ExitCode::from(1)
    }
}
