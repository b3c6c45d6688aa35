//! Fast failover: when a follower sees the leader's process gone (the peer
//! layer's idle stream to it broke, see `crate::peer::leader_watch`), it
//! calls an election at the first moment the other followers will grant a
//! vote, instead of waiting for its randomized election timeout.
//!
//! openraft refuses votes for `election_timeout_max` after a member last
//! heard from its leader (the leader's lease). A timeout that fires before
//! that is refused and waits a whole timeout again; so the election is
//! called just after the lease has run out here. Followers stagger by rank
//! (their place among the remaining voters) so two do not split the vote.
//! Nothing here decides anything Raft does not: a leader that is alive
//! keeps calling, which cancels the election, and a frozen one (no broken
//! connection) is left to the ordinary timeout.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tracing::info;

use super::{Contact, Raft, Tasks};
use crate::state::NodeId;

/// Past the lease, so the other followers' leases have surely run out too.
const MARGIN: Duration = Duration::from_millis(10);

/// Starts the watch of member `id`; `lease` is openraft's
/// `election_timeout_max`, `stagger` the gap between ranks; the loop is
/// owned by `tasks`.
pub fn start(
    id: NodeId,
    raft: Raft,
    contact: Arc<Contact>,
    lease: Duration,
    stagger: Duration,
    tasks: &Tasks,
) {
    tasks.lifelong("failover", async move {
        // The leader's last call an election was already called after: a
        // second report of the same loss must not call another (it would
        // start a new term and cancel the first election).
        let mut called_after = None;
        loop {
            contact.wait_leader_gone().await;
            let (leader, rank) = {
                let m = raft.metrics();
                let m = m.borrow();
                if m.state != ServerState::Follower {
                    continue;
                }
                let leader = m.current_leader;
                let rank = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| Some(*v) != leader && *v < id)
                    .count() as u32;
                (leader, rank)
            };
            let Some(heard) = contact.leader_last_called() else {
                continue;
            };
            if called_after == Some(heard) {
                continue;
            }
            tokio::time::sleep_until((heard + lease + MARGIN + stagger * rank).into()).await;
            let still_gone = {
                let m = raft.metrics();
                let m = m.borrow();
                m.state == ServerState::Follower && m.current_leader == leader
            };
            if still_gone && contact.leader_last_called() == Some(heard) {
                called_after = Some(heard);
                info!(?leader, rank, "the leader's process is gone; calling an election");
                let _ = raft.trigger().elect().await;
            }
        }
    });
}
