//! The peer network client: one cached tonic channel per peer, used by
//! openraft for Raft RPCs and by this node for forwarding writes and session
//! touches to the leader.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::peer::peer_client::PeerClient;
use ensemble_proto::peer::Payload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use super::{NodeId, PeerNode, TypeConfig};

/// Largest peer message: snapshot chunks and big batches must fit.
pub const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;

/// Errors of a peer call outside openraft (forwarding, touches).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} has an invalid address: {1}")]
    BadAddress(NodeId, String),
    #[error("peer call failed: {0}")]
    Transport(#[from] tonic::Status),
    #[error("peer message could not be encoded or decoded: {0}")]
    Codec(#[from] bincode::Error),
}

/// Cached channels to every peer, by node id.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    /// Peers whose last Raft call failed, to log each change once.
    down: Arc<Mutex<HashSet<NodeId>>>,
    /// When each peer last answered a Raft call.
    answered: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Peers {
    /// Records how a Raft call to a peer went; logs when a peer goes
    /// unreachable and when it answers again.
    fn outcome(&self, id: NodeId, failure: Option<&dyn std::fmt::Display>) {
        if failure.is_none() {
            self.answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Instant::now());
        }
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            Some(why) if down.insert(id) => warn!(peer = id, %why, "peer unreachable; retrying"),
            None if down.remove(&id) => info!(peer = id, "peer reachable again"),
            _ => {}
        }
    }

    /// How many of these peers answered a Raft call within `within`.
    pub fn answered_within(&self, ids: impl Iterator<Item = NodeId>, within: Duration) -> usize {
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        ids.filter(|id| answered.get(id).is_some_and(|at| at.elapsed() <= within))
            .count()
    }

    /// A client for the peer; reuses its channel unless its address changed.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<PeerClient<Channel>, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, ch)) = channels.get(&id) {
            if a == addr {
                return Ok(Self::wrap(ch.clone()));
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| PeerError::BadAddress(id, addr.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        channels.insert(id, (addr.to_string(), ch.clone()));
        Ok(Self::wrap(ch))
    }

    fn wrap(ch: Channel) -> PeerClient<Channel> {
        PeerClient::new(ch)
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

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    pub peers: Peers,
    /// How long the leader waits before calling an unreachable peer again.
    /// Short (one Raft heartbeat): a follower that restarts must hear from
    /// the leader before its election timeout, or it stands for election
    /// and unseats a healthy leader (openraft's default is 500 ms, as long
    /// as our shortest election timeout).
    pub retry: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        Connection {
            target,
            client: self.peers.client(target, &node.peer_addr),
            peers: self.peers.clone(),
            retry: self.retry,
            inflight: None,
        }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<PeerClient<Channel>, PeerError>,
    peers: Peers,
    retry: Duration,
    inflight: Option<InFlight>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>;

/// How long one Raft call may take on the wire: openraft's own limit, plus
/// time for its bytes (1 s per MiB: a loaded disk flushes a MiB in a few
/// hundred ms). openraft gives every AppendEntries one heartbeat interval,
/// whatever it carries; a big payload on a busy disk misses that, and a
/// follower far behind would then never catch up.
fn payload_timeout(hard_ttl: Duration, bytes: usize) -> Duration {
    hard_ttl + Duration::from_millis((bytes as u64 * 1000) >> 20)
}

/// The AppendEntries a connection has on the wire: openraft may stop
/// waiting for it (its time limit is one heartbeat interval), but the call
/// goes on, and openraft's retry of the same entries waits for it instead
/// of sending them again.
struct InFlight {
    /// The leader's vote, the previous log id and the last entry's id.
    key: String,
    task: tokio::task::JoinHandle<RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible>>,
}

/// One call to a peer, with its own time limit.
async fn call<Resp, E>(
    mut client: PeerClient<Channel>,
    peers: Peers,
    target: NodeId,
    method: Method,
    payload: Payload,
    timeout: Duration,
) -> RpcResult<Resp, E>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let mut request = tonic::Request::new(payload);
    request.set_timeout(timeout);
    let reply = match method {
        Method::AppendEntries => client.append_entries(request).await,
        Method::Vote => client.vote(request).await,
        Method::InstallSnapshot => client.install_snapshot(request).await,
    };
    let reply = match reply {
        Ok(r) => {
            peers.outcome(target, None);
            r.into_inner()
        }
        Err(status) => {
            peers.outcome(target, Some(&status.message()));
            if status.code() == tonic::Code::Unavailable {
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            return Err(RPCError::Network(NetworkError::new(&status)));
        }
    };
    let result: Result<Resp, RaftError<NodeId, E>> =
        decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl Connection {
    /// The channel and the encoded request of one call.
    #[allow(clippy::type_complexity)]
    fn prepare<Req: Serialize, E: std::error::Error>(
        &self,
        req: &Req,
    ) -> Result<(PeerClient<Channel>, Payload), RPCError<NodeId, PeerNode, RaftError<NodeId, E>>> {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok((client, payload))
    }
}

enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let key = format!(
            "{} {:?} {:?}",
            rpc.vote,
            rpc.prev_log_id,
            rpc.entries.last().map(|e| e.log_id)
        );
        if self.inflight.as_ref().is_none_or(|f| f.key != key) {
            let (client, payload) = self.prepare(&rpc)?;
            let timeout = payload_timeout(option.hard_ttl(), payload.data.len());
            let task = tokio::spawn(call(
                client,
                self.peers.clone(),
                self.target,
                Method::AppendEntries,
                payload,
                timeout,
            ));
            // A call for other entries may still be on the wire: it goes on
            // alone, and its answer is dropped.
            self.inflight = Some(InFlight { key, task });
        }
        let Some(inflight) = self.inflight.as_mut() else {
            return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(
                "no call in flight",
            ))));
        };
        // If openraft stops waiting here, the call stays in flight.
        let result = (&mut inflight.task).await;
        self.inflight = None;
        result.unwrap_or_else(|e| Err(RPCError::Network(NetworkError::new(&e))))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let (client, payload) = self.prepare(&rpc)?;
        let (peers, timeout) = (self.peers.clone(), option.hard_ttl());
        call(
            client,
            peers,
            self.target,
            Method::InstallSnapshot,
            payload,
            timeout,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let (client, payload) = self.prepare(&rpc)?;
        let (peers, timeout) = (self.peers.clone(), option.hard_ttl());
        call(client, peers, self.target, Method::Vote, payload, timeout).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }
}
