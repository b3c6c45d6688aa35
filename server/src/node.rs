//! One running member: opens storage, then wires the layers together,
//! bottom up (consensus, liveness, the client and peer services), hands
//! each only the handles it needs, and runs until a signal or a failure it
//! can not serve through. Nothing is decided here; it only connects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ensemble_proto::peer::peer_server::PeerServer;
use ensemble_proto::v1::ensemble_server::EnsembleServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::api::watches::WatchHub;
use crate::api::{ClientService, Limits};
use crate::config::{Config, ConfigError};
use crate::consensus::log_mark::{self, LogMark};
use crate::consensus::{
    self, Consensus, Contact, FailStop, LogStore, Proposer, Raft, Router, StateMachineStore,
};
use crate::listen;
use crate::liveness::expiry::{ExpiryLoop, Timings};
use crate::liveness::{ApplyMarks, Liveness, Touches};
use crate::peer::forward::Forwarder;
use crate::peer::raft::Network;
use crate::peer::{PeerService, Peers, Reporting, MAX_PEER_MESSAGE};
use crate::state::{NodeId, PeerNode};
use crate::tls::Tls;

/// Why a member could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting can not work.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// sled refused the data directory.
    #[error(transparent)]
    Open(#[from] consensus::OpenError),
    /// The data directory could not be read or prepared.
    #[error("storage: {0}")]
    Storage(String),
    /// A listener's address was taken or invalid.
    #[error("can not listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// openraft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The log or vote is behind what this member acknowledged.
    #[error(transparent)]
    LogBehind(#[from] log_mark::LogBehindMark),
    /// A part of the member failed while it ran (fail-stop).
    #[error("{0}")]
    Failed(String),
}

/// Most connections the peer port holds at once: members need a few each.
const PEER_CONNECTIONS: usize = 256;

/// The name of the log mark in the data directory.
pub const LOG_MARK_FILE: &str = "log-mark";

/// Starts a member and serves until SIGINT or SIGTERM, or until a failure
/// it can not serve through (then it returns [`StartError::Failed`]).
pub async fn run(config: Config) -> Result<(), StartError> {
    let raft_config = Arc::new(config.raft_config()?);
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| StartError::Storage(format!("can not create data directory {}: {e}", dir.display())))?;
    let storage_error = |e: &dyn std::fmt::Display| StartError::Storage(format!("{}: {e}", dir.display()));

    // Storage, checked against the log mark before anything runs.
    let db = consensus::open_db(dir)?;
    let (mark, saved_mark) = LogMark::open(&dir.join(LOG_MARK_FILE)).map_err(|e| storage_error(&e))?;
    let mark = Arc::new(mark);
    let log_store = LogStore::new(db.clone(), mark.clone()).map_err(|e| storage_error(&e))?;
    let reached = log_store.reached().map_err(|e| storage_error(&e))?;
    log_mark::check(dir, reached, saved_mark)?;
    mark.reset(reached).map_err(|e| storage_error(&e))?;
    let (sm, replica, events) = StateMachineStore::open(&db, dir).map_err(|e| storage_error(&e))?;
    // What openraft applies again at startup must not refresh apply marks:
    // a dead client's session would otherwise gain a fresh timeout every
    // time its member restarts.
    let replay_through = log_store.last_index().map_err(|e| storage_error(&e))?;
    // Apply marks of older versions were wall-clock times: not trusted.
    let _ = db.drop_tree("session_notes");
    let marks_tree = db.open_tree("liveness_notes").map_err(|e| storage_error(&e))?;
    let marks = ApplyMarks::open(marks_tree, replay_through).map_err(|e| storage_error(&e))?;

    // Bind before anything else runs, so a taken port fails fast and clearly.
    let bind = |what: &'static str, addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let peer_listener = bind("peers", config.peer_addr.clone()).await?;
    let client_listener = bind("clients", config.client_addr.clone()).await?;
    let metrics_listener = match config.metrics_addr.clone() {
        Some(addr) => Some(bind("metrics (--metrics-addr)", addr).await?),
        None => None,
    };

    // TLS before anything runs: a certificate and key rustls refuses (a
    // key that is not the certificate's, say) are a configuration error.
    let tls_error = |e: crate::tls::TlsError| StartError::Config(ConfigError(e.to_string()));
    let listener_tls = match &config.tls {
        Some(tls) => {
            let member_hosts: Vec<String> = config
                .members
                .values()
                .map(|m| crate::tls::host_of(&m.peer_addr).to_string())
                .collect();
            Some((
                tls.peer_listener(&member_hosts).map_err(tls_error)?,
                tls.client_listener().map_err(tls_error)?,
            ))
        }
        None => None,
    };
    if config.peer_port_open() {
        warn!(
            peer = %config.peer_addr,
            "THE PEER PORT IS OPEN: neither TLS nor a peer secret protects it, so any process that reaches \
             {} can act as a member (forge sessions and identities, vote, append entries). Set \
             --peer-secret-file or TLS unless nothing but the members can reach the peer network",
            config.peer_addr
        );
    }
    let peer_builder = tonic::transport::Server::builder().layer(tonic::service::interceptor(
        crate::peer::Gate::new(config.peer_secret.clone()),
    ));
    let client_builder = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams_per_connection)
        // A client's hedged dials cancel streams; h2's default of 20
        // pending resets would close the whole shared connection.
        .http2_max_pending_accept_reset_streams(Some(1000));
    let client_budget = crate::listen::Budget {
        max_connections: config.max_connections,
        handshake_timeout: config.tls_handshake_timeout,
    };
    let peer_budget = crate::listen::Budget {
        max_connections: PEER_CONNECTIONS,
        handshake_timeout: config.tls_handshake_timeout,
    };

    // Layer 2: consensus.
    let (fail, mut failure) = FailStop::new();
    let contact = Arc::new(Contact::new(config.id, config.raft_heartbeat));
    let peers = Peers::new(
        contact.clone(),
        config.tls.as_ref().map(Tls::dialer),
        config.peer_secret.as_ref(),
    );
    let committed = log_store.committed_index();
    let appended = log_store.appended();
    let network = Network {
        peers: peers.clone(),
        retry: config.raft_heartbeat,
    };
    let raft = Raft::new(config.id, raft_config, network, log_store, sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let proposer = Proposer::start(raft.clone(), config.max_batch, appended);
    let forwarder = Arc::new(Forwarder::new(peers.clone(), raft.clone()));
    let router = Router::new(
        config.id,
        raft.clone(),
        proposer.clone(),
        replica.clone(),
        forwarder,
    );
    consensus::failover::start(
        config.id,
        raft.clone(),
        contact.clone(),
        config.election_timeout_max,
        config.raft_heartbeat,
    );
    let consensus = Consensus {
        id: config.id,
        raft: raft.clone(),
        replica: replica.clone(),
        proposer,
        router,
        contact,
        committed,
    };

    // Layer 3: liveness.
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let liveness = Liveness {
        touches: Arc::new(Touches::default()),
        marks: Arc::new(marks),
        reports: reports_tx,
    };
    crate::peer::leader_watch::start(peers.clone(), consensus.clone());
    let reporter = Arc::new(Reporting::new(
        peers,
        consensus.clone(),
        config.election_timeout_min,
    ));
    let timings = Timings {
        tick: config.tick,
        keep: config.max_session_timeout,
        retry: config.election_timeout_max * 2,
    };
    let expiry = ExpiryLoop::new(
        consensus.clone(),
        liveness.clone(),
        reporter,
        timings,
        fail.clone(),
    );

    // Layer 4: the services.
    let watches = Arc::new(WatchHub::new(config.watch_history, replica.applied()));
    replica.set_listener(watches.clone());
    let scrape = vec![
        consensus::observe::scrape_gauges(&consensus),
        crate::api::metered::scrape_gauges(&watches),
    ];
    let limits = Limits {
        max_data_bytes: config.max_data_bytes,
        max_request_bytes: config.max_request_bytes,
        max_multi_ops: config.max_multi_ops,
        session_timeout: (config.min_session_timeout, config.max_session_timeout),
    };
    let clients = ClientService::new(
        consensus.clone(),
        liveness.touches.clone(),
        watches,
        limits,
        config.client_addr.clone(),
        Arc::new(crate::api::auth::Authenticator::new(
            &config.users,
            config.super_user.clone(),
            config.require_auth,
        )),
    );
    let peer_service = PeerService::new(consensus.clone(), liveness, config.raft_heartbeat);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Some(listener) = metrics_listener {
        tokio::spawn(crate::admin::metrics::serve(
            listener,
            scrape,
            stopped(stop_rx.clone()),
        ));
    }
    let mut peer_builder = peer_builder;
    let peer_router = peer_builder.add_service(
        PeerServer::new(peer_service)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE),
    );
    let mut client_builder = client_builder.layer(crate::api::limits::OversizeLayer {
        limit: config.max_request_bytes,
    });
    let client_router = client_builder
        .add_service(EnsembleServer::new(clients).max_decoding_message_size(config.max_request_bytes));
    let (peer_server, client_server) = match listener_tls {
        Some((peer_tls, client_tls)) => (
            tokio::spawn(peer_router.serve_with_incoming_shutdown(
                listen::tls(peer_listener, "peers", peer_budget, peer_tls),
                stopped(stop_rx.clone()),
            )),
            tokio::spawn(client_router.serve_with_incoming_shutdown(
                listen::tls(client_listener, "clients", client_budget, client_tls),
                stopped(stop_rx),
            )),
        ),
        None => (
            tokio::spawn(peer_router.serve_with_incoming_shutdown(
                listen::plain(peer_listener, "peers", peer_budget),
                stopped(stop_rx.clone()),
            )),
            tokio::spawn(client_router.serve_with_incoming_shutdown(
                listen::plain(client_listener, "clients", client_budget),
                stopped(stop_rx),
            )),
        ),
    };
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peer_server = watch_listener(&fail, &shutting_down, "peers", peer_server);
    let client_server = watch_listener(&fail, &shutting_down, "clients", client_server);
    tokio::spawn(expiry.run(events, reports_rx));
    tokio::spawn(watch_raft(
        raft.clone(),
        fail.clone(),
        shutting_down.clone(),
        config.data_dir.clone(),
    ));
    tokio::spawn(bootstrap(config.clone(), raft.clone(), fail.clone()));
    tokio::spawn(consensus::observe::follow_raft(raft.clone()));
    info!(
        id = config.id,
        client = %config.client_addr,
        peer = %config.peer_addr,
        tls = config.tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_auth),
        "member started"
    );

    let failed = tokio::select! {
        _ = wait_for_signal() => None,
        f = failure.wait_for(|f| f.is_some()) => f.ok().and_then(|f| f.clone()),
    };
    shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(why) = failed {
        // Fail-stop: no graceful steps that could touch the broken part,
        // not even the final flush that dropping the database does.
        error!(%why, "stopping: the member can not go on serving");
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

/// A listener that stops while the member runs leaves a member that serves
/// nobody: stop the member instead, so its supervisor restarts it.
fn watch_listener<E: std::fmt::Display + Send + 'static>(
    fail: &FailStop,
    shutting_down: &Arc<std::sync::atomic::AtomicBool>,
    what: &'static str,
    server: tokio::task::JoinHandle<Result<(), E>>,
) -> tokio::task::JoinHandle<()> {
    let (fail, shutting_down) = (fail.clone(), shutting_down.clone());
    tokio::spawn(async move {
        let why = match server.await {
            Ok(Ok(())) => "stopped".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("panicked: {e}"),
        };
        if !shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
            fail.stop(format!("the {what} listener {why}"));
        }
    })
}

