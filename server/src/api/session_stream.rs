//! The per-session stream: ZooKeeper's connection, as a bidirectional gRPC
//! stream. Requests are applied one at a time in arrival order (FIFO per
//! session); replies and watch events share one ordered outbound channel,
//! so an event always precedes any reply that reflects its change.
//! Heartbeats skip the queue, so a slow write never starves them.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};
use tracing::{debug, Instrument};

use super::errors::ApiError;
use super::service::{span, ClientService};
use super::watches::{WatchKind, WatcherId};
use crate::state::ErrorCode;

/// Replies and events queued for one stream; a client that falls this far
/// behind is disconnected and resyncs on reconnect.
const OUTBOUND_CAPACITY: usize = 16 * 1024;

/// The outbound half of a session stream.
pub type Outbound = Pin<Box<dyn Stream<Item = Result<pb::SessionResponse, Status>> + Send>>;

/// Starts serving one session stream.
pub fn start(svc: ClientService, inbound: Streaming<pb::SessionRequest>) -> Outbound {
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    tokio::spawn(run(svc, inbound, tx));
    Box::pin(ReceiverStream::new(rx).map(Ok))
}

fn error_reply(e: ApiError) -> Resp {
    Resp::Error(pb::ErrorReply {
        code: proto_code(e.code) as i32,
        message: format!("{}: {}", e.code, e.message),
        op_index: e.op_index.map(|i| i as i32).unwrap_or(-1),
        not_applied: e.not_applied,
    })
}

/// The wire enum of an error code (same names).
pub fn proto_code(code: ErrorCode) -> pb::ErrorCode {
    pb::ErrorCode::from_str_name(code.name()).unwrap_or(pb::ErrorCode::SystemError)
}

fn reply<T>(r: Result<T, ApiError>, wrap: fn(T) -> Resp) -> Resp {
    match r {
        Ok(v) => wrap(v),
        Err(e) => error_reply(e),
    }
}

/// The session a stream was resumed for, and the secret that proved it.
struct Bound {
    session_id: u64,
    secret: Vec<u8>,
}

/// Pins a message's header to the stream's session, keeping the client's
/// zxid: whatever session a message names, it acts for the stream's.
fn pin_header(header: &mut Option<pb::RequestHeader>, bound: &Bound) {
    let last_zxid = header.as_ref().map(|h| h.last_zxid).unwrap_or(0);
    *header = Some(pb::RequestHeader {
        session_id: bound.session_id,
        last_zxid,
        secret: bound.secret.clone(),
    });
}

async fn run(
    svc: ClientService,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: mpsc::Sender<pb::SessionResponse>,
) {
    // The first message must resume the session on this node.
    let first = match inbound.message().await {
        Ok(Some(m)) => m,
        _ => return,
    };
    let (bound, resumed) = match first.request {
        Some(Req::Resume(r)) => {
            let header = r.header.clone().unwrap_or_default();
            let secret = if r.secret.is_empty() {
                header.secret
            } else {
                r.secret.clone()
            };
            let bound = Bound {
                session_id: header.session_id,
                secret,
            };
            (
                bound,
                svc.handle_resume(r).instrument(span("resume_session", "")).await,
            )
        }
        _ => (
            Bound {
                session_id: 0,
                secret: Vec::new(),
            },
            Err(ApiError::bad_arguments(
                "the first message of a session stream must be resume",
            )),
        ),
    };
    let session_id = bound.session_id;
    let ok = resumed.is_ok();
    let _ = tx
        .send(pb::SessionResponse {
            xid: first.xid,
            response: Some(reply(resumed, Resp::Resume)),
        })
        .await;
    if !ok {
        return;
    }
    let (watcher, overflowed) = svc.node.watches.add_watcher(tx.clone());
    debug!(session = %format_args!("0x{session_id:x}"), watcher, "session stream open");

    // Ordered work goes to one worker; heartbeats are answered at once.
    let (work_tx, mut work_rx) = mpsc::channel::<pb::SessionRequest>(1024);
    let heartbeat_bound = Bound {
        session_id,
        secret: bound.secret.clone(),
    };
    let worker = {
        let svc = svc.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = work_rx.recv().await {
                let xid = msg.xid;
                let (resp, last) = dispatch(&svc, &bound, watcher, msg).await;
                if tx
                    .send(pb::SessionResponse {
                        xid,
                        response: Some(resp),
                    })
                    .await
                    .is_err()
                    || last
                {
                    break;
                }
            }
        })
    };
    loop {
        if overflowed.load(Ordering::Relaxed) {
            let e = ApiError::connection_loss("the client fell too far behind its watch events; reconnect");
            let _ = tx.try_send(pb::SessionResponse {
                xid: 0,
                response: Some(error_reply(e)),
            });
            break;
        }
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) => {
                // An oversized message ends the stream (tonic can not skip
                // it), but the client learns why: nothing was applied.
                if let Some(e) = super::limits::rewrite(&status, svc.node.config.max_request_bytes) {
                    let _ = tx.try_send(pb::SessionResponse {
                        xid: 0,
                        response: Some(error_reply(e)),
                    });
                }
                break;
            }
        };
        if let Some(Req::Heartbeat(mut hb)) = msg.request {
            pin_header(&mut hb.header, &heartbeat_bound);
            let r = svc.handle_heartbeat(hb).await;
            let _ = tx
                .send(pb::SessionResponse {
                    xid: msg.xid,
                    response: Some(reply(r, Resp::Heartbeat)),
                })
                .await;
            continue;
        }
        if work_tx.send(msg).await.is_err() {
            break;
        }
    }
    drop(work_tx);
    let _ = worker.await;
    svc.node.watches.remove_watcher(watcher);
    debug!(session = %format_args!("0x{session_id:x}"), "session stream closed");
}

