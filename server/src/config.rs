//! A member's settings, declared once ([`Args`]) and taken from flags,
//! `ENSEMBLE_*` environment variables and a TOML file, in that order of
//! precedence, then checked into a [`Config`].
//!
//! The TOML file is turned into flags (a key `max_batch = 64` is
//! `--max-batch 64`; the `[[peers]]` tables are `--peers`), so the one
//! definition in [`Args`] serves all three sources, its docs are the
//! reference, and a key no flag knows is refused.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::state::machine::MAX_BATCH;
use crate::state::{NodeId, PeerNode};
use crate::tls::Tls;

/// A configuration that can not run; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Why the command line gave no configuration.
#[derive(Debug)]
pub enum ArgsError {
    /// clap's own answer: a usage error, or `--help` / `--version`.
    Usage(clap::Error),
    /// The configuration file is unreadable or wrong.
    File(ConfigError),
}

/// Every setting of `ensemble-server`. Each is a flag, an `ENSEMBLE_*`
/// environment variable, and a key of the TOML file given with `--config`
/// (the flag's name with `_` for `-`); flags win over the environment,
/// which wins over the file.
#[derive(Parser, Debug, Default)]
#[command(
    name = "ensemble-server",
    version,
    about = "One member of an Ensemble cluster",
    args_override_self = true
)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_CONFIG")]
    pub config: Option<PathBuf>,
    /// This member's id: unique in the cluster, never reused.
    #[arg(long, env = "ENSEMBLE_ID")]
    pub id: Option<u64>,
    /// Every member: `ID=PEER_ADDR/CLIENT_ADDR`, comma separated.
    #[arg(long, value_name = "LIST", env = "ENSEMBLE_PEERS")]
    pub peers: Option<String>,
    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, value_name = "DIR", env = "ENSEMBLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to serve clients (default: this member's entry in --peers).
    #[arg(long, value_name = "HOST:PORT", env = "ENSEMBLE_CLIENT_ADDR")]
    pub client_addr: Option<String>,
    /// Where to serve peers (default: this member's entry in --peers).
    #[arg(long, value_name = "HOST:PORT", env = "ENSEMBLE_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// Raft heartbeat interval, leader to followers; also how long one
    /// AppendEntries call may take [default: 50].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Lower bound of the randomized election timeout; the upper is twice it,
    /// and is also the leader's lease: how long after hearing from a leader
    /// a member refuses to vote for another [default: 150].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Liveness tick: touch reports, heartbeat coalescing and expiry checks [default: 100].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Smallest session timeout granted [default: 2000].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_MIN_SESSION_TIMEOUT_MS")]
    pub min_session_timeout_ms: Option<u64>,
    /// Largest session timeout granted [default: 60000].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_MAX_SESSION_TIMEOUT_MS")]
    pub max_session_timeout_ms: Option<u64>,
    /// Largest znode data accepted [default: 1048576].
    #[arg(long, value_name = "BYTES", env = "ENSEMBLE_MAX_DATA_BYTES")]
    pub max_data_bytes: Option<usize>,
    /// Largest request accepted, as encoded on the wire (ZooKeeper's
    /// jute.maxbuffer) [default: max_data_bytes + 32768].
    #[arg(long, value_name = "BYTES", env = "ENSEMBLE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Users file: a TOML `[users]` table of `name = "<argon2 hash>"`
    /// (make a hash with `ensemble-server hash-password`). Sessions may
    /// then authenticate as these users (scheme digest, `user:password`).
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_USERS")]
    pub users: Option<PathBuf>,
    /// A user of the users file who passes every ACL check (ZooKeeper's super digest).
    #[arg(long, value_name = "NAME", env = "ENSEMBLE_SUPER_USER")]
    pub super_user: Option<String>,
    /// Refuse sessions that do not present a user's credentials.
    #[arg(long, env = "ENSEMBLE_REQUIRE_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub require_auth: Option<bool>,
    /// Most operations in one multi [default: 10000].
    #[arg(long, value_name = "OPS", env = "ENSEMBLE_MAX_MULTI_OPS")]
    pub max_multi_ops: Option<usize>,
    /// Take a snapshot (and purge the log behind it) every this many entries [default: 100000].
    #[arg(long, value_name = "ENTRIES", env = "ENSEMBLE_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Log entries kept behind a snapshot, for slow followers [default: 10000].
    #[arg(long, value_name = "ENTRIES", env = "ENSEMBLE_LOG_KEEP_ENTRIES")]
    pub log_keep_entries: Option<u64>,
    /// Most commands in one log entry [default: 512].
    #[arg(long, value_name = "COMMANDS", env = "ENSEMBLE_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Recent changes kept to replay persistent-watch events to reconnecting clients [default: 10000].
    #[arg(long, value_name = "CHANGES", env = "ENSEMBLE_WATCH_HISTORY")]
    pub watch_history: Option<usize>,
    /// Threads that run requests and Raft. Work per request is small and
    /// fsyncs run on storage threads, so when several members share a small
    /// host, fewer threads mean fewer wakeups across cores (1 gave +50 %
    /// writes with three members on 2 cores) at the price of a member that
    /// stalls whenever one task blocks [default: the number of CPUs].
    #[arg(long, value_name = "N", env = "ENSEMBLE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Where to serve Prometheus metrics (`GET /metrics`), or `off` [default: 0.0.0.0:7000].
    #[arg(long, value_name = "HOST:PORT|off", env = "ENSEMBLE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// PEM certificate (chain) this member presents to clients and peers.
    /// Setting it turns TLS on for both listeners and for this member's
    /// calls to peers; needs --tls-key and --tls-ca. Its names (SANs) must
    /// cover the host parts of this member's addresses in --peers. Plaintext
    /// connections are then refused. [default: no TLS]
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1). Read once at
    /// startup, never logged.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the members' certificates.
    /// Peers always authenticate each other with it (mutual TLS: a member
    /// whose certificate it did not sign can not join), and with
    /// --tls-client-auth clients' certificates must be signed by it too.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require clients to present a certificate signed by --tls-ca (mutual
    /// TLS for clients as well as peers); true/false, yes/no or 1/0
    /// [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        env = "ENSEMBLE_TLS_CLIENT_AUTH",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub tls_client_auth: Option<bool>,
    /// File holding the cluster's peer secret (one line of at least 32
    /// printable ASCII characters, the same on every member; e.g.
    /// `openssl rand -hex 32`). Every call between members carries it and
    /// the peer port refuses calls without it. Needed, without TLS, for
    /// --require-auth; with TLS it is checked on top of the certificates.
    /// Read once at startup, never logged. [default: none]
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_PEER_SECRET_FILE")]
    pub peer_secret_file: Option<PathBuf>,
    /// Run with --require-auth although the peer port is protected by
    /// neither TLS nor a peer secret: whoever reaches it can then act as a
    /// member (forge sessions and identities, vote, append entries). Only
    /// for a peer network nothing else can reach [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        env = "ENSEMBLE_ALLOW_OPEN_PEER_PORT",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_open_peer_port: Option<bool>,
    /// Most client connections open at once; more are closed as they
    /// arrive. A process's sessions share connections [default: 10000].
    #[arg(long, value_name = "N", env = "ENSEMBLE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most concurrent HTTP/2 streams (sessions and calls) on one client
    /// connection; more are refused and the client library opens another
    /// connection [default: 1000].
    #[arg(long, value_name = "N", env = "ENSEMBLE_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// How long a connection may take to finish its TLS handshake before it
    /// is closed [default: 5000].
    #[arg(long, value_name = "MS", env = "ENSEMBLE_TLS_HANDSHAKE_TIMEOUT_MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
}

