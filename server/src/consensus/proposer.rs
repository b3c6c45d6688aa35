//! Group commit on the leader: commands that arrive close together become one
//! log entry.
//!
//! openraft 0.9's Raft task appends and flushes each entry it is handed
//! before it looks at the next one, so an entry per command means a flush
//! per command, one after another. The proposer therefore hands the Raft
//! task one entry at a time and waits until the log store has flushed it
//! (or a bound passes): whatever arrives meanwhile goes into the next entry
//! and shares its flush.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use ensemble_proto::Zxid;

use super::batch::{Gather, Weigh};
use super::{Raft, Tasks, TypeConfig};
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
    /// Starts the batching loop for `raft`; `max_batch` caps commands per
    /// entry; `appended` counts the log store's flushed appends. The loop
    /// is owned by `tasks`: a leader without it would fail every write.
    pub fn start(raft: Raft, max_batch: usize, appended: watch::Receiver<u64>, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tasks.lifelong("proposer", run(raft, rx, max_batch.clamp(1, MAX_BATCH), appended));
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

impl Weigh for Pending {
    fn bytes(&self) -> usize {
        self.command.approx_bytes()
    }
}

/// The longest the proposer waits for an entry's flush before handing over
/// the next one anyway (this node lost leadership and appends nothing, or
/// the disk is slow: then entries queue in the Raft task as before).
const FLUSH_WAIT: Duration = Duration::from_millis(20);

async fn run(raft: Raft, rx: mpsc::Receiver<Pending>, max_batch: usize, mut appended: watch::Receiver<u64>) {
    let mut queue = Gather::new(rx, max_batch, MAX_BATCH_BYTES);
    loop {
        let pending = queue.next().await;
        if pending.is_empty() {
            return;
        }
        let (commands, replies): (Vec<_>, Vec<_>) = pending.into_iter().map(|p| (p.command, p.reply)).unzip();
        let batch = Batch {
            time_ms: now_ms(),
            commands,
        };
        let size = replies.len();
        appended.mark_unchanged();
        crate::metrics::proposed(size);
        // `client_write_ff` returns once the entry is queued in order; the
        // entry then replicates while the next batch forms.
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
                continue;
            }
        }
        // A flush that finishes now is this entry's or the one before it:
        // either way at most one more entry waits in the Raft task.
        let _ = tokio::time::timeout(FLUSH_WAIT, appended.changed()).await;
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
