//! openraft's three calls, AppendEntries, Vote and InstallSnapshot: the
//! client half (openraft's network: [`Network`], one [`Connection`] per
//! peer) and the server half (what this member does when a leader calls).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_proto::peer::Payload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, encode, PeerError, PeerRpc, Peers};
use crate::consensus::{Consensus, TypeConfig};
use crate::state::{NodeId, PeerNode};

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    /// The channels.
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
    client: Result<PeerRpc, PeerError>,
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
    mut client: PeerRpc,
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
            // The transport's causes say why (a refused certificate, say).
            let why = match std::error::Error::source(&status) {
                Some(cause) => format!("{}: {}", status.message(), crate::tls::error_chain(cause)),
                None => status.message().to_string(),
            };
            peers.outcome(target, Some(&why));
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
    ) -> Result<(PeerRpc, Payload), RPCError<NodeId, PeerNode, RaftError<NodeId, E>>> {
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
        let answer = result.unwrap_or_else(|e| Err(RPCError::Network(NetworkError::new(&e))))?;
        if let AppendEntriesResponse::HigherVote(vote) = &answer {
            sane_answer(vote)?;
        }
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let (client, payload) = self.prepare(&rpc)?;
        let (peers, timeout) = (self.peers.clone(), option.hard_ttl());
        let answer: InstallSnapshotResponse<NodeId> = call(
            client,
            peers,
            self.target,
            Method::InstallSnapshot,
            payload,
            timeout,
        )
        .await?;
        sane_answer(&answer.vote)?;
        Ok(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let (client, payload) = self.prepare(&rpc)?;
        let (peers, timeout) = (self.peers.clone(), option.hard_ttl());
        let answer: VoteResponse<NodeId> =
            call(client, peers, self.target, Method::Vote, payload, timeout).await?;
        sane_answer(&answer.vote)?;
        Ok(answer)
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }
}

/// A peer's answer whose vote is impossible is a failed call: openraft
/// would otherwise step down and adopt it.
fn sane_answer<E: std::error::Error>(
    vote: &openraft::Vote<NodeId>,
) -> Result<(), RPCError<NodeId, PeerNode, RaftError<NodeId, E>>> {
    super::raft_input::answer_vote(vote).map_err(|why| {
        tracing::warn!(%why, "refused a peer's answer");
        RPCError::Network(NetworkError::new(&why))
    })
}

/// The server half of AppendEntries: contact counts when the leader's call
/// arrives, not when a big append is flushed, so a slow disk does not cut
/// a follower off.
pub(crate) async fn append_entries(
    consensus: &Consensus,
    req: AppendEntriesRequest<TypeConfig>,
) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
    if req.vote.leader_id().term >= consensus.raft.metrics().borrow().current_term {
        consensus.contact.leader_called();
    }
    consensus.raft.append_entries(req).await
}

/// The server half of InstallSnapshot. openraft takes chunks outside its
/// core and the leader sends nothing else meanwhile, so a follower
/// receiving (or installing) a big snapshot would hear no leader for
/// seconds and stand for election. While a chunk is handled, the core hears
/// the leader's vote every Raft heartbeat interval instead: an empty
/// AppendEntries from the very start of the log, which changes nothing but
/// refreshes the leader's lease.
pub(crate) struct SnapshotLease {
    every: Duration,
    /// When a chunk last refreshed the leader's lease here.
    refreshed: Arc<Mutex<Option<Instant>>>,
}

impl SnapshotLease {
    /// Refreshes every `raft_heartbeat`.
    pub fn new(raft_heartbeat: Duration) -> Self {
        SnapshotLease {
            every: raft_heartbeat,
            refreshed: Default::default(),
        }
    }

    /// Hands a chunk to openraft, keeping the leader's lease meanwhile.
    pub async fn install(
        &self,
        consensus: &Consensus,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        consensus.contact.leader_called();
        let keepalive = {
            let (raft, refreshed, every) = (consensus.raft.clone(), self.refreshed.clone(), self.every);
            let vote = req.vote;
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                loop {
                    interval.tick().await;
                    // Chunks come faster than heartbeats: one refresh per interval.
                    let due = {
                        let mut last = refreshed.lock().unwrap_or_else(|p| p.into_inner());
                        let due = last.is_none_or(|t| t.elapsed() >= every);
                        if due {
                            *last = Some(Instant::now());
                        }
                        due
                    };
                    if !due {
                        continue;
                    }
                    let alive = AppendEntriesRequest::<TypeConfig> {
                        vote,
                        prev_log_id: None,
                        leader_commit: None,
                        entries: Vec::new(),
                    };
                    // Not awaited: while a snapshot is being installed the
                    // core answers only afterwards, but it takes the lease
                    // on arrival.
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let _ = raft.append_entries(alive).await;
                    });
                }
            })
        };
        let result = consensus.raft.install_snapshot(req).await;
        keepalive.abort();
        result
    }
}