/// Where metrics are served unless `metrics_addr` says otherwise
/// (ZooKeeper's `metricsProvider.httpPort` is 7000 too).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:7000";

impl Args {
    /// Parses a command line, with the file it names folded in under the
    /// flags and the environment.
    pub fn parse_all(argv: Vec<OsString>) -> Result<Args, ArgsError> {
        let args = Args::try_parse_from(&argv).map_err(ArgsError::Usage)?;
        let Some(path) = args.config.clone() else {
            return Ok(args);
        };
        let file = file_args(&path).map_err(ArgsError::File)?;
        let program = argv.first().cloned().unwrap_or_else(|| "ensemble-server".into());
        // The file alone first, so a bad value there is reported as the file's.
        let alone = std::iter::once(program.clone()).chain(file.iter().cloned());
        Args::try_parse_from(alone)
            .map_err(|e| ArgsError::File(bad(format!("{}: {}", path.display(), e.kind()))))?;
        let merged = std::iter::once(program)
            .chain(file)
            .chain(argv.into_iter().skip(1));
        Args::try_parse_from(merged).map_err(ArgsError::Usage)
    }
}

/// The flags a TOML file stands for. Keys whose environment variable is set
/// are skipped: the environment wins over the file.
fn file_args(path: &std::path::Path) -> Result<Vec<OsString>, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("can not read {}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let command = Args::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.replace('_', "-").as_str()) && key != "config")
            .ok_or_else(|| bad(format!("{}: unknown setting {key:?}", path.display())))?;
        if arg.get_env().is_some_and(|env| std::env::var_os(env).is_some()) {
            continue;
        }
        let text = match (&*key, value) {
            ("peers", toml::Value::Array(peers)) => {
                peers_list(&peers).map_err(|e| bad(format!("{}: {e}", path.display())))?
            }
            (_, toml::Value::String(s)) => s,
            (_, v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_))) => {
                v.to_string()
            }
            (_, v) => {
                return Err(bad(format!(
                    "{}: {key} = {v} is not a single value",
                    path.display()
                )))
            }
        };
        out.push(format!("--{}", key.replace('_', "-")).into());
        out.push(text.into());
    }
    Ok(out)
}

