//! One client connection to the system under test, and the operations the
//! workloads need, spoken the same way to each system:
//!
//! | operation | Ensemble | ZooKeeper | etcd |
//! |---|---|---|---|
//! | open | a session | a session | a connection |
//! | create | create | create | txn: put if the key's version is 0 |
//! | sequential create | sequential | sequential | a unique key, same txn |
//! | set | set, any version | setData, any version | put |
//! | get | get (local) | getData (local) | serializable range |
//! | linearizable get | sync + get | sync + getData | linearizable range |
//! | children | children | getChildren2 | keys-only prefix range |
//! | session loop | open, create ephemeral, close | the same | grant lease, put with it, revoke |
//!
//! etcd has no hierarchy, so creating a parent is a no-op there.

use std::fmt;
#[cfg(feature = "compare")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "compare")]
use std::time::Duration;

#[cfg(feature = "compare")]
use ensemble_client::ErrorCode;
use ensemble_client::{Client, CreateMode, Options};

use crate::{BackendKind, Settings};

/// A failed operation: a short kind to count by (`NODE_EXISTS`,
/// `CONNECTION_LOSS`, ...) and the message.
#[derive(Debug, Clone)]
pub struct OpError {
    pub kind: String,
    pub message: String,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.starts_with(&self.kind) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl std::error::Error for OpError {}

pub type OpResult<T> = Result<T, OpError>;

impl From<ensemble_client::Error> for OpError {
    fn from(e: ensemble_client::Error) -> Self {
        OpError {
            kind: e.code().name().to_string(),
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "compare")]
impl From<zookeeper_client::Error> for OpError {
    fn from(e: zookeeper_client::Error) -> Self {
        let debug = format!("{e:?}");
        let kind = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("Error")
            .to_string();
        OpError {
            kind,
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "compare")]
impl From<etcd_client::Error> for OpError {
    fn from(e: etcd_client::Error) -> Self {
        let kind = match &e {
            etcd_client::Error::GRpcStatus(s) => format!("{:?}", s.code()),
            other => format!("{other:?}")
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("Error")
                .to_string(),
        };
        OpError {
            kind,
            message: e.to_string(),
        }
    }
}

/// How a znode is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Persistent,
    Sequential,
    Ephemeral,
}

/// Makes names unique across this process's etcd "sequential" creates.
#[cfg(feature = "compare")]
static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A connection to one system.
pub enum Conn {
    Ensemble(Client),
    #[cfg(feature = "compare")]
    Zookeeper(Box<zookeeper_client::Client>),
    #[cfg(feature = "compare")]
    Etcd(Box<etcd_client::Client>),
}

/// Ensemble's client options for these settings.
pub fn ensemble_options(s: &Settings) -> Options {
    Options {
        session_timeout: s.session_timeout,
        ..Options::default()
    }
}

/// An Ensemble session through every endpoint, with the run's root created:
/// what the Ensemble-only workloads start from.
pub async fn ensemble_admin(s: &Settings) -> anyhow::Result<Client> {
    use anyhow::Context;
    let all: Vec<&str> = s.endpoints.iter().map(String::as_str).collect();
    let admin = Client::connect(&all, ensemble_options(s))
        .await
        .with_context(|| format!("connecting to {}", s.endpoints.join(",")))?;
    Conn::Ensemble(admin.clone())
        .ensure_path(&s.root)
        .await
        .with_context(|| format!("creating {}", s.root))?;
    Ok(admin)
}

impl Conn {
    /// Opens a connection (a session) through the given endpoints.
    pub async fn open(s: &Settings, endpoints: &[&str]) -> OpResult<Conn> {
        match s.backend {
            BackendKind::Ensemble => Ok(Conn::Ensemble(
                Client::connect(endpoints, ensemble_options(s)).await?,
            )),
            #[cfg(feature = "compare")]
            BackendKind::Zookeeper => {
                let c = zookeeper_client::Client::connector()
                    .with_session_timeout(s.session_timeout)
                    .with_connection_timeout(Duration::from_secs(5))
                    .connect(&endpoints.join(","))
                    .await?;
                Ok(Conn::Zookeeper(Box::new(c)))
            }
            #[cfg(feature = "compare")]
            BackendKind::Etcd => {
                let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(15));
                let c = etcd_client::Client::connect(urls, Some(options)).await?;
                Ok(Conn::Etcd(Box::new(c)))
            }
            #[allow(unreachable_patterns)]
            other => Err(OpError {
                kind: "UNSUPPORTED".into(),
                message: format!("backend {} needs the compare feature", other.name()),
            }),
        }
    }

    /// Opens a connection pinned to client `i`'s endpoint (round-robin).
    pub async fn open_pinned(s: &Settings, i: usize) -> OpResult<Conn> {
        Conn::open(s, &[s.endpoint_for(i)]).await
    }

