//! What a change to the tree looks like to watchers: produced by apply, in
//! log order, and fired by `crate::api::watches` on the member that applied it.

use ensemble_proto::Zxid;
use serde::{Deserialize, Serialize};

use super::acl::AclEntry;

/// The kind of change, as ZooKeeper's watch event types.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The znode was created.
    Created,
    /// The znode was deleted.
    Deleted,
    /// Its data was replaced.
    DataChanged,
    /// A child was created or deleted.
    ChildrenChanged,
}

/// One change to one znode.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The entry that made it.
    pub zxid: Zxid,
    /// The znode it happened to.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The znode's ACL right after the write that made the change (for a
    /// znode the write deleted: the ACL it had when deleted). A persistent
    /// watch hears of the change only if its session may READ with it.
    #[serde(default)]
    pub acl: Vec<AclEntry>,
}

/// An ACL that lets nobody but the super user READ: what a change carries
/// when its znode's ACL can not be known (fail closed).
pub fn unknown_acl() -> Vec<AclEntry> {
    vec![AclEntry {
        perms: 0,
        scheme: "world".into(),
        id: "anyone".into(),
    }]
}
