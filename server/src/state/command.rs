//! The commands that travel through the Raft log, and what applying them returns.
//!
//! One log entry carries a [`Batch`] of commands (group commit): the leader
//! gathers the commands that arrive close together and proposes them at once.
//! Everything apply needs is inside the entry, the leader's clock reading
//! included, so every replica computes the same state from the same log.

use serde::{Deserialize, Serialize};

use std::net::IpAddr;

use ensemble_proto::SessionId;

use super::acl::{AclEntry, Identity};
use super::error::Refusal;
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

/// One replicated decision about sessions or znodes. The log stores a
/// variant by its position: add new ones at the end only; a variant older
/// versions wrote stays, documented as what it now applies as.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Command {
    /// A session opened before sessions had identities: applies as
    /// [`Command::CreateSession`] with none. Never proposed any more.
    CreateSessionBare {
        /// Random bytes made by the proposing node; every call of the
        /// session's client must present them.
        secret: Secret,
        /// Already clamped into the cluster's [min, max].
        timeout_ms: u32,
    },
    /// The client asked to end its session: its ephemerals go at once.
    CloseSession {
        /// The session.
        session_id: SessionId,
    },
    /// Heartbeats as entries written before they carried ages: applies as
    /// [`Command::Heartbeats`] with every age 0. Never proposed any more.
    HeartbeatsUnaged {
        /// The sessions.
        session_ids: Vec<SessionId>,
    },
    /// The leader's expiry decision: these sessions and their ephemerals go.
    ExpireSessions {
        /// The sessions.
        session_ids: Vec<SessionId>,
    },
    /// A txn written before entries carried the client's address: applies
    /// as [`Command::Txn`] with no address. Never proposed any more.
    TxnNoAddress {
        /// The session the ops act for.
        session_id: SessionId,
        /// Applied in order.
        ops: Vec<Op>,
        /// Reports which op failed, and rolls back the ones before it.
        multi: bool,
    },
    /// Changes nothing. `sync` once proposed it; it now uses a read index
    /// (`consensus::read_index`), and the variant stays so that logs written
    /// before still apply.
    Sync,
    /// The heartbeats of these sessions, replicated: each was touched since
    /// its previous one (coalesced by the leader, at most one per T/3).
    /// Each carries how long before the proposal the leader last heard of
    /// the session, so a member's apply mark dates the touch, not the
    /// coalescing delay (a mark may be late, never early).
    Heartbeats {
        /// (session, ms between its last touch and the proposal).
        sessions: Vec<(SessionId, u32)>,
    },
    /// Opens a session. Its id is derived from the entry's log index and the
    /// command's position, so it is the same on every replica and never reused.
    CreateSession {
        /// Random bytes made by the proposing node; every call of the
        /// session's client must present them.
        secret: Secret,
        /// Already clamped into the cluster's [min, max].
        timeout_ms: u32,
        /// Proven by the receiving node (passwords never enter the log).
        identities: Vec<Identity>,
    },
    /// One znode operation, or a multi: all of its ops or none. Each op is
    /// checked against the ACLs when applied, as the session's identities
    /// and the client's address allow.
    Txn {
        /// The session the ops act for (the owner of ephemerals they create).
        session_id: SessionId,
        /// Applied in order.
        ops: Vec<Op>,
        /// Reports which op failed, and rolls back the ones before it.
        multi: bool,
        /// The client's address as the receiving node saw it: what `ip`
        /// ACL entries match.
        client_ip: Option<IpAddr>,
    },
    /// Adds an identity, proven by the receiving node, to a session.
    AddIdentity {
        /// The session.
        session_id: SessionId,
        /// The identity.
        identity: Identity,
    },
}

impl Command {
    /// About how many bytes the command takes in a log entry: what group
    /// commit bounds an entry by.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 32;
        match self {
            Command::CreateSessionBare { .. } | Command::CloseSession { .. } | Command::Sync => FIXED,
            Command::CreateSession { identities, .. } => {
                FIXED + identities.iter().map(|i| 8 + i.id.len()).sum::<usize>()
            }
            Command::AddIdentity { identity, .. } => FIXED + identity.id.len(),
            Command::HeartbeatsUnaged { session_ids } | Command::ExpireSessions { session_ids } => {
                FIXED + 8 * session_ids.len()
            }
            Command::Heartbeats { sessions } => FIXED + 12 * sessions.len(),
            Command::Txn { ops, .. } | Command::TxnNoAddress { ops, .. } => {
                FIXED + ops.iter().map(Op::approx_bytes).sum::<usize>()
            }
        }
    }
}