/// Handles one ordered request; `true` when the stream should end after it.
async fn dispatch(
    svc: &ClientService,
    bound: &Bound,
    watcher: WatcherId,
    msg: pb::SessionRequest,
) -> (Resp, bool) {
    let Some(request) = msg.request else {
        return (error_reply(ApiError::bad_arguments("empty request")), false);
    };
    match request {
        Req::Resume(_) => (
            error_reply(ApiError::bad_arguments("the session is already resumed")),
            false,
        ),
        Req::Heartbeat(mut r) => {
            pin_header(&mut r.header, bound);
            (reply(svc.handle_heartbeat(r).await, Resp::Heartbeat), false)
        }
        Req::Close(mut r) => {
            pin_header(&mut r.header, bound);
            let result = svc.handle_close(r).instrument(span("close_session", "")).await;
            let closed = result.is_ok();
            (reply(result, Resp::Close), closed)
        }
        Req::Create(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("create", &r.path);
            (
                reply(svc.handle_create(r).instrument(s).await, Resp::Create),
                false,
            )
        }
        Req::Get(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("get", &r.path);
            (
                reply(svc.handle_get(r, Some(watcher)).instrument(s).await, Resp::Get),
                false,
            )
        }
        Req::Set(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("set", &r.path);
            (reply(svc.handle_set(r).instrument(s).await, Resp::Set), false)
        }
        Req::Delete(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("delete", &r.path);
            (
                reply(svc.handle_delete(r).instrument(s).await, Resp::Delete),
                false,
            )
        }
        Req::Exists(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("exists", &r.path);
            (
                reply(
                    svc.handle_exists(r, Some(watcher)).instrument(s).await,
                    Resp::Exists,
                ),
                false,
            )
        }
        Req::Children(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("children", &r.path);
            (
                reply(
                    svc.handle_children(r, Some(watcher)).instrument(s).await,
                    Resp::Children,
                ),
                false,
            )
        }
        Req::Multi(mut r) => {
            pin_header(&mut r.header, bound);
            (
                reply(
                    svc.handle_multi(r).instrument(span("multi", "")).await,
                    Resp::Multi,
                ),
                false,
            )
        }
        Req::Sync(mut r) => {
            pin_header(&mut r.header, bound);
            let s = span("sync", &r.path);
            (reply(svc.handle_sync(r).instrument(s).await, Resp::Sync), false)
        }
        Req::AddWatch(r) => (reply(add_watch(svc, watcher, r), Resp::AddWatch), false),
        Req::RemoveWatches(r) => (reply(remove_watches(svc, watcher, r), Resp::RemoveWatches), false),
        Req::SetWatches(r) => {
            let state = svc.node.shared.read();
            svc.node.watches.set_watches(watcher, &state, r.last_zxid, &r);
            (
                Resp::SetWatches(pb::SetWatchesResponse { zxid: state.zxid() }),
                false,
            )
        }
    }
}

fn watch_kinds(mode: i32, any: bool) -> Result<&'static [WatchKind], ApiError> {
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
        Err(_) => Err(ApiError::bad_arguments(format!("watch mode {mode} is unknown"))),
    }
}

fn add_watch(
    svc: &ClientService,
    watcher: WatcherId,
    r: pb::AddWatchRequest,
) -> Result<pb::AddWatchResponse, ApiError> {
    super::convert::check_path(&r.path, false)?;
    let kind = match pb::WatchMode::try_from(r.mode) {
        Ok(pb::WatchMode::Persistent) => WatchKind::Persistent,
        Ok(pb::WatchMode::PersistentRecursive) => WatchKind::Recursive,
        _ => {
            return Err(ApiError::bad_arguments(
                "add_watch takes PERSISTENT or PERSISTENT_RECURSIVE; one-shot watches come with reads",
            ))
        }
    };
    // Under the read lock, so the zxid returned is exactly where events start.
    let state = svc.node.shared.read();
    svc.node.watches.add(watcher, &r.path, kind);
    Ok(pb::AddWatchResponse { zxid: state.zxid() })
}

fn remove_watches(
    svc: &ClientService,
    watcher: WatcherId,
    r: pb::RemoveWatchesRequest,
) -> Result<pb::RemoveWatchesResponse, ApiError> {
    super::convert::check_path(&r.path, false)?;
    let kinds = watch_kinds(r.mode, r.any)?;
    Ok(pb::RemoveWatchesResponse {
        removed: svc.node.watches.remove(watcher, &r.path, kinds),
    })
}
