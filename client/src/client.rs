//! The client: opens a session, then hands requests to the connection task
//! (`connection.rs`) and waits for their replies.
//!
//! Every request carries the newest zxid the client has seen, so a node
//! answers only once it is at least that new: the client never goes back in
//! time, even after moving to another node.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use rand::seq::SliceRandom;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};

use crate::connection::{self, Call, Shared};
use crate::error::{Error, Result};
use crate::state::{SessionState, StateEvent};
use crate::watches::{OneShot, WatchEvent};

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
    /// subtree (like ZooKeeper's chroot). Empty or `/`: none.
    pub base_path: String,
    /// Credentials presented when a session opens or resumes. Reserved for
    /// authentication; the cluster does not check them yet.
    pub credentials: Option<(String, Vec<u8>)>,
    /// Receives every state change and the `Expired` event from the very
    /// first `CONNECTING` on (unlike [`Client::state_events`], which starts
    /// when called).
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

/// What identifies a session: enough to resume it from another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: u64,
    pub secret: Vec<u8>,
    /// The timeout the cluster granted.
    pub timeout: Duration,
}

/// A one-shot watch: resolves with the first event on its znode.
pub struct OneShotWatch(oneshot::Receiver<WatchEvent>);

impl OneShotWatch {
    /// Waits for the event. `Err(Closed)` if the client ended first.
    pub async fn wait(self) -> Result<WatchEvent> {
        self.0.await.map_err(|_| Error::Closed)
    }
}

/// A persistent watch: every matching event, in zxid order, until dropped.
pub struct PersistentWatch(mpsc::UnboundedReceiver<WatchEvent>);

impl PersistentWatch {
    /// The next event; `None` once the client has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.0.recv().await
    }

    /// The next event if one has arrived.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.0.try_recv().ok()
    }
}

/// A session with an Ensemble cluster. Cheap to clone: clones share the session.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    calls: mpsc::Sender<Call>,
    options: Arc<Options>,
    _task: Arc<TaskGuard>,
}

