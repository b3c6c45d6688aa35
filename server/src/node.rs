//! One running member: opens storage, then wires the layers together,
//! bottom up (consensus, liveness, the client and peer services), hands
//! each only the handles it needs, and runs until a signal or a failure it
//! can not serve through. Nothing is decided here; it only connects.
//!
//! Every long-lived task is spawned into one owner (`consensus::Tasks`)
//! that the member awaits beside the signal, the fail-stop switch and the
//! Raft core: whichever part dies first stops the member (fail-stop).

use std::path::{Path, PathBuf};
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
use crate::consensus::tasks::Kind;
use crate::consensus::{
    self, Consensus, Contact, FailStop, LogStore, Proposer, Raft, Router, StateMachineStore, Tasks,
};
use crate::listen;
use crate::liveness::expiry::{ExpiryLoop, Timings};
use crate::liveness::{ApplyMarks, Liveness, Touches};
use crate::peer::forward::Forwarder;
use crate::peer::raft::Network;
use crate::peer::{PeerService, Peers, Reporting, MAX_PEER_MESSAGE};
use crate::state::NodeId;
use crate::tls::{error_chain, Tls};

/// Why a member could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting can not work.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// sled refused the data directory.
    #[error(transparent)]
    Open(#[from] consensus::OpenError),
    /// The data directory could not be created.
    #[error("can not create the data directory {}", dir.display())]
    CreateDir {
        /// The data directory.
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The log mark could not be read or written.
    #[error("can not use the log mark in {}", dir.display())]
    Mark {
        /// The data directory.
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// sled refused a tree of the data directory.
    #[error("can not open the storage in {}", dir.display())]
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The log, the vote or the state machine could not be read.
    #[error("can not read the storage in {}", dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// The error, as openraft's storage reports it.
        #[source]
        source: consensus::StorageError,
    },
    /// A listener's address was taken or invalid.
    #[error("can not listen for {what} on {addr}")]
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
    #[error("raft could not start")]
    Raft(#[source] openraft::error::Fatal<NodeId>),
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
    std::fs::create_dir_all(dir).map_err(|source| StartError::CreateDir {
        dir: dir.clone(),
        source,
    })?;
    let mark_error = |source| StartError::Mark {
        dir: dir.clone(),
        source,
    };
    let sled_error = |source| StartError::Sled {
        dir: dir.clone(),
        source,
    };
    let storage_error = |source| StartError::Storage {
        dir: dir.clone(),
        source,
    };

    // Storage, checked against the log mark before anything runs.
    let db = consensus::open_db(dir)?;
    let (mark, saved_mark) = LogMark::open(&dir.join(LOG_MARK_FILE)).map_err(mark_error)?;
    let mark = Arc::new(mark);
    let log_store = LogStore::new(db.clone(), mark.clone()).map_err(sled_error)?;
    let reached = log_store.reached().map_err(storage_error)?;
    log_mark::check(dir, reached, saved_mark)?;
    mark.reset(reached).map_err(mark_error)?;
    let (sm, replica, events) = StateMachineStore::open(&db, dir).map_err(storage_error)?;
    // What openraft applies again at startup must not refresh apply marks:
    // a dead client's session would otherwise gain a fresh timeout every
    // time its member restarts.
    let replay_through = log_store.last_index().map_err(storage_error)?;
    // Apply marks of older versions were wall-clock times: not trusted.
    let _ = db.drop_tree("session_notes");
    let marks_tree = db.open_tree("liveness_notes").map_err(sled_error)?;
    let marks = ApplyMarks::open(marks_tree, replay_through).map_err(sled_error)?;

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
    let tasks = Tasks::new();
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
        .map_err(StartError::Raft)?;
    let proposer = Proposer::start(raft.clone(), config.max_batch, appended, &tasks);
    let forwarder = Arc::new(Forwarder::new(peers.clone(), raft.clone(), &tasks));
    let router = Router::new(
        config.id,
        raft.clone(),
        proposer.clone(),
        replica.clone(),
        forwarder,
        &tasks,
    );
    consensus::failover::start(
        config.id,
        raft.clone(),
        contact.clone(),
        config.election_timeout_max,
        config.raft_heartbeat,
        &tasks,
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
    crate::peer::leader_watch::start(peers.clone(), consensus.clone(), &tasks);
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
        tasks.clone(),
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

    // The services and loops, all owned by `tasks`.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(listener) = metrics_listener {
        let stop = stopped(stop_rx.clone());
        tasks.spawn("metrics-server", Kind::Service, async move {
            crate::admin::metrics::serve(listener, scrape, stop).await;
            Ok(())
        });
    }
    let (peer_tls, client_tls) = listener_tls.unzip();
    let peers_on = Listening {
        listener: peer_listener,
        budget: peer_budget,
        tls: peer_tls,
        stop: stop_rx.clone(),
    };
    let clients_on = Listening {
        listener: client_listener,
        budget: client_budget,
        tls: client_tls,
        stop: stop_rx,
    };
    serve_peers(&tasks, &config, peer_service, peers_on);
    serve_clients(&tasks, &config, clients, clients_on);
    tasks.lifelong("expiry", expiry.run(events, reports_rx));
    tasks.lifelong("follow-raft", consensus::observe::follow_raft(raft.clone()));
    tasks.spawn("bootstrap", Kind::OneShot, {
        let (config, raft) = (config.clone(), raft.clone());
        async move {
            crate::admin::bootstrap::bootstrap(config, raft)
                .await
                .map_err(|e| error_chain(&e))
        }
    });
    test_hook_raft_core(&tasks, &raft);
    info!(
        id = config.id,
        client = %config.client_addr,
        peer = %config.peer_addr,
        tls = config.tls.is_some(),
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_auth),
        "member started"
    );

    // Biased: when the Raft core stops, loops that follow it end too; the
    // core is the cause worth reporting.
    let failed = tokio::select! {
        biased;
        why = watch_raft(&raft, &config.data_dir) => Some(why),
        f = failure.wait_for(|f| f.is_some()) => f.ok().and_then(|f| f.clone()),
        why = tasks.watch() => Some(why),
        _ = wait_for_signal() => None,
    };
    if let Some(why) = failed {
        // Fail-stop: no graceful steps that could touch the broken part,
        // not even the final flush that dropping the database does.
        fail.stop(why.clone());
        error!(%why, "stopping: the member can not go on serving");
        std::mem::forget(db);
        return Err(StartError::Failed(why));
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = raft.shutdown().await {
        warn!(%e, "raft did not shut down cleanly");
    }
    tasks.stop(Duration::from_secs(2)).await;
    if let Err(e) = db.flush_async().await {
        warn!(%e, "final flush failed");
    }
    Ok(())
}

/// Resolves when `stop` turns true (a clean shutdown).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Where a listener takes connections, and how.
struct Listening {
    listener: TcpListener,
    budget: listen::Budget,
    /// TLS for its connections; None: plaintext.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

type Serving =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Serves `router` on `on`'s connections (bounded, TLS handshakes timed;
/// see `listen`) until the member stops.
macro_rules! serve_on {
    ($router:expr, $on:expr, $what:expr) => {{
        let on = $on;
        let serving: Serving = match on.tls {
            Some(tls) => Box::pin($router.serve_with_incoming_shutdown(
                listen::tls(on.listener, $what, on.budget, tls),
                stopped(on.stop),
            )),
            None => Box::pin($router.serve_with_incoming_shutdown(
                listen::plain(on.listener, $what, on.budget),
                stopped(on.stop),
            )),
        };
        serving
    }};
}

/// The peer listener, owned by `tasks`: ending while the member serves
/// stops the member, since a member nobody can reach is no member. Calls
/// pass the peer gate (the peer secret) first.
fn serve_peers(tasks: &Tasks, config: &Config, service: PeerService, on: Listening) {
    let mut builder = tonic::transport::Server::builder().layer(tonic::service::interceptor(
        crate::peer::Gate::new(config.peer_secret.clone()),
    ));
    let router = builder.add_service(
        PeerServer::new(service)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE),
    );
    let server = serve_on!(router, on, "peers");
    tasks.spawn("peer-listener", Kind::Service, async move {
        server.await.map_err(|e| error_chain(&e))
    });
}

/// The client listener, owned by `tasks` like the peer listener; at most
/// `max_streams_per_connection` streams on one connection.
fn serve_clients(tasks: &Tasks, config: &Config, service: ClientService, on: Listening) {
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams_per_connection)
        // A client's hedged dials cancel streams; h2's default of 20
        // pending resets would close the whole shared connection.
        .http2_max_pending_accept_reset_streams(Some(1000))
        .layer(crate::api::limits::OversizeLayer {
            limit: config.max_request_bytes,
        });
    let router =
        builder.add_service(EnsembleServer::new(service).max_decoding_message_size(config.max_request_bytes));
    let server = serve_on!(router, on, "clients");
    tasks.spawn("client-listener", Kind::Service, async move {
        server.await.map_err(|e| error_chain(&e))
    });
}

/// Resolves when openraft's core stops on its own, with why: a storage
/// error (a full disk, an I/O error) is fatal to Raft, and a core that
/// panicked closes its metrics without a word. A member without its Raft
/// core must not linger half-alive, answering health checks.
async fn watch_raft(raft: &Raft, data_dir: &Path) -> String {
    let mut metrics = raft.metrics();
    loop {
        let fatal = metrics.borrow_and_update().running_state.clone().err();
        match fatal {
            Some(openraft::error::Fatal::Stopped) => return "the Raft core stopped".to_string(),
            Some(fatal) => {
                return format!(
                    "the Raft core failed: storage or consensus (data directory {}): {fatal}",
                    data_dir.display()
                )
            }
            None => {}
        }
        if metrics.changed().await.is_err() {
            return "the Raft core stopped (it ended without a word: a panic?)".to_string();
        }
    }
}

/// With the `test-hooks` feature and `ENSEMBLE_TEST_PANIC=raft-core@<ms>`,
/// shuts the Raft core down behind the member's back, as a core that died
/// would; the member must notice and stop.
fn test_hook_raft_core(tasks: &Tasks, raft: &Raft) {
    #[cfg(feature = "test-hooks")]
    warn!("built with the test-hooks feature (ENSEMBLE_TEST_PANIC): for tests only");
    let Some(after) = tasks.test_hook("raft-core") else {
        return;
    };
    let raft = raft.clone();
    tasks.once("raft-core-hook", async move {
        tokio::time::sleep(after).await;
        error!(task = "raft-core", "test hook: the Raft core stops now");
        let _ = raft.shutdown().await;
    });
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
