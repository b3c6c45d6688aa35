//! A member's view of itself and the cluster (the `Status` call), asked
//! without a session: what operators' tools and tests need to know who
//! leads, how far each member has applied the log, and whether it is ready.

use std::fmt;
use std::time::Duration;

use ensemble_proto::v1 as pb;
use ensemble_proto::Zxid;

use crate::endpoints::channel;
use crate::error::{Error, Result};
use crate::options::TlsOptions;

/// A member's Raft role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Proposes every write.
    Leader,
    /// Replicates the leader's log and serves clients.
    Follower,
    /// Asking for votes: no leader known.
    Candidate,
    /// Replicates without a vote (joining the cluster).
    Learner,
    /// A role this client does not know, as the member named it.
    Other(String),
}

impl Role {
    pub(crate) fn from_name(name: &str) -> Role {
        match name {
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "candidate" => Role::Candidate,
            "learner" => Role::Learner,
            other => Role::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Other(name) => name,
        })
    }
}

/// One member of the cluster, as another member lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where the other members reach it.
    pub peer_addr: String,
}

/// One member's view of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The answering member's node id.
    pub node_id: u64,
    /// Its Raft role.
    pub role: Role,
    /// The leader it knows of, if any.
    pub leader_id: Option<u64>,
    /// Its Raft term.
    pub term: u64,
    /// The zxid of the newest entry in its log.
    pub last_log_zxid: Zxid,
    /// The newest commit zxid it knows of.
    pub commit_zxid: Zxid,
    /// How far it has applied the log.
    pub applied_zxid: Zxid,
    /// The zxid of its newest snapshot.
    pub snapshot_zxid: Zxid,
    /// The zxid of the newest entry purged from its log.
    pub purged_zxid: Zxid,
    /// Sessions it knows of.
    pub session_count: u64,
    /// Znodes in its tree.
    pub znode_count: u64,
    /// Where clients reach it.
    pub client_addr: String,
    /// Every member, with its addresses.
    pub members: Vec<Member>,
    /// A hash of the tree and the session table at `applied_zxid`: equal on
    /// members that applied the same zxid. 0 unless asked for.
    pub digest: u64,
    /// In touch with a leader and the majority, and applied up to the
    /// commit zxid: it will serve sessions.
    pub ready: bool,
}

/// Asks one member for its status.
pub async fn node_status(endpoint: &str, timeout: Duration) -> Result<NodeStatus> {
    node_status_with(endpoint, timeout, false).await
}

/// Asks one member for its status, with a digest of its whole state if
/// `with_digest` (it costs the member a pass over its state).
pub async fn node_status_with(endpoint: &str, timeout: Duration, with_digest: bool) -> Result<NodeStatus> {
    node_status_tls(endpoint, timeout, with_digest, None).await
}

/// [`node_status_with`], over TLS when `tls` is set: a cluster with TLS on
/// answers status calls only over TLS.
pub async fn node_status_tls(
    endpoint: &str,
    timeout: Duration,
    with_digest: bool,
    tls: Option<&TlsOptions>,
) -> Result<NodeStatus> {
    let mut c = channel(endpoint, timeout, tls)?;
    let mut req = tonic::Request::new(pb::StatusRequest { with_digest });
    req.set_timeout(timeout);
    match c.status(req).await {
        Ok(r) => Ok(r.into_inner().into()),
        Err(status) if Error::is_transport(&status) => {
            match crate::tls_probe::diagnose(endpoint.trim(), tls, &status).await {
                Some(mismatch) => Err(mismatch),
                None => Err(Error::from_status(status)),
            }
        }
        Err(status) => Err(Error::from_status(status)),
    }
}
