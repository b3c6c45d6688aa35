//! The per-node session loop.
//!
//! On every node: keep the apply-time notes ([`Notes`]) as the state machine
//! reports heartbeats and creates, and save them each tick.
//! On a follower: once per tick, report the sessions this node's clients
//! touched to the leader, as ages (all recent ones after a leader change).
//! On the leader: merge local and reported touches into the
//! [`ExpiryTracker`], propose one coalesced `Heartbeats` entry and one
//! `ExpireSessions` entry for what came due (where expiry is decided).
//!
//! **The deadline rule.** A leader expires a session only on evidence it
//! gathered since it took office, restarted, or woke from a stall: its own
//! notes and clients, and a full report round in which a majority of the
//! voters (itself included) sent every sign of life they hold of every
//! session, as ages on their own monotonic clocks (merged as
//! [`super::evidence`] says). Notes that survived a restart are aged on the
//! uptime clock (see [`super::notes`]), which does not count downtime, so
//! they can only look younger than they are. Together: a session goes no
//! earlier than T after the last heartbeat a reporting node saw, whatever
//! any wall clock says; a clock that jumps, or a leader that restarts, can
//! only make an expiry later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, info_span, warn, Instrument};

use super::evidence::Heard;
use super::expiry::ExpiryTracker;
use crate::node::Node;
use crate::raft::NodeId;
use crate::state::store::SessionEvent;
use crate::state::Command;

/// What other nodes tell the tick loop.
#[derive(Debug)]
pub enum Report {
    /// A follower's clients touched these sessions (when, on our clock).
    Touches(Vec<(u64, Instant)>),
    /// The answers of a report round started by leadership `generation`:
    /// how many voters answered, and their evidence merged per session.
    Round {
        generation: u64,
        answered: usize,
        heard: HashMap<u64, Heard>,
    },
}

/// Where the leader's report round stands.
#[derive(PartialEq, Eq)]
enum RoundState {
    /// Asked; waiting for the answers.
    InFlight,
    /// A majority answered: expiry may go ahead.
    Complete,
    /// Too few answered: ask again.
    Short,
}

struct Leading {
    term: u64,
    /// Changes whenever deadlines must be rebuilt from fresh evidence.
    generation: u64,
    tracker: ExpiryTracker,
    /// When this node took over (or woke from a stall); expiry also waits
    /// a few ticks after it, for touches already in flight.
    since: Instant,
    round: RoundState,
}

/// Runs the loop until the node shuts down.
pub async fn run(
    node: Arc<Node>,
    mut events: UnboundedReceiver<SessionEvent>,
    mut reported: UnboundedReceiver<Report>,
) {
    let tick = node.config.tick;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lp = Loop {
        node,
        leading: None,
        generations: 0,
        reported_to: None,
        last_tick: Instant::now(),
    };
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if lp.node.is_shutting_down() {
                    return;
                }
                lp.tick(&mut reported).await;
            }
            Some(event) = events.recv() => lp.on_event(event),
        }
    }
}

struct Loop {
    node: Arc<Node>,
    leading: Option<Leading>,
    generations: u64,
    reported_to: Option<NodeId>,
    last_tick: Instant,
}

impl Loop {
    /// Keeps the notes (and the leader's tracker) in step with apply.
    fn on_event(&mut self, event: SessionEvent) {
        let notes = &self.node.notes;
        match event {
            SessionEvent::Touched { sessions, at } => {
                for (id, timeout_ms, zxid) in sessions {
                    let heard = if notes.note(id, zxid, at) {
                        at
                    } else {
                        // A replay after a restart: the saved note, if any, holds.
                        notes.get(id).map_or(at, |n| n.at)
                    };
                    if let Some(l) = self.leading.as_mut() {
                        l.tracker.add(id, Duration::from_millis(timeout_ms as u64), heard);
                    }
                }
            }
            SessionEvent::Removed(ids) => {
                for id in ids {
                    notes.forget(id);
                    self.node.activity.forget(id);
                    if let Some(l) = self.leading.as_mut() {
                        l.tracker.remove(id);
                    }
                }
            }
            SessionEvent::Reset => {
                notes.clear();
                if self.leading.is_some() {
                    self.take_office(None);
                }
            }
        }
    }

