//! What the API side (`Client`) and the session task share: the session's
//! identity, its state and listeners, the newest zxid seen, the cluster's
//! request limit, the watches and the node in use. Also the one message
//! type between them, [`Call`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::Zxid;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::chroot::Chroot;
use crate::error::{Error, Result};
use crate::options::SessionInfo;
use crate::state::{SessionState, StateEvent};
use crate::watch_registry::Registry;

/// One request from the API to the session task.
pub(crate) struct Call {
    pub request: Req,
    /// Safe to send again after a lost connection (reads).
    pub idempotent: bool,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Resp>>,
}

/// What the API and the session task share.
pub(crate) struct Shared {
    pub session: SessionInfo,
    pub state: watch::Sender<SessionState>,
    pub events: broadcast::Sender<StateEvent>,
    pub last_zxid: AtomicU64,
    /// The largest request the cluster accepts (0 until a node has said).
    pub max_request_bytes: AtomicUsize,
    /// Set before the `Expired` event is sent.
    pub expired: AtomicBool,
    pub watches: Mutex<Registry>,
    pub chroot: Chroot,
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

    pub fn watches(&self) -> MutexGuard<'_, Registry> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last_zxid(&self) -> Zxid {
        Zxid(self.last_zxid.load(Ordering::Relaxed))
    }

    pub fn saw(&self, zxid: u64) {
        self.last_zxid.fetch_max(zxid, Ordering::Relaxed);
    }

    /// Remembers the cluster's request limit, when a node names one.
    pub fn learn_limit(&self, max_request_bytes: u32) {
        if max_request_bytes > 0 {
            self.max_request_bytes
                .store(max_request_bytes as usize, Ordering::Relaxed);
        }
    }

    /// The header of a message on the session stream, which the resume
    /// already bound to the session: no secret needed.
    pub fn header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            session_id: self.session.session_id.0,
            last_zxid: self.last_zxid.load(Ordering::Relaxed),
            secret: Vec::new(),
        }
    }

    /// The header of a unary call, which must prove the session itself.
    pub fn proof_header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            secret: self.session.secret.clone(),
            ..self.header()
        }
    }

    /// The node in use (or tried next), as an index into the endpoints.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub fn set_current(&self, idx: usize) {
        self.current.store(idx, Ordering::Relaxed);
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
