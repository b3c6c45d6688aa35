//! Group commit on the leader: commands that arrive close together become one
//! log entry. openraft waits for each append's flush, so batching here is
//! what lets throughput exceed one fsync per write.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use ensemble_proto::Zxid;

use super::{Raft, TypeConfig};
use crate::state::machine::MAX_BATCH;
use crate::state::{Batch, Command, NodeId, Outcome, PeerNode};

/// Why a proposal has no outcome.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// This node is not the leader; nothing was appended. Safe to retry elsewhere.
    #[error("not the leader (leader is {0:?})")]
    NotLeader(Option<NodeId>),
    /// The proposal queue is full; nothing was appended. Safe to retry.
    #[error("the leader's proposal queue is full")]
    Busy,
    /// The entry may or may not commit: the outcome is unknown.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// A command's result: the zxid of the entry that carried it, and its outcome.
pub type Proposed = Result<(Zxid, Outcome), ProposeError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Proposed>,
}

/// The handle API handlers and the session manager propose through.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching loop for `raft`; `max_batch` caps commands per entry.
    pub fn start(raft: Raft, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tokio::spawn(run(raft, rx, max_batch.clamp(1, MAX_BATCH)));
        Proposer { tx }
    }

    /// Proposes one command and waits for it to be applied on this node (the leader).
    pub async fn propose(&self, command: Command) -> Proposed {
        self.enqueue(command).await
    }

    /// Queues a command now, in call order, and returns a future of its result.
    /// Commands queued by one caller land in the log in the order queued.
    pub fn enqueue(&self, command: Command) -> impl std::future::Future<Output = Proposed> {
        let (reply, rx) = oneshot::channel();
        let queued = self.tx.try_send(Pending { command, reply });
        crate::metrics::commit_timed(async move {
            if let Err(e) = queued {
                return Err(match e {
                    mpsc::error::TrySendError::Full(_) => ProposeError::Busy,
                    mpsc::error::TrySendError::Closed(_) => {
                        ProposeError::Unknown("the node is shutting down".into())
                    }
                });
            }
            rx.await
                .unwrap_or_else(|_| Err(ProposeError::Unknown("the node is shutting down".into())))
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most bytes of commands one entry carries (one command goes whatever its
/// size): entries stay small enough to replicate within a Raft heartbeat.
const MAX_BATCH_BYTES: usize = super::log_store::MAX_APPEND_BYTES;

/// The next batch: whatever is queued, up to `max_batch` commands and
/// [`MAX_BATCH_BYTES`]; a command that would overflow it waits in `carry`.
async fn next_batch(
    rx: &mut mpsc::Receiver<Pending>,
    carry: &mut Option<Pending>,
    max_batch: usize,
) -> Vec<Pending> {
    let first = match carry.take() {
        Some(p) => p,
        None => match rx.recv().await {
            Some(p) => p,
            None => return Vec::new(),
        },
    };
    let mut bytes = first.command.approx_bytes();
    let mut batch = vec![first];
    while batch.len() < max_batch {
        let Ok(next) = rx.try_recv() else { break };
        let size = next.command.approx_bytes();
        if bytes + size > MAX_BATCH_BYTES {
            *carry = Some(next);
            break;
        }
        bytes += size;
        batch.push(next);
    }
    batch
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_batch: usize) {
    let mut carry = None;
    loop {
        let pending = next_batch(&mut rx, &mut carry, max_batch).await;
        if pending.is_empty() {
            return;
        }
        let (commands, replies): (Vec<_>, Vec<_>) = pending.into_iter().map(|p| (p.command, p.reply)).unzip();
        let batch = Batch {
            time_ms: now_ms(),
            commands,
        };
        let size = replies.len();
        crate::metrics::proposed(size);
        // `client_write_ff` returns once the entry is queued in order, so the
        // next batch can be formed while this one replicates.
        match raft.client_write_ff(batch).await {
            Ok(result_rx) => {
                tokio::spawn(async move {
                    let result = result_rx.await;
                    deliver(result, replies, size);
                });
            }
            Err(fatal) => {
                warn!(%fatal, "raft stopped; failing proposals");
                for r in replies {
                    let _ = r.send(Err(ProposeError::Unknown(format!("raft stopped: {fatal}"))));
                }
            }
        }
    }
}

type WriteResult = Result<
    Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, PeerNode>>,
    oneshot::error::RecvError,
>;

fn deliver(result: WriteResult, replies: Vec<oneshot::Sender<Proposed>>, size: usize) {
    match result {
        Ok(Ok(resp)) => {
            let zxid = Zxid(resp.log_id.index);
            debug!(%zxid, size, "batch applied");
            for (reply, outcome) in replies.into_iter().zip(resp.data.outcomes) {
                let _ = reply.send(Ok((zxid, outcome)));
            }
        }
        Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
            for r in replies {
                let _ = r.send(Err(ProposeError::NotLeader(f.leader_id)));
            }
        }
        Ok(Err(e)) => {
            for r in replies {
                let _ = r.send(Err(ProposeError::Unknown(e.to_string())));
            }
        }
        Err(_) => {
            for r in replies {
                let _ = r.send(Err(ProposeError::Unknown(
                    "leadership changed before the entry committed".into(),
                )));
            }
        }
    }
}
