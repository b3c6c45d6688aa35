//! Evidence: a new leader's report round. Every member sends the evidence
//! it holds of every session (its apply marks and its clients' touches, as
//! ages on its own clock); the asker merges them (`liveness::evidence`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ensemble_proto::SessionId;
use tracing::debug;

use super::{decode, encode, join_all, Peers};
use crate::consensus::Consensus;
use crate::liveness::{Evidence, Liveness, MergedEvidence};
use crate::state::NodeId;

/// The client half: asks every other member at once; returns how many
/// voters answered within `timeout` and their evidence merged per session.
pub(crate) async fn gather(
    peers: &Peers,
    consensus: &Consensus,
    timeout: Duration,
) -> (usize, HashMap<SessionId, MergedEvidence>) {
    let mut merged: HashMap<SessionId, MergedEvidence> = HashMap::new();
    let Ok(payload) = encode(&consensus.id) else {
        return (0, merged);
    };
    let calls = consensus.others().into_iter().filter_map(|(id, node, voter)| {
        let mut client = peers.client(id, &node.peer_addr).ok()?;
        let mut req = tonic::Request::new(payload.clone());
        req.set_timeout(timeout);
        Some(async move {
            let reply = client.evidence(req).await;
            (voter, reply, Instant::now())
        })
    });
    let mut answered = 0;
    for (voter, reply, received) in join_all(calls).await {
        let Ok(reply) = reply else { continue };
        let Ok(evidence) = decode::<Vec<(SessionId, Evidence)>>(reply.get_ref()) else {
            continue;
        };
        answered += usize::from(voter);
        for (id, e) in evidence {
            merged.entry(id).or_default().add(&e, received);
        }
    }
    (answered, merged)
}

/// The server half: this member's evidence, whoever asks.
pub(crate) fn serve(liveness: &Liveness, asker: NodeId) -> Vec<(SessionId, Evidence)> {
    debug!(asker, "report round");
    liveness.evidence()
}