/// Stops the connection task when the last clone of the client is dropped.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn channel(addr: &str, connect_timeout: Duration) -> Result<EnsembleClient<Channel>> {
    let a = addr.trim();
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => return Err(Error::BadEndpoint(addr.to_string())),
    }
    let endpoint = Endpoint::from_shared(format!("http://{a}"))
        .map_err(|_| Error::BadEndpoint(addr.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok(EnsembleClient::new(endpoint.connect_lazy()).max_decoding_message_size(256 * 1024 * 1024))
}

/// Asks one node for its status.
pub async fn node_status(endpoint: &str, timeout: Duration) -> Result<pb::StatusResponse> {
    node_status_with(endpoint, timeout, false).await
}

/// Asks one node for its status, with a digest of its whole state if `with_digest`.
pub async fn node_status_with(
    endpoint: &str,
    timeout: Duration,
    with_digest: bool,
) -> Result<pb::StatusResponse> {
    let mut c = channel(endpoint, timeout)?;
    let mut req = tonic::Request::new(pb::StatusRequest { with_digest });
    req.set_timeout(timeout);
    c.status(req)
        .await
        .map(|r| r.into_inner())
        .map_err(Error::from_status)
}

fn base(options: &Options) -> Result<String> {
    let b = options.base_path.trim_end_matches('/');
    if !b.is_empty() && !b.starts_with('/') {
        return Err(Error::BadArguments(format!(
            "base path {:?} must start with '/'",
            options.base_path
        )));
    }
    Ok(b.to_string())
}

impl Client {
    /// Opens a new session on the first endpoint (in random order) that
    /// grants one, and waits until it is CONNECTED.
    pub async fn connect(endpoints: &[impl AsRef<str>], options: Options) -> Result<Client> {
        let (endpoints, clients) = connections(endpoints)?;
        base(&options)?;
        let start = Instant::now();
        let mut last_error = Error::ConnectionLoss("no endpoint tried".into());
        while start.elapsed() < options.connect_timeout {
            for (i, c) in clients.iter().enumerate() {
                let mut req = tonic::Request::new(pb::CreateSessionRequest {
                    timeout_ms: options.session_timeout.as_millis().min(u32::MAX as u128) as u32,
                });
                req.set_timeout(options.request_timeout);
                match c.clone().create_session(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let session = SessionInfo {
                            session_id: r.session_id,
                            secret: r.secret,
                            timeout: Duration::from_millis(r.timeout_ms as u64),
                        };
                        let limit = r.max_request_bytes as usize;
                        return Self::attach(endpoints, clients, i, session, (r.zxid, limit), options).await;
                    }
                    Err(status) => {
                        let e = Error::from_status(status);
                        if !e.try_elsewhere() {
                            return Err(e);
                        }
                        last_error = e;
                    }
                }
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
        let (endpoints, clients) = connections(endpoints)?;
        base(&options)?;
        Self::attach(endpoints, clients, 0, session, (0, 0), options).await
    }

    /// Starts the connection task for a session; `seen` is the newest zxid
    /// known and the cluster's request limit (0: learn it on resume).
    async fn attach(
        endpoints: Vec<String>,
        clients: Vec<EnsembleClient<Channel>>,
        current: usize,
        session: SessionInfo,
        seen: (u64, usize),
        options: Options,
    ) -> Result<Client> {
        let (zxid, max_request_bytes) = seen;
        let (state, mut state_rx) = watch::channel(SessionState::Connecting);
        let (events, _) = broadcast::channel(64);
        if let Some(l) = &options.listener {
            let _ = l.send(StateEvent::State(SessionState::Connecting));
        }
        let shared = Arc::new(Shared {
            session,
            state,
            events,
            last_zxid: AtomicU64::new(zxid),
            max_request_bytes: AtomicUsize::new(max_request_bytes),
            expired: std::sync::atomic::AtomicBool::new(false),
            watches: Mutex::new(Default::default()),
            endpoints,
            current: AtomicUsize::new(current),
            listener: options.listener.clone(),
        });
        let (calls, calls_rx) = mpsc::channel(1024);
        let task = tokio::spawn(connection::run(
            shared.clone(),
            clients,
            calls_rx,
            options.clone(),
        ));
        let client = Client {
            shared,
            calls,
            options: Arc::new(options),
            _task: Arc::new(TaskGuard(task)),
        };
        // Wait for the first connection (or a terminal state).
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

    /// The session's id, secret and granted timeout.
    pub fn session(&self) -> &SessionInfo {
        &self.shared.session
    }

    /// The session's id.
    pub fn session_id(&self) -> u64 {
        self.shared.session.session_id
    }

    /// The newest zxid this client has seen.
    pub fn last_zxid(&self) -> u64 {
        self.shared.last_zxid.load(Ordering::Relaxed)
    }

    /// The endpoint the client uses (or will try next).
    pub fn current_endpoint(&self) -> &str {
        let e = &self.shared.endpoints;
        &e[self.shared.current.load(Ordering::Relaxed) % e.len()]
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

    fn full_path(&self, path: &str) -> String {
        let b = self.options.base_path.trim_end_matches('/');
        if b.is_empty() {
            path.to_string()
        } else if path == "/" {
            b.to_string()
        } else {
            format!("{b}{path}")
        }
    }

    fn strip(&self, path: String) -> String {
        let b = self.options.base_path.trim_end_matches('/');
        if b.is_empty() {
            return path;
        }
        match path.strip_prefix(b) {
            Some("") => "/".to_string(),
            Some(rest) => rest.to_string(),
            None => path,
        }
    }

    async fn call(&self, request: Req, idempotent: bool) -> Result<Resp> {
        self.shared.check_size(&request)?;
        let (reply, rx) = oneshot::channel();
        let call = Call {
            request,
            idempotent,
            deadline: Instant::now() + self.options.request_timeout,
            reply,
        };
        self.calls.send(call).await.map_err(|_| self.ended())?;
        match tokio::time::timeout(self.options.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.ended()),
            Err(_) => Err(Error::ConnectionLoss(format!(
                "no reply within {:?}{}",
                self.options.request_timeout,
                if idempotent {
                    ""
                } else {
                    ": the write's outcome is unknown"
                }
            ))),
        }
    }

    fn ended(&self) -> Error {
        match self.state() {
            SessionState::AuthFailed => Error::AuthFailed,
            _ if self.is_expired() => Error::SessionExpired(self.session_id()),
            _ => Error::Closed,
        }
    }

    /// Creates a znode; returns its path (with the suffix, if sequential).
    pub async fn create(&self, path: &str, data: Vec<u8>, mode: pb::CreateMode) -> Result<String> {
        self.create_with_stat(path, data, mode).await.map(|(p, _)| p)
    }

    /// Creates a znode; returns its path and stat.
    pub async fn create_with_stat(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: pb::CreateMode,
    ) -> Result<(String, pb::Stat)> {
        let req = Req::Create(pb::CreateRequest {
            header: None,
            path: self.full_path(path),
            data,
            mode: mode as i32,
        });
        match self.call(req, false).await? {
            Resp::Create(r) => Ok((self.strip(r.path), r.stat.unwrap_or_default())),
            other => Err(unexpected(other)),
        }
    }

    /// A znode's data and stat.
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, pb::Stat)> {
        self.get_inner(path, false).await
    }

    /// A znode's data and stat, and a one-shot watch on it.
    pub async fn get_watch(&self, path: &str) -> Result<(Vec<u8>, pb::Stat, OneShotWatch)> {
        let rx = self
            .shared
            .watches()
            .add_one_shot(&self.full_path(path), OneShot::Data);
        let (data, stat) = self.get_inner(path, true).await?;
        Ok((data, stat, OneShotWatch(rx)))
    }

    async fn get_inner(&self, path: &str, watch: bool) -> Result<(Vec<u8>, pb::Stat)> {
        let req = Req::Get(pb::GetRequest {
            header: None,
            path: self.full_path(path),
            watch,
        });
        match self.call(req, true).await? {
            Resp::Get(r) => Ok((r.data, r.stat.unwrap_or_default())),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces a znode's data if its version is `version` (-1: any).
    pub async fn set(&self, path: &str, data: Vec<u8>, version: i32) -> Result<pb::Stat> {
        let req = Req::Set(pb::SetRequest {
            header: None,
            path: self.full_path(path),
            data,
            expected_version: version,
        });
        match self.call(req, false).await? {
            Resp::Set(r) => Ok(r.stat.unwrap_or_default()),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a childless znode if its version is `version` (-1: any).
    pub async fn delete(&self, path: &str, version: i32) -> Result<()> {
        let req = Req::Delete(pb::DeleteRequest {
            header: None,
            path: self.full_path(path),
            expected_version: version,
        });
        match self.call(req, false).await? {
            Resp::Delete(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A znode's stat, or None if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<pb::Stat>> {
        self.exists_inner(path, false).await
    }

    /// A znode's stat (None if missing), and a one-shot watch that fires when
    /// it is created, deleted or changed.
    pub async fn exists_watch(&self, path: &str) -> Result<(Option<pb::Stat>, OneShotWatch)> {
        let full = self.full_path(path);
        let rx = self.shared.watches().add_one_shot(&full, OneShot::Data);
        let stat = self.exists_inner(path, true).await?;
        if stat.is_none() {
            self.shared.watches().retag(&full, OneShot::Data, OneShot::Exist);
        }
        Ok((stat, OneShotWatch(rx)))
    }

    async fn exists_inner(&self, path: &str, watch: bool) -> Result<Option<pb::Stat>> {
        let req = Req::Exists(pb::ExistsRequest {
            header: None,
            path: self.full_path(path),
            watch,
        });
        match self.call(req, true).await? {
            Resp::Exists(r) => Ok(r.stat),
            other => Err(unexpected(other)),
        }
    }

    /// A znode's child names, sorted, and its stat.
    pub async fn children(&self, path: &str) -> Result<(Vec<String>, pb::Stat)> {
        self.children_inner(path, false).await
    }

    /// Children and stat, and a one-shot watch on the children.
    pub async fn children_watch(&self, path: &str) -> Result<(Vec<String>, pb::Stat, OneShotWatch)> {
        let rx = self
            .shared
            .watches()
            .add_one_shot(&self.full_path(path), OneShot::Child);
        let (c, s) = self.children_inner(path, true).await?;
        Ok((c, s, OneShotWatch(rx)))
    }

    async fn children_inner(&self, path: &str, watch: bool) -> Result<(Vec<String>, pb::Stat)> {
        let req = Req::Children(pb::ChildrenRequest {
            header: None,
            path: self.full_path(path),
            watch,
        });
        match self.call(req, true).await? {
            Resp::Children(r) => Ok((r.children, r.stat.unwrap_or_default())),
            other => Err(unexpected(other)),
        }
    }

    /// Watches a znode (or, `recursive`, its whole subtree) until the
    /// returned watch is dropped. Events missed while the client moves
    /// between nodes are replayed, or a `RESYNC` event says to re-read.
    pub async fn add_watch(&self, path: &str, recursive: bool) -> Result<PersistentWatch> {
        let full = self.full_path(path);
        let rx = self.shared.watches().add_persistent(&full, recursive);
        let mode = if recursive {
            pb::WatchMode::PersistentRecursive
        } else {
            pb::WatchMode::Persistent
        };
        let req = Req::AddWatch(pb::AddWatchRequest {
            path: full,
            mode: mode as i32,
        });
        match self.call(req, true).await? {
            Resp::AddWatch(_) => Ok(PersistentWatch(rx)),
            other => Err(unexpected(other)),
        }
    }

    /// Removes this client's watches of a mode on a path (every mode if `None`).
    pub async fn remove_watches(&self, path: &str, mode: Option<pb::WatchMode>) -> Result<bool> {
        let full = self.full_path(path);
        {
            let mut w = self.shared.watches();
            if matches!(mode, None | Some(pb::WatchMode::Persistent)) {
                w.remove_persistent(&full, false);
            }
            if matches!(mode, None | Some(pb::WatchMode::PersistentRecursive)) {
                w.remove_persistent(&full, true);
            }
        }
        let req = Req::RemoveWatches(pb::RemoveWatchesRequest {
            path: full,
            mode: mode.unwrap_or(pb::WatchMode::Data) as i32,
            any: mode.is_none(),
        });
        match self.call(req, true).await? {
            Resp::RemoveWatches(r) => Ok(r.removed),
            other => Err(unexpected(other)),
        }
    }

    /// Runs ops atomically: all take effect in one zxid, or none does.
    pub async fn multi(&self, ops: Vec<pb::Op>) -> Result<Vec<pb::OpResult>> {
        let ops = ops.into_iter().map(|op| self.rebase_op(op)).collect();
        let req = Req::Multi(pb::MultiRequest { header: None, ops });
        match self.call(req, false).await? {
            Resp::Multi(r) => Ok(r.results),
            other => Err(unexpected(other)),
        }
    }

    fn rebase_op(&self, mut op: pb::Op) -> pb::Op {
        use pb::op::Op as O;
        match &mut op.op {
            Some(O::Check(c)) => c.path = self.full_path(&c.path),
            Some(O::Create(c)) => c.path = self.full_path(&c.path),
            Some(O::Set(s)) => s.path = self.full_path(&s.path),
            Some(O::Delete(d)) => d.path = self.full_path(&d.path),
            None => {}
        }
        op
    }

    /// Waits until the client's node has caught up with the leader.
    pub async fn sync(&self, path: &str) -> Result<()> {
        let req = Req::Sync(pb::SyncRequest {
            header: None,
            path: self.full_path(path),
        });
        match self.call(req, true).await? {
            Resp::Sync(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the session: its ephemerals are deleted at once, on every node.
    /// The state becomes CLOSED.
    pub async fn close(&self) -> Result<()> {
        if self.state().is_terminal() {
            return Ok(());
        }
        let req = Req::Close(pb::CloseSessionRequest { header: None });
        match self.call(req, true).await {
            Ok(Resp::Close(_)) | Err(Error::Closed) => Ok(()),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }
}

fn unexpected(r: Resp) -> Error {
    Error::ConnectionLoss(format!("unexpected reply {r:?}"))
}

fn connections(endpoints: &[impl AsRef<str>]) -> Result<(Vec<String>, Vec<EnsembleClient<Channel>>)> {
    let mut list: Vec<String> = endpoints
        .iter()
        .map(|e| e.as_ref().trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if list.is_empty() {
        return Err(Error::BadEndpoint(String::new()));
    }
    list.shuffle(&mut rand::thread_rng());
    let clients = list
        .iter()
        .map(|e| channel(e, Duration::from_secs(2)))
        .collect::<Result<Vec<_>>>()?;
    Ok((list, clients))
}
