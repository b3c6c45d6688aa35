//! Layer 2: consensus. openraft's glue and everything that makes a command
//! a committed, applied log entry on this member:
//!
//! - [`log_store`]: the Raft log and vote on sled, flushed before they count;
//!   [`log_mark`]: how far they reached, checked at startup.
//! - [`state_machine`]: openraft's state machine over [`crate::state`]; the
//!   applied state shared with readers ([`Replica`]); snapshots
//!   ([`snapshot_file`]).
//! - [`proposer`]: group commit on the leader (where commands become entries);
//!   [`batch`]: the gathering rule it shares with forwarding and read index.
//! - [`router`]: a member's way to the leader: propose locally or forward
//!   (where a write is forwarded), then wait until this member applied it;
//!   [`read_index`]: linearizable reads without a log entry.
//! - [`contact`]: whether this member is in touch with a majority;
//!   [`failover`]: an election called as soon as the leader is seen gone.
//! - [`fail_stop`]: how a part that can not go on stops the member;
//!   [`tasks`]: the one owner of the member's long-lived tasks, which
//!   stops the member when one of them ends or panics.
//! - [`observe`]: what this layer tells `crate::metrics`.
//!
//! The peer network that carries Raft and forwarded writes is above, in
//! `crate::peer`; this layer reaches it through [`router::Forward`].

pub mod batch;
pub mod contact;
pub mod fail_stop;
pub mod failover;
pub mod log_mark;
pub mod log_store;
pub mod observe;
pub mod proposer;
pub mod read_index;
pub mod router;
pub mod snapshot_file;
pub mod state_machine;
pub mod tasks;

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, ServerState, StorageIOError};

pub use contact::Contact;
pub use fail_stop::FailStop;
pub use log_store::LogStore;
pub use proposer::Proposer;
pub use router::Router;
pub use state_machine::{Replica, StateMachineStore};
pub use tasks::Tasks;

use crate::state::{Batch, BatchOutcome, NodeId, PeerNode};

openraft::declare_raft_types!(
    /// Ensemble's openraft types: log entries carry a [`Batch`] of commands.
    pub TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = PeerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of one member.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error, as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;

/// Storage errors met while opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled refused to open its database.
    #[error("can not open the data directory {path}")]
    Sled {
        /// The data directory.
        path: String,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
}

/// Opens (or creates) the sled database in the data directory `dir`.
pub fn open_db(dir: &Path) -> Result<sled::Db, OpenError> {
    sled::Config::new()
        .path(dir.join("sled"))
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|source| OpenError::Sled {
            path: dir.display().to_string(),
            source,
        })
}

/// Wraps any error as an openraft storage error about `subject`.
pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}

/// What the layers above hold of consensus: narrow, cheap to clone.
#[derive(Clone)]
pub(crate) struct Consensus {
    /// This member's id.
    pub id: NodeId,
    /// The Raft handle.
    pub raft: Raft,
    /// The applied state.
    pub replica: Arc<Replica>,
    /// Group commit (on the leader).
    pub proposer: Proposer,
    /// The way to the leader.
    pub router: Router,
    /// Whether this member is in touch with a majority.
    pub contact: Arc<Contact>,
    /// The newest commit index openraft has told the log store.
    pub committed: Arc<AtomicU64>,
}

impl Consensus {
    /// Whether this member leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// A member's addresses, from the current membership.
    pub fn member(&self, id: NodeId) -> Option<PeerNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Every other member, and whether it votes.
    pub fn others(&self) -> Vec<(NodeId, PeerNode, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
            .collect()
    }

    /// How many voters make a majority.
    pub fn majority(&self) -> usize {
        let m = self.raft.metrics();
        let voters = m.borrow().membership_config.membership().voter_ids().count();
        voters / 2 + 1
    }

    /// Whether this member is in touch with a majority (see [`Contact`]);
    /// never while its Raft core is gone.
    pub fn in_quorum(&self) -> bool {
        self.core_running() && self.contact.in_quorum(&self.raft)
    }

    /// Whether openraft's core still runs: it has reported no fatal error
    /// or shutdown, and has not dropped its metrics (a core that panicked
    /// does so without a word).
    pub fn core_running(&self) -> bool {
        let metrics = self.raft.metrics();
        let reported = {
            let m = metrics.borrow();
            m.running_state.is_ok() && m.state != ServerState::Shutdown
        };
        reported && metrics.has_changed().is_ok()
    }
}
