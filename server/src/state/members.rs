//! Who the cluster's members are, as the replicated membership names them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A member's id: unique for the life of the cluster, never reused.
pub type NodeId = u64;

/// A member's addresses, as stored in the Raft membership.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerNode {
    /// Where the member's peer service listens.
    pub peer_addr: String,
    /// Where the member's client service listens.
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} client {}", self.peer_addr, self.client_addr)
    }
}