/// Stops the member when openraft stops on its own: a storage error (a full
/// disk, an I/O error) is fatal to Raft, and a member without Raft must not
/// linger half-alive.
async fn watch_raft(
    raft: Raft,
    fail: FailStop,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
    data_dir: std::path::PathBuf,
) {
    let mut metrics = raft.metrics();
    loop {
        let fatal = metrics.borrow_and_update().running_state.clone().err();
        if let Some(fatal) = fatal {
            if !shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
                fail.stop(format!(
                    "storage or consensus failed (data directory {}): {fatal}",
                    data_dir.display()
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
/// is pristine too. A member that has any Raft state never initializes
/// again, and neither does a member whose data directory was emptied while
/// its peers already form a cluster: it waits for the leader to bring it
/// up to date instead of starting a second cluster under the same ids.
async fn bootstrap(config: Config, raft: Raft, fail: FailStop) {
    let initialized = match raft.is_initialized().await {
        Ok(i) => i,
        Err(e) => {
            fail.stop(format!("can not read the Raft state: {e}"));
            return;
        }
    };
    let lowest = config.members.keys().next().copied();
    if initialized || lowest != Some(config.id) {
        return;
    }
    let others: Vec<(NodeId, String)> = config
        .members
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, m)| (*id, m.client_addr.clone()))
        .collect();
    let mut told = false;
    loop {
        let mut silent = Vec::new();
        for (id, addr) in &others {
            match member_state(addr, config.tls.as_ref()).await {
                Some(true) => {
                    info!(
                        member = id,
                        "this member is empty but member {id} already belongs to a cluster: \
                         not initializing; waiting for the leader to bring this member up to date"
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
    let members: BTreeMap<NodeId, PeerNode> = config.members.clone();
    info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    match raft.initialize(members).await {
        Ok(())
        | Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => fail.stop(format!("can not initialize the cluster: {e}")),
    }
}

/// Whether the member at this client address belongs to a cluster (has a
/// membership); None if it does not answer.
async fn member_state(client_addr: &str, tls: Option<&Tls>) -> Option<bool> {
    let timeout = Duration::from_millis(500);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{client_addr}")).ok()?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.dialer()).ok()?;
    }
    let endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener task that ends while the member runs stops the member:
    /// before, the two listener tasks were spawned and never watched, and a
    /// member whose listener died kept running and served nobody.
    #[tokio::test]
    async fn a_listener_that_stops_stops_the_member() {
        for (ends, want) in [
            (Ok(()), "the clients listener stopped"),
            (Err("accept failed"), "the clients listener failed: accept failed"),
        ] {
            let (fail, mut failure) = FailStop::new();
            let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let server = tokio::spawn(async move { ends });
            watch_listener(&fail, &running, "clients", server).await.unwrap();
            let why = failure.wait_for(|f| f.is_some()).await.unwrap().clone();
            assert_eq!(why.as_deref(), Some(want));
        }
        let (fail, failure) = FailStop::new();
        let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let server = tokio::spawn(async { Ok::<(), String>(()) });
        watch_listener(&fail, &shutting_down, "peers", server)
            .await
            .unwrap();
        assert!(failure.borrow().is_none(), "a clean shutdown is no failure");
    }
}
