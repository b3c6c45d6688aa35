//! Operator-facing views of a node: its role, log position and load, and
//! the `healthcheck` command that containers run.

pub mod health;

use ensemble_proto::v1 as pb;
use openraft::ServerState;

use crate::node::Node;

/// One node's view of itself and the cluster.
pub fn status(node: &Node, with_digest: bool) -> pb::StatusResponse {
    let m = node.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "down",
    };
    let members = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| pb::Member {
            id: *id,
            client_addr: n.client_addr.clone(),
            peer_addr: n.peer_addr.clone(),
        })
        .collect();
    let state = node.shared.read();
    let commit_index = node.committed.load(std::sync::atomic::Ordering::Relaxed);
    let ready = node.in_quorum() && state.zxid() >= commit_index;
    pb::StatusResponse {
        node_id: node.id,
        role: role.to_string(),
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: state.zxid(),
        session_count: state.sessions.len() as u64,
        znode_count: state.tree.len() as u64,
        client_addr: node.config.client_addr.clone(),
        members,
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        digest: if with_digest { state.digest() } else { 0 },
        commit_index,
        ready,
    }
}
