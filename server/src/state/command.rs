//! The commands that travel through the Raft log, and what applying them returns.
//!
//! One log entry carries a [`Batch`] of commands (group commit): the leader
//! gathers the commands that arrive close together and proposes them at once.
//! Everything apply needs is inside the entry, the leader's clock reading
//! included, so every replica computes the same state from the same log.

use serde::{Deserialize, Serialize};

use super::error::ErrorCode;
use super::sessions::Secret;
use super::tree::Stat;

/// The payload of one Raft log entry.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Batch {
    /// Wall-clock milliseconds read by the proposing leader; becomes ctime/mtime.
    pub time_ms: i64,
    /// Applied in order; each yields one [`Outcome`].
    pub commands: Vec<Command>,
}

/// One replicated decision about sessions or znodes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Command {
    /// Opens a session. Its id is derived from the entry's log index and the
    /// command's position, so it is the same on every replica and never reused.
    CreateSession {
        /// Random bytes made by the proposing node; every call of the
        /// session's client must present them.
        secret: Secret,
        /// Already clamped into the cluster's [min, max].
        timeout_ms: u32,
    },
    /// The client asked to end its session: its ephemerals go at once.
    CloseSession { session_id: u64 },
    /// Sessions heard from since their last replicated heartbeat (coalesced by the leader).
    Heartbeats { session_ids: Vec<u64> },
    /// The leader's expiry decision: these sessions and their ephemerals go.
    ExpireSessions { session_ids: Vec<u64> },
    /// One znode operation, or a multi: all of its ops or none.
    Txn {
        session_id: u64,
        ops: Vec<Op>,
        multi: bool,
    },
    /// Changes nothing; a follower that has applied it has caught up with the leader.
    Sync,
}

impl Command {
    /// About how many bytes the command takes in a log entry: what group
    /// commit bounds an entry by.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 32;
        match self {
            Command::CreateSession { .. } | Command::CloseSession { .. } | Command::Sync => FIXED,
            Command::Heartbeats { session_ids } | Command::ExpireSessions { session_ids } => {
                FIXED + 8 * session_ids.len()
            }
            Command::Txn { ops, .. } => FIXED + ops.iter().map(Op::approx_bytes).sum::<usize>(),
        }
    }
}

/// A znode operation.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Op {
    /// Fails unless the znode exists at the version (-1: any).
    Check { path: String, version: i32 },
    /// Creates a znode; sequential appends a 10-digit counter of the parent.
    Create {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        ephemeral: bool,
        sequential: bool,
    },
    /// Replaces the data if the version matches (-1: any).
    Set {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        version: i32,
    },
    /// Removes a childless znode if the version matches (-1: any).
    Delete { path: String, version: i32 },
}

impl Op {
    fn approx_bytes(&self) -> usize {
        const FIXED: usize = 16;
        match self {
            Op::Check { path, .. } | Op::Delete { path, .. } => FIXED + path.len(),
            Op::Create { path, data, .. } | Op::Set { path, data, .. } => FIXED + path.len() + data.len(),
        }
    }
}

/// What one op of a successful [`Command::Txn`] produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OpOutput {
    Check,
    Create { path: String, stat: Stat },
    Set { stat: Stat },
    Delete,
}

/// Why a command was refused; nothing it would have changed was changed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: ErrorCode,
    /// For a multi: the index of the first op that failed.
    pub op_index: Option<u32>,
    /// Names the path or session concerned.
    pub message: String,
}

impl Failure {
    /// A failure not tied to one op of a multi.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            op_index: None,
            message: message.into(),
        }
    }
}

/// The result of applying one [`Command`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    SessionCreated { session_id: u64, timeout_ms: u32 },
    Done,
    Txn(Vec<OpOutput>),
    Failed(Failure),
}

/// The results of one log entry: one [`Outcome`] per command, in order.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
}
