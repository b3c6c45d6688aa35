//! What the workload records: one [`Record`] per operation, as JSON lines.

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Acknowledged.
    Ok,
    /// Refused cleanly: it changed nothing.
    Fail,
    /// No answer, or CONNECTION_LOSS on a write: it may or may not have happened.
    Unknown,
}

/// One operation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Conditional set of a register znode (`expected` -1: any version).
    Write {
        key: String,
        data: String,
        expected: i32,
    },
    /// Read of a register znode; `synced` reads call sync first, which makes
    /// them linearizable (plain reads are only sequentially consistent, as
    /// ZooKeeper's: never older than what the same client already saw).
    Read {
        key: String,
        #[serde(default)]
        synced: bool,
    },
    /// Sequential create under `parent`.
    SeqCreate { parent: String },
    /// A lock held from `invoke_ms` to `complete_ms` (the release was invoked then).
    Lock { name: String },
    /// An ephemeral held by a client process; `killed_ms` if the workload killed it.
    Ephemeral { path: String, killed_ms: Option<u64> },
}

/// One operation of one client, with its outcome.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    pub client: u32,
    #[serde(flatten)]
    pub op: Op,
    /// Milliseconds since the workload started.
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub status: Status,
    /// Writes and reads: the version after / seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// Reads: the data seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    /// Sequential creates: the created path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Locks: the fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// Reads a history written as JSON lines.
pub fn load(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
