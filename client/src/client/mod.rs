//! The [`Client`]: a handle on one session. Opening it is `open.rs`, the
//! typed request/reply plumbing `call.rs`, the znode operations
//! `znodes.rs`, ACLs and identities `access.rs`, the watch operations `watching.rs` and atomic multis
//! `crate::multi`; the connection itself is the session task's
//! (`crate::session`).
//!
//! Every request carries the newest zxid the client has seen, so a node
//! answers only once it is at least that new: the client never goes back in
//! time, even after moving to another node.

mod access;
mod call;
mod open;
mod watching;
mod znodes;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ensemble_proto::{SessionId, Zxid};
use tokio::sync::{broadcast, mpsc};

use crate::options::{Options, SessionInfo};
use crate::session::{Call, Shared};
use crate::state::{SessionState, StateEvent};

/// A session with an Ensemble cluster. Cheap to clone: clones share the
/// session, so tasks of one application can share one set of ephemerals
/// and watches.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    calls: mpsc::Sender<Call>,
    options: Arc<Options>,
    _task: Arc<TaskGuard>,
}

/// Stops the session task when the last clone of the client is dropped.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// The session's id, secret and granted timeout: what
    /// [`Client::resume`] needs to attach from another process.
    pub fn session(&self) -> &SessionInfo {
        &self.shared.session
    }

    /// The session's id, as ephemeral znodes name their owner.
    pub fn session_id(&self) -> SessionId {
        self.shared.session.session_id
    }

    /// The newest zxid this client has seen: no later read returns older state.
    pub fn last_zxid(&self) -> Zxid {
        self.shared.last_zxid()
    }

    /// The endpoint the client uses (or will try next).
    pub fn current_endpoint(&self) -> &str {
        let e = &self.shared.endpoints;
        &e[self.shared.current() % e.len()]
    }

    /// The session's state now.
    pub fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    /// Whether the session expired (said by the cluster, or decided locally).
    pub fn is_expired(&self) -> bool {
        self.shared.expired.load(Ordering::Relaxed)
    }

    /// Every state change from now on, and the `Expired` event, in order.
    pub fn state_events(&self) -> broadcast::Receiver<StateEvent> {
        self.shared.events.subscribe()
    }
}