    async fn tick(&mut self, reported: &mut UnboundedReceiver<Report>) {
        let tick = self.node.config.tick;
        if let Err(e) = self.node.notes.save() {
            self.node.fail_stop(format!("can not save session notes: {e}"));
        }
        // A process that was frozen (SIGSTOP, a paused container, a stalled
        // VM) wakes to deadlines that passed while nobody could report the
        // clients' touches to it: it gathers fresh evidence first.
        let stalled = self.last_tick.elapsed();
        self.last_tick = Instant::now();
        let (state, term, leader) = {
            let m = self.node.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term, m.current_leader)
        };
        if state != ServerState::Leader {
            self.leading = None;
            while reported.try_recv().is_ok() {}
            self.report_to_leader(leader).await;
            return;
        }
        self.reported_to = None;
        if !matches!(&self.leading, Some(l) if l.term == term) {
            info!(
                term,
                "leader: seeding session deadlines; asking every member for its evidence"
            );
            self.take_office(Some(term));
        } else if stalled > tick * 4 {
            warn!(
                stalled_ms = stalled.as_millis() as u64,
                "leader's session tick loop was stalled; gathering fresh evidence before any expiry"
            );
            self.take_office(Some(term));
        }
        let now = Instant::now();
        let keep = self.node.config.max_session_timeout;
        let Some(lead) = self.leading.as_mut() else {
            return;
        };
        while let Ok(report) = reported.try_recv() {
            match report {
                Report::Touches(touches) => {
                    for (id, at) in touches {
                        lead.tracker.touch(id, at);
                    }
                }
                Report::Round {
                    generation,
                    answered,
                    mut heard,
                } if generation == lead.generation => {
                    if answered + 1 < majority(&self.node) {
                        lead.round = RoundState::Short;
                        continue;
                    }
                    // This node's own evidence counts like any other member's.
                    for (id, e) in self.node.evidence() {
                        heard.entry(id).or_default().add(&e, now);
                    }
                    for (id, h) in heard {
                        if let Some(at) = h.noted_at() {
                            lead.tracker.rebase(id, at);
                        }
                        if let Some(at) = h.touch {
                            lead.tracker.touch(id, at);
                        }
                    }
                    lead.round = RoundState::Complete;
                }
                Report::Round { .. } => {}
            }
        }
        for (id, age_ms) in self.node.activity.take_report(false, keep) {
            lead.tracker
                .touch(id, now.checked_sub(Duration::from_millis(age_ms)).unwrap_or(now));
        }

        let heartbeats = lead.tracker.due_heartbeats(now);
        if !heartbeats.is_empty() {
            propose(
                &self.node,
                Command::Heartbeats {
                    session_ids: heartbeats,
                },
            );
        }
        if lead.round == RoundState::Short {
            lead.round = RoundState::InFlight;
            start_round(&self.node, lead.generation);
        }
        if lead.round != RoundState::Complete || lead.since.elapsed() < tick * 3 {
            return;
        }
        let retry = self.node.config.election_timeout_max * 2;
        let expired = lead.tracker.expired(now, retry);
        if !expired.is_empty() {
            info!(sessions = ?expired.iter().map(|id| format!("0x{id:x}")).collect::<Vec<_>>(), "expiring sessions");
            propose(&self.node, Command::ExpireSessions { session_ids: expired });
        }
    }

    /// Starts leading (again, for `term`, or in the current term after a
    /// reset): deadlines from this node's own notes and clients, and a
    /// report round to every member before any expiry.
    fn take_office(&mut self, term: Option<u64>) {
        let term = term.or(self.leading.as_ref().map(|l| l.term)).unwrap_or(0);
        self.generations += 1;
        let generation = self.generations;
        let tracker = seed_tracker(&self.node);
        self.leading = Some(Leading {
            term,
            generation,
            tracker,
            since: Instant::now(),
            round: RoundState::InFlight,
        });
        start_round(&self.node, generation);
    }

    /// A follower's report of its clients' touches to the leader.
    async fn report_to_leader(&mut self, leader: Option<NodeId>) {
        let node = &self.node;
        let Some(leader) = leader.filter(|l| *l != node.id) else {
            return;
        };
        let all = self.reported_to != Some(leader);
        let report = node.activity.take_report(all, node.config.max_session_timeout);
        self.reported_to = Some(leader);
        if !report.is_empty() && node.report_touches(leader, &report).await.is_err() {
            node.activity.mark_all_dirty();
            self.reported_to = None;
        }
    }
}

/// How many voters make a majority.
fn majority(node: &Node) -> usize {
    let m = node.raft.metrics();
    let voters = m.borrow().membership_config.membership().voter_ids().count();
    voters / 2 + 1
}

/// Deadlines for every open session from this node's own evidence: its
/// apply-time notes and its clients' touches, the freshest of the two; a
/// session nobody here knows about counts as heard now (late, never early).
fn seed_tracker(node: &Node) -> ExpiryTracker {
    let now = Instant::now();
    let mut heard: HashMap<u64, Heard> = HashMap::new();
    for (id, e) in node.evidence() {
        heard.entry(id).or_default().add(&e, now);
    }
    let mut tracker = ExpiryTracker::new(node.config.tick);
    for (id, s) in node.shared.read().sessions.iter() {
        let h = heard.get(&id);
        let at = h.and_then(Heard::noted_at).unwrap_or(now);
        tracker.add(id, Duration::from_millis(s.timeout_ms as u64), at);
        if let Some(touch) = h.and_then(|h| h.touch) {
            tracker.touch(id, touch);
        }
    }
    tracker
}

/// Asks every other member for its evidence; the answers come back to the
/// tick loop as a [`Report::Round`].
fn start_round(node: &Arc<Node>, generation: u64) {
    let node = node.clone();
    tokio::spawn(
        async move {
            let (answered, heard) = node.gather_evidence().await;
            let _ = node.reported.send(Report::Round {
                generation,
                answered,
                heard,
            });
        }
        .instrument(info_span!("report_round", generation)),
    );
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
