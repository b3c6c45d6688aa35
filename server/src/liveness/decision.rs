//! The leader's expiry decision, as a pure function ([`decide`]) of its
//! deadlines, the evidence it learned since its last tick, and the time:
//! no clock is read, nothing is sent, so every case is a table row in the
//! tests below. The loop around it (`expiry.rs`) gathers the evidence and
//! proposes what this returns.
//!
//! The rule (the reasons are in `expiry.rs`): a leader expires nothing
//! until a report round in which a majority of the voters answered has
//! been merged into its deadlines, and not within three ticks of taking
//! office (touches already in flight must land first). Then a session goes
//! once its deadline's bucket has ended; it stays tracked, `retry` later,
//! in case the proposal is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ensemble_proto::SessionId;

use super::deadlines::Deadlines;
use super::evidence::MergedEvidence;

/// Where the leader's report round stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundState {
    /// Asked; waiting for the answers.
    InFlight,
    /// A majority answered: expiry may go ahead.
    Complete,
    /// Too few answered: ask again.
    Short,
}

/// One thing the leader learned since its last tick, in the order learned.
#[derive(Debug)]
pub enum Learned {
    /// A client of some member touched the session at this instant.
    Touched(SessionId, Instant),
    /// The answers to the current report round: how many other voters
    /// answered, and their evidence merged with this member's own.
    Round {
        /// Other voters that answered.
        answered: usize,
        /// Everyone's evidence, per session.
        merged: HashMap<SessionId, MergedEvidence>,
    },
}

/// The fixed inputs of a decision.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The loop's tick.
    pub tick: Duration,
    /// How long after proposing an expiry it is proposed again.
    pub retry: Duration,
    /// How many voters make a majority (this member included).
    pub majority: usize,
}

/// What the leader's term so far says about expiry.
#[derive(Clone, Copy, Debug)]
pub struct Office {
    /// When this member took office (or woke from a stall).
    pub since: Instant,
    /// Its report round.
    pub round: RoundState,
}

/// What the leader should do this tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Sessions to name in a `Heartbeats` entry, with how long ago (ms)
    /// each was last heard of.
    pub heartbeats: Vec<(SessionId, u32)>,
    /// Sessions to expire.
    pub expire: Vec<SessionId>,
    /// Whether to start a new report round (the last one was short).
    pub ask_again: bool,
}

