//! Serving the session's stream on one node: re-registering watches, then
//! sending queued and new calls, heartbeats every T/3, probing the other
//! nodes after T/2 of silence, leaving after 2/3·T of silence, and draining
//! briefly when the node refuses to serve us. When the stream ends, reads
//! in flight go back to the queue and writes in flight fail with
//! `CONNECTION_LOSS` (their outcome is unknown).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::Zxid;
use tracing::debug;

use super::dial::Conn;
use super::probe::probe_others;
use super::route::{route, Handled, Pending};
use super::shared::{Call, Shared};
use super::wire::stamp;
use super::{End, Left, SessionTask};
use crate::error::Error;

/// The stream to one node and the requests in flight on it, by xid.
struct Link {
    conn: Conn,
    pending: HashMap<u64, Pending>,
    next_xid: u64,
}

impl Link {
    /// Sends a request stamped with the session's header; false if the
    /// stream is gone (the request still counts as in flight).
    fn send(&mut self, shared: &Shared, mut req: Req, entry: Pending) -> bool {
        let xid = self.next_xid;
        self.next_xid += 1;
        stamp(&mut req, shared.header());
        let ok = self
            .conn
            .tx
            .try_send(Box::new(pb::SessionRequest {
                xid,
                request: Some(req),
            }))
            .is_ok();
        self.pending.insert(xid, entry);
        ok
    }

    /// Sends an application's call.
    fn send_call(&mut self, shared: &Shared, call: Call) -> bool {
        let req = call.request.clone();
        self.send(shared, req, Pending::Api(call))
    }

    /// The application's calls still in flight, oldest first.
    fn into_unanswered(self) -> Vec<Call> {
        let mut unsent: Vec<(u64, Call)> = self
            .pending
            .into_iter()
            .filter_map(|(xid, p)| match p {
                Pending::Api(c) => Some((xid, c)),
                Pending::Internal => None,
            })
            .collect();
        unsent.sort_by_key(|(xid, _)| *xid);
        unsent.into_iter().map(|(_, c)| c).collect()
    }
}

impl SessionTask {
    /// Serves one connection until the session ends (`Ok`) or another node
    /// should be tried (`Err`).
    pub(super) async fn serve(
        &mut self,
        conn: Conn,
        watched_through: Zxid,
    ) -> std::result::Result<End, Left> {
        let SessionTask {
            shared,
            clients,
            calls,
            queue,
            last_heard,
            ..
        } = self;
        let t = shared.session.timeout;
        let read_timeout = t * 2 / 3;
        let mut probed_at: Option<Instant> = None;
        let mut link = Link {
            conn,
            pending: HashMap::new(),
            next_xid: 1,
        };

        // Watches first, so the node fires what changed while we were away
        // before anything else happens on this connection.
        let set_watches = shared.watches().set_watches(watched_through);
        if let Some(req) = set_watches {
            link.send(shared, Req::SetWatches(req), Pending::Internal);
        }
        while let Some(call) = queue.pop_front() {
            link.send_call(shared, call);
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
                let api_pending = link.pending.values().any(|p| matches!(p, Pending::Api(_)));
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
                    let current = shared.current() % clients.len();
                    probe_others(shared, clients, Some(current));
                }
                _ = tokio::time::sleep_until(drain_until.into()), if draining.is_some() => break Err(Left::Dropped),
                call = calls.recv(), if draining.is_none() => match call {
                    Some(call) => {
                        if !link.send_call(shared, call) {
                            break Err(Left::Dropped);
                        }
                    }
                    None => break Ok(End::Dropped),
                },
                msg = link.conn.inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        *last_heard = Instant::now();
                        match route(shared, msg, &mut link.pending) {
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
                    if !link.send(shared, hb, Pending::Internal) {
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
        for call in link.into_unanswered().into_iter().rev() {
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
}
