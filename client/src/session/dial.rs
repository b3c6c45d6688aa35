//! Hedged dialing: finding a node that resumes the session. Nodes are tried
//! in turn; when one keeps the client waiting for T/16 (50–250 ms), an
//! attempt on the next starts beside it (as "happy eyeballs" does), so a
//! frozen node does not hold the client while a live one could take it. The
//! first to resume the session wins; the other attempts are dropped. While
//! looking, the task probes every node every T/4, fails queued calls whose
//! deadline passed, and expires the session locally after 4/3·T without
//! hearing from any node.

use std::time::{Duration, Instant};

use crate::endpoints::Node;
use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Streaming;
use tracing::debug;

use super::probe::probe_others;
use super::shared::Shared;
use super::{End, SessionTask};
use crate::error::{Error, Result};
use crate::types::ErrorCode;

/// The session's stream on one node, once resumed there.
pub(super) struct Conn {
    /// Boxed: the channel allocates 32 slots at a time, and most sessions
    /// send little but heartbeats.
    pub tx: mpsc::Sender<Box<pb::SessionRequest>>,
    pub inbound: Streaming<pb::SessionResponse>,
}

/// Resumes the session on one node over a new stream. The resume proves
/// the session with its secret once; later messages carry no secret.
async fn open(mut client: Node, shared: &Shared, timeout: Duration) -> Result<Conn> {
    let (tx, rx) = mpsc::channel(1024);
    let resume = pb::SessionRequest {
        xid: 0,
        request: Some(Req::Resume(pb::ResumeSessionRequest {
            header: Some(shared.header()),
            secret: shared.session.secret.clone(),
        })),
    };
    let _ = tx.send(Box::new(resume)).await;
    let opened = tokio::time::timeout(timeout, async {
        let mut inbound = client
            .session(ReceiverStream::new(rx).map(|m: Box<pb::SessionRequest>| *m))
            .await
            .map_err(Error::from_status)?
            .into_inner();
        match inbound.message().await {
            Ok(Some(pb::SessionResponse {
                response: Some(Resp::Resume(r)),
                ..
            })) => {
                shared.saw(r.zxid);
                shared.learn_limit(r.max_request_bytes);
                Ok(inbound)
            }
            Ok(Some(pb::SessionResponse {
                response: Some(Resp::Error(e)),
                ..
            })) => Err(Error::from_reply(e)),
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

impl SessionTask {
    /// Finds a node that resumes the session, or gives up when no node has
    /// answered for 4/3 of the timeout (the session is then expired locally).
    pub(super) async fn connect(&mut self) -> std::result::Result<Conn, End> {
        let SessionTask {
            shared,
            clients,
            calls,
            queue,
            last_heard,
            silent,
            attempt,
        } = self;
        let attempt = *attempt;
        let t = shared.session.timeout;
        let n = clients.len();
        let expire_at = *last_heard + t * 4 / 3;
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
                    let idx = silent.next_from(shared.current(), &busy);
                    shared.set_current(idx);
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
                            shared.set_current(idx);
                            silent.clear(idx);
                            return Ok(conn);
                        }
                        Err(e) if e.code() == ErrorCode::SessionExpired => return Err(End::Expired),
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
                            shared.set_current(idx + 1);
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
}
