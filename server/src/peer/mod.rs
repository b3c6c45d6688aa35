//! The peer network, node to node: each peer call keeps its client half
//! (what this member sends) and its server half (what it does when called)
//! in one file:
//!
//! - [`raft`]: openraft's AppendEntries, Vote and InstallSnapshot.
//! - [`forward`]: a follower hands clients' commands to the leader, and asks
//!   it for read indexes.
//! - [`touch`]: a follower reports its clients' touches to the leader.
//! - [`leader_watch`]: a follower's idle stream to the leader, which breaks
//!   when the leader's process dies.
//! - [`evidence`]: a new leader's report round.
//!
//! [`PeerService`] is the gRPC service that dispatches incoming calls,
//! behind [`Gate`], which lets only members through; [`Peers`] caches one
//! channel per peer, and stamps every call with the peer secret. Lower layers reach this one only
//! through the traits they define (`consensus::router::Forward`,
//! `liveness::Reporter`), which [`forward::Forwarder`] and [`Reporting`]
//! implement.

pub mod evidence;
pub mod forward;
pub mod leader_watch;
pub mod raft;
pub mod raft_input;
pub mod touch;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble_proto::peer::peer_client::PeerClient;
use ensemble_proto::peer::peer_server::Peer;
use ensemble_proto::peer::Payload;
use ensemble_proto::SessionId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::config::PeerSecret;
use crate::consensus::{Consensus, Contact};
use crate::listen::Refusals;
use crate::liveness::{Liveness, MergedEvidence, Reporter};
use crate::state::{NodeId, PeerNode};

/// Largest peer message: snapshot chunks and big batches must fit.
pub const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;

/// Errors of a peer call outside openraft.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The member's address in the membership is not usable.
    #[error("peer {0} has an invalid address: {1}")]
    BadAddress(NodeId, String),
    /// TLS could not be set up for the peer's address (its host is not a
    /// valid TLS server name, say).
    #[error("peer {0}: can not set up TLS: {1}")]
    Tls(NodeId, String),
    /// The call failed on the way or on the other side.
    #[error("peer call failed: {0}")]
    Transport(#[from] tonic::Status),
    /// The message could not be encoded or decoded.
    #[error("peer message could not be encoded or decoded: {0}")]
    Codec(#[from] bincode::Error),
}

/// The metadata key of the peer secret on every call between members.
pub const PEER_SECRET_KEY: &str = "x-ensemble-peer-secret";

/// A client of one peer: every call carries the peer secret.
pub type PeerRpc = PeerClient<InterceptedService<Channel, Stamp>>;

/// Adds the peer secret to each outgoing call.
#[derive(Clone)]
pub struct Stamp(Option<MetadataValue<Ascii>>);

impl Interceptor for Stamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = &self.0 {
            request.metadata_mut().insert(PEER_SECRET_KEY, secret.clone());
        }
        Ok(request)
    }
}

/// The peer port's gate: a call without the cluster's peer secret is
/// refused before anything of it is decoded, so it changes nothing. (With
/// TLS, the handshake already let only members' certificates in.)
#[derive(Clone)]
pub struct Gate {
    secret: Option<PeerSecret>,
    refusals: Arc<Refusals>,
}

impl Gate {
    /// Lets through calls that carry `secret`; every call when None.
    pub fn new(secret: Option<PeerSecret>) -> Self {
        Gate {
            secret,
            refusals: Arc::new(Refusals::new("peers")),
        }
    }
}

impl Interceptor for Gate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.secret else {
            return Ok(request);
        };
        let presented = request.metadata().get(PEER_SECRET_KEY).map(|v| v.as_bytes());
        if presented.is_some_and(|p| secret.matches(p)) {
            return Ok(request);
        }
        crate::metrics::peer_call_refused();
        let why = match presented {
            None => "a peer call without the peer secret",
            Some(_) => "a peer call with a wrong peer secret",
        };
        self.refusals.note(request.remote_addr(), why);
        Err(Status::unauthenticated(
            "the peer port serves members of this cluster only: the call lacks the cluster's peer secret",
        ))
    }
}

