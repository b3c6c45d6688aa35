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
    /// TLS for every connection to the cluster (sessions and status
    /// calls). None: plaintext, which a cluster with TLS on refuses.
    pub tls: Option<TlsOptions>,
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
            tls: None,
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

/// How to reach a cluster that has TLS on: whom to trust and, for a
/// cluster that requires client certificates, which certificate to show.
/// Contents are PEM text, as read from the files, so the application
/// decides where they come from.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsOptions {
    /// PEM certificate(s) of the CA that signed the members' certificates;
    /// only members whose certificate it signed are trusted.
    pub ca_pem: Vec<u8>,
    /// PEM certificate and private key presented to the members, for a
    /// cluster that requires client certificates (`--tls-client-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the members' certificates must carry, instead of each
    /// endpoint's host (for endpoints given by an address their
    /// certificates do not name).
    pub domain: Option<String>,
}

impl TlsOptions {
    /// Trusts the members whose certificates the CA in `ca_pem` signed,
    /// without a client certificate.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions {
            ca_pem: ca_pem.into(),
            ..TlsOptions::default()
        }
    }

    /// Also presents this client certificate and its private key (PEM).
    pub fn with_identity(self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions {
            identity: Some((cert_pem.into(), key_pem.into())),
            ..self
        }
    }
}

/// The private key is never printed: a log line must not leak it.
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|(cert, _)| format!("<certificate of {} bytes, key hidden>", cert.len())),
            )
            .field("domain", &self.domain)
            .finish()
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
