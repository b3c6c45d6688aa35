//! The peer gRPC service: hands incoming Raft messages to the local openraft
//! node, proposes writes that followers forward, and takes touch reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_proto::peer::peer_server::Peer;
use ensemble_proto::peer::Payload;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::network::{decode, encode};
use super::{NodeId, TypeConfig};
use crate::api::proposer::Proposed;
use crate::node::Node;
use crate::sessions::manager::Report;
use crate::state::Command;

/// Serves peers.
pub struct PeerService {
    node: Arc<Node>,
    /// When a snapshot chunk last refreshed the leader's lease here.
    lease_refreshed: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl PeerService {
    /// A service for this node.
    pub fn new(node: Arc<Node>) -> Self {
        PeerService {
            node,
            lease_refreshed: Default::default(),
        }
    }
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("can not encode reply: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request.get_ref()).map_err(bad_payload)?;
        // Contact counts when the leader's call arrives, not when a big
        // append is flushed: a slow disk does not cut a follower off.
        if req.vote.leader_id().term >= self.node.raft.metrics().borrow().current_term {
            self.node.note_leader_contact();
        }
        reply(&self.node.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: VoteRequest<NodeId> = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.node.raft.vote(req).await)
    }

    /// A chunk of the leader's snapshot. openraft takes chunks outside its
    /// core and the leader sends nothing else meanwhile, so a follower
    /// receiving (or installing) a big snapshot would hear no leader for
    /// seconds and stand for election. While a chunk is handled, the core
    /// hears the leader's vote every heartbeat interval instead: an empty
    /// AppendEntries from the very start of the log, which changes nothing
    /// but refreshes the leader's lease.
    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref()).map_err(bad_payload)?;
        self.node.note_leader_contact();
        let keepalive = {
            let node = self.node.clone();
            let last = self.lease_refreshed.clone();
            let vote = req.vote;
            tokio::spawn(async move {
                let mut every = tokio::time::interval(node.config.heartbeat);
                loop {
                    every.tick().await;
                    // Chunks come faster than heartbeats: one refresh per interval.
                    let due = {
                        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                        let due = last.is_none_or(|t| t.elapsed() >= node.config.heartbeat);
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
                    let raft = node.raft.clone();
                    tokio::spawn(async move {
                        let _ = raft.append_entries(alive).await;
                    });
                }
            })
        };
        let result = self.node.raft.install_snapshot(req).await;
        keepalive.abort();
        reply(&result)
    }

    /// Proposes a follower's commands in order; one result per command.
    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let commands: Vec<Command> = decode(request.get_ref()).map_err(bad_payload)?;
        debug!(count = commands.len(), "forwarded commands");
        let receivers: Vec<_> = commands
            .into_iter()
            .map(|c| self.node.proposer.enqueue(c))
            .collect();
        let mut results: Vec<Proposed> = Vec::with_capacity(receivers.len());
        for rx in receivers {
            results.push(rx.await);
        }
        reply(&results)
    }

    /// Another node's clients touched these sessions (id, age in ms).
    async fn touch(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let touches: Vec<(u64, u64)> = decode(request.get_ref()).map_err(bad_payload)?;
        if !self.node.is_leader() {
            return reply(&false);
        }
        let now = Instant::now();
        let at = touches
            .into_iter()
            .map(|(id, age)| (id, now.checked_sub(Duration::from_millis(age)).unwrap_or(now)))
            .collect();
        let _ = self.node.reported.send(Report::Touches(at));
        reply(&true)
    }

    /// A new leader's report round: the freshest sign of life this node
    /// holds of every session, as ages in ms (the request names the asker).
    async fn evidence(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let asker: NodeId = decode(request.get_ref()).map_err(bad_payload)?;
        debug!(asker, "report round");
        reply(&self.node.evidence())
    }
}