/// Cached channels to every peer, by member id; records who answered.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Peers whose last Raft call failed, to log each change once.
    down: Arc<Mutex<HashSet<NodeId>>>,
    contact: Arc<Contact>,
    /// How to dial peers over TLS (this member's certificate and the CA);
    /// None: plaintext.
    tls: Option<ClientTlsConfig>,
    /// What every call carries.
    stamp: Stamp,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peers {
    /// Channels that report answers to `contact`, over TLS when `tls` is
    /// set (peers then present this member's certificate: mutual TLS),
    /// every call carrying `secret` when set.
    pub fn new(contact: Arc<Contact>, tls: Option<ClientTlsConfig>, secret: Option<&PeerSecret>) -> Self {
        // A secret is printable ASCII (checked when loaded), so it is a
        // valid metadata value.
        let stamp = Stamp(secret.and_then(|s| MetadataValue::try_from(s.expose()).ok()));
        Peers {
            channels: Default::default(),
            down: Default::default(),
            contact,
            tls,
            stamp,
        }
    }

    /// Records how a Raft call to a peer went; logs when a peer goes
    /// unreachable and when it answers again.
    fn outcome(&self, id: NodeId, failure: Option<&dyn std::fmt::Display>) {
        if failure.is_none() {
            self.contact.peer_answered(id);
        }
        let mut down = lock(&self.down);
        match failure {
            Some(why) if down.insert(id) => warn!(peer = id, %why, "peer unreachable; retrying"),
            None if down.remove(&id) => info!(peer = id, "peer reachable again"),
            _ => {}
        }
    }

    /// A client for the peer; reuses its channel unless its address changed.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<PeerRpc, PeerError> {
        let mut channels = lock(&self.channels);
        if let Some((a, ch)) = channels.get(&id) {
            if a == addr {
                return Ok(self.wrap(ch.clone()));
            }
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|_| PeerError::BadAddress(id, addr.to_string()))?;
        let endpoint = match &self.tls {
            // The peer's certificate is checked against the host of its
            // address in the membership.
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| PeerError::Tls(id, e.to_string()))?,
            None => endpoint,
        };
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        channels.insert(id, (addr.to_string(), ch.clone()));
        Ok(self.wrap(ch))
    }

    fn wrap(&self, ch: Channel) -> PeerRpc {
        PeerClient::with_interceptor(ch, self.stamp.clone())
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }
}

/// Encodes a peer message.
pub fn encode<T: Serialize>(v: &T) -> Result<Payload, bincode::Error> {
    Ok(Payload {
        data: bincode::serialize(v)?,
    })
}

/// Decodes a peer message.
pub fn decode<T: DeserializeOwned>(p: &Payload) -> Result<T, bincode::Error> {
    bincode::deserialize(&p.data)
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn reply<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("can not encode reply: {e}")))
}

/// Serves peers: every call is handled in the file of its RPC.
pub struct PeerService {
    consensus: Consensus,
    liveness: Liveness,
    snapshots: raft::SnapshotLease,
    /// Raft messages refused as impossible.
    impossible: Refusals,
}

impl PeerService {
    /// A service for this member.
    pub(crate) fn new(consensus: Consensus, liveness: Liveness, raft_heartbeat: Duration) -> Self {
        PeerService {
            consensus,
            liveness,
            snapshots: raft::SnapshotLease::new(raft_heartbeat),
            impossible: Refusals::new("raft messages"),
        }
    }

    /// Refuses (and notes) a Raft message that failed its checks.
    fn sane<T>(
        &self,
        request: &Request<T>,
        checked: Result<(), raft_input::Impossible>,
    ) -> Result<(), Status> {
        checked.map_err(|why| {
            self.impossible.note(
                request.remote_addr(),
                &format!("refused an impossible Raft message: {why}"),
            );
            Status::invalid_argument(format!("refused an impossible Raft message: {why}"))
        })
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_payload)?;
        self.sane(&request, raft_input::append_entries(&req))?;
        reply(&raft::append_entries(&self.consensus, req).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_payload)?;
        self.sane(&request, raft_input::vote(&req))?;
        reply(&self.consensus.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_payload)?;
        self.sane(&request, raft_input::install_snapshot(&req))?;
        reply(&self.snapshots.install(&self.consensus, req).await)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let commands = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&forward::serve(&self.consensus, commands).await)
    }

    async fn read_index(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        reply(&forward::serve_read_index(&self.consensus).await)
    }

    type WatchLeaderStream = leader_watch::Idle;

    async fn watch_leader(
        &self,
        _request: Request<Payload>,
    ) -> Result<Response<Self::WatchLeaderStream>, Status> {
        Ok(Response::new(leader_watch::serve()))
    }

    async fn touch(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let touches = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&touch::serve(&self.consensus, &self.liveness, touches))
    }

    async fn evidence(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let asker = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&evidence::serve(&self.liveness, asker))
    }
}

/// The liveness layer's calls to other members.
pub(crate) struct Reporting {
    peers: Peers,
    consensus: Consensus,
    timeout: Duration,
}

impl Reporting {
    /// Calls through `peers`; a call may take `timeout` (an election timeout).
    pub fn new(peers: Peers, consensus: Consensus, timeout: Duration) -> Self {
        Reporting {
            peers,
            consensus,
            timeout,
        }
    }
}

#[tonic::async_trait]
impl Reporter for Reporting {
    async fn report_touches(&self, leader: NodeId, node: PeerNode, touches: Vec<(SessionId, u64)>) -> bool {
        touch::report(&self.peers, leader, &node, touches, self.timeout).await
    }

    async fn gather_evidence(&self) -> (usize, HashMap<SessionId, MergedEvidence>) {
        evidence::gather(&self.peers, &self.consensus, self.timeout).await
    }
}

/// Runs futures concurrently and collects their outputs (not those of
/// futures that panicked).
async fn join_all<F: std::future::Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
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
