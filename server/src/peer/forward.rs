//! Forward: a follower hands clients' commands to the leader to propose,
//! and asks it for read indexes. The client half is consensus's way to a
//! leader on another member ([`Forwarder`], `consensus::router::Forward`):
//! commands queued while earlier calls are in flight travel together in one
//! call. The server half proposes forwarded commands through the leader's
//! group commit and answers read indexes from the leader's batched rounds.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::debug;

use ensemble_proto::peer::Payload;

use super::{decode, encode, PeerRpc, Peers};
use crate::consensus::batch::{Gather, Weigh};
use crate::consensus::log_store::MAX_APPEND_BYTES;
use crate::consensus::proposer::{ProposeError, Proposed};
use crate::consensus::read_index::Indexed;
use crate::consensus::router::{Forward, WRITE_DEADLINE};
use crate::consensus::{Consensus, Raft, Tasks};
use crate::state::machine::MAX_BATCH;
use crate::state::{Command, NodeId, PeerNode};

/// Forward calls in flight at once; more commands wait and then go
/// together, so a busy follower makes few, full calls.
const CALLS_IN_FLIGHT: usize = 4;

struct Queued {
    leader: NodeId,
    node: PeerNode,
    command: Command,
    reply: oneshot::Sender<Proposed>,
}

impl Weigh for Queued {
    fn bytes(&self) -> usize {
        self.command.approx_bytes()
    }
}

/// The client half.
pub(crate) struct Forwarder {
    peers: Peers,
    raft: Raft,
    queue: mpsc::Sender<Queued>,
}

impl Forwarder {
    /// Forwards through `peers`; watches `raft` for a change of leader.
    /// The queue's loop is owned by `tasks`.
    pub fn new(peers: Peers, raft: Raft, tasks: &Tasks) -> Self {
        let (queue, rx) = mpsc::channel(64 * 1024);
        tasks.lifelong("forwarder", run(peers.clone(), raft.clone(), rx));
        Forwarder { peers, raft, queue }
    }
}

#[tonic::async_trait]
impl Forward for Forwarder {
    async fn forward(&self, leader: NodeId, node: PeerNode, command: Command) -> Proposed {
        crate::metrics::forwarded();
        let (reply, rx) = oneshot::channel();
        let stopped = || ProposeError::Unknown("the node is shutting down".into());
        match self.queue.try_send(Queued {
            leader,
            node,
            command,
            reply,
        }) {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(stopped())),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ProposeError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
        }
    }

    async fn read_index(&self, leader: NodeId, node: PeerNode) -> Indexed {
        let payload = encode(&()).map_err(|e| ProposeError::Unknown(e.to_string()))?;
        let reply = call_leader(
            &self.peers,
            &self.raft,
            leader,
            &node,
            payload,
            |mut c, r| async move { c.read_index(r).await },
        )
        .await?;
        decode(&reply).map_err(|e| ProposeError::Unknown(e.to_string()))?
    }
}

/// Sends queued commands in batches, one call per batch and leader.
async fn run(peers: Peers, raft: Raft, rx: mpsc::Receiver<Queued>) {
    let mut queue = Gather::new(rx, MAX_BATCH, MAX_APPEND_BYTES);
    let slots = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    loop {
        let Ok(mut slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = queue.next().await;
        if batch.is_empty() {
            return;
        }
        // Normally every command names the same leader; split where not.
        loop {
            let leader = batch[0].leader;
            let split = batch
                .iter()
                .position(|q| q.leader != leader)
                .unwrap_or(batch.len());
            let rest = batch.split_off(split);
            let (peers, raft) = (peers.clone(), raft.clone());
            tokio::spawn(async move {
                send(&peers, &raft, batch).await;
                drop(slot);
            });
            if rest.is_empty() {
                break;
            }
            batch = rest;
            slot = match slots.clone().acquire_owned().await {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }
}

async fn send(peers: &Peers, raft: &Raft, group: Vec<Queued>) {
    let (leader, node) = (group[0].leader, group[0].node.clone());
    let (commands, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|q| (q.command, q.reply)).unzip();
    debug!(leader, count = commands.len(), "forwarding commands");
    let results = match encode(&commands) {
        Ok(payload) => call_leader(peers, raft, leader, &node, payload, |mut c, r| async move {
            c.forward(r).await
        })
        .await
        .and_then(|reply| decode::<Vec<Proposed>>(&reply).map_err(|e| ProposeError::Unknown(e.to_string()))),
        Err(e) => Err(ProposeError::Unknown(e.to_string())),
    };
    match results {
        Ok(results) => {
            let mut results = results.into_iter();
            for reply in replies {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err(ProposeError::Unknown("the leader sent too few results".into())));
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One call to the leader. A call that never left this member is
/// `NotLeader` (retry); one that may have reached the leader is `Unknown`.
/// If another leader takes over meanwhile, the call is abandoned: the old
/// one may be frozen, and the answer would only come at the deadline.
async fn call_leader<F, Fut>(
    peers: &Peers,
    raft: &Raft,
    leader: NodeId,
    node: &PeerNode,
    payload: Payload,
    rpc: F,
) -> Result<Payload, ProposeError>
where
    F: FnOnce(PeerRpc, tonic::Request<Payload>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
{
    let client = peers
        .client(leader, &node.peer_addr)
        .map_err(|e| ProposeError::Unknown(e.to_string()))?;
    let mut request = tonic::Request::new(payload);
    request.set_timeout(WRITE_DEADLINE);
    let mut metrics = raft.metrics();
    let leader_changed = async move {
        let _ = metrics.wait_for(|m| m.current_leader != Some(leader)).await;
    };
    let sent = tokio::select! {
        r = rpc(client, request) => r,
        _ = leader_changed => {
            return Err(ProposeError::Unknown(format!(
                "leader {leader} was replaced while the call was in flight"
            )))
        }
    };
    match sent {
        Ok(r) => Ok(r.into_inner()),
        Err(status) if is_not_sent(&status) => Err(ProposeError::NotLeader(None)),
        Err(status) => Err(ProposeError::Unknown(format!(
            "leader {leader}: {}",
            status.message()
        ))),
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

/// The server half of a read index: this member's round as the leader.
pub(crate) async fn serve_read_index(consensus: &Consensus) -> Indexed {
    consensus.router.leader_read_index().await
}
