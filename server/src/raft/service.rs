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
use crate::state::Command;

/// Serves peers.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// A service for this node.
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
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
        let leader_term = req.vote.leader_id().term;
        let result = self.node.raft.append_entries(req).await;
        if result.is_ok() && leader_term >= self.node.raft.metrics().borrow().current_term {
            self.node.note_leader_contact();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: VoteRequest<NodeId> = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.node.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref()).map_err(bad_payload)?;
        self.node.note_leader_contact();
        reply(&self.node.raft.install_snapshot(req).await)
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
        let _ = self.node.reported.send(at);
        reply(&true)
    }

    /// How long ago this node applied each named session's latest heartbeat.
    async fn notes(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ids: Vec<u64> = decode(request.get_ref()).map_err(bad_payload)?;
        let notes = self.node.shared.notes();
        let ages: Vec<(u64, u64)> = ids
            .into_iter()
            .filter_map(|id| notes.get(&id).map(|t| (id, t.elapsed().as_millis() as u64)))
            .collect();
        reply(&ages)
    }
}
