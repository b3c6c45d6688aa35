//! Throttling password guessing. Every failed authentication puts a debt
//! on its source address and on the user name it tried; a debt decays with
//! time. While a source (or a user) owes more than a small burst, further
//! attempts from it (for it) wait until the debt is back within the burst,
//! before any password is checked and without holding a checking slot; an
//! attempt that would wait longer than [`MAX_WAIT`] is refused at once,
//! unchecked, with the time to retry. So one client guesses at most
//! [`SOURCE`]'s rate however it paces or parallelizes its attempts, one user
//! is guessed at most at [`USER`]'s rate from all sources together, and
//! an attempt from a source with no recent failures for a user with no
//! recent failures is never delayed.
//!
//! The per-user rate is higher than the per-source rate so that one
//! attacking address never delays the real user logging in from elsewhere;
//! only guessing from many addresses at once slows every attempt for the
//! attacked user (down to [`USER`]'s rate, never locked out).
//!
//! Failures are also logged here: the first from a source at WARN, then at
//! most one summary line per source every [`SUMMARY_EVERY`].
//!
//! Memory is bounded: each table keeps at most [`MAX_KEYS`] entries; past
//! that, decayed entries go first, then those owing the least.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// How fast failures are forgiven for one key, and how many may be owed
/// before attempts wait.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Each failure adds this much debt; debt decays in real time.
    pub interval: Duration,
    /// Failures owed before attempts wait: a mistyped password or a few
    /// are never delayed.
    pub burst: u32,
}

impl Rate {
    /// How far ahead the debt may run before an attempt waits: `burst`
    /// failures go through, the next waits.
    fn window(&self) -> Duration {
        self.interval * self.burst.saturating_sub(1)
    }
}

/// Per source address: 10 failures a second once 5 are owed.
pub const SOURCE: Rate = Rate {
    interval: Duration::from_millis(100),
    burst: 5,
};

/// Per user name (known or not, so the throttle does not tell which users
/// exist): 20 failures a second from all sources once 20 are owed. Faster
/// than [`SOURCE`], so a single source never holds up a user.
pub const USER: Rate = Rate {
    interval: Duration::from_millis(50),
    burst: 20,
};

/// The longest an attempt is held before its check; one that would wait
/// longer is refused at once. It bounds the attempts a source has waiting
/// to about `MAX_WAIT / SOURCE.interval`, and keeps a delayed client well
/// inside its request timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Entries per table (sources, users, log reports).
pub const MAX_KEYS: usize = 4096;

/// At most one summary line per source this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Where an attempt came from. IPv6 sources count by /64, the block one
/// host is usually given; IPv4-mapped addresses as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A client address (an IPv6 one cut to its /64).
    Ip(IpAddr),
    /// The transport did not say (all such attempts share one key).
    Unknown,
}

