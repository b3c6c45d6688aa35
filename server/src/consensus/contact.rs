//! Whether this member is in touch with a majority: a follower heard from a
//! leader, or a leader heard from a quorum, within four Raft heartbeat
//! intervals. A cut-off member refuses sessions so its clients move on at
//! once: what it would acknowledge it could not pass to the leader, and
//! every second it keeps a client eats into that session's deadline.
//!
//! Contact counts when a call or an answer arrives, not when the call was
//! sent: a peer busy flushing a big append is slow, not gone. The peer
//! network (`crate::peer`) reports arrivals here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tracing::info;

use super::Raft;
use crate::state::NodeId;

/// Who this member heard from, and when.
pub struct Contact {
    id: NodeId,
    /// Four Raft heartbeat intervals.
    limit: Duration,
    /// When a call from the current leader last arrived.
    leader: Mutex<Option<Instant>>,
    /// When each peer last answered a Raft call.
    answered: Mutex<HashMap<NodeId, Instant>>,
    /// Whether this member last found itself cut off (to log changes once).
    cut_off: AtomicBool,
    /// Signalled when the peer layer sees the leader's process gone.
    leader_gone: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Contact {
    /// Contact of member `id`, whose Raft heartbeat interval is `raft_heartbeat`.
    pub fn new(id: NodeId, raft_heartbeat: Duration) -> Self {
        Contact {
            id,
            limit: raft_heartbeat * 4,
            leader: Mutex::new(None),
            answered: Mutex::new(HashMap::new()),
            cut_off: AtomicBool::new(true),
            leader_gone: tokio::sync::Notify::new(),
        }
    }

    /// When a call from the current leader last arrived.
    pub fn leader_last_called(&self) -> Option<Instant> {
        *lock(&self.leader)
    }

    /// The leader's process is gone: its connection to this member broke,
    /// or it refuses connections (see `consensus::failover`).
    pub fn leader_gone(&self) {
        self.leader_gone.notify_one();
    }

    /// Waits until the peer layer reports the leader gone.
    pub async fn wait_leader_gone(&self) {
        self.leader_gone.notified().await
    }

    /// A call from the current leader arrived.
    pub fn leader_called(&self) {
        *lock(&self.leader) = Some(Instant::now());
    }

    /// A peer answered a Raft call.
    pub fn peer_answered(&self, peer: NodeId) {
        lock(&self.answered).insert(peer, Instant::now());
    }

    /// Whether this member is in touch with a majority; logs when that changes.
    pub fn in_quorum(&self, raft: &Raft) -> bool {
        let (ok, leading, silent_ms) = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.state == ServerState::Leader {
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                let answered = lock(&self.answered);
                let heard = 1 + voters
                    .iter()
                    .filter(|id| **id != self.id)
                    .filter(|id| answered.get(id).is_some_and(|at| at.elapsed() <= self.limit))
                    .count();
                (heard > voters.len() / 2, true, m.millis_since_quorum_ack)
            } else {
                let since = *lock(&self.leader);
                let ms = since.map(|t| t.elapsed().as_millis() as u64);
                let ok = m.current_leader.is_some() && since.is_some_and(|t| t.elapsed() <= self.limit);
                (ok, false, ms)
            }
        };
        if self.cut_off.swap(!ok, Ordering::Relaxed) == ok {
            if ok {
                info!("in touch with a majority; serving clients");
            } else {
                info!(
                    leading,
                    silent_ms, "not in touch with a majority; refusing clients so they move on"
                );
            }
        }
        ok
    }
}