/// Folds what the leader learned into its deadlines and decides, at
/// `now`, which heartbeats to replicate and which sessions to expire.
/// Updates `office.round` as the round's answers arrive.
pub fn decide(
    deadlines: &mut Deadlines,
    office: &mut Office,
    learned: Vec<Learned>,
    now: Instant,
    rules: Rules,
) -> Decision {
    for item in learned {
        match item {
            Learned::Touched(id, at) => deadlines.touch(id, at),
            Learned::Round { answered, .. } if answered + 1 < rules.majority => {
                office.round = RoundState::Short;
            }
            Learned::Round { merged, .. } => {
                for (id, h) in merged {
                    if let Some(at) = h.marked_at() {
                        deadlines.rebase(id, at);
                    }
                    if let Some(at) = h.touch {
                        deadlines.touch(id, at);
                    }
                }
                office.round = RoundState::Complete;
            }
        }
    }
    let heartbeats = deadlines
        .due_heartbeats(now)
        .into_iter()
        .map(|(id, alive_at)| {
            let age = now.saturating_duration_since(alive_at).as_millis();
            (id, u32::try_from(age).unwrap_or(u32::MAX))
        })
        .collect();
    let ask_again = office.round == RoundState::Short;
    if ask_again {
        office.round = RoundState::InFlight;
    }
    let settled = now.saturating_duration_since(office.since) >= rules.tick * 3;
    let expire = if office.round == RoundState::Complete && settled {
        deadlines.expired(now, rules.retry)
    } else {
        Vec::new()
    };
    Decision {
        heartbeats,
        expire,
        ask_again,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::Evidence;
    use ensemble_proto::Zxid;

    const TICK: Duration = Duration::from_millis(100);
    const T: Duration = Duration::from_millis(3000);
    const RULES: Rules = Rules {
        tick: TICK,
        retry: Duration::from_millis(600),
        majority: 2,
    };
    const S: SessionId = SessionId(7);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A round's answers: `answered` other voters, and a certain apply
    /// mark of S `mark_ago` ms before `at`, if any.
    fn round(answered: usize, mark_ago: Option<u64>, at: Instant) -> Learned {
        let mut merged = HashMap::new();
        if let Some(ago) = mark_ago {
            let mut m = MergedEvidence::default();
            m.add(
                &Evidence {
                    mark: Some((Zxid(5), ago, true)),
                    touch_ms: None,
                },
                at,
            );
            merged.insert(S, m);
        }
        Learned::Round { answered, merged }
    }

    struct Row {
        case: &'static str,
        /// Offset of the session's seeded sign of life from t0.
        seeded: u64,
        /// Round state at the start of the tick.
        round: RoundState,
        /// What was learned, built from t0.
        learned: fn(Instant) -> Vec<Learned>,
        /// Offset of `now` from t0; office taken at t0.
        now: u64,
        expire: bool,
        round_after: RoundState,
        ask_again: bool,
    }

    #[test]
    fn expiry_decisions() {
        let rows = [
            Row {
                case: "past its deadline, round complete: expires",
                seeded: 0,
                round: RoundState::Complete,
                learned: |_| vec![],
                now: 3100,
                expire: true,
                round_after: RoundState::Complete,
                ask_again: false,
            },
            Row {
                case: "before its deadline: stays",
                seeded: 0,
                round: RoundState::Complete,
                learned: |_| vec![],
                now: 2900,
                expire: false,
                round_after: RoundState::Complete,
                ask_again: false,
            },
            Row {
                case: "past its deadline but the round is in flight: no expiry without evidence",
                seeded: 0,
                round: RoundState::InFlight,
                learned: |_| vec![],
                now: 3100,
                expire: false,
                round_after: RoundState::InFlight,
                ask_again: false,
            },
            Row {
                case: "a short round (no majority answered) is asked again, and nothing expires",
                seeded: 0,
                round: RoundState::InFlight,
                learned: |t0| vec![round(0, None, t0 + ms(3100))],
                now: 3100,
                expire: false,
                round_after: RoundState::InFlight,
                ask_again: true,
            },
            Row {
                case: "a complete round arriving now allows expiry in the same tick",
                seeded: 0,
                round: RoundState::InFlight,
                learned: |t0| vec![round(1, None, t0 + ms(3100))],
                now: 3100,
                expire: true,
                round_after: RoundState::Complete,
                ask_again: false,
            },
            Row {
                case: "a member's later apply mark in the round postpones the deadline",
                seeded: 0,
                round: RoundState::InFlight,
                learned: |t0| vec![round(1, Some(500), t0 + ms(3100))],
                now: 3100,
                expire: false,
                round_after: RoundState::Complete,
                ask_again: false,
            },
            Row {
                case: "a reported touch postpones the deadline",
                seeded: 0,
                round: RoundState::Complete,
                learned: |t0| vec![Learned::Touched(S, t0 + ms(1000))],
                now: 3100,
                expire: false,
                round_after: RoundState::Complete,
                ask_again: false,
            },
            Row {
                case: "a touch older than the seed changes nothing",
                seeded: 1000,
                round: RoundState::Complete,
                learned: |t0| vec![Learned::Touched(S, t0)],
                now: 4100,
                expire: true,
                round_after: RoundState::Complete,
                ask_again: false,
            },
        ];
        for row in rows {
            let t0 = Instant::now();
            let mut deadlines = Deadlines::new(TICK);
            deadlines.add(S, T, t0 + ms(row.seeded));
            let mut office = Office {
                since: t0,
                round: row.round,
            };
            let d = decide(
                &mut deadlines,
                &mut office,
                (row.learned)(t0),
                t0 + ms(row.now),
                RULES,
            );
            let want: Vec<SessionId> = if row.expire { vec![S] } else { vec![] };
            assert_eq!(d.expire, want, "{}", row.case);
            assert_eq!(office.round, row.round_after, "{}", row.case);
            assert_eq!(d.ask_again, row.ask_again, "{}", row.case);
        }
    }

    #[test]
    fn nothing_expires_within_three_ticks_of_taking_office() {
        let t0 = Instant::now();
        for (since, expire) in [(ms(0), true), (ms(2900), false), (ms(2800), true)] {
            let mut deadlines = Deadlines::new(TICK);
            deadlines.add(S, ms(1000), t0);
            let mut office = Office {
                since: t0 + since,
                round: RoundState::Complete,
            };
            let d = decide(&mut deadlines, &mut office, vec![], t0 + ms(3100), RULES);
            assert_eq!(!d.expire.is_empty(), expire, "office since {since:?}");
        }
    }

    #[test]
    fn an_expired_session_is_proposed_again_only_after_retry() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::new(TICK);
        deadlines.add(S, T, t0);
        let mut office = Office {
            since: t0,
            round: RoundState::Complete,
        };
        let mut at = |n| decide(&mut deadlines, &mut office, vec![], t0 + ms(n), RULES).expire;
        assert_eq!(at(3100), vec![S]);
        assert_eq!(at(3500), vec![], "not again before retry");
        assert_eq!(at(3800), vec![S], "again after retry");
    }

    #[test]
    fn heartbeats_name_touched_sessions_with_their_age() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::new(TICK);
        deadlines.add(S, T, t0);
        let mut office = Office {
            since: t0,
            round: RoundState::InFlight,
        };
        let d = decide(
            &mut deadlines,
            &mut office,
            vec![Learned::Touched(S, t0 + ms(1000))],
            t0 + ms(1250),
            RULES,
        );
        assert_eq!(d.heartbeats, vec![(S, 250)]);
        let d = decide(&mut deadlines, &mut office, vec![], t0 + ms(1300), RULES);
        assert!(d.heartbeats.is_empty(), "replicated once");
    }
}