    /// Creates `path` and its missing ancestors; an existing one is fine.
    pub async fn ensure_path(&self, path: &str) -> OpResult<()> {
        if self.is_etcd() {
            return Ok(());
        }
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            match self.create(&at, Vec::new(), Mode::Persistent).await {
                Ok(()) => {}
                Err(e) if e.kind == "NODE_EXISTS" || e.kind == "NodeExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn is_etcd(&self) -> bool {
        #[cfg(feature = "compare")]
        if let Conn::Etcd(_) = self {
            return true;
        }
        false
    }

    /// Creates a znode (a sequential one gets a suffix; its name is not returned).
    pub async fn create(&self, path: &str, data: Vec<u8>, mode: Mode) -> OpResult<()> {
        match self {
            Conn::Ensemble(c) => {
                let mode = match mode {
                    Mode::Persistent => CreateMode::Persistent,
                    Mode::Sequential => CreateMode::PersistentSequential,
                    Mode::Ephemeral => CreateMode::Ephemeral,
                };
                c.create(path, data, mode).await?;
            }
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => {
                let mode = match mode {
                    Mode::Persistent => zookeeper_client::CreateMode::Persistent,
                    Mode::Sequential => zookeeper_client::CreateMode::PersistentSequential,
                    Mode::Ephemeral => zookeeper_client::CreateMode::Ephemeral,
                };
                c.create(path, &data, &mode.with_acls(zookeeper_client::Acls::anyone_all()))
                    .await?;
            }
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                let key = match mode {
                    Mode::Sequential => format!(
                        "{path}{:x}-{:010}",
                        std::process::id(),
                        UNIQUE.fetch_add(1, Ordering::Relaxed)
                    ),
                    _ => path.to_string(),
                };
                etcd_create(c, key, data, None).await?;
            }
        }
        Ok(())
    }

    /// Replaces a znode's data, whatever its version.
    pub async fn set(&self, path: &str, data: Vec<u8>) -> OpResult<()> {
        match self {
            Conn::Ensemble(c) => {
                c.set(path, data, -1).await?;
            }
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => {
                c.set_data(path, &data, None).await?;
            }
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                c.clone().put(path, data, None).await?;
            }
        }
        Ok(())
    }

    /// Reads a znode; returns its data's length.
    pub async fn get(&self, path: &str, linearizable: bool) -> OpResult<usize> {
        match self {
            Conn::Ensemble(c) => {
                if linearizable {
                    c.sync(path).await?;
                }
                Ok(c.get(path).await?.0.len())
            }
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => {
                if linearizable {
                    c.sync(path).await?;
                }
                Ok(c.get_data(path).await?.0.len())
            }
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                let options = (!linearizable).then(|| etcd_client::GetOptions::new().with_serializable());
                let r = c.clone().get(path, options).await?;
                match r.kvs().first() {
                    Some(kv) => Ok(kv.value().len()),
                    None => Err(no_node(path)),
                }
            }
        }
    }

    /// Lists a znode's children; returns how many.
    pub async fn children(&self, path: &str) -> OpResult<usize> {
        match self {
            Conn::Ensemble(c) => Ok(c.children(path).await?.0.len()),
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => Ok(c.get_children(path).await?.0.len()),
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                let options = etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_serializable();
                Ok(c.clone()
                    .get(format!("{path}/"), Some(options))
                    .await?
                    .kvs()
                    .len())
            }
        }
    }

    /// Deletes a znode, whatever its version.
    pub async fn delete(&self, path: &str) -> OpResult<()> {
        match self {
            Conn::Ensemble(c) => c.delete(path, -1).await?,
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => c.delete(path, None).await?,
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                if c.clone().delete(path, None).await?.deleted() == 0 {
                    return Err(no_node(path));
                }
            }
        }
        Ok(())
    }

    /// Ends the session and waits until the system has it closed.
    pub async fn close(self) -> OpResult<()> {
        match self {
            Conn::Ensemble(c) => c.close().await?,
            #[cfg(feature = "compare")]
            Conn::Zookeeper(c) => {
                // The client closes its session when its last handle is
                // dropped; the state turns CLOSED once that is done.
                let mut state = c.state_watcher();
                drop(c);
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while !state.state().is_terminated() {
                        if state.changed().await.is_terminated() {
                            break;
                        }
                    }
                })
                .await;
            }
            #[cfg(feature = "compare")]
            Conn::Etcd(_) => {}
        }
        Ok(())
    }

    /// One loop of the `session` workload for client `i`: a session opened,
    /// an ephemeral created at `path`, the session closed (etcd: a lease
    /// granted, a key put with it, the lease revoked, on this connection).
    pub async fn session_loop(&self, s: &Settings, i: usize, path: &str) -> OpResult<()> {
        match self {
            #[cfg(feature = "compare")]
            Conn::Etcd(c) => {
                let mut c = c.clone();
                let ttl = (s.session_timeout.as_secs() as i64).max(1);
                let lease = c.lease_grant(ttl, None).await?.id();
                etcd_create(&c, path.to_string(), Vec::new(), Some(lease)).await?;
                c.lease_revoke(lease).await?;
                Ok(())
            }
            _ => {
                let session = Conn::open_pinned(s, i).await?;
                let created = session.create(path, Vec::new(), Mode::Ephemeral).await;
                let closed = session.close().await;
                created.and(closed)
            }
        }
    }
}

#[cfg(feature = "compare")]
fn no_node(path: &str) -> OpError {
    OpError {
        kind: ErrorCode::NoNode.name().to_string(),
        message: format!("{path} does not exist"),
    }
}

/// etcd's create: put only if the key does not exist.
#[cfg(feature = "compare")]
async fn etcd_create(
    c: &etcd_client::Client,
    key: String,
    data: Vec<u8>,
    lease: Option<i64>,
) -> OpResult<()> {
    use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
    let options = lease.map(|l| PutOptions::new().with_lease(l));
    let txn = Txn::new()
        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), data, options)]);
    if c.clone().txn(txn).await?.succeeded() {
        Ok(())
    } else {
        Err(OpError {
            kind: ErrorCode::NodeExists.name().to_string(),
            message: format!("{key} exists"),
        })
    }
}