/// `[[peers]]` tables (`id`, `peer_addr`, `client_addr`) as a `--peers` list.
fn peers_list(peers: &[toml::Value]) -> Result<String, String> {
    let item = |p: &toml::Value| -> Option<String> {
        let t = p.as_table()?;
        let id = t.get("id")?.as_integer()?;
        let peer = t.get("peer_addr")?.as_str()?;
        let client = t.get("client_addr")?.as_str()?;
        (t.len() == 3).then(|| format!("{id}={peer}/{client}"))
    };
    peers
        .iter()
        .map(|p| {
            item(p)
                .ok_or_else(|| format!("a [[peers]] table needs exactly id, peer_addr and client_addr: {p}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's id.
    pub id: NodeId,
    /// Where it serves clients.
    pub client_addr: String,
    /// Where it serves peers.
    pub peer_addr: String,
    /// Where its data lives.
    pub data_dir: PathBuf,
    /// Every member.
    pub members: BTreeMap<NodeId, PeerNode>,
    /// The Raft heartbeat interval.
    pub raft_heartbeat: Duration,
    /// The shortest election timeout.
    pub election_timeout_min: Duration,
    /// The longest election timeout.
    pub election_timeout_max: Duration,
    /// The liveness tick.
    pub tick: Duration,
    /// The smallest session timeout granted.
    pub min_session_timeout: Duration,
    /// The largest session timeout granted.
    pub max_session_timeout: Duration,
    /// The largest znode data.
    pub max_data_bytes: usize,
    /// The largest request, encoded.
    pub max_request_bytes: usize,
    /// The most ops in a multi.
    pub max_multi_ops: usize,
    /// The users sessions may authenticate as.
    pub users: Users,
    /// A user who passes every ACL check.
    pub super_user: Option<String>,
    /// Whether a session must authenticate.
    pub require_auth: bool,
    /// Entries between snapshots.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot.
    pub log_keep_entries: u64,
    /// Commands per entry.
    pub max_batch: usize,
    /// Changes kept for watch replay.
    pub watch_history: usize,
    /// Where to serve metrics; None when `off`.
    pub metrics_addr: Option<String>,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// TLS for the listeners and peer calls; None: plaintext.
    pub tls: Option<Tls>,
    /// The secret every peer call carries; None: none asked.
    pub peer_secret: Option<PeerSecret>,
    /// The most client connections at once.
    pub max_connections: usize,
    /// The most concurrent streams on one client connection.
    pub max_streams_per_connection: u32,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
}

impl Config {
    /// Whether anyone who reaches the peer port can act as a member
    /// (neither TLS nor a peer secret protects it).
    pub fn peer_port_open(&self) -> bool {
        self.tls.is_none() && self.peer_secret.is_none()
    }
}

/// The cluster's peer secret. Its `Debug` hides it; it is compared in
/// constant time, so a caller learns nothing from how long a refusal took.
#[derive(Clone)]
pub struct PeerSecret(std::sync::Arc<str>);

/// Shortest peer secret accepted: guessing it must be hopeless.
pub const MIN_PEER_SECRET_CHARS: usize = 32;

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<hidden>)")
    }
}

impl PeerSecret {
    /// Reads and checks the secret file; the error names the setting and
    /// the file, never the contents.
    pub fn load(path: &std::path::Path) -> Result<PeerSecret, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(format!(
                "--peer-secret-file: can not read {}: {e}",
                path.display()
            ))
        })?;
        PeerSecret::new(text.trim())
            .map_err(|why| bad(format!("--peer-secret-file: {}: {why}", path.display())))
    }

    /// A secret from its text (at least [`MIN_PEER_SECRET_CHARS`] printable
    /// ASCII characters: it travels as a gRPC metadata value).
    pub fn new(text: &str) -> Result<PeerSecret, String> {
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the secret must be printable ASCII without spaces".into());
        }
        if text.len() < MIN_PEER_SECRET_CHARS {
            return Err(format!(
                "the secret has {} characters; at least {MIN_PEER_SECRET_CHARS} are needed",
                text.len()
            ));
        }
        Ok(PeerSecret(text.into()))
    }

    /// The secret, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is the secret; takes the same time wherever
    /// the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        crate::state::sessions::constant_time_eq(self.0.as_bytes(), presented)
    }
}

