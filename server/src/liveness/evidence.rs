//! Evidence: the signs of life of sessions as members report them to a new
//! leader, and the rule that merges them into one per session.
//!
//! A member holds two kinds: the touches of its own clients (always measured
//! in this run, on its monotonic clock) and apply marks (see `apply_marks`),
//! which may have been carried across a restart and then look younger than
//! they are. Every member applies the same heartbeat entries, so their marks
//! describe the same events; the merge trusts certain marks (taken in the
//! reporter's current run) and counts an uncertain one only for an entry
//! newer than every certain mark, so one restarted member can not stretch a
//! dead session's life by its downtime while another knows better. Ages
//! cross the wire, never clock readings.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ensemble_proto::Zxid;

use super::apply_marks::ApplyMark;

/// One member's evidence about one session, as sent.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evidence {
    /// The member's apply mark: (zxid, age in ms, taken in this run).
    pub mark: Option<(Zxid, u64, bool)>,
    /// How long ago a client of the member last touched the session, in ms.
    pub touch_ms: Option<u64>,
}

impl Evidence {
    /// The evidence of an apply mark, aged at `now`.
    pub fn of_mark(mark: ApplyMark, now: Instant) -> Evidence {
        let age = now.saturating_duration_since(mark.at).as_millis() as u64;
        Evidence {
            mark: Some((mark.zxid, age, mark.certain)),
            touch_ms: None,
        }
    }
}

/// The merged evidence about one session, on the leader's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergedEvidence {
    /// The latest certain mark: (newest zxid among them, latest instant).
    certain: Option<(Zxid, Instant)>,
    /// The uncertain mark of the newest entry: (zxid, latest instant).
    uncertain: Option<(Zxid, Instant)>,
    /// The latest touch by a client of any reporting node.
    pub touch: Option<Instant>,
}

impl MergedEvidence {
    /// Merges one member's evidence, received at `now`.
    pub fn add(&mut self, e: &Evidence, now: Instant) {
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        if let Some((zxid, age, certain)) = e.mark {
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

    /// When the apply marks say the session was last alive, if any mark. A
    /// mark carried across a restart counts only for an entry newer than
    /// every certain mark: for the same entry it would add the downtime.
    pub fn marked_at(&self) -> Option<Instant> {
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

    fn mark(zxid: u64, age: u64, certain: bool) -> Evidence {
        Evidence {
            mark: Some((Zxid(zxid), age, certain)),
            touch_ms: None,
        }
    }

    #[test]
    fn a_restarted_members_mark_yields_to_a_certain_one_of_the_same_entry() {
        let now = Instant::now();
        let mut h = MergedEvidence::default();
        h.add(&mark(7, 500, false), now);
        h.add(&mark(7, 3000, true), now);
        h.add(&mark(7, 2900, true), now);
        assert_eq!(h.marked_at(), Some(now - Duration::from_millis(2900)));
        // Only uncertain marks: the freshest-looking one (late, never early).
        let mut h = MergedEvidence::default();
        h.add(&mark(7, 900, false), now);
        h.add(&mark(7, 500, false), now);
        assert_eq!(h.marked_at(), Some(now - Duration::from_millis(500)));
    }

    #[test]
    fn a_newer_entry_counts_even_if_uncertain_and_touches_take_the_latest() {
        let now = Instant::now();
        let mut h = MergedEvidence::default();
        h.add(&mark(7, 2500, true), now);
        h.add(&mark(9, 2000, false), now);
        h.add(&mark(6, 100, false), now);
        assert_eq!(h.marked_at(), Some(now - Duration::from_millis(2000)));
        for ms in [900, 300, 700] {
            h.add(
                &Evidence {
                    mark: None,
                    touch_ms: Some(ms),
                },
                now,
            );
        }
        assert_eq!(h.touch, Some(now - Duration::from_millis(300)));
    }
}
