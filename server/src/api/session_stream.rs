//! The per-session stream: ZooKeeper's connection, as a bidirectional gRPC
//! stream. Requests are applied one at a time in arrival order (FIFO per
//! session); replies and watch events share one ordered outbound channel,
//! so an event always precedes any reply that reflects its change.
//! Heartbeats skip the queue, so a slow write never starves them. The
//! stream is bound to the session its first message resumed: whatever
//! session a later message names, it acts for that one.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::{SessionId, Zxid};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};
use tracing::{debug, Instrument};

use super::calls::{Caller, SessionCall};
use super::convert::check_path;
use super::refusal::stream_reply;
use super::service::{span, ClientService};
use super::watches::{Outgoing, StreamId, WatchKind};
use crate::state::Refusal;

/// Replies and events queued for one stream; a client that falls this far
/// behind is disconnected and resyncs on reconnect.
const OUTBOUND_CAPACITY: usize = 16 * 1024;

/// The outbound half of a session stream.
pub type Outbound = Pin<Box<dyn Stream<Item = Result<pb::SessionResponse, Status>> + Send>>;

/// Starts serving one session stream.
pub fn start(
    svc: ClientService,
    inbound: Streaming<pb::SessionRequest>,
    ip: Option<std::net::IpAddr>,
) -> Outbound {
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    tokio::spawn(run(svc, inbound, tx, ip));
    Box::pin(ReceiverStream::new(rx).map(|m: Box<pb::SessionResponse>| Ok(*m)))
}

fn message(xid: u64, response: Resp) -> Box<pb::SessionResponse> {
    Box::new(pb::SessionResponse {
        xid,
        response: Some(response),
    })
}

fn answer<T>(r: Result<T, Refusal>, wrap: fn(T) -> Resp) -> Resp {
    match r {
        Ok(v) => wrap(v),
        Err(e) => stream_reply(e),
    }
}

/// The session a stream was resumed for, the secret that proved it, and
/// the stream's id (its watches).
#[derive(Clone)]
struct Bound {
    session_id: SessionId,
    secret: Vec<u8>,
    stream: StreamId,
    /// The client's address, for `ip` ACL entries.
    ip: Option<std::net::IpAddr>,
}

impl Bound {
    fn caller(&self) -> Caller {
        Caller {
            stream: Some(self.stream),
            ip: self.ip,
        }
    }

    /// Pins a message's header to the stream's session, keeping the
    /// client's last zxid.
    fn pin(&self, header: &mut Option<pb::RequestHeader>) {
        let last_zxid = header.as_ref().map(|h| h.last_zxid).unwrap_or(0);
        *header = Some(pb::RequestHeader {
            session_id: self.session_id.0,
            last_zxid,
            secret: self.secret.clone(),
        });
    }

    /// Serves one session call on this stream; true if the stream ends after it.
    async fn serve<C: SessionCall>(&self, svc: &ClientService, mut req: C) -> (Resp, bool) {
        self.pin(req.header());
        let span = span(C::OP, req.path());
        let answer = super::metered::call(req, svc, self.caller())
            .instrument(span)
            .await;
        let ends = C::ends_stream(&answer);
        (
            match answer {
                Ok(v) => C::wrap(v),
                Err(e) => stream_reply(e),
            },
            ends,
        )
    }
}

/// Resumes the session the first message names; its answer goes out first.
async fn resume(svc: &ClientService, first: pb::SessionRequest) -> (Resp, Option<(SessionId, Vec<u8>)>) {
    let Some(Req::Resume(r)) = first.request else {
        let e = Refusal::bad_arguments("the first message of a session stream must be resume");
        return (stream_reply(e), None);
    };
    let header = r.header.clone().unwrap_or_default();
    let secret = if r.secret.is_empty() {
        header.secret
    } else {
        r.secret.clone()
    };
    match super::metered::record(crate::metrics::Op::ResumeSession, svc.resume(r))
        .instrument(span("resume_session", ""))
        .await
    {
        Ok(reply) => (Resp::Resume(reply), Some((SessionId(header.session_id), secret))),
        Err(e) => (stream_reply(e), None),
    }
}

async fn run(
    svc: ClientService,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: Outgoing,
    ip: Option<std::net::IpAddr>,
) {
    let first = match inbound.message().await {
        Ok(Some(m)) => m,
        _ => return,
    };
    let xid = first.xid;
    let (reply, resumed) = resume(&svc, first).await;
    let _ = tx.send(message(xid, reply)).await;
    let Some((session_id, secret)) = resumed else {
        return;
    };
    let (stream, overflowed) = svc.watches.add_watcher(tx.clone(), session_id, ip);
    let bound = Bound {
        session_id,
        secret,
        stream,
        ip,
    };
    debug!(session = %session_id, stream, "session stream open");

    // Ordered work goes to one worker; heartbeats are answered at once.
    // Boxed, as the outbound messages are (see `Outgoing`).
    let (work_tx, mut work_rx) = mpsc::channel::<Box<pb::SessionRequest>>(1024);
    let worker = {
        let (svc, tx, bound) = (svc.clone(), tx.clone(), bound.clone());
        tokio::spawn(async move {
            while let Some(msg) = work_rx.recv().await {
                let xid = msg.xid;
                let (resp, last) = dispatch(&svc, &bound, *msg).await;
                let sent = tx.send(message(xid, resp)).await;
                if sent.is_err() || last {
                    break;
                }
            }
        })
    };
    loop {
        if overflowed.load(Ordering::Relaxed) {
            let e = Refusal::connection_loss("the client fell too far behind its watch events; reconnect");
            let _ = tx.try_send(message(0, stream_reply(e)));
            break;
        }
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) => {
                // An oversized message ends the stream (tonic can not skip
                // it), but the client learns why: nothing was applied.
                if let Some(e) = super::limits::rewrite(&status, svc.limits.max_request_bytes) {
                    let _ = tx.try_send(message(0, stream_reply(e)));
                }
                break;
            }
        };
        if let Some(Req::Heartbeat(hb)) = msg.request {
            let (resp, _) = bound.serve(&svc, hb).await;
            let _ = tx.send(message(msg.xid, resp)).await;
            continue;
        }
        if work_tx.send(Box::new(msg)).await.is_err() {
            break;
        }
    }
    drop(work_tx);
    let _ = worker.await;
    svc.watches.remove_watcher(bound.stream);
    debug!(session = %session_id, "session stream closed");
}

