//! The leader's session deadlines, in buckets one tick wide (ZooKeeper's
//! `ExpiryQueue`): a touch moves a session to a later bucket, and each tick
//! the leader takes the buckets that have come due, in one step, instead of
//! scanning every session. Heartbeats are coalesced here too: a session is
//! named in a replicated `Heartbeats` entry only when its last replicated
//! heartbeat is older than a third of its timeout. The loop that decides
//! expiry with it is `expiry.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ensemble_proto::SessionId;

struct Tracked {
    timeout: Duration,
    /// The sign of life the leader started from: an apply mark (or the
    /// moment it took office); replaced when a report round knows better.
    baseline: Instant,
    /// The latest touch by a client of any node, reported since.
    touched: Option<Instant>,
    last_replicated: Instant,
    bucket: u64,
}

impl Tracked {
    fn alive_at(&self) -> Instant {
        self.touched.map_or(self.baseline, |t| t.max(self.baseline))
    }
}

/// Deadlines of every session, as the leader sees them.
pub struct Deadlines {
    base: Instant,
    tick: Duration,
    sessions: HashMap<SessionId, Tracked>,
    buckets: BTreeMap<u64, HashSet<SessionId>>,
    /// MergedEvidence from since the last replicated heartbeat.
    unreplicated: HashSet<SessionId>,
}

impl Deadlines {
    /// An empty tracker with buckets `tick` wide.
    pub fn new(tick: Duration) -> Self {
        Deadlines {
            base: Instant::now(),
            tick: tick.max(Duration::from_millis(1)),
            sessions: HashMap::new(),
            buckets: BTreeMap::new(),
            unreplicated: HashSet::new(),
        }
    }

    /// Microseconds from the base to `t`, and of one tick.
    fn micros(&self, t: Instant) -> (u128, u128) {
        (
            t.saturating_duration_since(self.base).as_micros(),
            self.tick.as_micros(),
        )
    }

    /// The bucket that a deadline falls in: rounded up, so a session never goes early.
    fn bucket_of(&self, deadline: Instant) -> u64 {
        let (since, tick) = self.micros(deadline);
        since.div_ceil(tick) as u64
    }

    /// The last bucket whose end has passed at `now`: rounded down, since
    /// rounding `now` up as well would take a bucket up to a tick before
    /// its deadlines.
    fn last_ended(&self, now: Instant) -> u64 {
        let (since, tick) = self.micros(now);
        (since / tick) as u64
    }

    fn place(&mut self, id: SessionId, deadline: Instant) {
        let bucket = self.bucket_of(deadline);
        if let Some(t) = self.sessions.get_mut(&id) {
            if t.bucket == bucket {
                return;
            }
            if let Some(b) = self.buckets.get_mut(&t.bucket) {
                b.remove(&id);
                if b.is_empty() {
                    self.buckets.remove(&t.bucket);
                }
            }
            t.bucket = bucket;
        }
        self.buckets.entry(bucket).or_default().insert(id);
    }

    /// Starts tracking a session last known alive `at` (no-op if tracked).
    pub fn add(&mut self, id: SessionId, timeout: Duration, at: Instant) {
        if self.sessions.contains_key(&id) {
            return;
        }
        self.sessions.insert(
            id,
            Tracked {
                timeout,
                baseline: at,
                touched: None,
                last_replicated: at,
                bucket: u64::MAX,
            },
        );
        self.place(id, at + timeout);
    }

    /// A client touched the session `at` (on some member); later touches win.
    pub fn touch(&mut self, id: SessionId, at: Instant) {
        let Some(t) = self.sessions.get_mut(&id) else {
            return;
        };
        if t.touched.is_some_and(|last| at <= last) {
            return;
        }
        let news = at > t.alive_at();
        t.touched = Some(at);
        let deadline = t.alive_at() + t.timeout;
        if news {
            self.unreplicated.insert(id);
        }
        self.place(id, deadline);
    }

    /// Replaces the session's baseline (earlier or later) with better
    /// evidence; touches stay.
    pub fn rebase(&mut self, id: SessionId, baseline: Instant) {
        let Some(t) = self.sessions.get_mut(&id) else {
            return;
        };
        t.baseline = baseline;
        let deadline = t.alive_at() + t.timeout;
        self.place(id, deadline);
    }

    /// Stops tracking a session (closed or expired).
    pub fn remove(&mut self, id: SessionId) {
        if let Some(t) = self.sessions.remove(&id) {
            if let Some(b) = self.buckets.get_mut(&t.bucket) {
                b.remove(&id);
                if b.is_empty() {
                    self.buckets.remove(&t.bucket);
                }
            }
        }
        self.unreplicated.remove(&id);
    }

