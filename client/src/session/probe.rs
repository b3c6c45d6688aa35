//! Probes: unary heartbeats to the nodes the session is not on. Each node
//! records that the client lives, even one that refuses to serve it (cut
//! off), so a frozen node (say, a paused leader) does not cost a live
//! session its deadline. Unlike the stream, a unary call must prove the
//! session, so probes carry the secret (`proof_header`).

use crate::endpoints::Node;
use ensemble_proto::v1 as pb;
use tracing::debug;

use super::shared::Shared;

/// Sends a unary heartbeat to every node but `skip`, not waiting for answers.
pub(super) fn probe_others(shared: &Shared, clients: &[Node], skip: Option<usize>) {
    debug!("probing the other nodes");
    for (_, c) in clients.iter().enumerate().filter(|(i, _)| Some(*i) != skip) {
        let mut c = c.clone();
        let mut req = tonic::Request::new(pb::HeartbeatRequest {
            header: Some(shared.proof_header()),
        });
        req.set_timeout(shared.session.timeout / 3);
        tokio::spawn(async move {
            let _ = c.heartbeat(req).await;
        });
    }
}
