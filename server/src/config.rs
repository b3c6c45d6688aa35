//! Node configuration: command-line flags and/or a TOML file, merged and
//! checked into a [`Config`]. Flags win over the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::raft::{NodeId, PeerNode};

/// A configuration that can not run; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Flags of `ensemble-server`. Every one may also come from the TOML file
/// given with `--config` (same names, with `_` for `-`).
#[derive(Parser, Debug, Default)]
#[command(name = "ensemble-server", version, about = "One node of an Ensemble cluster")]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id: unique in the cluster, never reused.
    #[arg(long)]
    pub id: Option<u64>,
    /// Where to serve clients (default: this node's entry in --peers).
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<String>,
    /// Where to serve peers (default: this node's entry in --peers).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Every member: `ID=PEER_ADDR/CLIENT_ADDR`, comma separated.
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
    /// Raft heartbeat interval.
    #[arg(long, value_name = "MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Lower bound of the randomized election timeout (the upper is twice it).
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Session tick: touch reports, heartbeat coalescing and expiry checks run this often.
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Smallest session timeout granted.
    #[arg(long, value_name = "MS")]
    pub min_session_timeout_ms: Option<u64>,
    /// Largest session timeout granted.
    #[arg(long, value_name = "MS")]
    pub max_session_timeout_ms: Option<u64>,
    /// Largest znode data accepted.
    #[arg(long, value_name = "BYTES")]
    pub max_data_bytes: Option<usize>,
    /// Largest request accepted, as encoded on the wire (ZooKeeper's
    /// jute.maxbuffer); default: max_data_bytes + 32 KiB.
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most operations in one multi.
    #[arg(long, value_name = "OPS")]
    pub max_multi_ops: Option<usize>,
    /// Take a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Log entries kept behind a snapshot, for slow followers.
    #[arg(long, value_name = "ENTRIES")]
    pub log_keep_entries: Option<u64>,
    /// Most commands in one log entry.
    #[arg(long, value_name = "COMMANDS")]
    pub max_batch: Option<usize>,
    /// Recent changes kept to replay persistent-watch events to reconnecting clients.
    #[arg(long, value_name = "CHANGES")]
    pub watch_history: Option<usize>,
}

/// The TOML file: the same settings as [`Args`].
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    client_addr: Option<String>,
    peer_addr: Option<String>,
    data_dir: Option<PathBuf>,
    peers: Option<Vec<FilePeer>>,
    raft_heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    tick_ms: Option<u64>,
    min_session_timeout_ms: Option<u64>,
    max_session_timeout_ms: Option<u64>,
    max_data_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    max_multi_ops: Option<usize>,
    snapshot_entries: Option<u64>,
    log_keep_entries: Option<u64>,
    max_batch: Option<usize>,
    watch_history: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    id: u64,
    peer_addr: String,
    client_addr: String,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub members: BTreeMap<NodeId, PeerNode>,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub tick: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub max_data_bytes: usize,
    pub max_request_bytes: usize,
    pub max_multi_ops: usize,
    pub snapshot_entries: u64,
    pub log_keep_entries: u64,
    pub max_batch: usize,
    pub watch_history: usize,
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
        insert_peer(&mut members, id, peer_addr.trim(), client_addr.trim())?;
    }
    Ok(members)
}

fn insert_peer(
    members: &mut BTreeMap<NodeId, PeerNode>,
    id: u64,
    peer_addr: &str,
    client_addr: &str,
) -> Result<(), ConfigError> {
    if id == 0 {
        return Err(bad("peer id 0 is reserved; ids start at 1"));
    }
    for (what, addr) in [("peer", peer_addr), ("client", client_addr)] {
        check_addr(&format!("peer {id} {what} address"), addr)?;
    }
    let node = PeerNode {
        peer_addr: peer_addr.to_string(),
        client_addr: client_addr.to_string(),
    };
    if members.insert(id, node).is_some() {
        return Err(bad(format!("peer id {id} is listed twice")));
    }
    Ok(())
}

fn check_addr(what: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad(format!("{what} {addr:?} is not HOST:PORT"))),
    }
}

fn ms(name: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(bad(format!("{name} must be greater than 0")));
    }
    Ok(Duration::from_millis(v))
}

