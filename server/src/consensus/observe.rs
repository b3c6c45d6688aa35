//! What consensus tells `crate::metrics`: the sessions each applied entry
//! created, closed or expired (counted here, on the member's side, so
//! `crate::state` stays pure), the Raft role, term and leader changes
//! openraft reports, and, when scraped, the sizes of the applied state and
//! how far apply trails the commit index.

use std::sync::atomic::Ordering;
use std::time::Instant;

use openraft::{LogId, ServerState};

use super::{Consensus, Raft};
use crate::metrics::{self, Role};
use crate::state::machine::Effects;
use crate::state::{Batch, BatchOutcome, Command, NodeId, Outcome, ZState};

/// Applies an entry's batch (`ZState::apply_batch`) and counts the
/// sessions it created, closed and expired.
pub(crate) fn apply_batch(
    state: &mut ZState,
    log_id: LogId<NodeId>,
    batch: &Batch,
    effects: &mut Effects,
) -> BatchOutcome {
    #[cfg(feature = "test-hooks")]
    test_hook_apply();
    let removed_before = effects.removed.len();
    let outcome = state.apply_batch(log_id, batch, effects);
    let (mut created, mut closed) = (0, 0);
    for (command, result) in batch.commands.iter().zip(&outcome.outcomes) {
        match (command, result) {
            (Command::CreateSession { .. }, Outcome::SessionCreated { .. }) => created += 1,
            (Command::CloseSession { .. }, Outcome::Done) => closed += 1,
            _ => {}
        }
    }
    // A close removes its session; everything else removed was expired.
    let removed = effects.removed.len().saturating_sub(removed_before) as u64;
    if created + removed > 0 {
        metrics::sessions_applied(created, closed, removed.saturating_sub(closed));
    }
    outcome
}

/// With the `test-hooks` feature and `ENSEMBLE_TEST_PANIC=raft-apply@<ms>`:
/// the first entry applied that long after the first apply panics, inside
/// openraft's state machine task, as a bug in apply would.
#[cfg(feature = "test-hooks")]
fn test_hook_apply() {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<Instant>> = OnceLock::new();
    let at = ARMED.get_or_init(|| {
        super::tasks::hook::from_env()
            .filter(|(name, _)| name == "raft-apply")
            .map(|(_, after)| Instant::now() + after)
    });
    if at.is_some_and(|at| Instant::now() >= at) {
        tracing::error!(task = "raft-apply", "test hook: the state machine panics now");
        panic!("test hook: raft-apply panics");
    }
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// Follows openraft's metrics until Raft stops: role and term, and each
/// new leader (a leader id in a new term) with how long this member knew
/// none before it.
pub(crate) async fn follow_raft(raft: Raft) {
    let mut watch = raft.metrics();
    let mut known: Option<(NodeId, u64)> = None;
    let mut leaderless_since = Some(Instant::now());
    loop {
        let (state, term, leader) = {
            let m = watch.borrow_and_update();
            (m.state, m.current_term, m.current_leader)
        };
        metrics::raft_state(role(state), term);
        match leader {
            Some(id) if known != Some((id, term)) => {
                known = Some((id, term));
                metrics::leader_changed(leaderless_since.take().map(|t| t.elapsed()));
            }
            None if leaderless_since.is_none() => leaderless_since = Some(Instant::now()),
            _ => {}
        }
        if watch.changed().await.is_err() {
            metrics::raft_state(Role::Shutdown, term);
            return;
        }
    }
}

/// Reads, when scraped, the sizes of the applied state (znodes,
/// ephemerals, sessions) and the apply lag.
pub(crate) fn scrape_gauges(consensus: &Consensus) -> metrics::Refresh {
    let (replica, committed) = (consensus.replica.clone(), consensus.committed.clone());
    Box::new(move || {
        let (znodes, ephemerals, sessions) = {
            let state = replica.read();
            let ephemerals: usize = state.sessions.iter().map(|(_, s)| s.ephemerals.len()).sum();
            (state.tree.len(), ephemerals, state.sessions.len())
        };
        metrics::state_sizes(znodes as u64, ephemerals as u64, sessions as u64);
        let lag = committed
            .load(Ordering::Relaxed)
            .saturating_sub(replica.applied().0);
        metrics::apply_lag(lag);
    })
}
