//! What a change to the tree looks like to watchers: produced by apply, in
//! log order, and fired by `crate::watches` on the node that applied it.

use serde::{Deserialize, Serialize};

/// The kind of change, as ZooKeeper's watch event types.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Created,
    Deleted,
    DataChanged,
    ChildrenChanged,
}

/// One change to one znode.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub zxid: u64,
    pub path: String,
    pub kind: ChangeKind,
}
