//! Layer 0: the member's Prometheus metrics. One process-wide registry
//! ([`render`] encodes it for `GET /metrics`, served by `admin::metrics`)
//! and small free functions that the other layers call where things
//! happen. It imports nothing from the crate, so every layer may record.
//!
//! Recording is cheap: counters and gauges are atomics, histograms are
//! atomic buckets ([`histogram`]), and the series of the fixed operation
//! names are created once, at first use, and indexed by [`Op`]; the hot
//! path neither allocates nor looks up a label set. Only a refusal looks
//! one up (its code is not known in advance), without allocating once
//! that series exists.
//!
//! Names follow ZooKeeper's (`mntr` and its Prometheus provider) where it
//! has one, with Prometheus's suffixes (`_total`, `_seconds`, `_bytes`),
//! all under the `ensemble_` prefix; `docs/metrics.md` lists every metric
//! and the ZooKeeper name it corresponds to.

mod histogram;

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use histogram::{Histogram, COUNTS, ELECTION_NS, LATENCY_NS, NANOS};

/// The `Content-Type` of [`render`]'s text: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Reads gauges whose values live elsewhere (the applied state, the
/// watches) into the registry; run before each scrape.
pub type Refresh = Box<dyn Fn() + Send + Sync>;

/// A client request, as counted and timed: the client API's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A session's heartbeat.
    Heartbeat,
    /// Closing a session.
    Close,
    /// Creating a znode.
    Create,
    /// Setting a znode's data.
    Set,
    /// Deleting a znode.
    Delete,
    /// A multi.
    Multi,
    /// A sync.
    Sync,
    /// Reading a znode.
    Get,
    /// Whether a znode exists.
    Exists,
    /// A znode's children.
    Children,
    /// Opening a session.
    CreateSession,
    /// Attaching to a session (unary or the session stream's first message).
    ResumeSession,
    /// Reading a znode's ACL.
    GetAcl,
    /// Replacing a znode's ACL.
    SetAcl,
    /// Adding an identity to a session.
    AddAuth,
    /// Asking a session's identities.
    WhoAmI,
}

impl Op {
    /// Every operation, in the order of its series.
    pub const ALL: [Op; 16] = [
        Op::Heartbeat,
        Op::Close,
        Op::Create,
        Op::Set,
        Op::Delete,
        Op::Multi,
        Op::Sync,
        Op::Get,
        Op::Exists,
        Op::Children,
        Op::CreateSession,
        Op::ResumeSession,
        Op::GetAcl,
        Op::SetAcl,
        Op::AddAuth,
        Op::WhoAmI,
    ];

    /// The `op` label: the operation's name in request spans.
    pub fn name(self) -> &'static str {
        match self {
            Op::Heartbeat => "heartbeat",
            Op::Close => "close_session",
            Op::Create => "create",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Multi => "multi",
            Op::Sync => "sync",
            Op::Get => "get",
            Op::Exists => "exists",
            Op::Children => "children",
            Op::CreateSession => "create_session",
            Op::ResumeSession => "resume_session",
            Op::GetAcl => "get_acl",
            Op::SetAcl => "set_acl",
            Op::AddAuth => "add_auth",
            Op::WhoAmI => "who_am_i",
        }
    }
}

/// A member's Raft role, for `ensemble_server_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads.
    Leader,
    /// Follows a leader.
    Follower,
    /// Stands for election.
    Candidate,
    /// Replicates without a vote.
    Learner,
    /// Stopped.
    Shutdown,
}

