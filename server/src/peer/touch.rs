//! Touch: a follower tells the leader which sessions its clients touched,
//! as ages in ms (never clock readings: clocks differ between machines).

use std::time::{Duration, Instant};

use ensemble_proto::SessionId;

use super::{decode, encode, Peers};
use crate::consensus::Consensus;
use crate::liveness::{Liveness, Report};
use crate::state::{NodeId, PeerNode};

/// The client half: true if the leader took the report.
pub(crate) async fn report(
    peers: &Peers,
    leader: NodeId,
    node: &PeerNode,
    touches: Vec<(SessionId, u64)>,
    timeout: Duration,
) -> bool {
    let Ok(mut client) = peers.client(leader, &node.peer_addr) else {
        return false;
    };
    let Ok(payload) = encode(&touches) else {
        return false;
    };
    let mut req = tonic::Request::new(payload);
    req.set_timeout(timeout);
    match client.touch(req).await {
        Ok(reply) => decode::<bool>(reply.get_ref()).unwrap_or(false),
        Err(_) => false,
    }
}

/// The server half: only the leader takes touches; it turns their ages
/// into instants on its own clock for the liveness loop.
pub(crate) fn serve(consensus: &Consensus, liveness: &Liveness, touches: Vec<(SessionId, u64)>) -> bool {
    if !consensus.is_leader() {
        return false;
    }
    let now = Instant::now();
    let at = touches
        .into_iter()
        .map(|(id, age)| (id, now.checked_sub(Duration::from_millis(age)).unwrap_or(now)))
        .collect();
    let _ = liveness.reports.send(Report::Touches(at));
    true
}
