//! Leader watch: a follower keeps one idle stream open to the leader. The
//! leader never answers it; when it breaks (the leader's process died and
//! its kernel reset the connection, or it refuses new ones), the follower
//! tells consensus at once (`consensus::failover`) rather than waiting for
//! silence to reach an election timeout. A frozen or cut-off leader breaks
//! nothing and is left to the timeout.

use std::time::Duration;

use tokio_stream::Stream;
use tracing::debug;

use super::{encode, Peers};
use crate::consensus::{Consensus, Tasks};

/// Pause before watching again after a failure, so a leader that is gone
/// is not dialled in a tight loop.
const RETRY: Duration = Duration::from_millis(50);

/// The stream the leader serves: it never yields.
pub type Idle =
    std::pin::Pin<Box<dyn Stream<Item = Result<ensemble_proto::peer::Payload, tonic::Status>> + Send>>;

/// The server half.
pub(crate) fn serve() -> Idle {
    Box::pin(tokio_stream::pending())
}

/// The client half: runs for the life of the member, owned by `tasks`.
pub(crate) fn start(peers: Peers, consensus: Consensus, tasks: &Tasks) {
    tasks.lifelong("leader-watch", async move {
        let mut metrics = consensus.raft.metrics();
        loop {
            let leader = {
                let seen = metrics
                    .wait_for(|m| m.current_leader.is_some_and(|l| l != consensus.id))
                    .await;
                match seen {
                    Ok(m) => m.current_leader,
                    Err(_) => return,
                }
            };
            let Some(leader) = leader else { continue };
            let Some(node) = consensus.member(leader) else {
                tokio::time::sleep(RETRY).await;
                continue;
            };
            let broke = async {
                let mut client = peers.client(leader, &node.peer_addr).ok()?;
                let payload = encode(&consensus.id).ok()?;
                let stream = client.watch_leader(payload).await;
                let mut stream = match stream {
                    Ok(s) => s.into_inner(),
                    Err(_) => return Some(()),
                };
                // Only a failure counts; the leader never sends.
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => return Some(()),
                    }
                }
            };
            let mut changes = metrics.clone();
            let replaced = async move {
                let _ = changes.wait_for(|m| m.current_leader != Some(leader)).await;
            };
            tokio::select! {
                b = broke => {
                    if b.is_some() && metrics.borrow().current_leader == Some(leader) {
                        debug!(leader, "the stream to the leader broke");
                        consensus.contact.leader_gone();
                    }
                    tokio::time::sleep(RETRY).await;
                }
                _ = replaced => {}
            }
        }
    });
}
