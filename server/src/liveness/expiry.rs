//! The per-member liveness loop around the expiry decision (which is
//! `decision.rs`): it gathers evidence, asks, and proposes.
//!
//! On every member: keep the apply marks as the state machine reports
//! heartbeats and creates, and save them each tick.
//! On a follower: once per tick, report the sessions this member's clients
//! touched to the leader, as ages (all recent ones after a leader change).
//! On the leader: gather local and reported touches and report rounds, let
//! [`super::decision::decide`] fold them into the [`Deadlines`] and decide,
//! and propose one coalesced `Heartbeats` entry and one `ExpireSessions`
//! entry for what came due.
//!
//! **The deadline rule.** A leader expires a session only on evidence it
//! gathered since it took office, restarted, or woke from a stall: its own
//! apply marks and clients, and a full report round in which a majority of
//! the voters (itself included) sent every sign of life they hold of every
//! session, as ages on their own monotonic clocks (merged as
//! [`super::evidence`] says). Marks that survived a restart are aged on the
//! uptime clock (see [`super::apply_marks`]), which does not count
//! downtime, so they can only look younger than they are. Together: a
//! session goes no earlier than T after the last heartbeat a reporting
//! member saw, whatever any wall clock says; a clock that jumps, or a
//! leader that restarts, can only make an expiry later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_proto::SessionId;
use openraft::ServerState;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, info_span, warn, Instrument};

use super::deadlines::Deadlines;
use super::decision::{decide, Learned, Office, RoundState, Rules};
use super::evidence::MergedEvidence;
use super::{Liveness, Reporter};
use crate::consensus::state_machine::SessionEvent;
use crate::consensus::{Consensus, FailStop, Tasks};
use crate::state::{Command, NodeId};

/// What other members tell the loop.
#[derive(Debug)]
pub enum Report {
    /// A follower's clients touched these sessions (when, on our clock).
    Touches(Vec<(SessionId, Instant)>),
    /// The answers of a report round started by leadership `generation`:
    /// how many voters answered, and their evidence merged per session.
    Round {
        /// Which leadership asked.
        generation: u64,
        /// Voters that answered.
        answered: usize,
        /// Their evidence.
        merged: HashMap<SessionId, MergedEvidence>,
    },
}

/// The loop's timings.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How often the loop runs.
    pub tick: Duration,
    /// Touches older than this are forgotten (the longest session timeout).
    pub keep: Duration,
    /// How long after proposing an expiry the leader proposes it again if
    /// it did not take effect.
    pub retry: Duration,
}

struct Leading {
    term: u64,
    /// Changes whenever deadlines must be rebuilt from fresh evidence.
    generation: u64,
    deadlines: Deadlines,
    /// When this member took over (or woke from a stall; expiry also
    /// waits a few ticks after it, for touches already in flight), and
    /// its report round.
    office: Office,
}

/// The loop's state.
pub(crate) struct ExpiryLoop {
    consensus: Consensus,
    liveness: Liveness,
    reporter: Arc<dyn Reporter>,
    timings: Timings,
    fail: FailStop,
    /// The owner the loop's short tasks (proposals, report rounds) run in.
    tasks: Tasks,
    leading: Option<Leading>,
    generations: u64,
    reported_to: Option<NodeId>,
    last_tick: Instant,
}

impl ExpiryLoop {
    /// A loop for this member.
    pub fn new(
        consensus: Consensus,
        liveness: Liveness,
        reporter: Arc<dyn Reporter>,
        timings: Timings,
        fail: FailStop,
        tasks: Tasks,
    ) -> Self {
        ExpiryLoop {
            consensus,
            liveness,
            reporter,
            timings,
            fail,
            tasks,
            leading: None,
            generations: 0,
            reported_to: None,
            last_tick: Instant::now(),
        }
    }

