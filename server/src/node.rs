//! One running node: wires storage, consensus, the state machine, the session
//! tick loop and the two gRPC services (clients and peers) together.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::peer::peer_server::PeerServer;
use ensemble_proto::v1::ensemble_server::EnsembleServer;
use openraft::ServerState;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::api::proposer::Proposer;
use crate::api::service::ClientService;
use crate::config::Config;
use crate::raft::network::{decode, encode, Network, PeerError, Peers, MAX_PEER_MESSAGE};
use crate::raft::service::PeerService;
use crate::raft::{NodeId, PeerNode, Raft};
use crate::sessions::manager::{self, ReportedTouches};
use crate::sessions::Activity;
use crate::state::store::{Shared, StateMachineStore};
use crate::storage::{self, LogStore};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Open(#[from] storage::OpenError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("can not listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

/// Everything the services and the tick loop share.
pub struct Node {
    pub id: NodeId,
    pub config: Config,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub peers: Peers,
    pub proposer: Proposer,
    pub activity: Activity,
    /// The watches of the clients whose session streams this node holds.
    pub watches: Arc<crate::api::watches::WatchHub>,
    /// The newest commit index this node knows of.
    pub committed: Arc<std::sync::atomic::AtomicU64>,
    /// Touches other nodes reported, for the tick loop.
    pub reported: mpsc::UnboundedSender<ReportedTouches>,
    last_leader_contact: Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
}

impl Node {
    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// A member's addresses, from the current membership.
    pub fn member(&self, id: NodeId) -> Option<PeerNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// The leader called this node (an AppendEntries arrived).
    pub fn note_leader_contact(&self) {
        *self.last_leader_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether this node is in touch with a majority: a leader heard from a
    /// quorum, or a follower heard from a leader, within four Raft heartbeat
    /// intervals. A cut-off node refuses sessions so its clients move on at
    /// once: what it would acknowledge it could not pass to the leader, and
    /// every second it keeps a client eats into that session's deadline.
    pub fn in_quorum(&self) -> bool {
        let limit = self.config.heartbeat * 4;
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return m
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) <= limit);
        }
        m.current_leader.is_some()
            && self
                .last_leader_contact
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() <= limit)
    }

    /// Whether the node is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Reports this node's clients' touches to the leader.
    pub async fn report_touches(&self, leader: NodeId, touches: &[(u64, u64)]) -> Result<(), PeerError> {
        let node = self
            .member(leader)
            .ok_or_else(|| PeerError::BadAddress(leader, "not a member".into()))?;
        let mut client = self.peers.client(leader, &node.peer_addr)?;
        let mut req = tonic::Request::new(encode(&touches.to_vec())?);
        req.set_timeout(self.config.tick * 3);
        let reply = client.touch(req).await?.into_inner();
        let accepted: bool = decode(&reply)?;
        if accepted {
            Ok(())
        } else {
            Err(PeerError::Transport(tonic::Status::unavailable(
                "peer is not the leader",
            )))
        }
    }
}

impl Node {
    /// Asks every other member how long ago it applied these sessions' latest
    /// heartbeats; returns the freshest answer per session.
    pub async fn peer_notes(&self, ids: &[u64]) -> std::collections::HashMap<u64, Duration> {
        let mut freshest = std::collections::HashMap::new();
        let members: Vec<(NodeId, PeerNode)> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let Ok(payload) = encode(&ids.to_vec()) else {
            return freshest;
        };
        let calls = members.into_iter().filter_map(|(id, n)| {
            let mut client = self.peers.client(id, &n.peer_addr).ok()?;
            let mut req = tonic::Request::new(payload.clone());
            req.set_timeout(self.config.election_timeout_min);
            Some(async move { client.notes(req).await })
        });
        for reply in futures_join(calls).await {
            let Ok(reply) = reply else { continue };
            let Ok(ages) = decode::<Vec<(u64, u64)>>(reply.get_ref()) else {
                continue;
            };
            for (id, age) in ages {
                let age = Duration::from_millis(age);
                freshest
                    .entry(id)
                    .and_modify(|a: &mut Duration| *a = (*a).min(age))
                    .or_insert(age);
            }
        }
        freshest
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Starts a node and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let raft_config = Arc::new(config.raft_config()?);
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        StartError::Storage(format!(
            "can not create data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let db = storage::open(&config.data_dir)?;
    let log_store = LogStore::new(db.clone()).map_err(|e| StartError::Storage(e.to_string()))?;
    let (sm, shared, events) =
        StateMachineStore::open(db.clone()).map_err(|e| StartError::Storage(e.to_string()))?;
    // What openraft applies again at startup must not refresh apply-time
    // notes: a dead client's session would otherwise gain a fresh timeout
    // every time its node restarts.
    shared.set_replay_through(
        log_store
            .last_index()
            .map_err(|e| StartError::Storage(e.to_string()))?,
    );

    // Bind before anything else runs, so a taken port fails fast and clearly.
    let peer_listener = TcpListener::bind(&config.peer_addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "peers",
            addr: config.peer_addr.clone(),
            source,
        })?;
    let client_listener =
        TcpListener::bind(&config.client_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "clients",
                addr: config.client_addr.clone(),
                source,
            })?;

    let committed = log_store.committed_index();
    let peers = Peers::default();
    let network = Network { peers: peers.clone() };
    let raft = Raft::new(config.id, raft_config, network, log_store, sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let proposer = Proposer::start(raft.clone(), config.max_batch);
    let watches = Arc::new(crate::api::watches::WatchHub::new(
        config.watch_history,
        shared.applied(),
    ));
    shared.set_listener(watches.clone());
    let (reported_tx, reported_rx) = mpsc::unbounded_channel();
    let node = Arc::new(Node {
        id: config.id,
        config: config.clone(),
        raft: raft.clone(),
        shared,
        peers,
        proposer,
        activity: Activity::default(),
        watches,
        committed,
        reported: reported_tx,
        last_leader_contact: Mutex::new(None),
        shutting_down: AtomicBool::new(false),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let peer_server = {
        let svc = PeerServer::new(PeerService::new(node.clone()))
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(peer_listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };
    let client_server = {
        let svc = EnsembleServer::new(ClientService::new(node.clone()))
            .max_decoding_message_size(config.max_data_bytes + 64 * 1024);
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(client_listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };
    tokio::spawn(manager::run(node.clone(), events, reported_rx));

    initialize_once(&node).await?;
    info!(id = config.id, client = %config.client_addr, peer = %config.peer_addr, "node started");

    wait_for_signal().await;
    info!("shutting down");
    node.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Err(e) = raft.shutdown().await {
        warn!(%e, "raft did not shut down cleanly");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = peer_server.await;
        let _ = client_server.await;
    })
    .await;
    if let Err(e) = db.flush_async().await {
        warn!(%e, "final flush failed");
    }
    Ok(())
}

/// A pristine cluster is initialized once, by its lowest-id member, with every
/// configured member. A node that has any Raft state never initializes again.
async fn initialize_once(node: &Node) -> Result<(), StartError> {
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let lowest = node.config.members.keys().next().copied();
    if initialized || lowest != Some(node.id) {
        return Ok(());
    }
    let members: BTreeMap<NodeId, PeerNode> = node.config.members.clone();
    info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    match node.raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(StartError::Raft(e.to_string())),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
