//! The session states a client goes through, as users see them.
//!
//! ```text
//!            connect()
//!               │
//!               ▼
//!          CONNECTING ──(all nodes refuse credentials)──► AUTH_FAILED
//!               │ a node resumed the session
//!               ▼
//!    ┌────► CONNECTED ──close()──────────────────────────► CLOSED
//!    │          │ the node failed or was cut off
//!    │          ▼
//!    └──── NOT_CONNECTED ──(cluster says expired, or nothing
//!   another     │           heard for 4/3·T)──► Expired event ──► CLOSED
//!   node took it│
//! ```
//!
//! `Expired` is an event, not a state: it is followed by `CLOSED`. Expired
//! and `AUTH_FAILED` are terminal: the client object never reconnects; open
//! a new one.

use std::fmt;

/// Where the client's session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Opening the session, or attaching to it for the first time.
    Connecting,
    /// A node serves the session; requests flow.
    Connected,
    /// No node serves the session right now; the client keeps trying and
    /// requests wait (up to their deadline).
    NotConnected,
    /// The session is over (closed or expired). Terminal.
    Closed,
    /// The cluster rejected the credentials. Terminal.
    AuthFailed,
}

impl SessionState {
    /// Whether the client will never leave this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Closed | SessionState::AuthFailed)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Connecting => "CONNECTING",
            SessionState::Connected => "CONNECTED",
            SessionState::NotConnected => "NOT_CONNECTED",
            SessionState::Closed => "CLOSED",
            SessionState::AuthFailed => "AUTH_FAILED",
        })
    }
}

/// What a state listener receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    /// The client entered this state.
    State(SessionState),
    /// The session expired: said by the cluster, or decided locally after
    /// 4/3·T without hearing from any node. Followed by `State(Closed)`.
    Expired,
}