impl Source {
    /// The key of an attempt from `ip`.
    pub fn of(ip: Option<IpAddr>) -> Source {
        match ip {
            None => Source::Unknown,
            Some(IpAddr::V4(v4)) => Source::Ip(IpAddr::V4(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::Ip(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Source::Ip(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip @ IpAddr::V6(_)) => write!(f, "{ip}/64"),
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Unknown => f.write_str("an unknown address"),
        }
    }
}

/// Debts by key: the instant at which each key's failures are all
/// forgiven (a "theoretical arrival time", as in GCRA).
struct Debts<K> {
    rate: Rate,
    until: HashMap<K, Instant>,
}

impl<K: Hash + Eq + Clone> Debts<K> {
    fn new(rate: Rate) -> Self {
        Debts {
            rate,
            until: HashMap::new(),
        }
    }

    /// When an attempt for `key` may be checked: now, unless more than the
    /// burst is owed.
    fn ready_at(&self, key: &K, now: Instant) -> Instant {
        match self.until.get(key) {
            Some(&until) => until.checked_sub(self.rate.window()).map_or(now, |t| t.max(now)),
            None => now,
        }
    }

    /// A failure for `key`.
    fn charge(&mut self, key: &K, now: Instant) {
        let until = self.until.get(key).map_or(now, |&u| u.max(now)) + self.rate.interval;
        self.until.insert(key.clone(), until);
        if self.until.len() > MAX_KEYS {
            self.shrink(now);
        }
    }

    /// A success for `key` forgives one failure.
    fn forgive(&mut self, key: &K, now: Instant) {
        if let Some(until) = self.until.get_mut(key) {
            match until.checked_sub(self.rate.interval) {
                Some(t) if t > now => *until = t,
                _ => {
                    self.until.remove(key);
                }
            }
        }
    }

    /// Drops decayed entries, then (if still too many) those owing least,
    /// down to 7/8 of the cap so that shrinking is rare.
    fn shrink(&mut self, now: Instant) {
        self.until.retain(|_, until| *until > now);
        if self.until.len() > MAX_KEYS {
            let mut ends: Vec<Instant> = self.until.values().copied().collect();
            let keep = MAX_KEYS * 7 / 8;
            let cut = ends.len() - keep;
            let (_, nth, _) = ends.select_nth_unstable(cut);
            let floor = *nth;
            self.until.retain(|_, until| *until >= floor);
            // Ties at the floor may leave a few more; bound them anyway.
            if self.until.len() > MAX_KEYS {
                let extra: Vec<K> = self.until.keys().take(self.until.len() - keep).cloned().collect();
                for k in extra {
                    self.until.remove(&k);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.until.len()
    }
}

/// What the log has said about one source's failures.
struct Report {
    /// When the last line about this source was written.
    logged: Instant,
    /// When the last failure from it happened.
    last: Instant,
    /// Failures and unchecked refusals since the last line.
    failures: u64,
    refused: u64,
    /// Some user names tried since the last line, and how many others.
    users: Vec<String>,
    more_users: u64,
}

/// User names a summary line names before it says "and N more".
const NAMED_USERS: usize = 3;

impl Report {
    fn note_user(&mut self, user: Option<&str>) {
        if let Some(u) = user {
            if !self.users.iter().any(|n| n == u) {
                if self.users.len() < NAMED_USERS {
                    self.users.push(u.to_string());
                } else {
                    self.more_users += 1;
                }
            }
        }
    }

    /// Writes the summary of what happened since the last line, if anything.
    fn summarize(&mut self, source: &Source, now: Instant) {
        if self.failures + self.refused == 0 {
            return;
        }
        let mut users = self.users.join(", ");
        if self.more_users > 0 {
            users.push_str(&format!(" and {} more", self.more_users));
        }
        let secs = now.saturating_duration_since(self.logged).as_secs().max(1);
        warn!(
            from = %source,
            failures = self.failures,
            refused_unchecked = self.refused,
            users = %users,
            "{} failed authentication attempts from {source} (users: {users}) in the last {secs} s, {} of them refused unchecked by the throttle",
            self.failures + self.refused,
            self.refused,
        );
        self.logged = now;
        self.failures = 0;
        self.refused = 0;
        self.users.clear();
        self.more_users = 0;
    }
}

/// The throttle's state, behind one lock held only briefly (never across
/// an await).
struct Inner {
    sources: Debts<Source>,
    users: Debts<String>,
    reports: HashMap<Source, Report>,
    /// When reports were last swept for idle sources.
    swept: Instant,
}

/// Failed attempts, by source and user, and their consequences.
pub struct Throttle {
    inner: Mutex<Inner>,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Throttle")
            .field("sources", &inner.sources.len())
            .field("users", &inner.users.len())
            .finish()
    }
}

/// An attempt that may not be checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Check it now.
    Go,
    /// Check it at this instant (then ask again).
    WaitUntil(Instant),
    /// Refuse it unchecked: retry after this long.
    Refuse(Duration),
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(Instant::now())
    }
}

impl Throttle {
    /// An empty throttle.
    pub fn new(now: Instant) -> Self {
        Throttle {
            inner: Mutex::new(Inner {
                sources: Debts::new(SOURCE),
                users: Debts::new(USER),
                reports: HashMap::new(),
                swept: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt from `source` for `user` that arrived at
    /// `arrived` may be checked at `now`.
    pub fn verdict(&self, source: Source, user: Option<&str>, arrived: Instant, now: Instant) -> Verdict {
        let inner = self.lock();
        let mut ready = inner.sources.ready_at(&source, now);
        if let Some(u) = user {
            ready = ready.max(inner.users.ready_at(&u.to_string(), now));
        }
        if ready <= now {
            Verdict::Go
        } else if ready > arrived + MAX_WAIT {
            Verdict::Refuse(ready.saturating_duration_since(now))
        } else {
            Verdict::WaitUntil(ready)
        }
    }

    /// An attempt was refused unchecked (it adds no debt: it guessed nothing).
    pub fn refused(&self, source: Source, user: Option<&str>, now: Instant) {
        let mut inner = self.lock();
        inner.report(source, user, now, true);
    }

    /// The credentials of an attempt were wrong (or malformed).
    pub fn failed(&self, source: Source, user: Option<&str>, now: Instant) {
        let mut inner = self.lock();
        inner.sources.charge(&source, now);
        if let Some(u) = user {
            inner.users.charge(&u.to_string(), now);
        }
        inner.report(source, user, now, false);
    }

    /// The credentials of an attempt were right: the source is forgiven
    /// one failure (not all: an attacker with one valid account would
    /// otherwise reset its debt at will).
    pub fn succeeded(&self, source: Source, now: Instant) {
        let mut inner = self.lock();
        inner.sources.forgive(&source, now);
        inner.sweep(now);
    }

    /// Writes the summaries that are due; called on every attempt, at
    /// most one pass a second.
    pub fn sweep(&self, now: Instant) {
        self.lock().sweep(now);
    }
}

impl Inner {
    fn report(&mut self, source: Source, user: Option<&str>, now: Instant, refused: bool) {
        if !self.reports.contains_key(&source) && self.reports.len() >= MAX_KEYS {
            // Too many sources to report on one by one: summarize them together.
            let (failures, refused_n) = self
                .reports
                .values()
                .fold((0, 0), |(f, r), rep| (f + rep.failures, r + rep.refused));
            warn!(
                sources = self.reports.len(),
                failures,
                refused_unchecked = refused_n,
                "failed authentication attempts from more than {MAX_KEYS} sources: {} more failures from {} sources",
                failures + refused_n,
                self.reports.len()
            );
            self.reports.clear();
        }
        match self.reports.get_mut(&source) {
            None => {
                warn!(user = user.unwrap_or(""), from = %source, "authentication failed");
                self.reports.insert(
                    source,
                    Report {
                        logged: now,
                        last: now,
                        // This line reported the attempt itself.
                        failures: 0,
                        refused: 0,
                        users: Vec::new(),
                        more_users: 0,
                    },
                );
            }
            Some(r) => {
                r.last = now;
                if refused {
                    r.refused += 1;
                } else {
                    r.failures += 1;
                }
                r.note_user(user);
                if now.saturating_duration_since(r.logged) >= SUMMARY_EVERY {
                    r.summarize(&source, now);
                }
            }
        }
        self.sweep(now);
    }

    /// Summarizes sources whose last line is old, and forgets the ones
    /// quiet for a whole period (their next failure is a first again).
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        self.reports.retain(|source, r| {
            if now.saturating_duration_since(r.logged) >= SUMMARY_EVERY {
                r.summarize(source, now);
            }
            now.saturating_duration_since(r.last) < SUMMARY_EVERY
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> Source {
        Source::of(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_few_failures_are_never_delayed() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for _ in 0..SOURCE.burst {
            assert_eq!(th.verdict(ip(1), Some("alice"), t0, t0), Verdict::Go);
            th.failed(ip(1), Some("alice"), t0);
        }
        // Past the burst the next attempt waits one interval.
        assert_eq!(
            th.verdict(ip(1), Some("alice"), t0, t0),
            Verdict::WaitUntil(t0 + SOURCE.interval)
        );
        // And the debt decays: later it goes at once.
        let later = t0 + SOURCE.interval;
        assert_eq!(th.verdict(ip(1), Some("alice"), later, later), Verdict::Go);
    }

    /// A client that retries as soon as it is answered gets one check per
    /// interval: 1 000 wrong guesses take about 100 s.
    #[test]
    fn a_guessing_loop_runs_at_the_source_rate() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        let mut now = t0;
        for _ in 0..1000 {
            match th.verdict(ip(1), Some("alice"), now, now) {
                Verdict::Go => {}
                Verdict::WaitUntil(t) => now = t,
                Verdict::Refuse(d) => panic!("a sequential client is delayed, not refused ({d:?})"),
            }
            th.failed(ip(1), Some("alice"), now);
            now += MS;
        }
        let took = now - t0;
        let least = SOURCE.interval * (1000 - SOURCE.burst);
        assert!(took >= least, "{took:?} < {least:?}");
    }

    #[test]
    fn other_sources_and_users_are_not_delayed() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for i in 0..200 {
            th.failed(ip(1), Some("alice"), t0 + MS * i);
        }
        let now = t0 + MS * 200;
        assert!(matches!(
            th.verdict(ip(1), Some("bob"), now, now),
            Verdict::Refuse(_)
        ));
        assert_eq!(th.verdict(ip(2), Some("bob"), now, now), Verdict::Go);
        // One source alone can not hold up its victim elsewhere: the user
        // rate is faster than the source rate, so a paced attacker...
        let th = Throttle::new(t0);
        let mut now = t0;
        for _ in 0..500 {
            if let Verdict::WaitUntil(t) = th.verdict(ip(1), Some("alice"), now, now) {
                now = t;
            }
            th.failed(ip(1), Some("alice"), now);
        }
        // ...leaves alice free to log in from another address.
        assert_eq!(th.verdict(ip(2), Some("alice"), now, now), Verdict::Go);
    }

    /// Many sources guessing one user slow down every attempt for it.
    #[test]
    fn a_distributed_guess_of_one_user_is_throttled() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for i in 0..100u8 {
            th.failed(ip(i), Some("alice"), t0);
        }
        assert!(matches!(
            th.verdict(ip(200), Some("alice"), t0, t0),
            Verdict::Refuse(_)
        ));
        assert_eq!(th.verdict(ip(200), Some("bob"), t0, t0), Verdict::Go);
    }

    #[test]
    fn an_attempt_waits_at_most_max_wait_then_is_refused() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for _ in 0..SOURCE.burst + 10 {
            th.failed(ip(1), None, t0);
        }
        // 11 intervals (1.1 s) to wait: wait.
        assert_eq!(
            th.verdict(ip(1), None, t0, t0),
            Verdict::WaitUntil(t0 + SOURCE.interval * 11)
        );
        for _ in 0..20 {
            th.failed(ip(1), None, t0);
        }
        // 3.1 s to wait: refused, told when to come back.
        match th.verdict(ip(1), None, t0, t0) {
            Verdict::Refuse(after) => assert_eq!(after, SOURCE.interval * 31),
            v => panic!("{v:?}"),
        }
        // An attempt that already waited counts its waiting against MAX_WAIT.
        let arrived = t0;
        let now = t0 + SOURCE.interval * 25;
        assert_eq!(
            th.verdict(ip(1), None, arrived, now),
            Verdict::Refuse(SOURCE.interval * 6)
        );
    }

    #[test]
    fn a_success_forgives_one_failure() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for _ in 0..SOURCE.burst {
            th.failed(ip(1), Some("alice"), t0);
        }
        assert!(matches!(
            th.verdict(ip(1), Some("alice"), t0, t0),
            Verdict::WaitUntil(_)
        ));
        th.succeeded(ip(1), t0);
        assert_eq!(th.verdict(ip(1), Some("alice"), t0, t0), Verdict::Go);
    }

    #[test]
    fn hostile_sources_can_not_grow_the_tables() {
        let t0 = Instant::now();
        let th = Throttle::new(t0);
        for i in 0..(MAX_KEYS as u32 * 3) {
            let src = Source::of(Some(IpAddr::V4(Ipv4Addr::from(i))));
            th.failed(src, Some(&format!("user{i}")), t0);
        }
        let inner = th.lock();
        assert!(inner.sources.len() <= MAX_KEYS);
        assert!(inner.users.len() <= MAX_KEYS);
        assert!(inner.reports.len() <= MAX_KEYS);
    }

    #[test]
    fn ipv6_sources_count_by_64_and_mapped_ones_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(Some(a)), Source::of(Some(b)));
        assert_ne!(Source::of(Some(a)), Source::of(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(Some(mapped)), ip(1));
        assert_eq!(Source::of(Some(a)).to_string(), "2001:db8:1:2::/64");
    }
}