/// Handles one ordered request; `true` when the stream should end after it.
async fn dispatch(svc: &ClientService, bound: &Bound, msg: pb::SessionRequest) -> (Resp, bool) {
    let Some(request) = msg.request else {
        return (stream_reply(Refusal::bad_arguments("empty request")), false);
    };
    let stream = bound.stream;
    match request {
        Req::Resume(_) => (
            stream_reply(Refusal::bad_arguments("the session is already resumed")),
            false,
        ),
        Req::Heartbeat(r) => bound.serve(svc, r).await,
        Req::Close(r) => bound.serve(svc, r).await,
        Req::Create(r) => bound.serve(svc, r).await,
        Req::Get(r) => bound.serve(svc, r).await,
        Req::Set(r) => bound.serve(svc, r).await,
        Req::Delete(r) => bound.serve(svc, r).await,
        Req::Exists(r) => bound.serve(svc, r).await,
        Req::Children(r) => bound.serve(svc, r).await,
        Req::Multi(r) => bound.serve(svc, r).await,
        Req::Sync(r) => bound.serve(svc, r).await,
        Req::GetAcl(r) => bound.serve(svc, r).await,
        Req::SetAcl(r) => bound.serve(svc, r).await,
        Req::AddAuth(r) => bound.serve(svc, r).await,
        Req::WhoAmI(r) => bound.serve(svc, r).await,
        Req::AddWatch(r) => (answer(add_watch(svc, bound, r), Resp::AddWatch), false),
        Req::RemoveWatches(r) => (answer(remove_watches(svc, stream, r), Resp::RemoveWatches), false),
        Req::SetWatches(r) => (answer(set_watches(svc, stream, r), Resp::SetWatches), false),
    }
}

/// Re-registers a reconnected client's watches. Every path is checked
/// before any watch is set, so a bad one fails the request as a whole;
/// watches the session may not read are skipped (see `WatchHub::set_watches`).
fn set_watches(
    svc: &ClientService,
    stream: StreamId,
    r: pb::SetWatchesRequest,
) -> Result<pb::SetWatchesResponse, Refusal> {
    for p in r
        .data
        .iter()
        .chain(&r.exist)
        .chain(&r.children)
        .chain(&r.persistent)
        .chain(&r.persistent_recursive)
    {
        check_path(p, false)?;
    }
    let state = svc.consensus.replica.read();
    svc.watches.set_watches(stream, &state, Zxid(r.last_zxid), &r);
    Ok(pb::SetWatchesResponse { zxid: state.zxid().0 })
}

fn watch_kinds(mode: i32, any: bool) -> Result<&'static [WatchKind], Refusal> {
    if any {
        return Ok(&[
            WatchKind::Data,
            WatchKind::Exist,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::Recursive,
        ]);
    }
    match pb::WatchMode::try_from(mode) {
        Ok(pb::WatchMode::Data) => Ok(&[WatchKind::Data, WatchKind::Exist]),
        Ok(pb::WatchMode::Children) => Ok(&[WatchKind::Child]),
        Ok(pb::WatchMode::Persistent) => Ok(&[WatchKind::Persistent]),
        Ok(pb::WatchMode::PersistentRecursive) => Ok(&[WatchKind::Recursive]),
        Err(_) => Err(Refusal::bad_arguments(format!("watch mode {mode} is unknown"))),
    }
}

/// A persistent watch needs READ on the znode if it exists (as in
/// ZooKeeper): its events name what changes under it.
fn add_watch(
    svc: &ClientService,
    bound: &Bound,
    r: pb::AddWatchRequest,
) -> Result<pb::AddWatchResponse, Refusal> {
    check_path(&r.path, false)?;
    let kind = match pb::WatchMode::try_from(r.mode) {
        Ok(pb::WatchMode::Persistent) => WatchKind::Persistent,
        Ok(pb::WatchMode::PersistentRecursive) => WatchKind::Recursive,
        _ => {
            return Err(Refusal::bad_arguments(
                "add_watch takes PERSISTENT or PERSISTENT_RECURSIVE; one-shot watches come with reads",
            ))
        }
    };
    // Under the read lock, so the zxid returned is exactly where events start.
    let state = svc.consensus.replica.read();
    if let Some(z) = state.tree.get(&r.path) {
        super::calls::who(&state, bound.session_id, bound.caller()).check(
            &z.acl,
            ensemble_proto::acl::READ,
            &r.path,
        )?;
    }
    svc.watches.add(bound.stream, &r.path, kind);
    Ok(pb::AddWatchResponse { zxid: state.zxid().0 })
}

fn remove_watches(
    svc: &ClientService,
    stream: StreamId,
    r: pb::RemoveWatchesRequest,
) -> Result<pb::RemoveWatchesResponse, Refusal> {
    check_path(&r.path, false)?;
    let kinds = watch_kinds(r.mode, r.any)?;
    Ok(pb::RemoveWatchesResponse {
        removed: svc.watches.remove(stream, &r.path, kinds),
    })
}
