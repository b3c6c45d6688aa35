//! Request routing: a command is proposed by the leader's group commit,
//! directly when this node leads, else forwarded to the leader. Either way
//! the answer waits until *this* node has applied the entry, so the client's
//! next read here sees its write.

use std::time::{Duration, Instant};

use tracing::debug;

use super::errors::ApiError;
use super::proposer::{ProposeError, Proposed};
use crate::node::Node;
use crate::raft::network::{decode, encode};
use crate::raft::NodeId;
use crate::state::{Command, ErrorCode, Outcome};

/// How long a write may wait for a leader and its commit.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

impl Node {
    /// Proposes a command through the leader and waits for this node to apply it.
    pub async fn submit(&self, command: Command) -> Result<(u64, Outcome), ApiError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let result = match self.leader() {
                Some(l) if l == self.id => self.proposer.propose(command.clone()).await,
                Some(l) => self.forward(l, command.clone()).await,
                None => Err(ProposeError::NotLeader(None)),
            };
            match result {
                Ok((zxid, outcome)) => {
                    let left = WRITE_DEADLINE
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_secs(1));
                    self.shared.wait_applied(zxid, left).await.map_err(|e| {
                        ApiError::new(
                            ErrorCode::OperationTimeout,
                            format!("write committed at zxid {zxid}, but {e}"),
                        )
                    })?;
                    return Ok((zxid, outcome));
                }
                Err(ProposeError::NotLeader(_)) | Err(ProposeError::Busy) => {
                    if start.elapsed() + pause > WRITE_DEADLINE {
                        return Err(ApiError::connection_loss(format!(
                            "no leader accepted the write within {} s; it was not applied",
                            WRITE_DEADLINE.as_secs()
                        )));
                    }
                    debug!(?pause, "no leader yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(ProposeError::Unknown(why)) => {
                    return Err(ApiError::connection_loss(format!(
                        "the write's outcome is unknown: {why}"
                    )))
                }
            }
        }
    }

    /// Hands one command to the leader. A call that never reached it is
    /// `NotLeader` (retry); one that may have reached it is `Unknown`.
    async fn forward(&self, leader: NodeId, command: Command) -> Proposed {
        let node = self.member(leader).ok_or(ProposeError::NotLeader(None))?;
        let mut client = self
            .peers
            .client(leader, &node.peer_addr)
            .map_err(|e| ProposeError::Unknown(e.to_string()))?;
        let payload = encode(&vec![command]).map_err(|e| ProposeError::Unknown(e.to_string()))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(WRITE_DEADLINE);
        // If another leader takes over meanwhile, stop waiting: the old one
        // may be frozen, and the answer would only come at the deadline.
        let mut metrics = self.raft.metrics();
        let leader_changed = async move {
            let _ = metrics.wait_for(|m| m.current_leader != Some(leader)).await;
        };
        let sent = tokio::select! {
            r = client.forward(request) => r,
            _ = leader_changed => {
                return Err(ProposeError::Unknown(format!(
                    "leader {leader} was replaced while the write was in flight"
                )))
            }
        };
        let reply = match sent {
            Ok(r) => r.into_inner(),
            Err(status) if is_not_sent(&status) => return Err(ProposeError::NotLeader(None)),
            Err(status) => {
                return Err(ProposeError::Unknown(format!(
                    "leader {leader}: {}",
                    status.message()
                )))
            }
        };
        let mut results: Vec<Proposed> = decode(&reply).map_err(|e| ProposeError::Unknown(e.to_string()))?;
        results
            .pop()
            .unwrap_or_else(|| Err(ProposeError::Unknown("leader sent no result".into())))
    }
}

/// A failure to connect at all: the request never left this node.
fn is_not_sent(status: &tonic::Status) -> bool {
    use std::error::Error;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    status.message().contains("error trying to connect") || status.message().contains("Connection refused")
}
