//! The command-line grammar (clap): the one-shot commands, and the shell's
//! own grammar, which shares the znode commands ([`Op`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183";

#[derive(Parser, Debug)]
#[command(
    name = "ensemble",
    version,
    about = "Command-line client for an Ensemble cluster"
)]
pub(crate) struct Cli {
    /// Nodes to talk to, comma separated.
    #[arg(long, env = "ENSEMBLE_ENDPOINTS", default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: String,
    /// Session timeout asked for, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub session_timeout: u64,
    /// Open the session as this user (scheme digest). The password comes
    /// from ENSEMBLE_PASSWORD or, if that is unset, a prompt on the
    /// terminal that does not echo; never from the command line.
    #[arg(long, env = "ENSEMBLE_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// PEM certificate of the CA that signed the nodes' certificates;
    /// setting it talks TLS to the cluster.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a cluster that requires one (with --tls-key).
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) enum ClusterCommand {
    /// One line per endpoint: node id, address, role, term, log index, applied index, sessions.
    Status,
}

/// The znode commands, shared by the command line and the shell.
#[derive(Subcommand, Debug)]
pub(crate) enum Op {
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
        /// The znode's ACL, `scheme:id:perms` entries comma separated
        /// (default: world:anyone:cdrwa).
        #[arg(long, value_name = "ACL[,ACL...]")]
        acl: Option<String>,
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
    /// Print a znode's ACL, one `scheme:id:perms` entry per line.
    Getacl { path: String },
    /// Replace a znode's ACL.
    Setacl {
        path: String,
        /// `scheme:id:perms` entries, comma separated (`digest:alice:cdrwa,world:anyone:r`).
        #[arg(value_name = "ACL[,ACL...]")]
        acl: String,
        /// Expected ACL version (-1: any).
        #[arg(short = 'v', long, default_value_t = -1, allow_hyphen_values = true)]
        aversion: i32,
    },
    /// Add an identity to the session (`addauth digest user:password`);
    /// meant for the shell: on the command line the secret shows in the
    /// process list, so prefer --user there.
    Addauth { scheme: String, auth: String },
    /// Print the session's identities, one `scheme:id` per line (nothing
    /// for an anonymous session).
    Whoami,
}

/// The shell's own grammar.
#[derive(Parser, Debug)]
#[command(name = "", no_binary_name = true)]
pub(crate) struct ShellLine {
    #[command(subcommand)]
    pub command: ShellCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ShellCommand {
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

pub(crate) fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_a_comma_separated_list() {
        assert_eq!(endpoints(" a:1, ,b:2,"), vec!["a:1", "b:2"]);
        assert!(endpoints(" , ").is_empty());
    }

    #[test]
    fn the_grammar_keeps_its_commands_and_flags() {
        let cli =
            Cli::try_parse_from(["ensemble", "--endpoints", "h:1", "create", "-e", "-s", "/a", "x"]).unwrap();
        assert_eq!(cli.endpoints, "h:1");
        assert!(matches!(
            cli.command,
            Command::Op(Op::Create { ephemeral: true, sequential: true, ref path, ref data, acl: None }) if path == "/a" && data == "x"
        ));
        let cli = Cli::try_parse_from(["ensemble", "set", "/a", "d", "-v", "-1"]).unwrap();
        assert!(matches!(cli.command, Command::Op(Op::Set { version: -1, .. })));
        let cli = Cli::try_parse_from([
            "ensemble",
            "--user",
            "alice",
            "create",
            "--acl",
            "auth::cdrwa",
            "/b",
        ])
        .unwrap();
        assert_eq!(cli.user.as_deref(), Some("alice"));
        assert!(matches!(
            cli.command,
            Command::Op(Op::Create { acl: Some(ref a), .. }) if a == "auth::cdrwa"
        ));
        let cli = Cli::try_parse_from(["ensemble", "setacl", "/b", "world:anyone:r", "-v", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Op(Op::Setacl { aversion: 3, ref acl, .. }) if acl == "world:anyone:r"
        ));
        let line = ShellLine::try_parse_from(["addauth", "digest", "bob:pw"]).unwrap();
        assert!(matches!(
            line.command,
            ShellCommand::Op(Op::Addauth { ref scheme, ref auth }) if scheme == "digest" && auth == "bob:pw"
        ));
        assert!(matches!(
            ShellLine::try_parse_from(["whoami"]).unwrap().command,
            ShellCommand::Op(Op::Whoami)
        ));
        let e = Cli::try_parse_from(["ensemble", "frobnicate"]).unwrap_err();
        assert!(e.use_stderr(), "usage errors go to stderr (exit 2)");
        let line = ShellLine::try_parse_from(["watch", "/app", "-r"]).unwrap();
        assert!(matches!(
            line.command,
            ShellCommand::Watch { recursive: true, .. }
        ));
        assert!(matches!(
            ShellLine::try_parse_from(["exit"]).unwrap().command,
            ShellCommand::Quit
        ));
    }
}
