//! The per-node session tick loop.
//!
//! On a follower: once per tick, report the sessions this node's clients
//! touched to the leader, as ages (all recent ones after a leader change).
//! On the leader: merge local and reported touches into the
//! [`ExpiryTracker`], propose one coalesced `Heartbeats` entry and one
//! `ExpireSessions` entry for what came due. A node that becomes leader seeds
//! deadlines from its apply-time notes, so failover keeps deadlines instead
//! of granting every session a fresh timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, info_span, warn, Instrument};

use super::expiry::ExpiryTracker;
use crate::node::Node;
use crate::raft::NodeId;
use crate::state::store::SessionEvent;
use crate::state::Command;

/// Touches reported by other nodes: (session id, when heard on our clock).
pub type ReportedTouches = Vec<(u64, Instant)>;

struct Leading {
    term: u64,
    tracker: ExpiryTracker,
    /// When this node took over (or woke from a stall); expiry waits a few
    /// ticks after it, so the followers' reports of their clients' activity
    /// arrive first.
    since: Instant,
}

/// Runs the tick loop until the node shuts down.
pub async fn run(
    node: Arc<Node>,
    mut events: UnboundedReceiver<SessionEvent>,
    mut reported: UnboundedReceiver<ReportedTouches>,
) {
    let tick = node.config.tick;
    let keep = node.config.max_session_timeout;
    let retry = node.config.election_timeout_max * 2;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<Leading> = None;
    let mut reported_to: Option<NodeId> = None;
    let mut last_tick = Instant::now();
    loop {
        interval.tick().await;
        if node.is_shutting_down() {
            return;
        }
        // A process that was frozen (SIGSTOP, a paused container, a stalled
        // VM) wakes to deadlines that passed while nobody could report the
        // clients' touches to it: give them the same grace as a new leader.
        if let Some(l) = leading.as_mut().filter(|_| last_tick.elapsed() > tick * 4) {
            warn!(
                stalled_ms = last_tick.elapsed().as_millis() as u64,
                "leader's session tick loop was stalled; delaying expiry"
            );
            l.since = Instant::now();
        }
        last_tick = Instant::now();
        let (state, term, leader) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term, m.current_leader)
        };
        let mut evs = Vec::new();
        while let Ok(e) = events.try_recv() {
            evs.push(e);
        }
        let mut touches = Vec::new();
        while let Ok(t) = reported.try_recv() {
            touches.extend(t);
        }
        let now = Instant::now();

        if state != ServerState::Leader {
            leading = None;
            for e in &evs {
                if let SessionEvent::Removed(ids) = e {
                    ids.iter().for_each(|id| node.activity.forget(*id));
                }
            }
            if let Some(leader) = leader.filter(|l| *l != node.id) {
                let all = reported_to != Some(leader);
                let report = node.activity.take_report(all, keep);
                reported_to = Some(leader);
                if !report.is_empty() && node.report_touches(leader, &report).await.is_err() {
                    node.activity.mark_all_dirty();
                    reported_to = None;
                }
            }
            continue;
        }

        reported_to = None;
        let fresh = !matches!(&leading, Some(l) if l.term == term);
        let lead = match &mut leading {
            Some(l) if !fresh => l,
            _ => {
                info!(term, "leader: seeding session deadlines from apply-time notes");
                let tracker = seed_tracker(&node, tick).await;
                leading.insert(Leading {
                    term,
                    tracker,
                    since: Instant::now(),
                })
            }
        };
        for e in evs {
            match e {
                SessionEvent::Touched(list) => {
                    for (id, timeout_ms) in list {
                        // A session replayed after a restart keeps its saved note.
                        let heard = node.shared.note_of(id).unwrap_or(now);
                        lead.tracker
                            .add(id, Duration::from_millis(timeout_ms as u64), heard);
                    }
                }
                SessionEvent::Removed(ids) => {
                    for id in ids {
                        lead.tracker.remove(id);
                        node.activity.forget(id);
                    }
                }
                SessionEvent::Reset => lead.tracker = seed_tracker(&node, tick).await,
            }
        }
        for (id, age_ms) in node.activity.take_report(fresh, keep) {
            lead.tracker
                .touch(id, now.checked_sub(Duration::from_millis(age_ms)).unwrap_or(now));
        }
        for (id, at) in touches {
            lead.tracker.touch(id, at);
        }

        let heartbeats = lead.tracker.due_heartbeats(now);
        if !heartbeats.is_empty() {
            propose(
                &node,
                Command::Heartbeats {
                    session_ids: heartbeats,
                },
            );
        }
        if lead.since.elapsed() < tick * 3 {
            continue;
        }
        let expired = lead.tracker.expired(now, retry);
        if !expired.is_empty() {
            info!(sessions = ?expired.iter().map(|id| format!("0x{id:x}")).collect::<Vec<_>>(), "expiring sessions");
            propose(&node, Command::ExpireSessions { session_ids: expired });
        }
    }
}

/// Deadlines for every open session, from when this node applied its latest
/// heartbeat. Sessions this node has no note of (it restarted, or installed a
/// snapshot) take the freshest note among the other members, and only if
/// nobody knows, now: never earlier than the truth, so never a wrong expiry.
async fn seed_tracker(node: &Node, tick: Duration) -> ExpiryTracker {
    let notes = node.shared.notes();
    let sessions: Vec<(u64, u32)> = node
        .shared
        .read()
        .sessions
        .iter()
        .map(|(id, s)| (id, s.timeout_ms))
        .collect();
    let unknown: Vec<u64> = sessions
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !notes.contains_key(id))
        .collect();
    let peer_ages = if unknown.is_empty() {
        Default::default()
    } else {
        node.peer_notes(&unknown).await
    };
    let now = Instant::now();
    let mut tracker = ExpiryTracker::new(tick);
    for (id, timeout_ms) in sessions {
        let heard = notes
            .get(&id)
            .copied()
            .or_else(|| peer_ages.get(&id).and_then(|age| now.checked_sub(*age)))
            .unwrap_or(now);
        tracker.add(id, Duration::from_millis(timeout_ms as u64), heard);
    }
    tracker
}

/// Proposes without waiting: the tick loop must keep ticking.
fn propose(node: &Arc<Node>, command: Command) {
    let node = node.clone();
    let span = info_span!("session_proposal");
    tokio::spawn(
        async move {
            if let Err(e) = node.proposer.propose(command).await {
                warn!(%e, "session proposal failed; it will be retried if still due");
            }
        }
        .instrument(span),
    );
}
