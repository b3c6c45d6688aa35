//! Signs of life of sessions, as nodes report them to a new leader, and the
//! rule that merges them into one "last heard" per session.
//!
//! A node holds two kinds: the touches of its own clients (always measured
//! in this run, on its monotonic clock) and apply-time notes (see `notes`),
//! which may have been carried across a restart and then look younger than
//! they are. Every node applies the same heartbeat entries, so their notes
//! describe the same events; the merge keeps the note of the newest entry
//! and, for that entry, prefers a note taken in the reporter's current run,
//! so one restarted node can not stretch a dead session's life by its
//! downtime while another node knows better. Ages cross the wire, never
//! clock readings.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::notes::Note;

/// One node's evidence about one session, as sent.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evidence {
    /// The node's apply-time note: (zxid, age in ms, taken in this run).
    pub note: Option<(u64, u64, bool)>,
    /// How long ago a client of the node last touched the session, in ms.
    pub touch_ms: Option<u64>,
}

impl Evidence {
    /// The evidence of a note and a touch, aged at `now`.
    pub fn of(note: Option<Note>, touch_ms: Option<u64>, now: Instant) -> Evidence {
        Evidence {
            note: note.map(|n| {
                let age = now.saturating_duration_since(n.at).as_millis() as u64;
                (n.zxid, age, n.certain)
            }),
            touch_ms,
        }
    }
}

/// The merged evidence about one session, on the leader's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heard {
    /// The latest certain note: (newest zxid among them, latest instant).
    certain: Option<(u64, Instant)>,
    /// The uncertain note of the newest entry: (zxid, latest instant).
    uncertain: Option<(u64, Instant)>,
    /// The latest touch by a client of any reporting node.
    pub touch: Option<Instant>,
}

impl Heard {
    /// Merges one node's evidence, received at `now`.
    pub fn add(&mut self, e: &Evidence, now: Instant) {
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        if let Some((zxid, age, certain)) = e.note {
            let at = ago(age);
            if certain {
                // Apply times follow the heartbeats they apply: the latest is safe.
                self.certain = Some(match self.certain {
                    None => (zxid, at),
                    Some((z, a)) => (z.max(zxid), a.max(at)),
                });
            } else {
                self.uncertain = Some(match self.uncertain {
                    Some((z, a)) if z > zxid => (z, a),
                    Some((z, a)) if z == zxid => (z, a.max(at)),
                    _ => (zxid, at),
                });
            }
        }
        if let Some(ms) = e.touch_ms {
            let at = ago(ms);
            self.touch = Some(self.touch.map_or(at, |t| t.max(at)));
        }
    }

    /// When the notes say the session was last heard of, if any note. A
    /// note carried across a restart counts only for an entry newer than
    /// every certain note: for the same entry it would add the downtime.
    pub fn noted_at(&self) -> Option<Instant> {
        let certain = self.certain.map(|(_, at)| at);
        let uncertain = self
            .uncertain
            .filter(|(z, _)| self.certain.is_none_or(|(cz, _)| *z > cz))
            .map(|(_, at)| at);
        certain.max(uncertain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(zxid: u64, age: u64, certain: bool) -> Evidence {
        Evidence {
            note: Some((zxid, age, certain)),
            touch_ms: None,
        }
    }

    #[test]
    fn a_restarted_nodes_note_yields_to_a_certain_one_of_the_same_entry() {
        let now = Instant::now();
        let mut h = Heard::default();
        h.add(&note(7, 500, false), now);
        h.add(&note(7, 3000, true), now);
        h.add(&note(7, 2900, true), now);
        assert_eq!(h.noted_at(), Some(now - Duration::from_millis(2900)));
        // Only uncertain notes: the freshest-looking one (late, never early).
        let mut h = Heard::default();
        h.add(&note(7, 900, false), now);
        h.add(&note(7, 500, false), now);
        assert_eq!(h.noted_at(), Some(now - Duration::from_millis(500)));
    }

    #[test]
    fn a_newer_entry_counts_even_if_uncertain_and_touches_take_the_latest() {
        let now = Instant::now();
        let mut h = Heard::default();
        h.add(&note(7, 2500, true), now);
        h.add(&note(9, 2000, false), now);
        h.add(&note(6, 100, false), now);
        assert_eq!(h.noted_at(), Some(now - Duration::from_millis(2000)));
        for ms in [900, 300, 700] {
            h.add(
                &Evidence {
                    note: None,
                    touch_ms: Some(ms),
                },
                now,
            );
        }
        assert_eq!(h.touch, Some(now - Duration::from_millis(300)));
    }
}