impl Role {
    const ALL: [Role; 5] = [
        Role::Leader,
        Role::Follower,
        Role::Candidate,
        Role::Learner,
        Role::Shutdown,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

const OPS: usize = Op::ALL.len();
const ROLES: usize = Role::ALL.len();

/// A label set of one label.
type Label = [(&'static str, &'static str); 1];
/// A label set of two labels.
type Labels2 = [(&'static str, &'static str); 2];

/// Declares every metric once, as a row: its field in [`Families`], its
/// type and how it is made, its name (without the `ensemble_` prefix and
/// the suffixes the encoder adds), its unit, and its help text (which
/// names the ZooKeeper metric it corresponds to, if any).
macro_rules! families {
    ($($field:ident: $ty:ty = $make:expr, $name:literal, $unit:expr, $help:literal;)*) => {
        /// Every metric family, registered.
        struct Families {
            $($field: $ty,)*
        }

        impl Families {
            fn register(r: &mut Registry) -> Families {
                $(
                    let $field: $ty = $make;
                    match $unit {
                        Some(unit) => r.register_with_unit($name, $help, unit, $field.clone()),
                        None => r.register($name, $help, $field.clone()),
                    }
                )*
                Families { $($field,)* }
            }
        }
    };
}

type Latencies = Family<Label, Histogram, fn() -> Histogram>;

families! {
    // Client requests.
    requests: Family<Label, Counter> = Family::default(), "requests", None, "Client requests received, by operation (ZooKeeper: packets_received)";
    request_latency: Latencies = Family::new_with_constructor(latency_histogram), "request_latency", Some(Unit::Seconds), "Time from receiving a client request to its answer, by operation (ZooKeeper: readlatency, updatelatency)";
    request_errors: Family<Labels2, Counter> = Family::default(), "request_errors", None, "Client requests refused, by operation and error code";
    outstanding_requests: Gauge = Gauge::default(), "outstanding_requests", None, "Client requests received and not yet answered (ZooKeeper: outstanding_requests)";
    num_alive_connections: Gauge = Gauge::default(), "num_alive_connections", None, "Session streams open on this member (ZooKeeper: num_alive_connections)";

    // Watches.
    watch_count: Gauge = Gauge::default(), "watch_count", None, "Watches registered on this member (ZooKeeper: watch_count)";
    watches_registered: Counter = Counter::default(), "watches_registered", None, "Watches registered on this member";
    watches_fired: Counter = Counter::default(), "watches_fired", None, "Watch events sent to this member's session streams";

    // Consensus and the log.
    proposal_count: Counter = Counter::default(), "proposal_count", None, "Log entries of commands this member proposed as leader (ZooKeeper: proposal_count)";
    proposal_batch_size: Histogram = Histogram::new(COUNTS, 1.0), "proposal_batch_size", None, "Commands carried by one proposed log entry (group commit)";
    commit_latency: Histogram = Histogram::new(LATENCY_NS, NANOS), "commit_latency", Some(Unit::Seconds), "Time from queuing a command on the leader to its outcome, applied on the leader";
    fsynctime: Histogram = Histogram::new(LATENCY_NS, NANOS), "fsynctime", Some(Unit::Seconds), "Time to write and flush one append to the Raft log; its count is the number of log flushes (ZooKeeper: fsynctime)";
    log_flushed_bytes: Counter = Counter::default(), "log_flushed", Some(Unit::Bytes), "Bytes of log entries appended and flushed";
    apply_lag: Gauge = Gauge::default(), "apply_lag", None, "Log entries this member knows committed but has not applied yet";
    forwarded_writes: Counter = Counter::default(), "forwarded_writes", None, "Commands this member forwarded to the leader on another member";

    // Raft role and leadership.
    leader_changes: Counter = Counter::default(), "leader_changes", None, "Times this member learned of a new leader";
    election_time: Histogram = Histogram::new(ELECTION_NS, NANOS), "election_time", Some(Unit::Seconds), "Time this member knew no leader, until it knew one (ZooKeeper: election_time)";
    raft_term: Gauge = Gauge::default(), "raft_term", None, "This member's current Raft term";
    server_state: Family<Label, Gauge> = Family::default(), "server_state", None, "1 for this member's Raft role, 0 for the others (ZooKeeper: server_state)";

    // Sessions and the tree.
    znode_count: Gauge = Gauge::default(), "znode_count", None, "Znodes in this member's applied state, the root included (ZooKeeper: znode_count)";
    ephemerals_count: Gauge = Gauge::default(), "ephemerals_count", None, "Ephemeral znodes in this member's applied state (ZooKeeper: ephemerals_count)";
    global_sessions: Gauge = Gauge::default(), "global_sessions", None, "Open sessions in this member's applied state (ZooKeeper: global_sessions)";
    sessions_created: Counter = Counter::default(), "sessions_created", None, "Sessions created by the entries this member applied";
    sessions_closed: Counter = Counter::default(), "sessions_closed", None, "Sessions closed by their clients, in the entries this member applied";
    sessions_expired: Counter = Counter::default(), "sessions_expired", None, "Sessions expired by the leader, in the entries this member applied";
    auth_failures: Counter = Counter::default(), "auth_failures", None, "Credentials this member rejected (at session open or add_auth)";
    connections_refused: Family<Label, Counter> = Family::default(), "connections_refused", None, "Connections a listener closed unserved (over its limit, a TLS handshake that failed or took too long), by listener";
    peer_calls_refused: Counter = Counter::default(), "peer_calls_refused", None, "Calls on the peer port without the cluster's peer secret, refused";
    auth_throttled: Counter = Counter::default(), "auth_throttled", None, "Authentication attempts this member delayed or refused unchecked because of earlier failures from their address or for their user";
    touches: Counter = Counter::default(), "touches", None, "Signs of life of sessions recorded by this member (heartbeats and every other proven request)";
    heartbeats_coalesced: Histogram = Histogram::new(COUNTS, 1.0), "heartbeats_coalesced", None, "Session heartbeats coalesced into one replicated Heartbeats entry proposed by this member as leader";
}

/// The registry, its families, and the series of the fixed labels, made
/// once so that recording them is an index, not a lookup.
struct Metrics {
    registry: Registry,
    f: Families,
    requests: [Counter; OPS],
    request_latency: [Histogram; OPS],
    server_state: [Gauge; ROLES],
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ensemble");
        let f = Families::register(&mut registry);
        let op = |op: Op| [("op", op.name())];
        Metrics {
            requests: Op::ALL.map(|o| f.requests.get_or_create_owned(&op(o))),
            request_latency: Op::ALL.map(|o| f.request_latency.get_or_create_owned(&op(o))),
            server_state: Role::ALL.map(|r| f.server_state.get_or_create_owned(&[("state", r.name())])),
            registry,
            f,
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_NS, NANOS)
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every metric in Prometheus text format 0.0.4 ([`CONTENT_TYPE`]).
pub fn render() -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(32 * 1024);
    prometheus_text::encode(&mut text, &METRICS.registry)?;
    Ok(text)
}

/// One client request in flight: counted when it starts; its latency and
/// refusal are recorded by [`Request::finish`]. Dropping it unfinished (the
/// client went away) only ends it as outstanding.
#[must_use = "a request is timed until it is finished"]
pub struct Request {
    op: Op,
    started: Instant,
}

/// A client request `op` starts.
pub fn request(op: Op) -> Request {
    let m = &*METRICS;
    m.requests[op as usize].inc();
    m.f.outstanding_requests.inc();
    Request {
        op,
        started: Instant::now(),
    }
}

impl Request {
    /// The request is answered: `refused` is the error code's name if it was refused.
    pub fn finish(self, refused: Option<&'static str>) {
        let m = &*METRICS;
        m.request_latency[self.op as usize].observe(nanos(self.started.elapsed()));
        if let Some(code) = refused {
            m.f.request_errors
                .get_or_create(&[("op", self.op.name()), ("code", code)])
                .inc();
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        METRICS.f.outstanding_requests.dec();
    }
}

/// The leader proposed one log entry carrying `commands` commands.
pub fn proposed(commands: usize) {
    let m = &*METRICS;
    m.f.proposal_count.inc();
    m.f.proposal_batch_size.observe(commands as u64);
}

/// Times a command from now (queued on the leader) until `outcome`
/// yields; only a command that has an outcome counts.
pub fn commit_timed<T, E>(outcome: impl Future<Output = Result<T, E>>) -> impl Future<Output = Result<T, E>> {
    let started = Instant::now();
    async move {
        let result = outcome.await;
        if result.is_ok() {
            METRICS.f.commit_latency.observe(nanos(started.elapsed()));
        }
        result
    }
}

/// An append of `bytes` bytes was written to the log and flushed in `took`.
pub fn log_flushed(bytes: usize, took: Duration) {
    let m = &*METRICS;
    m.f.fsynctime.observe(nanos(took));
    m.f.log_flushed_bytes.inc_by(bytes as u64);
}

/// This member applied entries that created, closed and expired these many sessions.
pub fn sessions_applied(created: u64, closed: u64, expired: u64) {
    let m = &*METRICS;
    m.f.sessions_created.inc_by(created);
    m.f.sessions_closed.inc_by(closed);
    m.f.sessions_expired.inc_by(expired);
}

/// This member rejected credentials.
pub fn auth_failed() {
    METRICS.f.auth_failures.inc();
}

/// A listener (`clients` or `peers`) closed a connection unserved.
pub fn connection_refused(listener: &'static str) {
    METRICS
        .f
        .connections_refused
        .get_or_create(&[("listener", listener)])
        .inc();
}

/// The peer port refused a call without the peer secret.
pub fn peer_call_refused() {
    METRICS.f.peer_calls_refused.inc();
}

/// This member delayed an authentication attempt, or refused it unchecked,
/// because of earlier failures.
pub fn auth_throttled() {
    METRICS.f.auth_throttled.inc();
}

/// A client of this member showed its session alive.
pub fn touched() {
    METRICS.f.touches.inc();
}

/// The leader proposed one `Heartbeats` entry naming `sessions` sessions.
pub fn heartbeats_coalesced(sessions: usize) {
    METRICS.f.heartbeats_coalesced.observe(sessions as u64);
}

/// A watch was registered.
pub fn watch_registered() {
    METRICS.f.watches_registered.inc();
}

/// A watch event was sent to a session stream.
pub fn watch_fired() {
    METRICS.f.watches_fired.inc();
}

/// This member forwarded a command to the leader.
pub fn forwarded() {
    METRICS.f.forwarded_writes.inc();
}

/// This member's Raft role and term, as openraft reports them.
pub fn raft_state(role: Role, term: u64) {
    let m = &*METRICS;
    for (r, g) in Role::ALL.iter().zip(&m.server_state) {
        g.set(i64::from(*r == role));
    }
    m.f.raft_term.set(as_i64(term));
}

/// This member learned of a new leader, after `without` without one
/// (`None`: it never lacked one, the leader changed hands directly).
pub fn leader_changed(without: Option<Duration>) {
    let m = &*METRICS;
    m.f.leader_changes.inc();
    if let Some(d) = without {
        m.f.election_time.observe(nanos(d));
    }
}

/// The sizes of the applied state, read when scraped.
pub fn state_sizes(znodes: u64, ephemerals: u64, sessions: u64) {
    let m = &*METRICS;
    m.f.znode_count.set(as_i64(znodes));
    m.f.ephemerals_count.set(as_i64(ephemerals));
    m.f.global_sessions.set(as_i64(sessions));
}

/// How far apply trails the commit index, read when scraped.
pub fn apply_lag(entries: u64) {
    METRICS.f.apply_lag.set(as_i64(entries));
}

/// Session streams and watches on this member, read when scraped.
pub fn watch_sizes(streams: u64, watches: u64) {
    let m = &*METRICS;
    m.f.num_alive_connections.set(as_i64(streams));
    m.f.watch_count.set(as_i64(watches));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_every_family_with_prometheus_names() {
        request(Op::Create).finish(None);
        request(Op::Set).finish(Some("BAD_VERSION"));
        log_flushed(100, Duration::from_millis(2));
        proposed(3);
        raft_state(Role::Follower, 7);
        let text = render().unwrap();
        for line in [
            "# TYPE ensemble_requests_total counter",
            "ensemble_requests_total{op=\"create\"} ",
            "# TYPE ensemble_request_latency_seconds histogram",
            "ensemble_request_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} ",
            "ensemble_request_errors_total{op=\"set\",code=\"BAD_VERSION\"} ",
            "ensemble_outstanding_requests ",
            "ensemble_fsynctime_seconds_count ",
            "ensemble_fsynctime_seconds_bucket{le=\"0.0025\"} ",
            "ensemble_log_flushed_bytes_total ",
            "ensemble_proposal_count_total ",
            "ensemble_proposal_batch_size_bucket{le=\"4\"} ",
            "ensemble_server_state{state=\"follower\"} 1",
            "ensemble_server_state{state=\"leader\"} 0",
            "ensemble_raft_term 7",
            "ensemble_znode_count ",
            "ensemble_sessions_expired_total ",
            "ensemble_heartbeats_coalesced_count ",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        // Every series of the fixed operations exists before its first request.
        for op in Op::ALL {
            let series = format!("ensemble_requests_total{{op=\"{}\"}} ", op.name());
            assert!(text.contains(&series), "no {series}");
        }
    }

    #[test]
    fn only_a_finished_request_is_timed() {
        let timed = || METRICS.request_latency[Op::Exists as usize].count();
        let before = timed();
        drop(request(Op::Exists));
        request(Op::Exists).finish(None);
        assert_eq!(timed(), before + 1);
    }
}
