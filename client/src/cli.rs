//! The `ensemble` command-line tool: one command per run, or `shell` for an
//! interactive prompt that keeps one session open.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::client::node_status;
use crate::{Client, CreateMode, Options, Stat};
use clap::{Parser, Subcommand};

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183";

#[derive(Parser, Debug)]
#[command(
    name = "ensemble",
    version,
    about = "Command-line client for an Ensemble cluster"
)]
struct Cli {
    /// Nodes to talk to, comma separated.
    #[arg(long, env = "ENSEMBLE_ENDPOINTS", default_value = DEFAULT_ENDPOINTS)]
    endpoints: String,
    /// Session timeout asked for, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    session_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Op(Op),
    /// Interactive prompt keeping one session open; reads commands line by line (also from a pipe).
    Shell,
    /// Cluster-wide views.
    Cluster {
        #[command(subcommand)]
        what: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// One line per endpoint: node id, address, role, term, log and session figures.
    Status,
}

/// The znode commands, shared by the command line and the shell.
#[derive(Subcommand, Debug)]
enum Op {
    /// Create a znode; prints the created path.
    Create {
        /// Ephemeral: deleted when the session ends.
        #[arg(short = 'e', long)]
        ephemeral: bool,
        /// Sequential: a 10-digit counter is appended to the name.
        #[arg(short = 's', long)]
        sequential: bool,
        path: String,
        #[arg(default_value = "")]
        data: String,
    },
    /// Print a znode's data.
    Get { path: String },
    /// Replace a znode's data.
    Set {
        path: String,
        data: String,
        /// Expected version (-1: any).
        #[arg(short = 'v', long, default_value_t = -1, allow_hyphen_values = true)]
        version: i32,
    },
    /// Delete a znode.
    Delete {
        path: String,
        /// Expected version (-1: any).
        #[arg(short = 'v', long, default_value_t = -1, allow_hyphen_values = true)]
        version: i32,
    },
    /// List a znode's children.
    Ls { path: String },
    /// Print a znode's stat.
    Stat { path: String },
    /// Make the connected node catch up with the leader.
    Sync { path: String },
}

/// The shell's own grammar: any [`Op`], or leaving.
#[derive(Parser, Debug)]
#[command(name = "", no_binary_name = true, disable_help_flag = false)]
struct ShellLine {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    #[command(flatten)]
    Op(Op),
    /// Print the session id and the node in use.
    Session,
    /// Leave the shell, closing the session.
    #[command(alias = "exit")]
    Quit,
}

fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn print_stat(out: &mut impl Write, s: &Stat) -> std::io::Result<()> {
    writeln!(out, "czxid = {}", s.czxid)?;
    writeln!(out, "mzxid = {}", s.mzxid)?;
    writeln!(out, "pzxid = {}", s.pzxid)?;
    writeln!(out, "ctime = {}", s.ctime)?;
    writeln!(out, "mtime = {}", s.mtime)?;
    writeln!(out, "version = {}", s.version)?;
    writeln!(out, "cversion = {}", s.cversion)?;
    writeln!(out, "aversion = {}", s.aversion)?;
    writeln!(out, "ephemeralOwner = 0x{:x}", s.ephemeral_owner)?;
    writeln!(out, "dataLength = {}", s.data_length)?;
    writeln!(out, "numChildren = {}", s.num_children)
}

async fn run_op(client: &Client, op: Op, out: &mut impl Write) -> anyhow::Result<()> {
    match op {
        Op::Create {
            ephemeral,
            sequential,
            path,
            data,
        } => {
            let mode = match (ephemeral, sequential) {
                (false, false) => CreateMode::Persistent,
                (true, false) => CreateMode::Ephemeral,
                (false, true) => CreateMode::PersistentSequential,
                (true, true) => CreateMode::EphemeralSequential,
            };
            let created = client.create(&path, data.into_bytes(), mode).await?;
            writeln!(out, "{created}")?;
        }
        Op::Get { path } => {
            let (data, _) = client.get(&path).await?;
            writeln!(out, "{}", String::from_utf8_lossy(&data))?;
        }
        Op::Set { path, data, version } => {
            client.set(&path, data.into_bytes(), version).await?;
        }
        Op::Delete { path, version } => client.delete(&path, version).await?,
        Op::Ls { path } => {
            for child in client.children(&path).await?.0 {
                writeln!(out, "{child}")?;
            }
        }
        Op::Stat { path } => match client.exists(&path).await? {
            Some(s) => print_stat(out, &s)?,
            None => anyhow::bail!("NO_NODE: {path} does not exist"),
        },
        Op::Sync { path } => client.sync(&path).await?,
    }
    out.flush()?;
    Ok(())
}

async fn shell(client: Client) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout();
    let prompt = |out: &mut std::io::Stdout, c: &Client| {
        if interactive {
            let state = if c.is_expired() { "EXPIRED" } else { "CONNECTED" };
            let _ = write!(out, "[{state} 0x{:x}] ensemble> ", c.session_id());
            let _ = out.flush();
        }
    };
    prompt(&mut out, &client);
    let mut lines = stdin.lock().lines();
    while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
        let line = line?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            prompt(&mut out, &client);
            continue;
        }
        let Some(words) = shlex::split(trimmed) else {
            eprintln!("error: unbalanced quotes in {trimmed:?}");
            prompt(&mut out, &client);
            continue;
        };
        match ShellLine::try_parse_from(words) {
            Ok(ShellLine {
                command: ShellCommand::Quit,
            }) => break,
            Ok(ShellLine {
                command: ShellCommand::Session,
            }) => {
                writeln!(
                    out,
                    "session 0x{:x} on {}",
                    client.session_id(),
                    client.current_endpoint()
                )?;
            }
            Ok(ShellLine {
                command: ShellCommand::Op(op),
            }) => {
                if let Err(e) = run_op(&client, op, &mut out).await {
                    eprintln!("error: {e}");
                }
            }
            Err(e) => eprintln!("{}", e.to_string().trim_end()),
        }
        prompt(&mut out, &client);
    }
    if !client.is_expired() {
        client.close().await?;
    }
    Ok(())
}

async fn cluster_status(list: &[String]) -> anyhow::Result<()> {
    let mut any = false;
    for ep in list {
        match node_status(ep, Duration::from_secs(2)).await {
            Ok(s) => {
                any = true;
                println!(
                    "node {} {} {} term={} last_log={} applied={} sessions={} znodes={} leader={}",
                    s.node_id,
                    ep,
                    s.role,
                    s.term,
                    s.last_log_index,
                    s.applied_index,
                    s.session_count,
                    s.znode_count,
                    s.leader_id
                );
            }
            Err(_) => println!("node ? {ep} down"),
        }
    }
    if !any {
        anyhow::bail!("no node answered at {}", list.join(","));
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let list = endpoints(&cli.endpoints);
    if list.is_empty() {
        anyhow::bail!("--endpoints is empty");
    }
    let options = Options {
        session_timeout: Duration::from_millis(cli.session_timeout),
        ..Options::default()
    };
    match cli.command {
        Command::Cluster {
            what: ClusterCommand::Status,
        } => cluster_status(&list).await,
        Command::Shell => shell(Client::connect(&list, options).await?).await,
        Command::Op(op) => {
            let client = Client::connect(&list, options).await?;
            let result = run_op(&client, op, &mut std::io::stdout()).await;
            let _ = client.close().await;
            result
        }
    }
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
