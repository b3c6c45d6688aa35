//! Opening a client: a new session (`connect`) or an existing one
//! (`resume`), then starting the session task and waiting until a node
//! serves the session.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::endpoints::Node;
use ensemble_proto::v1 as pb;
use ensemble_proto::SessionId;
use tokio::sync::{broadcast, mpsc, watch};

use super::{Client, TaskGuard};
use crate::chroot::Chroot;
use crate::endpoints::connections;
use crate::error::{Error, Result};
use crate::options::{Options, SessionInfo};
use crate::session::{SessionTask, Shared};
use crate::state::{SessionState, StateEvent};
use crate::tls_probe;

/// What the client knows of the cluster when the session task starts.
struct Seen {
    /// The newest zxid seen (0: learn it on resume).
    zxid: u64,
    /// The cluster's request limit (0: learn it on resume).
    max_request_bytes: usize,
}

impl Client {
    /// Opens a new session on the first endpoint (in random order) that
    /// grants one, and waits until it is CONNECTED.
    pub async fn connect(endpoints: &[impl AsRef<str>], options: Options) -> Result<Client> {
        let (endpoints, clients) = connections(endpoints, options.tls.as_ref())?;
        let chroot = Chroot::new(&options.base_path)?;
        let start = Instant::now();
        let mut last_error = Error::ConnectionLoss("no endpoint tried".into());
        while start.elapsed() < options.connect_timeout {
            // Endpoints of this round that disagree with the client about TLS.
            let mut mismatches = 0;
            for (i, c) in clients.iter().enumerate() {
                let mut req = tonic::Request::new(pb::CreateSessionRequest {
                    timeout_ms: options.session_timeout.as_millis().min(u32::MAX as u128) as u32,
                    auth: options
                        .credentials
                        .iter()
                        .map(|(scheme, auth)| pb::AuthInfo {
                            scheme: scheme.clone(),
                            auth: auth.clone(),
                        })
                        .collect(),
                });
                req.set_timeout(options.request_timeout);
                match c.clone().create_session(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let session = SessionInfo {
                            session_id: SessionId(r.session_id),
                            secret: r.secret,
                            timeout: Duration::from_millis(r.timeout_ms as u64),
                        };
                        let seen = Seen {
                            zxid: r.zxid,
                            max_request_bytes: r.max_request_bytes as usize,
                        };
                        return Self::attach(endpoints, clients, i, session, seen, chroot, options).await;
                    }
                    Err(status) => {
                        let mismatch = if Error::is_transport(&status) {
                            tls_probe::diagnose(&endpoints[i], options.tls.as_ref(), &status).await
                        } else {
                            None
                        };
                        let e = mismatch.unwrap_or_else(|| Error::from_status(status));
                        if matches!(e, Error::TlsMismatch(_)) {
                            mismatches += 1;
                        }
                        if e.code() == crate::ErrorCode::AuthFailed {
                            // Terminal: every node checks the same users, so
                            // asking another would only repeat the refusal.
                            if let Some(l) = &options.listener {
                                let _ = l.send(StateEvent::State(SessionState::Connecting));
                                let _ = l.send(StateEvent::State(SessionState::AuthFailed));
                            }
                            return Err(e);
                        }
                        if !e.try_elsewhere() {
                            return Err(e);
                        }
                        last_error = e;
                    }
                }
            }
            if mismatches == clients.len() {
                // Every endpoint said the same: retrying would too.
                return Err(last_error);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::ConnectionLoss(format!(
            "no endpoint of {} granted a session within {:?}: {last_error}",
            endpoints.join(","),
            options.connect_timeout
        )))
    }

    /// Attaches to an existing session (from [`Client::session`]), on any endpoint.
    pub async fn resume(
        endpoints: &[impl AsRef<str>],
        session: SessionInfo,
        options: Options,
    ) -> Result<Client> {
        let (endpoints, clients) = connections(endpoints, options.tls.as_ref())?;
        let chroot = Chroot::new(&options.base_path)?;
        let seen = Seen {
            zxid: 0,
            max_request_bytes: 0,
        };
        Self::attach(endpoints, clients, 0, session, seen, chroot, options).await
    }

    /// Starts the session task for a session and waits for its first
    /// connection (or a terminal state).
    async fn attach(
        endpoints: Vec<String>,
        clients: Vec<Node>,
        current: usize,
        session: SessionInfo,
        seen: Seen,
        chroot: Chroot,
        options: Options,
    ) -> Result<Client> {
        let (state, mut state_rx) = watch::channel(SessionState::Connecting);
        let (events, _) = broadcast::channel(64);
        if let Some(l) = &options.listener {
            let _ = l.send(StateEvent::State(SessionState::Connecting));
        }
        let shared = Arc::new(Shared {
            session,
            state,
            events,
            last_zxid: AtomicU64::new(seen.zxid),
            max_request_bytes: AtomicUsize::new(seen.max_request_bytes),
            expired: AtomicBool::new(false),
            watches: Mutex::new(Default::default()),
            chroot,
            endpoints,
            current: AtomicUsize::new(current),
            listener: options.listener.clone(),
        });
        let (calls, calls_rx) = mpsc::channel(1024);
        let task = tokio::spawn(SessionTask::new(shared.clone(), clients, calls_rx, &options).run());
        let client = Client {
            shared,
            calls,
            options: Arc::new(options),
            _task: Arc::new(TaskGuard(task)),
        };
        let waited = tokio::time::timeout(client.options.connect_timeout, async {
            loop {
                let s = *state_rx.borrow_and_update();
                match s {
                    SessionState::Connected => return Ok(()),
                    SessionState::Closed => return Err(Error::SessionExpired(client.session_id())),
                    SessionState::AuthFailed => return Err(Error::AuthFailed),
                    _ => {}
                }
                if state_rx.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r.map(|_| client),
            Err(_) => Err(Error::ConnectionLoss(format!(
                "no node resumed the session within {:?}",
                client.options.connect_timeout
            ))),
        }
    }
}
