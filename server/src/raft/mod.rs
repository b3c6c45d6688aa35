//! openraft glue: the type configuration, the peer network client and the
//! peer gRPC service that feeds incoming Raft messages to the local node.

pub mod network;
pub mod service;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Batch, BatchOutcome};

/// A node's id: unique for the life of the cluster, never reused.
pub type NodeId = u64;

/// A cluster member's addresses, as stored in the Raft membership.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerNode {
    /// Where the node's peer (Raft) service listens.
    pub peer_addr: String,
    /// Where the node's client service listens.
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} client {}", self.peer_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// Ensemble's openraft types: log entries carry a [`Batch`] of commands.
    pub TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = PeerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of one node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error, as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
