//! The session's connection: one task that owns the stream to the current
//! node, sends heartbeats every T/3, moves to another node when its node
//! fails or is cut off, resumes the session there and re-registers watches.
//!
//! Requests made while no node serves the session wait (up to their
//! deadline). When a connection drops, reads in flight are sent again on the
//! next node; writes in flight fail with `CONNECTION_LOSS`, since they may or
//! may not have been applied.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;
use tracing::debug;

use crate::client::{Options, SessionInfo};
use crate::error::{Error, Result};
use crate::state::{SessionState, StateEvent};
use crate::watches::{Registry, WatchEvent};

/// One request from the API to the connection task.
pub(crate) struct Call {
    pub request: Req,
    /// Safe to send again after a lost connection (reads).
    pub idempotent: bool,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Resp>>,
}

/// What the API and the connection task share.
pub(crate) struct Shared {
    pub session: SessionInfo,
    pub state: watch::Sender<SessionState>,
    pub events: broadcast::Sender<StateEvent>,
    pub last_zxid: AtomicU64,
    /// The largest request the cluster accepts (0 until a node has said).
    pub max_request_bytes: AtomicUsize,
    /// Set before the `Expired` event is sent.
    pub expired: std::sync::atomic::AtomicBool,
    pub watches: Mutex<Registry>,
    pub endpoints: Vec<String>,
    pub current: AtomicUsize,
    pub listener: Option<mpsc::UnboundedSender<StateEvent>>,
}

impl Shared {
    pub fn set_state(&self, s: SessionState) {
        if *self.state.borrow() != s {
            self.state.send_replace(s);
            self.emit(StateEvent::State(s));
        }
    }

    pub fn emit(&self, e: StateEvent) {
        if let Some(l) = &self.listener {
            let _ = l.send(e.clone());
        }
        let _ = self.events.send(e);
    }

    pub fn watches(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn saw(&self, zxid: u64) {
        self.last_zxid.fetch_max(zxid, Ordering::Relaxed);
    }

    /// The header of a message on the session stream, which the resume
    /// already bound to the session: no secret needed.
    fn header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            session_id: self.session.session_id,
            last_zxid: self.last_zxid.load(Ordering::Relaxed),
            secret: Vec::new(),
        }
    }

    /// The header of a unary call, which must prove the session itself.
    fn proof_header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            secret: self.session.secret.clone(),
            ..self.header()
        }
    }

    /// Refuses, before sending, a request the cluster would refuse for its
    /// size: the answer is then certain (not applied), not a lost connection.
    pub fn check_size(&self, request: &Req) -> Result<()> {
        let limit = self.max_request_bytes.load(Ordering::Relaxed);
        if limit == 0 {
            return Ok(());
        }
        // The message as sent adds at most this to the request: the xid,
        // the oneof's tag and length, and the stamped header.
        const FRAMING: usize = 48;
        let size = request.encoded_len() + FRAMING;
        if size > limit {
            return Err(Error::BadArguments(format!(
                "request of {size} bytes is larger than the cluster's limit of {limit} bytes (max_request_bytes); nothing was sent"
            )));
        }
        Ok(())
    }
}

/// The zxid a reply carries, if any.
fn zxid_of(r: &Resp) -> u64 {
    match r {
        Resp::Resume(r) => r.zxid,
        Resp::Heartbeat(r) => r.zxid,
        Resp::Close(r) => r.zxid,
        Resp::Create(r) => r.zxid,
        Resp::Get(r) => r.zxid,
        Resp::Set(r) => r.zxid,
        Resp::Delete(r) => r.zxid,
        Resp::Exists(r) => r.zxid,
        Resp::Children(r) => r.zxid,
        Resp::Multi(r) => r.zxid,
        Resp::Sync(r) => r.zxid,
        Resp::AddWatch(r) => r.zxid,
        Resp::SetWatches(r) => r.zxid,
        Resp::RemoveWatches(_) | Resp::Error(_) | Resp::Event(_) => 0,
    }
}