impl Config {
    /// Merges flags over the file (if any) and checks the result.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("can not read {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let id = args.id.or(file.id).ok_or_else(|| bad("--id is required"))?;
        let members = match (&args.peers, file.peers) {
            (Some(list), _) => parse_peers(list)?,
            (None, Some(list)) => {
                let mut m = BTreeMap::new();
                for p in list {
                    insert_peer(&mut m, p.id, &p.peer_addr, &p.client_addr)?;
                }
                m
            }
            (None, None) => return Err(bad("--peers is required (every member, this node included)")),
        };
        let me = members.get(&id).ok_or_else(|| {
            bad(format!(
                "--id {id} is not among the peers {:?}",
                members.keys().collect::<Vec<_>>()
            ))
        })?;
        let client_addr = args
            .client_addr
            .or(file.client_addr)
            .unwrap_or_else(|| me.client_addr.clone());
        let peer_addr = args
            .peer_addr
            .or(file.peer_addr)
            .unwrap_or_else(|| me.peer_addr.clone());
        check_addr("--client-addr", &client_addr)?;
        check_addr("--peer-addr", &peer_addr)?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .ok_or_else(|| bad("--data-dir is required"))?;
        let heartbeat = ms(
            "raft_heartbeat_ms",
            args.raft_heartbeat_ms.or(file.raft_heartbeat_ms).unwrap_or(100),
        )?;
        let election = ms(
            "election_timeout_ms",
            args.election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(500),
        )?;
        if election <= heartbeat * 2 {
            return Err(bad(format!(
                "election_timeout_ms ({}) must exceed twice raft_heartbeat_ms ({})",
                election.as_millis(),
                heartbeat.as_millis()
            )));
        }
        let tick = ms("tick_ms", args.tick_ms.or(file.tick_ms).unwrap_or(100))?;
        let min_session = ms(
            "min_session_timeout_ms",
            args.min_session_timeout_ms
                .or(file.min_session_timeout_ms)
                .unwrap_or(2000),
        )?;
        let max_session = ms(
            "max_session_timeout_ms",
            args.max_session_timeout_ms
                .or(file.max_session_timeout_ms)
                .unwrap_or(60_000),
        )?;
        if min_session > max_session {
            return Err(bad("min_session_timeout_ms exceeds max_session_timeout_ms"));
        }
        if min_session < tick * 3 {
            return Err(bad("min_session_timeout_ms must be at least three ticks"));
        }
        let max_data_bytes = args.max_data_bytes.or(file.max_data_bytes).unwrap_or(1024 * 1024);
        if max_data_bytes == 0 || max_data_bytes > 64 * 1024 * 1024 {
            return Err(bad("max_data_bytes must be between 1 and 67108864"));
        }
        // Room for the largest data, the longest path and the framing.
        let request_floor = max_data_bytes + ensemble_proto::path::MAX_PATH_BYTES + 1024;
        let max_request_bytes = args
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(max_data_bytes + 32 * 1024);
        if max_request_bytes < request_floor || max_request_bytes > 256 * 1024 * 1024 {
            return Err(bad(format!(
                "max_request_bytes must be between {request_floor} (max_data_bytes + the longest path + 1 KiB) and 268435456"
            )));
        }
        let max_multi_ops = args.max_multi_ops.or(file.max_multi_ops).unwrap_or(10_000);
        if max_multi_ops == 0 || max_multi_ops > 1_000_000 {
            return Err(bad("max_multi_ops must be between 1 and 1000000"));
        }
        let snapshot_entries = args.snapshot_entries.or(file.snapshot_entries).unwrap_or(100_000);
        let log_keep_entries = args.log_keep_entries.or(file.log_keep_entries).unwrap_or(10_000);
        if snapshot_entries == 0 {
            return Err(bad("snapshot_entries must be greater than 0"));
        }
        let max_batch = args.max_batch.or(file.max_batch).unwrap_or(512);
        if max_batch == 0 || max_batch > crate::state::machine::MAX_BATCH {
            return Err(bad(format!(
                "max_batch must be between 1 and {}",
                crate::state::machine::MAX_BATCH
            )));
        }
        let watch_history = args.watch_history.or(file.watch_history).unwrap_or(10_000);
        if watch_history == 0 {
            return Err(bad("watch_history must be greater than 0"));
        }
        Ok(Config {
            id,
            client_addr,
            peer_addr,
            data_dir,
            members,
            heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            tick,
            min_session_timeout: min_session,
            max_session_timeout: max_session,
            max_data_bytes,
            max_request_bytes,
            max_multi_ops,
            snapshot_entries,
            log_keep_entries,
            max_batch,
            watch_history,
        })
    }

    /// openraft's configuration for these settings.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let c = openraft::Config {
            cluster_name: "ensemble".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_entries),
            max_in_snapshot_log_to_keep: self.log_keep_entries,
            install_snapshot_timeout: 10_000,
            // openraft gives each AppendEntries one heartbeat interval to
            // finish, so bound its size: entries are batches themselves.
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
}
