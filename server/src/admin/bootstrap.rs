//! The bootstrap policy: when a member initializes a new cluster. A
//! pristine cluster is initialized once, by its lowest-id member, with
//! every configured member, and only when every other member answers and
//! is pristine too. A member that has any Raft state never initializes
//! again, and neither does a member whose data directory was emptied while
//! its peers already form a cluster: it waits for the leader to bring it
//! up to date instead of starting a second cluster under the same ids.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{Fatal, InitializeError, RaftError};
use tracing::info;

use crate::config::Config;
use crate::consensus::Raft;
use crate::state::{NodeId, PeerNode};
use crate::tls::Tls;

/// How often the lowest member asks the others again while one is silent.
const ASK_AGAIN: Duration = Duration::from_millis(200);

/// Why bootstrap could not decide or act; the member stops on it.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// openraft could not say whether this member has Raft state.
    #[error("can not read the Raft state")]
    ReadState(#[source] Fatal<NodeId>),
    /// openraft refused to initialize the cluster.
    #[error("can not initialize the cluster")]
    Initialize(#[source] RaftError<NodeId, InitializeError<NodeId, PeerNode>>),
}

/// Runs the policy once for this member; returns when the member either
/// initialized the cluster or has nothing to do.
pub async fn bootstrap(config: Config, raft: Raft) -> Result<(), BootstrapError> {
    let initialized = raft.is_initialized().await.map_err(BootstrapError::ReadState)?;
    let lowest = config.members.keys().next().copied();
    if initialized || lowest != Some(config.id) {
        return Ok(());
    }
    let others: Vec<(NodeId, String)> = config
        .members
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(id, m)| (*id, m.client_addr.clone()))
        .collect();
    let mut told = false;
    loop {
        let mut silent = Vec::new();
        for (id, addr) in &others {
            match member_state(addr, config.tls.as_ref()).await {
                Some(true) => {
                    info!(
                        member = id,
                        "this member is empty but member {id} already belongs to a cluster: \
                         not initializing; waiting for the leader to bring this member up to date"
                    );
                    return Ok(());
                }
                Some(false) => {}
                None => silent.push(*id),
            }
        }
        if silent.is_empty() {
            break;
        }
        if !told {
            info!(waiting_for = ?silent, "a new cluster is initialized once every member answers");
            told = true;
        }
        tokio::time::sleep(ASK_AGAIN).await;
    }
    let members: BTreeMap<NodeId, PeerNode> = config.members.clone();
    info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    match raft.initialize(members).await {
        // Another call got there first: the cluster exists, as wanted.
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(BootstrapError::Initialize(e)),
    }
}

/// Whether the member at this client address belongs to a cluster (has a
/// membership); None if it does not answer.
async fn member_state(client_addr: &str, tls: Option<&Tls>) -> Option<bool> {
    let timeout = Duration::from_millis(500);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{client_addr}")).ok()?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.dialer()).ok()?;
    }
    let endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
    let channel = endpoint.connect().await.ok()?;
    let status = ensemble_proto::v1::ensemble_client::EnsembleClient::new(channel)
        .status(ensemble_proto::v1::StatusRequest { with_digest: false })
        .await
        .ok()?
        .into_inner();
    Some(!status.members.is_empty())
}