/// Puts the session's header (with the newest zxid) into a request.
fn stamp(req: &mut Req, header: pb::RequestHeader) {
    let h = Some(header);
    match req {
        Req::Resume(r) => r.header = h,
        Req::Heartbeat(r) => r.header = h,
        Req::Close(r) => r.header = h,
        Req::Create(r) => r.header = h,
        Req::Get(r) => r.header = h,
        Req::Set(r) => r.header = h,
        Req::Delete(r) => r.header = h,
        Req::Exists(r) => r.header = h,
        Req::Children(r) => r.header = h,
        Req::Multi(r) => r.header = h,
        Req::Sync(r) => r.header = h,
        Req::AddWatch(_) | Req::RemoveWatches(_) | Req::SetWatches(_) => {}
    }
}

fn error_of(e: pb::ErrorReply) -> Error {
    let code = pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::SystemError);
    Error::Server {
        code,
        message: e.message,
        op_index: (e.op_index >= 0).then_some(e.op_index as u32),
    }
}

enum Pending {
    Api(Call),
    /// Heartbeats and watch re-registration: nobody waits for them.
    Internal,
}

/// Why the connection task stops for good.
enum End {
    Expired,
    Closed,
    Dropped,
}

struct Conn {
    tx: mpsc::Sender<pb::SessionRequest>,
    inbound: Streaming<pb::SessionResponse>,
}

/// Resumes the session on one node over a new stream.
async fn open(mut client: EnsembleClient<Channel>, shared: &Shared, timeout: Duration) -> Result<Conn> {
    let (tx, rx) = mpsc::channel(1024);
    let resume = pb::SessionRequest {
        xid: 0,
        request: Some(Req::Resume(pb::ResumeSessionRequest {
            header: Some(shared.header()),
            secret: shared.session.secret.clone(),
        })),
    };
    let _ = tx.send(resume).await;
    let opened = tokio::time::timeout(timeout, async {
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(Error::from_status)?
            .into_inner();
        match inbound.message().await {
            Ok(Some(pb::SessionResponse {
                response: Some(Resp::Resume(r)),
                ..
            })) => {
                shared.saw(r.zxid);
                if r.max_request_bytes > 0 {
                    shared
                        .max_request_bytes
                        .store(r.max_request_bytes as usize, Ordering::Relaxed);
                }
                Ok(inbound)
            }
            Ok(Some(pb::SessionResponse {
                response: Some(Resp::Error(e)),
                ..
            })) => Err(error_of(e)),
            Ok(_) => Err(Error::ConnectionLoss("the node closed the stream".into())),
            Err(status) => Err(Error::from_status(status)),
        }
    })
    .await;
    match opened {
        Ok(Ok(inbound)) => Ok(Conn { tx, inbound }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::ConnectionLoss(format!("no answer within {timeout:?}"))),
    }
}

/// Runs the session's connection until it ends.
pub(crate) async fn run(
    shared: Arc<Shared>,
    clients: Vec<EnsembleClient<Channel>>,
    mut calls: mpsc::Receiver<Call>,
    options: Options,
) {
    let end = drive(&shared, &clients, &mut calls, &options).await;
    let error = match end {
        End::Expired => {
            shared.expired.store(true, Ordering::Relaxed);
            shared.emit(StateEvent::Expired);
            Error::SessionExpired(shared.session.session_id)
        }
        End::Closed | End::Dropped => Error::Closed,
    };
    shared.set_state(SessionState::Closed);
    calls.close();
    while let Ok(call) = calls.try_recv() {
        let _ = call.reply.send(Err(error.clone()));
    }
}

