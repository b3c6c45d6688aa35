//! What a member says of itself (the `Status` call): its role, log
//! position, load and readiness, and optionally a digest of its state.

use ensemble_proto::v1 as pb;
use openraft::ServerState;

use super::service::ClientService;

/// One member's view of itself and the cluster.
pub(super) fn status(svc: &ClientService, with_digest: bool) -> pb::StatusResponse {
    let consensus = &svc.consensus;
    let m = consensus.raft.metrics().borrow().clone();
    // A core that died (a panic, say) leaves its last role in the
    // metrics: say "down", never a role it no longer plays.
    let role = match m.state {
        _ if !consensus.core_running() => "down",
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
    let in_quorum = consensus.in_quorum();
    let state = consensus.replica.read();
    let commit_index = consensus.committed.load(std::sync::atomic::Ordering::Relaxed);
    let applied = state.zxid().0;
    pb::StatusResponse {
        node_id: consensus.id,
        role: role.to_string(),
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: applied,
        session_count: state.sessions.len() as u64,
        znode_count: state.tree.len() as u64,
        client_addr: svc.client_addr.clone(),
        members,
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        digest: if with_digest { state.digest() } else { 0 },
        commit_index,
        ready: in_quorum && applied >= commit_index,
    }
}
