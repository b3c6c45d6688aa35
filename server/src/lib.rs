//! # ensemble-server
//!
//! One node of an Ensemble cluster: a ZooKeeper-style coordination service
//! replicated with Raft (openraft) and persisted in sled.
//!
//! A tour of the modules, following a request:
//! - [`config`]: flags and TOML into a checked [`config::Config`].
//! - [`node`]: wires everything and runs the node.
//! - [`api`]: the client gRPC service; [`api::router`] sends writes to the
//!   leader, [`api::proposer`] batches them into log entries (group commit).
//! - [`raft`]: openraft's types, the peer network and the peer service.
//! - [`storage`]: the Raft log and vote in sled, flushed before acknowledged.
//! - [`state`]: the deterministic state machine: [`state::machine`] applies
//!   entries, [`state::tree`] holds znodes, [`state::sessions`] the sessions.
//! - [`sessions`]: liveness: [`sessions::expiry`] is where the leader decides
//!   expiry; [`sessions::manager`] coalesces heartbeats and reports touches.
//! - [`admin`]: node status.

// openraft's StorageError and tonic's Status are large by design; boxing them
// at every boundary would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod api;
pub mod config;
pub mod node;
pub mod raft;
pub mod sessions;
pub mod state;
pub mod storage;

/// What a node logs unless `RUST_LOG` says otherwise. openraft's per-RPC
/// replication errors are off: a peer that is down would fill the log with
/// several lines per retry; the peer network logs each peer going
/// unreachable and coming back instead, once.
pub const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off";

/// Parses flags, starts the node and serves until a signal. Exit codes:
/// 0 after a clean stop, 2 for a bad configuration, 1 for any other failure
/// (a storage write that failed, a log shorter than acknowledged, ...).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    use std::process::ExitCode;

    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "healthcheck") {
        return healthcheck(&args[1..]);
    }
    let args: config::Args = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let config = match config::Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ensemble-server: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ensemble-server: can not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(node::run(config));
    if let Err(e @ node::StartError::Failed(_)) = &result {
        // Fail-stop: exit now. Shutting the runtime down would drop the
        // storage handles, whose final flush can hang on a broken disk.
        eprintln!("ensemble-server: {e}");
        std::process::exit(1);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ node::StartError::Config(_)) => {
            eprintln!("ensemble-server: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ensemble-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ensemble-server healthcheck [--addr A] [--ready]`: 0 healthy, 1 not, 2 bad usage.
fn healthcheck(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::process::ExitCode;

    let args: admin::health::HealthArgs = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("healthcheck: can not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(admin::health::check(&args)) {
        Ok(summary) => {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{summary}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("healthcheck: {why}");
            ExitCode::from(1)
        }
    }
}

/// Parses flags; on `--help`/`--version` or a usage error, prints clap's
/// text and gives the exit code (0, or 2 for bad usage).
fn parse_args<T: clap::Parser>(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<T, std::process::ExitCode> {
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(2)
        } else {
            std::process::ExitCode::SUCCESS
        }
    })
}