async fn drive(
    shared: &Arc<Shared>,
    clients: &[EnsembleClient<Channel>],
    calls: &mut mpsc::Receiver<Call>,
    options: &Options,
) -> End {
    let t = shared.session.timeout;
    let mut queue: VecDeque<Call> = VecDeque::new();
    let mut last_heard = Instant::now();
    let mut silent = Silent::new(clients.len(), t);
    loop {
        // Events up to here were delivered; the resume reply moves last_zxid
        // past changes whose events the next node must replay.
        let watched_through = shared.last_zxid.load(Ordering::Relaxed);
        let conn = match connect(
            shared,
            clients,
            calls,
            &mut queue,
            options,
            &mut silent,
            last_heard,
        )
        .await
        {
            Ok(conn) => conn,
            Err(end) => return end,
        };
        last_heard = Instant::now();
        shared.set_state(SessionState::Connected);
        match serve(
            shared,
            clients,
            conn,
            calls,
            &mut queue,
            &mut last_heard,
            watched_through,
        )
        .await
        {
            Ok(end) => return end,
            Err(left) => {
                let idx = shared.current.load(Ordering::Relaxed);
                if matches!(left, Left::Silent) {
                    silent.mark(idx % clients.len());
                }
                shared.set_state(SessionState::NotConnected);
                shared.current.store(idx + 1, Ordering::Relaxed);
            }
        }
    }
}

/// Finds a node that resumes the session, or gives up when no node has
/// answered for 4/3 of the timeout (the session is then expired locally).
///
/// Tries the nodes in turn; when one keeps it waiting for a moment, it tries
/// the next beside it (as "happy eyeballs" does), so a frozen node does not
/// hold the client while a live one could take it. The first to resume the
/// session wins; the other attempts are dropped.
#[allow(clippy::too_many_arguments)]
async fn connect(
    shared: &Arc<Shared>,
    clients: &[EnsembleClient<Channel>],
    calls: &mut mpsc::Receiver<Call>,
    queue: &mut VecDeque<Call>,
    options: &Options,
    silent: &mut Silent,
    last_heard: Instant,
) -> std::result::Result<Conn, End> {
    let t = shared.session.timeout;
    let n = clients.len();
    let expire_at = last_heard + t * 4 / 3;
    let attempt = options.connect_timeout.min(t / 3).max(Duration::from_millis(200));
    let hedge = (t / 16).clamp(Duration::from_millis(50), Duration::from_millis(250));
    let mut attempts: JoinSet<(usize, Instant, Result<Conn>)> = JoinSet::new();
    let mut busy = vec![false; n];
    let mut next_start = Instant::now();
    let mut failed_in_round = 0usize;
    let mut last_probe: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while let Some(pos) = queue.iter().position(|c| c.deadline <= now) {
            if let Some(c) = queue.remove(pos) {
                let _ = c.reply.send(Err(Error::ConnectionLoss(
                    "no node served the session before the request's deadline".into(),
                )));
            }
        }
        if attempts.is_empty() {
            busy.iter_mut().for_each(|b| *b = false);
        }
        let next_deadline = queue.iter().map(|c| c.deadline).min().unwrap_or(expire_at);
        let can_start = busy.iter().any(|b| !b);
        tokio::select! {
            _ = tokio::time::sleep_until(expire_at.into()) => {
                debug!("no node heard from for 4/3 of the timeout: expiring locally");
                return Err(End::Expired);
            }
            _ = tokio::time::sleep_until(next_deadline.into()) => {}
            _ = tokio::time::sleep_until(next_start.into()), if can_start => {
                let idx = silent.next_from(shared.current.load(Ordering::Relaxed), &busy);
                shared.current.store(idx, Ordering::Relaxed);
                busy[idx] = true;
                let (client, shared) = (clients[idx].clone(), shared.clone());
                attempts.spawn(async move {
                    let started = Instant::now();
                    (idx, started, open(client, &shared, attempt).await)
                });
                next_start = Instant::now() + hedge;
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                let Ok((idx, started, result)) = done else { continue };
                busy[idx] = false;
                match result {
                    Ok(conn) => {
                        debug!(endpoint = %shared.endpoints[idx], "resumed the session");
                        shared.current.store(idx, Ordering::Relaxed);
                        silent.clear(idx);
                        return Ok(conn);
                    }
                    Err(e) if e.code() == pb::ErrorCode::SessionExpired => return Err(End::Expired),
                    Err(e) => {
                        debug!(endpoint = %shared.endpoints[idx], %e, "could not resume the session");
                        if started.elapsed() >= attempt {
                            silent.mark(idx);
                        }
                        // Still looking for a node: let every node hear that we live.
                        if last_probe.is_none_or(|p: Instant| p.elapsed() >= t / 4) {
                            last_probe = Some(Instant::now());
                            probe_others(shared, clients, None);
                        }
                        shared.current.store(idx + 1, Ordering::Relaxed);
                        failed_in_round += 1;
                        next_start = if failed_in_round >= n {
                            // A full round failed: back off a little.
                            failed_in_round = 0;
                            Instant::now() + Duration::from_millis(100)
                        } else {
                            Instant::now()
                        };
                    }
                }
            }
            call = calls.recv() => match call {
                Some(c) => queue.push_back(c),
                None => return Err(End::Dropped),
            },
        }
    }
}