    /// Runs for the life of the member (an owned task: see `crate::consensus::tasks`).
    pub async fn run(
        mut self,
        mut events: UnboundedReceiver<SessionEvent>,
        mut reports: UnboundedReceiver<Report>,
    ) {
        let mut interval = tokio::time::interval(self.timings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick(&mut reports).await,
                Some(event) = events.recv() => self.on_event(event),
            }
        }
    }

    /// Keeps the apply marks (and the leader's deadlines) in step with apply.
    fn on_event(&mut self, event: SessionEvent) {
        let marks = &self.liveness.marks;
        match event {
            SessionEvent::Touched { sessions, at } => {
                for alive in sessions {
                    let id = alive.session_id;
                    // Applied no earlier than proposed, so this is no
                    // earlier than the touch the entry carries.
                    let heard = at
                        .checked_sub(Duration::from_millis(alive.age_ms.into()))
                        .unwrap_or(at);
                    let alive_at = if marks.mark(id, alive.zxid, heard) {
                        heard
                    } else {
                        // A replay after a restart: the saved mark, if any, holds.
                        marks.get(id).map_or(heard, |m| m.at)
                    };
                    if let Some(l) = self.leading.as_mut() {
                        l.deadlines
                            .add(id, Duration::from_millis(alive.timeout_ms.into()), alive_at);
                    }
                }
            }
            SessionEvent::Removed(ids) => {
                for id in ids {
                    marks.forget(id);
                    self.liveness.touches.forget(id);
                    if let Some(l) = self.leading.as_mut() {
                        l.deadlines.remove(id);
                    }
                }
            }
            SessionEvent::Reset => {
                marks.clear();
                if self.leading.is_some() {
                    self.take_office(None);
                }
            }
        }
    }

    async fn tick(&mut self, reports: &mut UnboundedReceiver<Report>) {
        let tick = self.timings.tick;
        // On a blocking thread: sled may wait for a flush in progress, and a
        // worker blocked that long holds up whatever task it was to run next
        // (forwarded writes waited ~40 ms once a tick).
        let marks = self.liveness.marks.clone();
        match tokio::task::spawn_blocking(move || marks.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail.stop(format!("can not save apply marks: {e}")),
            Err(e) => self.fail.stop(format!("saving apply marks failed: {e}")),
        }
        // A process that was frozen (SIGSTOP, a paused container, a stalled
        // VM) wakes to deadlines that passed while nobody could report the
        // clients' touches to it: it gathers fresh evidence first.
        let stalled = self.last_tick.elapsed();
        self.last_tick = Instant::now();
        let (state, term, leader) = {
            let m = self.consensus.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term, m.current_leader)
        };
        if state != ServerState::Leader {
            self.leading = None;
            while reports.try_recv().is_ok() {}
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
                "leader's liveness loop was stalled; gathering fresh evidence before any expiry"
            );
            self.take_office(Some(term));
        }
        let now = Instant::now();
        let rules = Rules {
            tick,
            retry: self.timings.retry,
            majority: self.consensus.majority(),
        };
        let Some(lead) = self.leading.as_mut() else {
            return;
        };
        // Gather what was learned since the last tick, in order; the
        // decision itself reads no clock and sends nothing.
        let mut learned = Vec::new();
        while let Ok(report) = reports.try_recv() {
            match report {
                Report::Touches(touches) => {
                    learned.extend(touches.into_iter().map(|(id, at)| Learned::Touched(id, at)));
                }
                Report::Round {
                    generation,
                    answered,
                    mut merged,
                } if generation == lead.generation => {
                    // This member's own evidence counts like any other's.
                    for (id, e) in self.liveness.evidence() {
                        merged.entry(id).or_default().add(&e, now);
                    }
                    learned.push(Learned::Round { answered, merged });
                }
                Report::Round { .. } => {}
            }
        }
        for (id, age_ms) in self.liveness.touches.take_report(false, self.timings.keep) {
            let at = now.checked_sub(Duration::from_millis(age_ms)).unwrap_or(now);
            learned.push(Learned::Touched(id, at));
        }
        let decision = decide(&mut lead.deadlines, &mut lead.office, learned, now, rules);

        if !decision.heartbeats.is_empty() {
            crate::metrics::heartbeats_coalesced(decision.heartbeats.len());
            propose(
                &self.tasks,
                &self.consensus,
                Command::Heartbeats {
                    sessions: decision.heartbeats,
                },
            );
        }
        if decision.ask_again {
            start_round(&self.tasks, &self.reporter, &self.liveness, lead.generation);
        }
        if !decision.expire.is_empty() {
            info!(sessions = ?decision.expire, "expiring sessions");
            propose(
                &self.tasks,
                &self.consensus,
                Command::ExpireSessions {
                    session_ids: decision.expire,
                },
            );
        }
    }

    /// Starts leading (again, for `term`, or in the current term after a
    /// reset): deadlines from this member's own evidence, and a report
    /// round to every member before any expiry.
    fn take_office(&mut self, term: Option<u64>) {
        let term = term.or(self.leading.as_ref().map(|l| l.term)).unwrap_or(0);
        self.generations += 1;
        let generation = self.generations;
        let deadlines = self.seed();
        self.leading = Some(Leading {
            term,
            generation,
            deadlines,
            office: Office {
                since: Instant::now(),
                round: RoundState::InFlight,
            },
        });
        start_round(&self.tasks, &self.reporter, &self.liveness, generation);
    }

    /// Deadlines for every open session from this member's own evidence;
    /// a session nobody here knows about counts as touched now (late,
    /// never early).
    fn seed(&self) -> Deadlines {
        let now = Instant::now();
        let mut merged: HashMap<SessionId, MergedEvidence> = HashMap::new();
        for (id, e) in self.liveness.evidence() {
            merged.entry(id).or_default().add(&e, now);
        }
        let mut deadlines = Deadlines::new(self.timings.tick);
        for (id, s) in self.consensus.replica.read().sessions.iter() {
            let h = merged.get(&id);
            let at = h.and_then(MergedEvidence::marked_at).unwrap_or(now);
            deadlines.add(id, Duration::from_millis(s.timeout_ms as u64), at);
            if let Some(touch) = h.and_then(|h| h.touch) {
                deadlines.touch(id, touch);
            }
        }
        deadlines
    }

    /// A follower's report of its clients' touches to the leader.
    async fn report_to_leader(&mut self, leader: Option<NodeId>) {
        let Some(leader) = leader.filter(|l| *l != self.consensus.id) else {
            return;
        };
        let Some(node) = self.consensus.member(leader) else {
            return;
        };
        let touches = &self.liveness.touches;
        let all = self.reported_to != Some(leader);
        let report = touches.take_report(all, self.timings.keep);
        self.reported_to = Some(leader);
        if !report.is_empty() && !self.reporter.report_touches(leader, node, report).await {
            touches.mark_all_unreported();
            self.reported_to = None;
        }
    }
}

/// Asks every other member for its evidence; the answers come back to the
/// loop as a [`Report::Round`].
fn start_round(tasks: &Tasks, reporter: &Arc<dyn Reporter>, liveness: &Liveness, generation: u64) {
    let (reporter, reports) = (reporter.clone(), liveness.reports.clone());
    tasks.once(
        "report-round",
        async move {
            let (answered, merged) = reporter.gather_evidence().await;
            let _ = reports.send(Report::Round {
                generation,
                answered,
                merged,
            });
        }
        .instrument(info_span!("report_round", generation)),
    );
}

/// Proposes without waiting: the loop must keep ticking.
fn propose(tasks: &Tasks, consensus: &Consensus, command: Command) {
    let proposer = consensus.proposer.clone();
    tasks.once(
        "session-proposal",
        async move {
            if let Err(e) = proposer.propose(command).await {
                warn!(%e, "session proposal failed; it will be retried if still due");
            }
        }
        .instrument(info_span!("session_proposal")),
    );
}
