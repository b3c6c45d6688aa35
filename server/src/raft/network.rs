//! The peer network client: one cached tonic channel per peer, used by
//! openraft for Raft RPCs and by this node for forwarding writes and session
//! touches to the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Peers {
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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        Connection {
            target,
            client: self.peers.client(target, &node.peer_addr),
        }
    }
}

/// openraft's connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Result<PeerClient<Channel>, PeerError>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(status) => return Err(RPCError::Network(NetworkError::new(&status))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
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
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
