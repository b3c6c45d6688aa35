//! Linearizable reads by read index (Raft thesis §6.4): the leader confirms
//! it still leads with one heartbeat round to a majority, and the commit
//! index it held when the round began is the read index. A read served once
//! this member has applied that far sees every write acknowledged before
//! the read arrived, and costs no log entry.
//!
//! Rounds are batched: every read that arrives while a round is in flight
//! shares the next one. A follower asks the leader for the index (batched
//! the same way, one call per round) and then waits for its own apply.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use ensemble_proto::Zxid;

use super::batch::{Gather, Weigh};
use super::proposer::ProposeError;
use super::router::Forward;
use super::{Raft, Tasks};
use crate::state::NodeId;

/// The read index or why there is none (always safe to ask again: a read
/// changes nothing).
pub type Indexed = Result<Zxid, ProposeError>;

struct Waiter {
    /// Asked by another member: answer only as the leader, never forward
    /// again (two members that each think the other leads must not loop).
    leader_only: bool,
    reply: oneshot::Sender<Indexed>,
}

impl Weigh for Waiter {
    fn bytes(&self) -> usize {
        0
    }
}

/// The handle reads ask through.
#[derive(Clone)]
pub struct ReadIndex {
    tx: mpsc::Sender<Waiter>,
}

impl ReadIndex {
    /// Starts the round loop of member `id`, owned by `tasks`.
    pub fn start(id: NodeId, raft: Raft, forward: Arc<dyn Forward>, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tasks.lifelong("read-index", run(id, raft, forward, rx));
        ReadIndex { tx }
    }

    /// The index a linearizable read on this member must wait for.
    pub async fn index(&self) -> Indexed {
        self.ask(false).await
    }

    /// The read index as the leader, for a follower's request: an error if
    /// this member does not lead.
    pub async fn index_as_leader(&self) -> Indexed {
        self.ask(true).await
    }

    async fn ask(&self, leader_only: bool) -> Indexed {
        let (reply, rx) = oneshot::channel();
        let stopped = || ProposeError::Unknown("the node is shutting down".into());
        match self.tx.try_send(Waiter { leader_only, reply }) {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(stopped())),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ProposeError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
        }
    }
}

async fn run(id: NodeId, raft: Raft, forward: Arc<dyn Forward>, rx: mpsc::Receiver<Waiter>) {
    let mut queue = Gather::new(rx, usize::MAX, usize::MAX);
    loop {
        let waiters = queue.next().await;
        if waiters.is_empty() {
            return;
        }
        let (leader, node) = {
            let m = raft.metrics();
            let m = m.borrow();
            let leader = m.current_leader;
            (
                leader,
                leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned()),
            )
        };
        if leader == Some(id) {
            let index = leader_round(&raft).await;
            debug!(reads = waiters.len(), ?index, "read index round");
            for w in waiters {
                let _ = w.reply.send(index.clone());
            }
            continue;
        }
        let (local, asked): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|w| !w.leader_only);
        for w in asked {
            let _ = w.reply.send(Err(ProposeError::NotLeader(leader)));
        }
        if local.is_empty() {
            continue;
        }
        let index = match (leader, node) {
            (Some(l), Some(node)) => forward.read_index(l, node).await,
            _ => Err(ProposeError::NotLeader(None)),
        };
        for w in local {
            let _ = w.reply.send(index.clone());
        }
    }
}

/// One heartbeat round to a majority; the commit index from its start.
async fn leader_round(raft: &Raft) -> Indexed {
    match raft.get_read_log_id().await {
        Ok((read, _)) => Ok(Zxid(read.map_or(0, |l| l.index))),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader(f.leader_id))
        }
        // No majority answered in time: leadership is not confirmed.
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
            Err(ProposeError::NotLeader(None))
        }
        Err(RaftError::Fatal(f)) => Err(ProposeError::Unknown(format!("raft stopped: {f}"))),
    }
}