/// Nodes that recently stopped answering. A frozen node still accepts TCP
/// connections (the kernel answers for it), so each attempt on it costs a
/// whole attempt timeout; while a new leader is being elected the client
/// must not spend its remaining time there. Such a node is tried again
/// only when every other node is silent too, or after a session timeout.
struct Silent {
    since: Vec<Option<Instant>>,
    forget_after: Duration,
}

impl Silent {
    fn new(nodes: usize, forget_after: Duration) -> Self {
        Silent {
            since: vec![None; nodes],
            forget_after,
        }
    }

    fn mark(&mut self, idx: usize) {
        self.since[idx] = Some(Instant::now());
    }

    fn clear(&mut self, idx: usize) {
        self.since[idx] = None;
    }

    fn is_silent(&self, idx: usize) -> bool {
        self.since[idx].is_some_and(|at| at.elapsed() < self.forget_after)
    }

    /// The first node at or after `from` (in turn) that is neither busy nor
    /// silent; failing that the first that is not busy; failing that `from`.
    fn next_from(&self, from: usize, busy: &[bool]) -> usize {
        let n = self.since.len();
        let free = || (0..n).map(|k| (from + k) % n).filter(|&i| !busy[i]);
        free()
            .find(|&i| !self.is_silent(i))
            .or_else(|| free().next())
            .unwrap_or(from % n)
    }
}

/// Sends a unary heartbeat to every node but `skip`, not waiting: each
/// records that the client is alive, even if it refuses to serve it.
fn probe_others(shared: &Shared, clients: &[EnsembleClient<Channel>], skip: Option<usize>) {
    debug!("probing the other nodes");
    for (_, c) in clients.iter().enumerate().filter(|(i, _)| Some(*i) != skip) {
        let mut c = c.clone();
        let mut req = tonic::Request::new(pb::HeartbeatRequest {
            header: Some(shared.proof_header()),
        });
        req.set_timeout(shared.session.timeout / 3);
        tokio::spawn(async move {
            let _ = c.heartbeat(req).await;
        });
    }
}

/// Why a connection ended while the session lives on.
enum Left {
    /// The node refused, closed the stream or failed: try the next one.
    Dropped,
    /// The node stopped answering (frozen, or cut off from us).
    Silent,
}

