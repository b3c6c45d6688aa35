//! One running node: wires storage, consensus, the state machine, the session
//! tick loop and the two gRPC services (clients and peers) together.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::peer::peer_server::PeerServer;
use ensemble_proto::v1::ensemble_server::EnsembleServer;
use openraft::ServerState;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{error, info, warn};

use crate::api::proposer::Proposer;
use crate::api::service::ClientService;
use crate::config::Config;
use crate::raft::network::{decode, encode, Network, PeerError, Peers, MAX_PEER_MESSAGE};
use crate::raft::service::PeerService;
use crate::raft::{NodeId, PeerNode, Raft};
use crate::sessions::evidence::{Evidence, Heard};
use crate::sessions::manager::{self, Report};
use crate::sessions::notes::Notes;
use crate::sessions::Activity;
use crate::state::store::{Shared, StateMachineStore};
use crate::storage::mark::Mark;
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
    #[error(transparent)]
    LogBehind(#[from] storage::mark::LogBehindMark),
    #[error("{0}")]
    Failed(String),
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
    /// When this node applied each session's latest heartbeat.
    pub notes: Notes,
    /// The watches of the clients whose session streams this node holds.
    pub watches: Arc<crate::api::watches::WatchHub>,
    /// The newest commit index this node knows of.
    pub committed: Arc<std::sync::atomic::AtomicU64>,
    /// What other nodes report, for the tick loop.
    pub reported: mpsc::UnboundedSender<Report>,
    last_leader_contact: Mutex<Option<Instant>>,
    /// Whether this node last found itself cut off (to log changes once).
    cut_off: AtomicBool,
    shutting_down: AtomicBool,
    /// Set once, with the reason, when the node must stop at once.
    failed: tokio::sync::watch::Sender<Option<String>>,
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
    /// "Heard" counts when an answer or a call arrives, not when the call
    /// was sent: a follower busy flushing a big append is slow, not gone.
    pub fn in_quorum(&self) -> bool {
        let limit = self.config.heartbeat * 4;
        let (ok, leading, silent_ms) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state == ServerState::Leader {
                let membership = m.membership_config.membership();
                let voters: Vec<NodeId> = membership.voter_ids().collect();
                let others = voters.iter().copied().filter(|id| *id != self.id);
                let heard = 1 + self.peers.answered_within(others, limit);
                (heard > voters.len() / 2, true, m.millis_since_quorum_ack)
            } else {
                let since = *self.last_leader_contact.lock().unwrap_or_else(|p| p.into_inner());
                let ms = since.map(|t| t.elapsed().as_millis() as u64);
                (
                    m.current_leader.is_some() && since.is_some_and(|t| t.elapsed() <= limit),
                    false,
                    ms,
                )
            }
        };
        if self.cut_off.swap(!ok, Ordering::Relaxed) == ok {
            if ok {
                info!("in touch with a majority; serving clients");
            } else {
                info!(
                    leading,
                    silent_ms, "not in touch with a majority; refusing clients so they move on"
                );
            }
        }
        ok
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
    /// Asks every other member for the signs of life it holds of each
    /// session (see [`crate::sessions::evidence`]). Returns how many voters
    /// answered and their evidence, merged per session.
    pub async fn gather_evidence(&self) -> (usize, HashMap<u64, Heard>) {
        let members: Vec<(NodeId, PeerNode, bool)> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            membership
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
                .collect()
        };
        let mut heard: HashMap<u64, Heard> = HashMap::new();
        let Ok(payload) = encode(&self.id) else {
            return (0, heard);
        };
        let timeout = self.config.election_timeout_min;
        let calls = members.into_iter().filter_map(|(id, n, voter)| {
            let mut client = self.peers.client(id, &n.peer_addr).ok()?;
            let mut req = tonic::Request::new(payload.clone());
            req.set_timeout(timeout);
            Some(async move {
                let reply = client.evidence(req).await;
                (voter, reply, Instant::now())
            })
        });
        let mut answered = 0;
        for (voter, reply, received) in futures_join(calls).await {
            let Ok(reply) = reply else { continue };
            let Ok(evidence) = decode::<Vec<(u64, Evidence)>>(reply.get_ref()) else {
                continue;
            };
            answered += usize::from(voter);
            for (id, e) in evidence {
                heard.entry(id).or_default().add(&e, received);
            }
        }
        (answered, heard)
    }

    /// The signs of life this node holds of every session it knows of:
    /// its apply-time notes and its clients' touches, aged now.
    pub fn evidence(&self) -> Vec<(u64, Evidence)> {
        let now = Instant::now();
        let mut all: HashMap<u64, Evidence> = self
            .notes
            .all()
            .into_iter()
            .map(|(id, note)| (id, Evidence::of(Some(note), None, now)))
            .collect();
        for (id, age) in self.activity.ages() {
            all.entry(id).or_default().touch_ms = Some(age);
        }
        all.into_iter().collect()
    }

    /// Stops the node at once: a failure it can not serve through (a
    /// storage write failed). The process exits non-zero with `why`.
    pub fn fail_stop(&self, why: String) {
        self.failed.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
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

/// Starts a node and serves until SIGINT or SIGTERM, or until a failure it
/// can not serve through (then it returns [`StartError::Failed`]).
pub async fn run(config: Config) -> Result<(), StartError> {
    let raft_config = Arc::new(config.raft_config()?);
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| StartError::Storage(format!("can not create data directory {}: {e}", dir.display())))?;
    let storage_error = |e: &dyn std::fmt::Display| StartError::Storage(format!("{}: {e}", dir.display()));
    let db = storage::open(dir)?;
    let (mark, saved_mark) = Mark::open(&dir.join(MARK_FILE)).map_err(|e| storage_error(&e))?;
    let mark = Arc::new(mark);
    let log_store = LogStore::new(db.clone(), mark.clone()).map_err(|e| storage_error(&e))?;
    let reached = log_store.reached().map_err(|e| storage_error(&e))?;
    storage::mark::check(dir, reached, saved_mark)?;
    mark.reset(reached).map_err(|e| storage_error(&e))?;
    let (sm, shared, events) = StateMachineStore::open(&db, dir).map_err(|e| storage_error(&e))?;
    // What openraft applies again at startup must not refresh apply-time
    // notes: a dead client's session would otherwise gain a fresh timeout
    // every time its node restarts.
    let replay_through = log_store.last_index().map_err(|e| storage_error(&e))?;
    // Notes of older versions were wall-clock times: not trusted.
    let _ = db.drop_tree("session_notes");
    let notes_tree = db.open_tree("liveness_notes").map_err(|e| storage_error(&e))?;
    let notes = Notes::open(notes_tree, replay_through).map_err(|e| storage_error(&e))?;

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
    let network = Network {
        peers: peers.clone(),
        retry: config.heartbeat,
    };
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
    let (failed, mut failure) = tokio::sync::watch::channel(None);
    let node = Arc::new(Node {
        id: config.id,
        config: config.clone(),
        raft: raft.clone(),
        shared,
        peers,
        proposer,
        activity: Activity::default(),
        notes,
        watches,
        committed,
        reported: reported_tx,
        last_leader_contact: Mutex::new(None),
        cut_off: AtomicBool::new(true),
        shutting_down: AtomicBool::new(false),
        failed,
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
            .max_decoding_message_size(config.max_request_bytes);
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .layer(crate::api::limits::OversizeLayer {
                    limit: config.max_request_bytes,
                })
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpListenerStream::new(client_listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };
    let peer_server = watch_listener(&node, "peers", peer_server);
    let client_server = watch_listener(&node, "clients", client_server);
    tokio::spawn(manager::run(node.clone(), events, reported_rx));
    tokio::spawn(watch_raft(node.clone()));
    tokio::spawn(bootstrap(node.clone()));
    info!(id = config.id, client = %config.client_addr, peer = %config.peer_addr, "node started");

    let failed = tokio::select! {
        _ = wait_for_signal() => None,
        f = failure.wait_for(|f| f.is_some()) => f.ok().and_then(|f| f.clone()),
    };
    node.shutting_down.store(true, Ordering::Relaxed);
    if let Some(why) = failed {
        // Fail-stop: no graceful steps that could touch the broken part,
        // not even the final flush that dropping the database does.
        error!(%why, "stopping: the node can not go on serving");
        std::mem::forget(db);
        return Err(StartError::Failed(why));
    }
    info!("shutting down");
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

/// The name of the acknowledged-log mark in the data directory.
pub const MARK_FILE: &str = "log-mark";

/// A listener that stops while the node runs leaves a node that serves
/// nobody: stop the node instead, so its supervisor restarts it.
fn watch_listener<E: std::fmt::Display + Send + 'static>(
    node: &Arc<Node>,
    what: &'static str,
    server: tokio::task::JoinHandle<Result<(), E>>,
) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    tokio::spawn(async move {
        let why = match server.await {
            Ok(Ok(())) => "stopped".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("panicked: {e}"),
        };
        if !node.is_shutting_down() {
            node.fail_stop(format!("the {what} listener {why}"));
        }
    })
}

/// Stops the node when openraft stops on its own: a storage error (a full
/// disk, an I/O error) is fatal to Raft, and a node without Raft must not
/// linger half-alive.
async fn watch_raft(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        let fatal = metrics.borrow_and_update().running_state.clone().err();
        if let Some(fatal) = fatal {
            if !node.is_shutting_down() {
                node.fail_stop(format!(
                    "storage or consensus failed (data directory {}): {fatal}",
                    node.config.data_dir.display()
                ));
            }
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A pristine cluster is initialized once, by its lowest-id member, with
/// every configured member, and only when every other member answers and
/// is pristine too. A node that has any Raft state never initializes again,
/// and neither does a member whose data directory was emptied while its
/// peers already form a cluster: it waits for the leader to bring it up to
/// date instead of starting a second cluster under the same ids.
async fn bootstrap(node: Arc<Node>) {
    let initialized = match node.raft.is_initialized().await {
        Ok(i) => i,
        Err(e) => {
            node.fail_stop(format!("can not read the Raft state: {e}"));
            return;
        }
    };
    let lowest = node.config.members.keys().next().copied();
    if initialized || lowest != Some(node.id) {
        return;
    }
    let others: Vec<(NodeId, String)> = node
        .config
        .members
        .iter()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, m)| (*id, m.client_addr.clone()))
        .collect();
    let mut told = false;
    loop {
        if node.is_shutting_down() {
            return;
        }
        let mut silent = Vec::new();
        for (id, addr) in &others {
            match member_state(addr).await {
                Some(true) => {
                    info!(
                        member = id,
                        "this node is empty but member {id} already belongs to a cluster: \
                         not initializing; waiting for the leader to bring this node up to date"
                    );
                    return;
                }
                Some(false) => {}
                None => silent.push(*id),
            }
        }
        if silent.is_empty() {
            break;
        }
        if !told {
            info!(waiting_for = ?silent, "a new cluster is initialized once every member answers");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members: BTreeMap<NodeId, PeerNode> = node.config.members.clone();
    info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    match node.raft.initialize(members).await {
        Ok(())
        | Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => node.fail_stop(format!("can not initialize the cluster: {e}")),
    }
}

/// Whether the member at this client address belongs to a cluster (has a
/// membership); None if it does not answer.
async fn member_state(client_addr: &str) -> Option<bool> {
    let timeout = Duration::from_millis(500);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{client_addr}"))
        .ok()?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.ok()?;
    let status = ensemble_proto::v1::ensemble_client::EnsembleClient::new(channel)
        .status(ensemble_proto::v1::StatusRequest { with_digest: false })
        .await
        .ok()?
        .into_inner();
    Some(!status.members.is_empty())
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