/// A znode operation. Stored by position, as [`Command`]: add at the end.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Op {
    /// Fails unless the znode exists at the version (-1: any).
    Check {
        /// The znode.
        path: String,
        /// The version it must be at.
        version: i32,
    },
    /// A create written before znodes had ACLs: applies as [`Op::Create`]
    /// with the open ACL. Never proposed any more.
    CreateOpen {
        /// The znode, or for a sequential create the prefix of its name.
        path: String,
        /// Its data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Owned by the txn's session, deleted when it ends.
        ephemeral: bool,
        /// Appends the parent's counter to the name.
        sequential: bool,
    },
    /// Replaces the data if the version matches (-1: any).
    Set {
        /// The znode.
        path: String,
        /// The new data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The version it must be at.
        version: i32,
    },
    /// Removes a childless znode if the version matches (-1: any).
    Delete {
        /// The znode.
        path: String,
        /// The version it must be at.
        version: i32,
    },
    /// Creates a znode; sequential appends a 10-digit counter of the parent.
    Create {
        /// The znode, or for a sequential create the prefix of its name.
        path: String,
        /// Its data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Owned by the txn's session, deleted when it ends.
        ephemeral: bool,
        /// Appends the parent's counter to the name.
        sequential: bool,
        /// As requested (checked, `auth` not yet expanded); empty: open.
        acl: Vec<AclEntry>,
    },
    /// Replaces a znode's ACL if its aversion matches (-1: any).
    SetAcl {
        /// The znode.
        path: String,
        /// As requested (checked, `auth` not yet expanded).
        acl: Vec<AclEntry>,
        /// The aversion it must be at.
        version: i32,
    },
}

impl Op {
    /// A create, whichever variant wrote it.
    pub fn as_create(&self) -> Option<CreateArgs<'_>> {
        match self {
            Op::Create {
                path,
                data,
                ephemeral,
                sequential,
                acl,
            } => Some(CreateArgs {
                path,
                data,
                ephemeral: *ephemeral,
                sequential: *sequential,
                acl,
            }),
            Op::CreateOpen {
                path,
                data,
                ephemeral,
                sequential,
            } => Some(CreateArgs {
                path,
                data,
                ephemeral: *ephemeral,
                sequential: *sequential,
                acl: &[],
            }),
            _ => None,
        }
    }

    fn approx_bytes(&self) -> usize {
        const FIXED: usize = 16;
        match self {
            Op::Check { path, .. } | Op::Delete { path, .. } => FIXED + path.len(),
            Op::CreateOpen { path, data, .. } | Op::Set { path, data, .. } => FIXED + path.len() + data.len(),
            Op::Create { path, data, acl, .. } => FIXED + path.len() + data.len() + acl_bytes(acl),
            Op::SetAcl { path, acl, .. } => FIXED + path.len() + acl_bytes(acl),
        }
    }
}

/// What a create carries, as [`Op::as_create`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct CreateArgs<'a> {
    /// The znode, or for a sequential create the prefix of its name.
    pub path: &'a str,
    /// Its data.
    pub data: &'a [u8],
    /// Owned by the txn's session.
    pub ephemeral: bool,
    /// Appends the parent's counter to the name.
    pub sequential: bool,
    /// As requested; empty: open.
    pub acl: &'a [AclEntry],
}

fn acl_bytes(acl: &[AclEntry]) -> usize {
    acl.iter().map(|e| 12 + e.scheme.len() + e.id.len()).sum()
}

/// What one op of a successful [`Command::Txn`] produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OpOutput {
    /// The check held.
    Check,
    /// The znode was created (with its sequential name).
    Create {
        /// The created path.
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// The data was replaced.
    Set {
        /// The znode's new stat.
        stat: Stat,
    },
    /// The znode was removed.
    Delete,
    /// The ACL was replaced.
    SetAcl {
        /// The znode's new stat.
        stat: Stat,
    },
}

/// The result of applying one [`Command`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A session was opened.
    SessionCreated {
        /// Its id.
        session_id: SessionId,
        /// Its timeout.
        timeout_ms: u32,
    },
    /// Applied; nothing to return.
    Done,
    /// The ops' outputs, in order.
    Txn(Vec<OpOutput>),
    /// Refused; nothing the command would have changed was changed.
    Failed(Refusal),
}

/// The results of one log entry: one [`Outcome`] per command, in order.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct BatchOutcome {
    /// One per command.
    pub outcomes: Vec<Outcome>,
}
