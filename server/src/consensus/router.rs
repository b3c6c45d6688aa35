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
use super::read_index::{Indexed, ReadIndex};
use super::state_machine::Replica;
use super::{Raft, Tasks};
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

    /// Asks `leader` for a read index (see [`super::read_index`]).
    async fn read_index(&self, leader: NodeId, addr: PeerNode) -> Indexed;
}

/// Proposes commands through the leader, from any member.
#[derive(Clone)]
pub struct Router {
    id: NodeId,
    raft: Raft,
    proposer: Proposer,
    replica: Arc<Replica>,
    forward: Arc<dyn Forward>,
    read_index: ReadIndex,
}

impl Router {
    /// A router of member `id`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        proposer: Proposer,
        replica: Arc<Replica>,
        forward: Arc<dyn Forward>,
        tasks: &Tasks,
    ) -> Self {
        let read_index = ReadIndex::start(id, raft.clone(), forward.clone(), tasks);
        Router {
            id,
            raft,
            proposer,
            replica,
            forward,
            read_index,
        }
    }

    /// Proposes a command through the leader and waits for this member to apply it.
    pub async fn submit(&self, command: Command) -> Result<(Zxid, Outcome), Refusal> {
        let start = Instant::now();
        let (zxid, outcome) = self
            .through_leader(start, false, || {
                let command = command.clone();
                async move {
                    match self.leader() {
                        Some((l, _)) if l == self.id => self.proposer.propose(command).await,
                        Some((l, Some(node))) => self.forward.forward(l, node, command).await,
                        _ => Err(ProposeError::NotLeader(None)),
                    }
                }
            })
            .await?;
        self.applied(start, zxid, "write committed").await?;
        Ok((zxid, outcome))
    }

    /// Waits until this member has applied everything committed when the
    /// call began, as confirmed by the leader (a read index round): a read
    /// served after it is linearizable. Returns the applied zxid.
    pub async fn catch_up(&self) -> Result<Zxid, Refusal> {
        let start = Instant::now();
        let index = self
            .through_leader(start, true, || self.read_index.index())
            .await?;
        self.applied(start, index, "read index confirmed").await
    }

    /// A read index from this member's own round, for a follower that asked:
    /// an error unless this member leads.
    pub async fn leader_read_index(&self) -> Indexed {
        self.read_index.index_as_leader().await
    }

    /// The leader and its addresses, as this member knows them.
    fn leader(&self) -> Option<(NodeId, Option<PeerNode>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        Some((
            leader,
            m.membership_config.membership().get_node(&leader).cloned(),
        ))
    }

    async fn applied(&self, start: Instant, zxid: Zxid, what: &str) -> Result<Zxid, Refusal> {
        let left = WRITE_DEADLINE
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        self.replica.wait_applied(zxid, left).await.map_err(|e| {
            Refusal::new(
                ErrorCode::OperationTimeout,
                format!("{what} at zxid {zxid}, but {e}"),
            )
        })
    }

    /// Runs `attempt` until a leader answers it, retrying while there is
    /// none (and, if `idempotent`, after any failure) up to [`WRITE_DEADLINE`].
    async fn through_leader<T, F, Fut>(
        &self,
        start: Instant,
        idempotent: bool,
        mut attempt: F,
    ) -> Result<T, Refusal>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProposeError>>,
    {
        let mut pause = Duration::from_millis(10);
        loop {
            let why = match attempt().await {
                Ok(v) => return Ok(v),
                Err(ProposeError::Unknown(why)) if !idempotent => {
                    return Err(Refusal::connection_loss(format!(
                        "the write's outcome is unknown: {why}"
                    )))
                }
                Err(e) => e.to_string(),
            };
            if start.elapsed() + pause > WRITE_DEADLINE {
                return Err(Refusal::connection_loss(format!(
                    "no leader answered within {} s ({why}); nothing was applied",
                    WRITE_DEADLINE.as_secs()
                )));
            }
            debug!(?pause, %why, "no leader yet; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}