/// Serves one connection until the session ends (`Ok`) or another node
/// should be tried (`Err`).
#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Arc<Shared>,
    clients: &[EnsembleClient<Channel>],
    mut conn: Conn,
    calls: &mut mpsc::Receiver<Call>,
    queue: &mut VecDeque<Call>,
    last_heard: &mut Instant,
    watched_through: u64,
) -> std::result::Result<End, Left> {
    let t = shared.session.timeout;
    let read_timeout = t * 2 / 3;
    let mut probed_at: Option<Instant> = None;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_xid = 1u64;

    let mut send =
        |req: Req, pending_entry: Pending, conn: &mut Conn, pending: &mut HashMap<u64, Pending>| {
            let xid = next_xid;
            next_xid += 1;
            let mut req = req;
            stamp(&mut req, shared.header());
            let ok = conn
                .tx
                .try_send(pb::SessionRequest {
                    xid,
                    request: Some(req),
                })
                .is_ok();
            pending.insert(xid, pending_entry);
            ok
        };

    // Watches first, so the node fires what changed while we were away
    // before anything else happens on this connection.
    let set_watches = shared.watches().set_watches(watched_through);
    if let Some(req) = set_watches {
        send(Req::SetWatches(req), Pending::Internal, &mut conn, &mut pending);
    }
    while let Some(call) = queue.pop_front() {
        let req = call.request.clone();
        send(req, Pending::Api(call), &mut conn, &mut pending);
    }

    let mut heartbeat = tokio::time::interval(t / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    // Set when this node refused to serve us: no new requests go out, and
    // we wait briefly for the replies to those in flight (a cut-off node
    // refuses them as "not applied", so they can go elsewhere, rather than
    // end with an unknown outcome).
    let mut draining: Option<Instant> = None;
    let outcome: std::result::Result<End, Left> = loop {
        if let Some(until) = draining {
            let api_pending = pending.values().any(|p| matches!(p, Pending::Api(_)));
            if !api_pending || Instant::now() >= until {
                break Err(Left::Dropped);
            }
        }
        let drain_until = draining.unwrap_or_else(|| Instant::now() + t);
        let silent_until = *last_heard + read_timeout;
        // Half a timeout of silence: while still waiting for this node, tell
        // the others the client is alive. A frozen node (say, a paused
        // leader) must not cost a live session its deadline.
        let probe_at = *last_heard + t / 2;
        let probe_due = probed_at.is_none_or(|p| p < *last_heard);
        tokio::select! {
            _ = tokio::time::sleep_until(probe_at.into()), if probe_due => {
                probed_at = Some(Instant::now());
                let current = shared.current.load(Ordering::Relaxed) % clients.len();
                probe_others(shared, clients, Some(current));
            }
            _ = tokio::time::sleep_until(drain_until.into()), if draining.is_some() => break Err(Left::Dropped),
            call = calls.recv(), if draining.is_none() => match call {
                Some(call) => {
                    let req = call.request.clone();
                    if !send(req, Pending::Api(call), &mut conn, &mut pending) {
                        break Err(Left::Dropped);
                    }
                }
                None => break Ok(End::Dropped),
            },
            msg = conn.inbound.message() => match msg {
                Ok(Some(msg)) => {
                    *last_heard = Instant::now();
                    match handle(shared, msg, &mut pending) {
                        Handled::Continue => {}
                        Handled::Expired => break Ok(End::Expired),
                        Handled::Closed => break Ok(End::Closed),
                        Handled::Reconnect => {
                            draining = Some(Instant::now() + (t / 6).min(Duration::from_millis(500)));
                        }
                    }
                }
                _ => break Err(Left::Dropped),
            },
            _ = heartbeat.tick() => {
                let hb = Req::Heartbeat(pb::HeartbeatRequest { header: None });
                if !send(hb, Pending::Internal, &mut conn, &mut pending) {
                    break Err(Left::Dropped);
                }
            }
            _ = tokio::time::sleep_until(silent_until.into()) => {
                debug!("node silent for 2/3 of the timeout; moving on");
                break Err(Left::Silent);
            }
        }
    };
    // Reads go again on the next node; writes' outcomes are unknown.
    let mut unsent: Vec<(u64, Call)> = pending
        .into_iter()
        .filter_map(|(xid, p)| match p {
            Pending::Api(c) => Some((xid, c)),
            Pending::Internal => None,
        })
        .collect();
    unsent.sort_by_key(|(xid, _)| *xid);
    for (_, call) in unsent.into_iter().rev() {
        if call.idempotent || matches!(call.request, Req::Close(_)) {
            queue.push_front(call);
        } else {
            let _ = call.reply.send(Err(Error::ConnectionLoss(
                "the connection dropped with the write in flight: its outcome is unknown".into(),
            )));
        }
    }
    outcome
}

enum Handled {
    Continue,
    Expired,
    Closed,
    Reconnect,
}

fn handle(shared: &Shared, msg: pb::SessionResponse, pending: &mut HashMap<u64, Pending>) -> Handled {
    let Some(resp) = msg.response else {
        return Handled::Continue;
    };
    if let Resp::Event(e) = &resp {
        let ev = WatchEvent {
            kind: pb::EventType::try_from(e.r#type).unwrap_or(pb::EventType::None),
            path: e.path.clone(),
            zxid: e.zxid,
        };
        shared.saw(ev.zxid);
        shared.watches().dispatch(&ev);
        return Handled::Continue;
    }
    shared.saw(zxid_of(&resp));
    let entry = pending.remove(&msg.xid);
    let result = match resp {
        Resp::Error(e) => {
            let not_applied = e.not_applied;
            let err = error_of(e);
            if err.code() == pb::ErrorCode::SessionExpired {
                if let Some(Pending::Api(call)) = entry {
                    let _ = call
                        .reply
                        .send(Err(Error::SessionExpired(shared.session.session_id)));
                }
                return Handled::Expired;
            }
            if msg.xid == 0
                || (matches!(entry, Some(Pending::Internal)) && err.code() == pb::ErrorCode::ConnectionLoss)
            {
                // The node is cut off (or we fell behind): go elsewhere.
                if let Some(e) = entry {
                    pending.insert(msg.xid, e);
                }
                return Handled::Reconnect;
            }
            if err.code() == pb::ErrorCode::ConnectionLoss {
                // A cut-off node refused before proposing: send it again
                // elsewhere (a write too, if the node says nothing was applied).
                if let Some(Pending::Api(call)) = entry {
                    if call.idempotent || not_applied {
                        pending.insert(msg.xid, Pending::Api(call));
                        return Handled::Reconnect;
                    }
                    let _ = call.reply.send(Err(err));
                }
                return Handled::Reconnect;
            }
            Err(err)
        }
        other => Ok(other),
    };
    let closed = matches!(result, Ok(Resp::Close(_)));
    if let Some(Pending::Api(call)) = entry {
        let _ = call.reply.send(result);
    }
    if closed {
        Handled::Closed
    } else {
        Handled::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_and_busy_nodes_are_skipped_while_others_are_free() {
        let idle = [false; 3];
        let mut silent = Silent::new(3, Duration::from_secs(60));
        assert_eq!(silent.next_from(4, &idle), 1, "wraps around");
        silent.mark(1);
        assert_eq!(silent.next_from(1, &idle), 2);
        silent.mark(2);
        assert_eq!(silent.next_from(1, &idle), 0);
        assert_eq!(
            silent.next_from(1, &[true, false, false]),
            1,
            "a free silent node before a busy one"
        );
        silent.mark(0);
        assert_eq!(silent.next_from(1, &idle), 1, "all silent: keep the turn");
        silent.clear(2);
        assert_eq!(silent.next_from(0, &idle), 2);
        assert_eq!(silent.next_from(0, &[false, false, true]), 0);

        let mut brief = Silent::new(2, Duration::ZERO);
        brief.mark(0);
        assert_eq!(brief.next_from(0, &[false; 2]), 0, "forgotten at once");
    }
}
