//! # ensemble-cli
//!
//! The `ensemble` command-line tool: one command per run, `shell` for an
//! interactive prompt that keeps one session open, `watch` to stream watch
//! events, `elect` / `lock` demos of the recipes and `cluster status`. A
//! crate of its own, so applications that link `ensemble-client` do not
//! compile clap, anyhow or shlex.
//!
//! - `args`: the command-line and shell grammar.
//! - `ops`: the znode commands and `watch`.
//! - `shell`: the interactive prompt.
//! - `demos`: `elect` and `lock`.
//! - `cluster`: `cluster status`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod args;
mod cluster;
mod demos;
mod ops;
mod shell;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ensemble_client::{Client, Options, TlsOptions};

use args::{endpoints, Cli, ClusterCommand, Command};
use cluster::cluster_status;
use demos::{elect, lock};
use ops::{check_op, run_op, watch};
use shell::shell;

async fn run(cli: Cli) -> anyhow::Result<()> {
    let list = endpoints(&cli.endpoints);
    if list.is_empty() {
        anyhow::bail!("--endpoints is empty");
    }
    let mut options = Options {
        session_timeout: Duration::from_millis(cli.session_timeout),
        tls: tls_options(&cli)?,
        ..Options::default()
    };
    if let Command::Cluster {
        what: ClusterCommand::Status,
    } = cli.command
    {
        return cluster_status(&list, options.tls.as_ref()).await;
    }
    if let Command::Op(op) = &cli.command {
        check_op(op)?;
    }
    if let Some(user) = &cli.user {
        options = options.with_user(user, &password(user)?);
    }
    let client = Client::connect(&list, options).await?;
    let result = match cli.command {
        Command::Shell => return shell(client).await,
        Command::Op(op) => run_op(&client, op, &mut std::io::stdout()).await,
        Command::Watch {
            path,
            recursive,
            count,
        } => watch(&client, &path, recursive, count).await,
        Command::Elect { name, value } => elect(&client, &name, value).await,
        Command::Lock { name, hold_ms } => lock(&client, &name, hold_ms).await,
        Command::Cluster { .. } => Ok(()),
    };
    let _ = client.close().await;
    result
}

/// The password of `--user`: `ENSEMBLE_PASSWORD`, else asked on the
/// terminal without echo. Without a terminal there is no one to ask.
fn password(user: &str) -> anyhow::Result<String> {
    if let Some(p) = std::env::var_os("ENSEMBLE_PASSWORD") {
        return p
            .into_string()
            .map_err(|_| anyhow::anyhow!("ENSEMBLE_PASSWORD is not valid UTF-8"));
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--user {user} needs a password: set ENSEMBLE_PASSWORD (stdin is not a terminal to ask on)"
        );
    }
    rpassword::prompt_password(format!("password for {user}: "))
        .map_err(|e| anyhow::anyhow!("can not read the password from the terminal: {e}"))
}

/// The TLS settings of the flags, with their files read; None without
/// `--tls-ca`. (clap has checked that a certificate comes with its key.)
fn tls_options(cli: &Cli) -> anyhow::Result<Option<TlsOptions>> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("{flag}: can not read {}", path.display()))
    };
    let Some(ca) = &cli.tls_ca else {
        if cli.tls_cert.is_some() {
            anyhow::bail!("--tls-cert needs --tls-ca (the CA that signed the nodes' certificates)");
        }
        return Ok(None);
    };
    let mut tls = TlsOptions::new(read("--tls-ca", ca)?);
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = tls.with_identity(read("--tls-cert", cert)?, read("--tls-key", key)?);
    }
    Ok(Some(tls))
}

/// Runs the CLI with these arguments (the first is the program name).
/// Exit codes: 0 on success, 1 when the command failed, 2 for bad usage.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: can not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
