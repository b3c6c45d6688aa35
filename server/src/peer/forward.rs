//! Forward: a follower hands a client's command to the leader to propose.
//! The client half is consensus's way to a leader on another member
//! ([`Forwarder`], `consensus::router::Forward`); the server half proposes
//! forwarded commands through the leader's group commit.

use tracing::debug;

use super::{decode, encode, Peers};
use crate::consensus::proposer::{ProposeError, Proposed};
use crate::consensus::router::{Forward, WRITE_DEADLINE};
use crate::consensus::{Consensus, Raft};
use crate::state::{Command, NodeId, PeerNode};

/// The client half.
pub(crate) struct Forwarder {
    peers: Peers,
    raft: Raft,
}

impl Forwarder {
    /// Forwards through `peers`; watches `raft` for a change of leader.
    pub fn new(peers: Peers, raft: Raft) -> Self {
        Forwarder { peers, raft }
    }
}

#[tonic::async_trait]
impl Forward for Forwarder {
    async fn forward(&self, leader: NodeId, node: PeerNode, command: Command) -> Proposed {
        crate::metrics::forwarded();
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

/// A failure to connect at all: the request never left this member.
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

/// The server half: proposes a follower's commands in order; one result
/// per command.
pub(crate) async fn serve(consensus: &Consensus, commands: Vec<Command>) -> Vec<Proposed> {
    debug!(count = commands.len(), "forwarded commands");
    let receivers: Vec<_> = commands
        .into_iter()
        .map(|c| consensus.proposer.enqueue(c))
        .collect();
    let mut results = Vec::with_capacity(receivers.len());
    for rx in receivers {
        results.push(rx.await);
    }
    results
}
