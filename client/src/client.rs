//! A session with the cluster and the znode operations it carries.
//!
//! The client keeps the newest zxid it has seen and sends it with every
//! request, so a node answers only once it is at least as new: the client
//! never goes back in time, even after moving to another node. When its node
//! fails it resumes the same session on another endpoint.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use rand::seq::SliceRandom;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How a client connects and behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The session timeout asked for; the cluster clamps it into its range.
    pub session_timeout: Duration,
    /// How long `connect` keeps trying the endpoints.
    pub connect_timeout: Duration,
    /// How long one call may take, failovers included.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(15),
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

struct Inner {
    endpoints: Vec<String>,
    conns: Vec<EnsembleClient<Channel>>,
    current: AtomicUsize,
    session: SessionInfo,
    last_zxid: AtomicU64,
    expired: AtomicBool,
    closed: AtomicBool,
    options: Options,
}

/// A session with an Ensemble cluster. Heartbeats run in the background
/// until [`Client::close`] or drop.
pub struct Client {
    inner: Arc<Inner>,
    heartbeat: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

fn channel(addr: &str, connect_timeout: Duration) -> Result<EnsembleClient<Channel>> {
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

fn connections(endpoints: &[impl AsRef<str>]) -> Result<(Vec<String>, Vec<EnsembleClient<Channel>>)> {
    let mut list: Vec<String> = endpoints.iter().map(|e| e.as_ref().trim().to_string()).collect();
    if list.is_empty() {
        return Err(Error::BadEndpoint(String::new()));
    }
    list.shuffle(&mut rand::thread_rng());
    let conns = list
        .iter()
        .map(|e| channel(e, Duration::from_secs(2)))
        .collect::<Result<Vec<_>>>()?;
    Ok((list, conns))
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

impl Client {
    /// Opens a new session on the first endpoint (in random order) that grants one.
    pub async fn connect(endpoints: &[impl AsRef<str>], options: Options) -> Result<Client> {
        let (endpoints, conns) = connections(endpoints)?;
        let start = Instant::now();
        let mut last_error = Error::ConnectionLoss("no endpoint tried".into());
        while start.elapsed() < options.connect_timeout {
            for (i, c) in conns.iter().enumerate() {
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
                        return Ok(Self::start(endpoints, conns, i, session, r.zxid, options));
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
        let (endpoints, conns) = connections(endpoints)?;
        let client = Self::start(endpoints, conns, 0, session, 0, options);
        client.inner.failover(client.inner.conns.len() - 1).await?;
        Ok(client)
    }

    fn start(
        endpoints: Vec<String>,
        conns: Vec<EnsembleClient<Channel>>,
        current: usize,
        session: SessionInfo,
        zxid: u64,
        options: Options,
    ) -> Client {
        let inner = Arc::new(Inner {
            endpoints,
            conns,
            current: AtomicUsize::new(current),
            session,
            last_zxid: AtomicU64::new(zxid),
            expired: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            options,
        });
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::downgrade(&inner)));
        Client { inner, heartbeat }
    }

    /// The session's id, secret and granted timeout.
    pub fn session(&self) -> &SessionInfo {
        &self.inner.session
    }

    /// The session's id.
    pub fn session_id(&self) -> u64 {
        self.inner.session.session_id
    }

    /// The newest zxid this client has seen.
    pub fn last_zxid(&self) -> u64 {
        self.inner.last_zxid.load(Ordering::Relaxed)
    }

    /// The endpoint the client is talking to now.
    pub fn current_endpoint(&self) -> &str {
        &self.inner.endpoints[self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len()]
    }

    /// Whether the cluster has said the session expired.
    pub fn is_expired(&self) -> bool {
        self.inner.expired.load(Ordering::Relaxed)
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
        let r = self
            .inner
            .call(
                false,
                |mut c, header| {
                    let req = pb::CreateRequest {
                        header: Some(header),
                        path: path.to_string(),
                        data: data.clone(),
                        mode: mode as i32,
                    };
                    async move { c.create(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok((r.path, r.stat.unwrap_or_default()))
    }

    /// A znode's data and stat.
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, pb::Stat)> {
        let r = self
            .inner
            .call(
                true,
                |mut c, header| {
                    let req = pb::GetRequest {
                        header: Some(header),
                        path: path.to_string(),
                        watch: false,
                    };
                    async move { c.get(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok((r.data, r.stat.unwrap_or_default()))
    }

    /// Replaces a znode's data if its version is `version` (-1: any).
    pub async fn set(&self, path: &str, data: Vec<u8>, version: i32) -> Result<pb::Stat> {
        let r = self
            .inner
            .call(
                false,
                |mut c, header| {
                    let req = pb::SetRequest {
                        header: Some(header),
                        path: path.to_string(),
                        data: data.clone(),
                        expected_version: version,
                    };
                    async move { c.set(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok(r.stat.unwrap_or_default())
    }

    /// Deletes a childless znode if its version is `version` (-1: any).
    pub async fn delete(&self, path: &str, version: i32) -> Result<()> {
        self.inner
            .call(
                false,
                |mut c, header| {
                    let req = pb::DeleteRequest {
                        header: Some(header),
                        path: path.to_string(),
                        expected_version: version,
                    };
                    async move { c.delete(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await
            .map(|_| ())
    }

    /// A znode's stat, or None if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<pb::Stat>> {
        let r = self
            .inner
            .call(
                true,
                |mut c, header| {
                    let req = pb::ExistsRequest {
                        header: Some(header),
                        path: path.to_string(),
                        watch: false,
                    };
                    async move { c.exists(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok(r.stat)
    }

    /// A znode's child names, sorted, and its stat.
    pub async fn children(&self, path: &str) -> Result<(Vec<String>, pb::Stat)> {
        let r = self
            .inner
            .call(
                true,
                |mut c, header| {
                    let req = pb::ChildrenRequest {
                        header: Some(header),
                        path: path.to_string(),
                        watch: false,
                    };
                    async move { c.children(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok((r.children, r.stat.unwrap_or_default()))
    }

    /// Runs ops atomically: all take effect in one zxid, or none does.
    pub async fn multi(&self, ops: Vec<pb::Op>) -> Result<Vec<pb::OpResult>> {
        let r = self
            .inner
            .call(
                false,
                |mut c, header| {
                    let req = pb::MultiRequest {
                        header: Some(header),
                        ops: ops.clone(),
                    };
                    async move { c.multi(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await?;
        Ok(r.results)
    }

    /// Waits until the client's node has caught up with the leader.
    pub async fn sync(&self, path: &str) -> Result<()> {
        self.inner
            .call(
                true,
                |mut c, header| {
                    let req = pb::SyncRequest {
                        header: Some(header),
                        path: path.to_string(),
                    };
                    async move { c.sync(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await
            .map(|_| ())
    }

    /// Ends the session: its ephemerals are deleted at once, on every node.
    pub async fn close(self) -> Result<()> {
        self.heartbeat.abort();
        let r = self
            .inner
            .call(
                false,
                |mut c, header| {
                    let req = pb::CloseSessionRequest { header: Some(header) };
                    async move { c.close_session(req).await.map(|r| r.into_inner()) }
                },
                |r| r.zxid,
            )
            .await;
        self.inner.closed.store(true, Ordering::Relaxed);
        r.map(|_| ())
    }
}

impl Inner {
    fn header(&self) -> pb::RequestHeader {
        pb::RequestHeader {
            session_id: self.session.session_id,
            last_zxid: self.last_zxid.load(Ordering::Relaxed),
        }
    }

    fn saw(&self, zxid: u64) {
        self.last_zxid.fetch_max(zxid, Ordering::Relaxed);
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if self.expired.load(Ordering::Relaxed) {
            return Err(Error::SessionExpired(self.session.session_id));
        }
        Ok(())
    }

    /// Calls the current node. A read (`idempotent`) that the node could
    /// not serve moves to another node and is retried; a write is retried
    /// only if it never reached a node, since otherwise its outcome is unknown.
    async fn call<T, F, Fut>(&self, idempotent: bool, f: F, zxid_of: fn(&T) -> u64) -> Result<T>
    where
        F: Fn(EnsembleClient<Channel>, pb::RequestHeader) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let start = Instant::now();
        loop {
            self.check_usable()?;
            let idx = self.current.load(Ordering::Relaxed) % self.conns.len();
            let call = f(self.conns[idx].clone(), self.header());
            let result = tokio::time::timeout(self.options.request_timeout, call).await;
            let status = match result {
                Ok(Ok(r)) => {
                    self.saw(zxid_of(&r));
                    return Ok(r);
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("no answer in time"),
            };
            let not_sent = is_not_sent(&status);
            let e = Error::from_status(status);
            if e.code() == pb::ErrorCode::SessionExpired {
                self.expired.store(true, Ordering::Relaxed);
                return Err(Error::SessionExpired(self.session.session_id));
            }
            let retry = e.try_elsewhere() && (idempotent || not_sent);
            if !retry || start.elapsed() >= self.options.request_timeout {
                return Err(e);
            }
            if self.failover(idx).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Resumes the session on the next endpoint after `from` that accepts it.
    async fn failover(&self, from: usize) -> Result<()> {
        let n = self.conns.len();
        let mut last = Error::ConnectionLoss("no endpoint".into());
        for step in 1..=n {
            let idx = (from + step) % n;
            let mut req = tonic::Request::new(pb::ResumeSessionRequest {
                header: Some(self.header()),
                secret: self.session.secret.clone(),
            });
            req.set_timeout(self.session.timeout / 3);
            match self.conns[idx].clone().resume_session(req).await {
                Ok(r) => {
                    self.saw(r.into_inner().zxid);
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(());
                }
                Err(status) => {
                    let e = Error::from_status(status);
                    if e.code() == pb::ErrorCode::SessionExpired {
                        self.expired.store(true, Ordering::Relaxed);
                        return Err(Error::SessionExpired(self.session.session_id));
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// Heartbeats every T/3 while the client lives; moves to another node when
/// its node stops answering.
async fn heartbeat_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let period = i.session.timeout / 3;
        drop(i);
        tokio::time::sleep(period).await;
        let Some(i) = inner.upgrade() else { return };
        if i.check_usable().is_err() {
            return;
        }
        let idx = i.current.load(Ordering::Relaxed) % i.conns.len();
        let mut req = tonic::Request::new(pb::HeartbeatRequest {
            header: Some(i.header()),
        });
        req.set_timeout(period);
        match i.conns[idx].clone().heartbeat(req).await {
            Ok(r) => i.saw(r.into_inner().zxid),
            Err(status) => {
                let e = Error::from_status(status);
                if e.code() == pb::ErrorCode::SessionExpired {
                    i.expired.store(true, Ordering::Relaxed);
                    return;
                }
                let _ = i.failover(idx).await;
            }
        }
    }
}

/// A connect failure: the request never reached a node.
fn is_not_sent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    status.message().contains("error trying to connect")
}
