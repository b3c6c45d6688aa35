//! The `ensemble` command-line tool: one command per run, `shell` for an
//! interactive prompt that keeps one session open, `watch` to stream watch
//! events, and `elect` / `lock` demos of the recipes.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::node_status;
use crate::recipes::election::Election;
use crate::recipes::lock::Lock;
use crate::{Client, CreateMode, Options, PersistentWatch, SessionState, Stat, StateEvent, WatchEvent};

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
    /// Print watch events on a znode (or its subtree) until interrupted.
    Watch {
        path: String,
        /// Also every descendant.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Interactive prompt keeping one session open; reads commands line by line (also from a pipe).
    Shell,
    /// Stand for election NAME; prints when leadership is gained or lost, with its fencing token.
    Elect {
        name: String,
        /// The value observers see for this candidate.
        #[arg(long, default_value = "")]
        value: String,
    },
    /// Take lock NAME; prints when acquired and released, with its fencing token.
    Lock {
        name: String,
        /// Release after this long (default: hold until interrupted).
        #[arg(long, value_name = "MS")]
        hold_ms: Option<u64>,
    },
    /// Cluster-wide views.
    Cluster {
        #[command(subcommand)]
        what: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// One line per endpoint: node id, address, role, term, log index, applied index, sessions.
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

/// The shell's own grammar.
#[derive(Parser, Debug)]
#[command(name = "", no_binary_name = true)]
struct ShellLine {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    #[command(flatten)]
    Op(Op),
    /// Watch a znode (or subtree); events print as `WATCH TYPE PATH` lines.
    Watch {
        path: String,
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Stop watching a path.
    Unwatch { path: String },
    /// Print the session id, its state and the node in use.
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

fn print_event(out: &mut impl Write, e: &WatchEvent) -> std::io::Result<()> {
    writeln!(out, "WATCH {} {} zxid={}", e.kind.as_str_name(), e.path, e.zxid)
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
    let mut watches: Vec<(String, PersistentWatch)> = Vec::new();
    let prompt = |out: &mut std::io::Stdout, c: &Client| {
        if interactive {
            let _ = write!(out, "[{} 0x{:x}] ensemble> ", c.state(), c.session_id());
            let _ = out.flush();
        }
    };
    prompt(&mut out, &client);
    let mut lines = stdin.lock().lines();
    while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
        let line = line?;
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            match shlex::split(trimmed).map(ShellLine::try_parse_from) {
                None => eprintln!("error: unbalanced quotes in {trimmed:?}"),
                Some(Err(e)) => eprintln!("{}", e.to_string().trim_end()),
                Some(Ok(ShellLine { command })) => match command {
                    ShellCommand::Quit => break,
                    ShellCommand::Session => writeln!(
                        out,
                        "session 0x{:x} {} on {}",
                        client.session_id(),
                        client.state(),
                        client.current_endpoint()
                    )?,
                    ShellCommand::Watch { path, recursive } => match client.add_watch(&path, recursive).await
                    {
                        Ok(w) => watches.push((path, w)),
                        Err(e) => eprintln!("error: {e}"),
                    },
                    ShellCommand::Unwatch { path } => {
                        watches.retain(|(p, _)| *p != path);
                        if let Err(e) = client.remove_watches(&path, None).await {
                            eprintln!("error: {e}");
                        }
                    }
                    ShellCommand::Op(op) => {
                        if let Err(e) = run_op(&client, op, &mut out).await {
                            eprintln!("error: {e}");
                        }
                    }
                },
            }
        }
        // Events of the changes so far arrived before their replies: print them now.
        for (_, w) in watches.iter_mut() {
            while let Some(e) = w.try_next() {
                print_event(&mut out, &e)?;
            }
        }
        out.flush()?;
        if client.state().is_terminal() {
            anyhow::bail!("the session ended ({}): open a new shell", client.state());
        }
        prompt(&mut out, &client);
    }
    client.close().await?;
    Ok(())
}

async fn watch(client: &Client, path: &str, recursive: bool, count: Option<usize>) -> anyhow::Result<()> {
    let mut w = client.add_watch(path, recursive).await?;
    let mut out = std::io::stdout();
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        match w.next().await {
            Some(e) => {
                print_event(&mut out, &e)?;
                out.flush()?;
                seen += 1;
            }
            None => anyhow::bail!("the session ended ({})", client.state()),
        }
    }
    Ok(())
}

fn recipe_path(kind: &str, name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/ensemble/{kind}/{name}")
    }
}

/// Waits until the session ends; returns how.
async fn until_session_ends(client: &Client) -> &'static str {
    let mut events = client.state_events();
    loop {
        match events.recv().await {
            Ok(StateEvent::Expired) => return "session expired",
            Ok(StateEvent::State(SessionState::Closed)) => return "session closed",
            Ok(StateEvent::State(SessionState::AuthFailed)) => return "authentication failed",
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return "client gone",
        }
    }
}

async fn elect(client: &Client, name: &str, value: String) -> anyhow::Result<()> {
    let election = Election::new(client, &recipe_path("election", name));
    println!("CANDIDATE {name} session=0x{:x}", client.session_id());
    let leadership = election.campaign(value.into_bytes()).await?;
    println!(
        "LEADER {name} token={} node={}",
        leadership.token(),
        leadership.node()
    );
    tokio::select! {
        why = until_session_ends(client) => {
            println!("LOST {name}: {why}");
            anyhow::bail!("lost leadership of {name}: {why}");
        }
        _ = tokio::signal::ctrl_c() => {
            leadership.resign().await?;
            println!("RESIGNED {name}");
            Ok(())
        }
    }
}

async fn lock(client: &Client, name: &str, hold_ms: Option<u64>) -> anyhow::Result<()> {
    let lock = Lock::new(client, &recipe_path("locks", name));
    println!("WAITING {name} session=0x{:x}", client.session_id());
    let guard = lock.acquire().await?;
    println!("ACQUIRED {name} token={} node={}", guard.token(), guard.node());
    let hold = async {
        match hold_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        why = until_session_ends(client) => {
            println!("LOST {name}: {why}");
            anyhow::bail!("lost lock {name}: {why}");
        }
        _ = hold => {
            guard.release().await?;
            println!("RELEASED {name}");
            Ok(())
        }
    }
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
    if let Command::Cluster {
        what: ClusterCommand::Status,
    } = cli.command
    {
        return cluster_status(&list).await;
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
