//! What an application chooses when it opens a client ([`Options`]), and
//! what identifies a session once opened ([`SessionInfo`]), so a session
//! can be resumed from another process.

use std::time::Duration;

use ensemble_proto::SessionId;
use tokio::sync::mpsc;

use crate::state::StateEvent;

/// How a client connects and behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The session timeout asked for; the cluster clamps it into its range.
    pub session_timeout: Duration,
    /// How long `connect` keeps trying to open a session.
    pub connect_timeout: Duration,
    /// How long one request may wait, for a connection and for its reply.
    pub request_timeout: Duration,
    /// Prefix added to every path, so an application can live under one
    /// subtree (like ZooKeeper's chroot). Empty or `/`: none. Under a base,
    /// paths are checked by the client and can not leave the subtree.
    pub base_path: String,
    /// Credentials presented when the session opens: `(scheme, auth)`, as
    /// `("digest", b"user:password")`. Rejected credentials make the state
    /// `AUTH_FAILED` and `connect` fail with `AUTH_FAILED`, at once and for
    /// good (no retry). The identity stays with the session on every node,
    /// so a resume needs no password.
    pub credentials: Option<(String, Vec<u8>)>,
    /// Receives every state change and the `Expired` event from the very
    /// first `CONNECTING` on (unlike [`Client::state_events`](crate::Client::state_events),
    /// which starts when called).
    pub listener: Option<mpsc::UnboundedSender<StateEvent>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(15),
            base_path: String::new(),
            credentials: None,
            listener: None,
        }
    }
}

impl Options {
    /// Options that open the session as `user` (scheme `digest`).
    pub fn with_user(mut self, user: &str, password: &str) -> Options {
        self.credentials = Some(("digest".into(), format!("{user}:{password}").into_bytes()));
        self
    }
}

/// What identifies a session: enough to resume it from another process.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id (public: every ephemeral znode names its owner).
    pub session_id: SessionId,
    /// Proves the session: whoever holds it can act as the session, so
    /// keep it private.
    pub secret: Vec<u8>,
    /// The timeout the cluster granted.
    pub timeout: Duration,
}

/// The secret is never printed (see the glossary): a log line must not hand
/// the session to whoever reads it.
impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("session_id", &self.session_id)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("timeout", &self.timeout)
            .finish()
    }
}
