//! A member's way to the leader (where a write is forwarded): a command is
//! proposed by the leader's group commit, directly when this member leads,
//! else forwarded to the leader over the peer network. Either way the
//! answer waits until *this* member has applied the entry, so the client's
//! next read here sees its write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_proto::Zxid;
use tracing::debug;

use super::proposer::{ProposeError, Proposed, Proposer};
use super::state_machine::Replica;
use super::Raft;
use crate::state::{Command, ErrorCode, NodeId, Outcome, PeerNode, Refusal};

/// How long a write may wait for a leader and its commit.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Hands a command to a leader that is another member. Implemented by the
/// peer network (`crate::peer::forward`): this layer only says what it
/// needs. A call that never reached the leader is `NotLeader` (retry); one
/// that may have reached it is `Unknown`.
#[tonic::async_trait]
pub trait Forward: Send + Sync {
    /// Proposes `command` through `leader` and returns its result.
    async fn forward(&self, leader: NodeId, addr: PeerNode, command: Command) -> Proposed;
}

/// Proposes commands through the leader, from any member.
#[derive(Clone)]
pub struct Router {
    id: NodeId,
    raft: Raft,
    proposer: Proposer,
    replica: Arc<Replica>,
    forward: Arc<dyn Forward>,
}

impl Router {
    /// A router of member `id`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        proposer: Proposer,
        replica: Arc<Replica>,
        forward: Arc<dyn Forward>,
    ) -> Self {
        Router {
            id,
            raft,
            proposer,
            replica,
            forward,
        }
    }

    /// Proposes a command through the leader and waits for this member to apply it.
    pub async fn submit(&self, command: Command) -> Result<(Zxid, Outcome), Refusal> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let (leader, node) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let leader = m.current_leader;
                let node = leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                (leader, node)
            };
            let result = match (leader, node) {
                (Some(l), _) if l == self.id => self.proposer.propose(command.clone()).await,
                (Some(l), Some(node)) => self.forward.forward(l, node, command.clone()).await,
                _ => Err(ProposeError::NotLeader(None)),
            };
            match result {
                Ok((zxid, outcome)) => {
                    let left = WRITE_DEADLINE
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_secs(1));
                    self.replica.wait_applied(zxid, left).await.map_err(|e| {
                        Refusal::new(
                            ErrorCode::OperationTimeout,
                            format!("write committed at zxid {zxid}, but {e}"),
                        )
                    })?;
                    return Ok((zxid, outcome));
                }
                Err(ProposeError::NotLeader(_)) | Err(ProposeError::Busy) => {
                    if start.elapsed() + pause > WRITE_DEADLINE {
                        return Err(Refusal::connection_loss(format!(
                            "no leader accepted the write within {} s; it was not applied",
                            WRITE_DEADLINE.as_secs()
                        )));
                    }
                    debug!(?pause, "no leader yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(ProposeError::Unknown(why)) => {
                    return Err(Refusal::connection_loss(format!(
                        "the write's outcome is unknown: {why}"
                    )))
                }
            }
        }
    }
}