/// The users file's users: name → argon2 hash of the password, as a PHC
/// string. Its `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Users(BTreeMap<String, String>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Users {
    /// Users with these hashes.
    #[cfg(test)]
    pub fn new(hashes: BTreeMap<String, String>) -> Users {
        Users(hashes)
    }

    /// Name → PHC hash string.
    pub fn hashes(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Reads a users file: a TOML `[users]` table of `name = "<argon2 PHC hash>"`.
    pub fn load(path: &std::path::Path) -> Result<Users, ConfigError> {
        let file = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("can not read users file {file}: {e}")))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("users file {file}: {e}")))?;
        let mut users = BTreeMap::new();
        for (key, value) in table {
            let (true, toml::Value::Table(entries)) = (key == "users", value) else {
                return Err(bad(format!(
                    "users file {file}: unexpected {key:?}; expected a [users] table of name = \"hash\""
                )));
            };
            for (name, hash) in entries {
                if !ensemble_proto::acl::valid_user(&name) {
                    return Err(bad(format!(
                        "users file {file}: user name {name:?} may hold only letters, digits, . _ - (at most 64)"
                    )));
                }
                let hash = hash
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("users file {file}: {name}'s hash is not a string")))?;
                argon2::password_hash::PasswordHash::new(&hash).map_err(|e| {
                    bad(format!(
                        "users file {file}: {name}'s hash is not a PHC hash string ({e}); make one with `ensemble-server hash-password`"
                    ))
                })?;
                users.insert(name, hash);
            }
        }
        Ok(Users(users))
    }
}

/// Parses `ID=PEER_ADDR/CLIENT_ADDR,...`.
fn parse_peers(list: &str) -> Result<BTreeMap<NodeId, PeerNode>, ConfigError> {
    let mut members = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addrs) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("peer {item:?} is not ID=PEER_ADDR/CLIENT_ADDR")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("peer {item:?}: id {id:?} is not a number")))?;
        let (peer_addr, client_addr) = addrs
            .split_once('/')
            .ok_or_else(|| bad(format!("peer {item:?} is not ID=PEER_ADDR/CLIENT_ADDR")))?;
        if id == 0 {
            return Err(bad("peer id 0 is reserved; ids start at 1"));
        }
        for (what, addr) in [("peer", peer_addr.trim()), ("client", client_addr.trim())] {
            check_addr(&format!("peer {id} {what} address"), addr)?;
        }
        let node = PeerNode {
            peer_addr: peer_addr.trim().to_string(),
            client_addr: client_addr.trim().to_string(),
        };
        if members.insert(id, node).is_some() {
            return Err(bad(format!("peer id {id} is listed twice")));
        }
    }
    Ok(members)
}

fn check_addr(what: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad(format!("{what} {addr:?} is not HOST:PORT"))),
    }
}

fn ms(name: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(bad(format!("{name} must be greater than 0"))),
        v => Ok(Duration::from_millis(v)),
    }
}