    /// How many sessions are tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is tracked.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sessions whose heartbeat should be replicated now, with when each
    /// was last heard of; marks them replicated.
    pub fn due_heartbeats(&mut self, now: Instant) -> Vec<(SessionId, Instant)> {
        let mut due = Vec::new();
        self.unreplicated.retain(|id| {
            let Some(t) = self.sessions.get_mut(id) else {
                return false;
            };
            if now.saturating_duration_since(t.last_replicated) >= t.timeout / 3 {
                t.last_replicated = t.alive_at();
                due.push((*id, t.last_replicated));
                false
            } else {
                true
            }
        });
        due.sort_unstable();
        due
    }

    /// Sessions whose deadline has passed. They stay tracked, moved `retry`
    /// later, so the expiry is proposed again if this proposal is lost.
    pub fn expired(&mut self, now: Instant, retry: Duration) -> Vec<SessionId> {
        let due_bucket = self.last_ended(now);
        let mut ids = Vec::new();
        while let Some((&bucket, _)) = self.buckets.first_key_value() {
            if bucket > due_bucket {
                break;
            }
            if let Some(set) = self.buckets.remove(&bucket) {
                for id in set {
                    if let Some(t) = self.sessions.get_mut(&id) {
                        t.bucket = u64::MAX;
                        ids.push(id);
                    }
                }
            }
        }
        for id in &ids {
            self.place(*id, now + retry);
        }
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);
    const T: Duration = Duration::from_millis(3000);

    #[test]
    fn expires_only_after_timeout() {
        let mut tr = Deadlines::new(TICK);
        let t0 = Instant::now();
        tr.add(SessionId(7), T, t0);
        assert!(tr.expired(t0 + T - TICK * 2, T).is_empty());
        assert_eq!(tr.expired(t0 + T + TICK, T), vec![SessionId(7)]);
        // Still tracked for a retry, not returned again before it.
        assert!(tr.expired(t0 + T + TICK * 2, T).is_empty());
        assert_eq!(tr.len(), 1);
    }

    #[test]
    fn no_session_expires_before_its_deadline() {
        let mut tr = Deadlines::new(TICK);
        let t0 = Instant::now() + Duration::from_millis(37);
        tr.add(SessionId(9), T, t0);
        let mut now = t0;
        while now < t0 + T + TICK * 2 {
            let expired = tr.expired(now, T);
            if !expired.is_empty() {
                assert!(now >= t0 + T, "expired {:?} early", t0 + T - now);
                assert!(now <= t0 + T + TICK, "expired {:?} late", now - (t0 + T));
                return;
            }
            now += Duration::from_millis(7);
        }
        panic!("never expired");
    }

    #[test]
    fn touch_postpones_and_coalesces_heartbeats() {
        let mut tr = Deadlines::new(TICK);
        let t0 = Instant::now();
        tr.add(SessionId(1), T, t0);
        tr.touch(SessionId(1), t0 + Duration::from_millis(500));
        // Replicated 0 ms ago at t0+500: not due before T/3 has passed.
        assert!(tr.due_heartbeats(t0 + Duration::from_millis(600)).is_empty());
        // Due, dated by the touch (what members' apply marks record).
        assert_eq!(
            tr.due_heartbeats(t0 + Duration::from_millis(1100)),
            vec![(SessionId(1), t0 + Duration::from_millis(500))]
        );
        assert!(tr.due_heartbeats(t0 + Duration::from_millis(1200)).is_empty());
        assert!(tr.expired(t0 + T + TICK, T).is_empty());
        assert_eq!(
            tr.expired(t0 + T + Duration::from_millis(700), T),
            vec![SessionId(1)]
        );
    }

    #[test]
    fn a_rebase_moves_the_deadline_either_way_but_touches_stay() {
        let mut tr = Deadlines::new(TICK);
        let t0 = Instant::now();
        tr.add(SessionId(1), T, t0 + Duration::from_millis(2000));
        tr.rebase(SessionId(1), t0);
        assert_eq!(
            tr.expired(t0 + T + TICK, T),
            vec![SessionId(1)],
            "earlier baseline, earlier deadline"
        );
        let mut tr = Deadlines::new(TICK);
        tr.add(SessionId(2), T, t0);
        tr.touch(SessionId(2), t0 + Duration::from_millis(1000));
        tr.rebase(SessionId(2), t0 - Duration::from_millis(500));
        assert!(tr.expired(t0 + T + TICK, T).is_empty(), "the touch still holds");
        assert_eq!(
            tr.expired(t0 + T + Duration::from_millis(1200), T),
            vec![SessionId(2)]
        );
    }

    #[test]
    fn older_touch_never_moves_a_deadline_back() {
        let mut tr = Deadlines::new(TICK);
        let t0 = Instant::now();
        tr.add(SessionId(1), T, t0 + Duration::from_millis(1000));
        tr.touch(SessionId(1), t0);
        assert!(tr.expired(t0 + T + TICK, T).is_empty());
        tr.remove(SessionId(1));
        assert!(tr.is_empty());
        assert!(tr.expired(t0 + T * 10, T).is_empty());
    }
}
