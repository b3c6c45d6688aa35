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

    fn header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            session_id: self.session.session_id,
            last_zxid: self.last_zxid.load(Ordering::Relaxed),
        }
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
async fn open(client: &EnsembleClient<Channel>, shared: &Shared, timeout: Duration) -> Result<Conn> {
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
            .clone()
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
    let local_expiry = t * 4 / 3;
    let mut queue: VecDeque<Call> = VecDeque::new();
    let mut last_heard = Instant::now();
    let mut failures = 0usize;
    let mut last_probe: Option<Instant> = None;
    let mut watched_through;
    loop {
        // Connect: try the nodes in turn until one resumes the session.
        let conn = loop {
            if last_heard.elapsed() > local_expiry {
                debug!("no node heard from for 4/3 of the timeout: expiring locally");
                return End::Expired;
            }
            let now = Instant::now();
            while let Some(pos) = queue.iter().position(|c| c.deadline <= now) {
                if let Some(c) = queue.remove(pos) {
                    let _ = c.reply.send(Err(Error::ConnectionLoss(
                        "no node served the session before the request's deadline".into(),
                    )));
                }
            }
            let idx = shared.current.load(Ordering::Relaxed) % clients.len();
            // Events up to here were delivered; the resume reply moves
            // last_zxid past changes whose events this node must replay.
            watched_through = shared.last_zxid.load(Ordering::Relaxed);
            let attempt = options.connect_timeout.min(t / 3).max(Duration::from_millis(200));
            match open(&clients[idx], shared, attempt).await {
                Ok(conn) => break conn,
                Err(e) if e.code() == pb::ErrorCode::SessionExpired => return End::Expired,
                Err(e) => {
                    debug!(endpoint = %shared.endpoints[idx], %e, "could not resume the session");
                    // Still looking for a node: let every node hear that we live.
                    if last_probe.is_none_or(|p: Instant| p.elapsed() >= t / 4) {
                        last_probe = Some(Instant::now());
                        probe_others(shared, clients, None);
                    }
                    shared.current.store(idx + 1, Ordering::Relaxed);
                    failures += 1;
                    if failures.is_multiple_of(clients.len()) {
                        // A full round failed: back off, but keep taking calls.
                        let pause = tokio::time::sleep(Duration::from_millis(100));
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                            _ = &mut pause => break,
                            call = calls.recv() => match call {
                                                Some(c) => queue.push_back(c),
                                                None => return End::Dropped,
                                            },
                                        }
                        }
                    }
                }
            }
        };
        failures = 0;
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
            Some(end) => return end,
            None => {
                shared.set_state(SessionState::NotConnected);
                let next = shared.current.load(Ordering::Relaxed) + 1;
                shared.current.store(next, Ordering::Relaxed);
            }
        }
    }
}

/// Sends a unary heartbeat to every node but `skip`, not waiting: each
/// records that the client is alive, even if it refuses to serve it.
fn probe_others(shared: &Shared, clients: &[EnsembleClient<Channel>], skip: Option<usize>) {
    debug!("probing the other nodes");
    for (_, c) in clients.iter().enumerate().filter(|(i, _)| Some(*i) != skip) {
        let mut c = c.clone();
        let mut req = tonic::Request::new(pb::HeartbeatRequest {
            header: Some(shared.header()),
        });
        req.set_timeout(shared.session.timeout / 3);
        tokio::spawn(async move {
            let _ = c.heartbeat(req).await;
        });
    }
}

/// Serves one connection; `None` when it dropped and another node should be tried.
#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Arc<Shared>,
    clients: &[EnsembleClient<Channel>],
    mut conn: Conn,
    calls: &mut mpsc::Receiver<Call>,
    queue: &mut VecDeque<Call>,
    last_heard: &mut Instant,
    watched_through: u64,
) -> Option<End> {
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
    let outcome: Option<End> = loop {
        if let Some(until) = draining {
            let api_pending = pending.values().any(|p| matches!(p, Pending::Api(_)));
            if !api_pending || Instant::now() >= until {
                break None;
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
            _ = tokio::time::sleep_until(drain_until.into()), if draining.is_some() => break None,
            call = calls.recv(), if draining.is_none() => match call {
                Some(call) => {
                    let req = call.request.clone();
                    if !send(req, Pending::Api(call), &mut conn, &mut pending) {
                        break None;
                    }
                }
                None => break Some(End::Dropped),
            },
            msg = conn.inbound.message() => match msg {
                Ok(Some(msg)) => {
                    *last_heard = Instant::now();
                    match handle(shared, msg, &mut pending) {
                        Handled::Continue => {}
                        Handled::Expired => break Some(End::Expired),
                        Handled::Closed => break Some(End::Closed),
                        Handled::Reconnect => {
                            draining = Some(Instant::now() + (t / 6).min(Duration::from_millis(500)));
                        }
                    }
                }
                _ => break None,
            },
            _ = heartbeat.tick() => {
                let hb = Req::Heartbeat(pb::HeartbeatRequest { header: None });
                if !send(hb, Pending::Internal, &mut conn, &mut pending) {
                    break None;
                }
            }
            _ = tokio::time::sleep_until(silent_until.into()) => {
                debug!("node silent for 2/3 of the timeout; moving on");
                break None;
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
