//! # ensemble-server
//!
//! One member of an Ensemble cluster: a ZooKeeper-style coordination
//! service replicated with Raft (openraft) and persisted in sled.
//!
//! The layers, bottom up; each imports only the ones below it
//! (`server/tests/layers.rs` checks), and `node` wires them:
//!
//! 0. `metrics`: the Prometheus registry and the calls that record into
//!    it; it imports nothing from the crate, so every layer may record.
//! 1. [`state`]: pure and deterministic: commands, the znode tree, the
//!    session table, apply (where a create, a close or an expiry is applied).
//!    Beside it `tls`: the TLS material, read and checked, and the rustls
//!    settings of the listeners and of calls to peers.
//! 2. `config`: settings, declared once.
//! 3. [`consensus`]: openraft's glue: the log store on sled, the state
//!    machine, group commit ([`consensus::proposer`]), the way to the leader
//!    ([`consensus::router`], where a write is forwarded).
//! 4. `liveness`: touches, apply marks, evidence, deadlines, and
//!    `liveness/decision.rs`, where expiry is decided (a pure function the
//!    loop in `liveness/expiry.rs` asks each tick).
//! 5. `api` (the client service; a watch fires in `api/watches.rs`),
//!    `peer` (each peer call, client and server half together) and
//!    `admin` (the healthcheck command and the `/metrics` endpoint).
//! 6. `node`: opens storage and wires the layers, spawning every long-lived
//!    task into one owner (`consensus/tasks.rs`) it awaits with the Raft
//!    core: a part that dies stops the member; [`main_with_args`] runs it.
//!
//! Only what the binaries and the storage test suite need is public.
//!
//! Words mean what `docs/glossary.md` says.

// openraft's StorageError and tonic's Status are large by design; boxing them
// at every boundary would only add noise.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod config;
pub mod consensus;
pub(crate) mod listen;
pub(crate) mod liveness;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod peer;
pub mod state;
pub(crate) mod tls;

/// What a member logs unless `RUST_LOG` says otherwise. openraft's per-RPC
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
    if args.get(1).is_some_and(|a| a == "hash-password") {
        return hash_password(&args[1..]);
    }
    let args = match config::Args::parse_all(args) {
        Ok(a) => a,
        Err(config::ArgsError::Usage(e)) => return usage(e),
        Err(config::ArgsError::File(e)) => {
            eprintln!("ensemble-server: {e}");
            return ExitCode::from(2);
        }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ensemble-server: can not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(node::run(config));
    if let Err(e @ node::StartError::Failed(_)) = &result {
        // Fail-stop: exit now. Shutting the runtime down would drop the
        // storage handles, whose final flush can hang on a broken disk, and
        // wait for tasks that may be the broken part.
        eprintln!("ensemble-server: {e}");
        std::process::exit(1);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ node::StartError::Config(_)) => {
            eprintln!("ensemble-server: {}", tls::error_chain(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ensemble-server: {}", tls::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// `ensemble-server hash-password`: reads one password (from the terminal
/// without echo, or a line of stdin) and prints its argon2 hash, for the
/// users file. The password never comes from argv, where `ps` shows it.
fn hash_password(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::io::{BufRead, IsTerminal, Write};
    use std::process::ExitCode;

    if args.len() > 1 {
        eprintln!("usage: ensemble-server hash-password  (reads the password from stdin)");
        return ExitCode::from(2);
    }
    let read = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ")
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    };
    let line = match read {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hash-password: can not read the password: {e}");
            return ExitCode::from(1);
        }
    };
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("hash-password: the password is empty");
        return ExitCode::from(1);
    }
    match api::auth::hash_password(password) {
        Ok(hash) => {
            let _ = writeln!(std::io::stdout(), "{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hash-password: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ensemble-server healthcheck [--addr A] [--ready]`: 0 healthy, 1 not, 2 bad usage.
fn healthcheck(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::process::ExitCode;

    let args = match <admin::health::HealthArgs as clap::Parser>::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => return usage(e),
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

/// Prints clap's text for `--help`, `--version` or a usage error, and
/// gives the exit code (0, or 2 for bad usage).
fn usage(e: clap::Error) -> std::process::ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
