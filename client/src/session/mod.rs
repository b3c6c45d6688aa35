//! The session task: one task per client that owns the connection to the
//! cluster. It finds a node that resumes the session (`dial.rs`, choosing
//! nodes with `silent.rs`), serves the session's stream there (`serve.rs`,
//! routing replies and events with `route.rs`), probes the other nodes when
//! its node goes quiet (`probe.rs`), and moves on when the node fails or is
//! cut off, until the session is closed or expires.
//!
//! Requests made while no node serves the session wait (up to their
//! deadline). When a connection drops, reads in flight are sent again on the
//! next node; writes in flight fail with `CONNECTION_LOSS`, since they may or
//! may not have been applied. With no node heard from for 4/3·T, the
//! session expires locally.

mod dial;
mod probe;
mod route;
mod serve;
mod shared;
mod silent;
mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::endpoints::Node;
use tokio::sync::mpsc;

pub(crate) use shared::{Call, Shared};

use crate::error::Error;
use crate::options::Options;
use crate::state::{SessionState, StateEvent};
use silent::Silent;

/// Why the session task stops for good.
enum End {
    Expired,
    Closed,
    Dropped,
}

/// Why a connection ended while the session lives on.
enum Left {
    /// The node refused, closed the stream or failed: try the next one.
    Dropped,
    /// The node stopped answering (frozen, or cut off from us).
    Silent,
}

/// The session's connection state, owned by its task.
pub(crate) struct SessionTask {
    shared: Arc<Shared>,
    /// One lazy channel per endpoint, in the order of `shared.endpoints`.
    clients: Vec<Node>,
    calls: mpsc::Receiver<Call>,
    /// Calls waiting for a node to serve the session.
    queue: VecDeque<Call>,
    /// When a node last answered: the local expiry counts from here.
    last_heard: Instant,
    silent: Silent,
    /// How long one attempt to resume the session on a node may take.
    attempt: Duration,
}

impl SessionTask {
    pub fn new(
        shared: Arc<Shared>,
        clients: Vec<Node>,
        calls: mpsc::Receiver<Call>,
        options: &Options,
    ) -> SessionTask {
        let t = shared.session.timeout;
        SessionTask {
            silent: Silent::new(clients.len(), t),
            attempt: options.connect_timeout.min(t / 3).max(Duration::from_millis(200)),
            shared,
            clients,
            calls,
            queue: VecDeque::new(),
            last_heard: Instant::now(),
        }
    }

    /// Runs the session's connection until it ends, then fails every call
    /// still waiting with the reason.
    pub async fn run(mut self) {
        let end = self.drive().await;
        let shared = &self.shared;
        let error = match end {
            End::Expired => {
                shared.expired.store(true, std::sync::atomic::Ordering::Relaxed);
                shared.emit(StateEvent::Expired);
                Error::SessionExpired(shared.session.session_id)
            }
            End::Closed | End::Dropped => Error::Closed,
        };
        shared.set_state(SessionState::Closed);
        self.calls.close();
        while let Ok(call) = self.calls.try_recv() {
            let _ = call.reply.send(Err(error.clone()));
        }
    }

    /// Connects, serves, and moves to the next node, until the session ends.
    async fn drive(&mut self) -> End {
        loop {
            // Events up to here were delivered; the resume reply moves last_zxid
            // past changes whose events the next node must replay.
            let watched_through = self.shared.last_zxid();
            let conn = match self.connect().await {
                Ok(conn) => conn,
                Err(end) => return end,
            };
            self.last_heard = Instant::now();
            self.shared.set_state(SessionState::Connected);
            match self.serve(conn, watched_through).await {
                Ok(end) => return end,
                Err(left) => {
                    let idx = self.shared.current();
                    if matches!(left, Left::Silent) {
                        self.silent.mark(idx % self.clients.len());
                    }
                    self.shared.set_state(SessionState::NotConnected);
                    self.shared.set_current(idx + 1);
                }
            }
        }
    }
}