impl Config {
    /// Checks the settings and fills in defaults.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let id = args.id.ok_or_else(|| bad("--id is required"))?;
        let members = parse_peers(
            args.peers
                .as_deref()
                .ok_or_else(|| bad("--peers is required (every member, this one included)"))?,
        )?;
        let me = members.get(&id).ok_or_else(|| {
            bad(format!(
                "--id {id} is not among the peers {:?}",
                members.keys().collect::<Vec<_>>()
            ))
        })?;
        let client_addr = args.client_addr.unwrap_or_else(|| me.client_addr.clone());
        let peer_addr = args.peer_addr.unwrap_or_else(|| me.peer_addr.clone());
        check_addr("--client-addr", &client_addr)?;
        check_addr("--peer-addr", &peer_addr)?;
        let data_dir = args.data_dir.ok_or_else(|| bad("--data-dir is required"))?;
        let raft_heartbeat = ms("raft_heartbeat_ms", args.raft_heartbeat_ms, 50)?;
        let election = ms("election_timeout_ms", args.election_timeout_ms, 150)?;
        if election <= raft_heartbeat * 2 {
            return Err(bad(format!(
                "election_timeout_ms ({}) must exceed twice raft_heartbeat_ms ({})",
                election.as_millis(),
                raft_heartbeat.as_millis()
            )));
        }
        let tick = ms("tick_ms", args.tick_ms, 100)?;
        let min_session = ms("min_session_timeout_ms", args.min_session_timeout_ms, 2000)?;
        let max_session = ms("max_session_timeout_ms", args.max_session_timeout_ms, 60_000)?;
        if min_session > max_session {
            return Err(bad("min_session_timeout_ms exceeds max_session_timeout_ms"));
        }
        if min_session < tick * 3 {
            return Err(bad("min_session_timeout_ms must be at least three ticks"));
        }
        let max_data_bytes = args.max_data_bytes.unwrap_or(1024 * 1024);
        if max_data_bytes == 0 || max_data_bytes > 64 * 1024 * 1024 {
            return Err(bad("max_data_bytes must be between 1 and 67108864"));
        }
        // Room for the largest data, the longest path and the framing.
        let request_floor = max_data_bytes + ensemble_proto::path::MAX_PATH_BYTES + 1024;
        let max_request_bytes = args.max_request_bytes.unwrap_or(max_data_bytes + 32 * 1024);
        if max_request_bytes < request_floor || max_request_bytes > 256 * 1024 * 1024 {
            return Err(bad(format!(
                "max_request_bytes must be between {request_floor} (max_data_bytes + the longest path + 1 KiB) and 268435456"
            )));
        }
        let max_multi_ops = args.max_multi_ops.unwrap_or(10_000);
        if max_multi_ops == 0 || max_multi_ops > 1_000_000 {
            return Err(bad("max_multi_ops must be between 1 and 1000000"));
        }
        let users = match &args.users {
            Some(path) => Users::load(path)?,
            None => Users::default(),
        };
        if let Some(s) = args.super_user.as_deref().filter(|s| !users.0.contains_key(*s)) {
            return Err(bad(format!("super_user {s:?} is not in the users file")));
        }
        let require_auth = args.require_auth.unwrap_or(false);
        if require_auth && users.0.is_empty() {
            return Err(bad(
                "require_auth is set but no users are configured (--users FILE)",
            ));
        }
        let snapshot_entries = args.snapshot_entries.unwrap_or(100_000);
        if snapshot_entries == 0 {
            return Err(bad("snapshot_entries must be greater than 0"));
        }
        let max_batch = args.max_batch.unwrap_or(512);
        if max_batch == 0 || max_batch > MAX_BATCH {
            return Err(bad(format!("max_batch must be between 1 and {MAX_BATCH}")));
        }
        let watch_history = args.watch_history.unwrap_or(10_000);
        if watch_history == 0 {
            return Err(bad("watch_history must be greater than 0"));
        }
        let metrics_addr = match args.metrics_addr.as_deref().map(str::trim) {
            Some("off") => None,
            addr => {
                let addr = addr.unwrap_or(DEFAULT_METRICS_ADDR);
                check_addr("--metrics-addr (or off)", addr)?;
                if addr == client_addr || addr == peer_addr {
                    return Err(bad(format!(
                        "--metrics-addr {addr} is also the client or peer address"
                    )));
                }
                Some(addr.to_string())
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads = args.worker_threads.unwrap_or(cpus);
        if worker_threads == 0 || worker_threads > 1024 {
            return Err(bad("worker_threads must be between 1 and 1024"));
        }
        let tls = match (args.tls_cert, args.tls_key, args.tls_ca) {
            (None, None, None) if args.tls_client_auth == Some(true) => {
                return Err(bad(
                    "--tls-client-auth needs TLS: set --tls-cert, --tls-key and --tls-ca",
                ))
            }
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(
                Tls::load(&cert, &key, &ca, args.tls_client_auth.unwrap_or(false))
                    .map_err(|e| bad(e.to_string()))?,
            ),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    ("--tls-cert", cert.is_none()),
                    ("--tls-key", key.is_none()),
                    ("--tls-ca", ca.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, gone)| gone.then_some(name))
                .collect();
                return Err(bad(format!(
                    "TLS needs --tls-cert, --tls-key and --tls-ca together; missing {}",
                    missing.join(", ")
                )));
            }
        };
        let peer_secret = args
            .peer_secret_file
            .as_deref()
            .map(PeerSecret::load)
            .transpose()?;
        if require_auth && tls.is_none() && peer_secret.is_none() && args.allow_open_peer_port != Some(true) {
            return Err(bad(
                "require_auth is set but the peer port is open: whoever reaches it could act as a member \
                 and forge sessions and identities. Protect it with --peer-secret-file (or TLS: --tls-cert, \
                 --tls-key, --tls-ca), or pass --allow-open-peer-port if nothing else can reach the peer network",
            ));
        }
        let max_connections = args.max_connections.unwrap_or(10_000);
        if max_connections == 0 || max_connections > 1_000_000 {
            return Err(bad("max_connections must be between 1 and 1000000"));
        }
        let max_streams_per_connection = args.max_streams_per_connection.unwrap_or(1000);
        if max_streams_per_connection == 0 || max_streams_per_connection > 100_000 {
            return Err(bad("max_streams_per_connection must be between 1 and 100000"));
        }
        let tls_handshake_timeout = ms("tls_handshake_timeout_ms", args.tls_handshake_timeout_ms, 5000)?;
        Ok(Config {
            id,
            client_addr,
            peer_addr,
            data_dir,
            members,
            raft_heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            tick,
            min_session_timeout: min_session,
            max_session_timeout: max_session,
            max_data_bytes,
            max_request_bytes,
            max_multi_ops,
            users,
            super_user: args.super_user,
            require_auth,
            snapshot_entries,
            log_keep_entries: args.log_keep_entries.unwrap_or(10_000),
            max_batch,
            watch_history,
            metrics_addr,
            worker_threads,
            tls,
            peer_secret,
            max_connections,
            max_streams_per_connection,
            tls_handshake_timeout,
        })
    }

    /// openraft's configuration for these settings.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let c = openraft::Config {
            cluster_name: "ensemble".into(),
            heartbeat_interval: self.raft_heartbeat.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_entries),
            max_in_snapshot_log_to_keep: self.log_keep_entries,
            install_snapshot_timeout: 10_000,
            // Entries are batches themselves; the log store also bounds an
            // AppendEntries by bytes.
            max_payload_entries: 64,
            ..Default::default()
        };
        c.validate().map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(peers: &str) -> Args {
        Args {
            id: Some(1),
            peers: Some(peers.into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn parses_peers_and_defaults() {
        let c = Config::load(args("1=127.0.0.1:2881/127.0.0.1:2181,2=h2:2881/h2:2181")).unwrap();
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.client_addr, "127.0.0.1:2181");
        assert_eq!(c.max_data_bytes, 1024 * 1024);
    }

    #[test]
    fn worker_threads_default_to_the_cpus_and_zero_is_refused() {
        let peers = "1=127.0.0.1:2881/127.0.0.1:2181";
        let c = Config::load(args(peers)).unwrap();
        assert!(c.worker_threads >= 1);
        let with = |n: usize| {
            Config::load(Args {
                worker_threads: Some(n),
                ..args(peers)
            })
        };
        assert_eq!(with(3).unwrap().worker_threads, 3);
        let e = with(0).unwrap_err().to_string();
        assert!(e.contains("worker_threads"), "{e}");
    }

    #[test]
    fn metrics_are_served_on_7000_unless_moved_or_off() {
        let peers = "1=127.0.0.1:2881/127.0.0.1:2181";
        let c = Config::load(args(peers)).unwrap();
        assert_eq!(c.metrics_addr.as_deref(), Some("0.0.0.0:7000"));
        let with = |addr: &str| {
            Config::load(Args {
                metrics_addr: Some(addr.into()),
                ..args(peers)
            })
        };
        assert_eq!(with("off").unwrap().metrics_addr, None);
        assert_eq!(
            with("127.0.0.1:7001").unwrap().metrics_addr.as_deref(),
            Some("127.0.0.1:7001")
        );
        for bad in ["7000", "on", "127.0.0.1:2181"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("--metrics-addr"), "{bad}: {e}");
        }
    }

    #[test]
    fn tls_settings_go_together() {
        let peers = "1=127.0.0.1:2881/127.0.0.1:2181";
        assert!(Config::load(args(peers)).unwrap().tls.is_none());
        let some = |p: &str| Some(PathBuf::from(p));
        for (cert, key, ca, why) in [
            (some("c"), None, some("a"), "missing --tls-key"),
            (None, some("k"), None, "missing --tls-cert, --tls-ca"),
            (some("c"), some("k"), None, "missing --tls-ca"),
        ] {
            let e = Config::load(Args {
                tls_cert: cert,
                tls_key: key,
                tls_ca: ca,
                ..args(peers)
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = Config::load(Args {
            tls_client_auth: Some(true),
            ..args(peers)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--tls-client-auth needs TLS"), "{e}");
        let e = Config::load(Args {
            tls_cert: some("/no/such/cert.pem"),
            tls_key: some("/no/such/key.pem"),
            tls_ca: some("/no/such/ca.pem"),
            ..args(peers)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--tls-cert: can not read /no/such/cert.pem"), "{e}");
        // A bare flag, a value and the file's boolean all parse.
        let parse = |extra: &[&str]| {
            let argv = ["ensemble-server"]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect();
            Args::parse_all(argv).unwrap().tls_client_auth
        };
        assert_eq!(parse(&["--tls-client-auth"]), Some(true));
        assert_eq!(parse(&["--tls-client-auth", "false"]), Some(false));
        assert_eq!(parse(&["--tls-client-auth", "1"]), Some(true));
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn refuses_bad_configs_with_a_reason() {
        for (peers, why) in [
            ("1=a:1", "PEER_ADDR/CLIENT_ADDR"),
            ("1=a:1/b", "HOST:PORT"),
            ("2=a:1/b:2", "not among the peers"),
            ("1=a:1/b:2,1=c:1/d:2", "listed twice"),
            ("x=a:1/b:2", "not a number"),
        ] {
            let e = Config::load(args(peers)).unwrap_err().to_string();
            assert!(e.contains(why), "{peers}: {e}");
        }
    }

    #[test]
    fn the_peer_secret_is_checked_hidden_and_compared_whole() {
        assert!(PeerSecret::new("short").unwrap_err().contains("at least 32"));
        assert!(
            PeerSecret::new(&format!("{} x", "a".repeat(40))).is_err(),
            "spaces"
        );
        let secret = PeerSecret::new(&"s3cr3t-".repeat(6)).unwrap();
        assert!(secret.matches("s3cr3t-".repeat(6).as_bytes()));
        assert!(!secret.matches("s3cr3t-".repeat(5).as_bytes()));
        assert!(!secret.matches(format!("{}X", "s3cr3t-".repeat(6)).as_bytes()));
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn one_definition_serves_the_file_the_environment_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "id = 1\ndata_dir = \"/d\"\nmax_batch = 64\ntick_ms = 50\n\
             [[peers]]\nid = 1\npeer_addr = \"a:1\"\nclient_addr = \"a:2\"\n",
        )
        .unwrap();
        let argv = |extra: &[&str]| -> Vec<OsString> {
            ["ensemble-server", "--config", file.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let from_file = Config::load(Args::parse_all(argv(&[])).unwrap()).unwrap();
        assert_eq!(
            (from_file.max_batch, from_file.tick, from_file.members.len()),
            (64, Duration::from_millis(50), 1)
        );
        let flag_wins = Args::parse_all(argv(&["--max-batch", "8"])).unwrap();
        assert_eq!(flag_wins.max_batch, Some(8));

        std::fs::write(&file, "id = 1\nno_such_setting = 3\n").unwrap();
        let Err(ArgsError::File(e)) = Args::parse_all(argv(&[])) else {
            panic!("an unknown key is refused");
        };
        assert!(e.to_string().contains("no_such_setting"), "{e}");
        std::fs::write(&file, "id = \"one\"\n").unwrap();
        assert!(matches!(Args::parse_all(argv(&[])), Err(ArgsError::File(_))));
    }
}
