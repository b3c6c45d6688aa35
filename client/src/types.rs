//! The value types of the znode API (stat, create modes, error codes,
//! event types, watch modes), owned by the client so applications never
//! depend on the wire format. Their conversions to and from the proto types
//! live in `convert.rs`, private to the crate.

use std::fmt;

use ensemble_proto::{SessionId, Zxid};

/// A znode's metadata, as ZooKeeper's Stat: what a version check or a
/// fencing decision needs, without reading the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// The zxid of the change that created the znode.
    pub czxid: Zxid,
    /// The zxid of the last change of the znode's data.
    pub mzxid: Zxid,
    /// The zxid of the last change of the znode's children.
    pub pzxid: Zxid,
    /// Creation time, milliseconds since the Unix epoch (the leader's clock).
    pub ctime: i64,
    /// Last data change, milliseconds since the Unix epoch (the leader's clock).
    pub mtime: i64,
    /// Data changes so far: what `set` and `delete` check against.
    pub version: i32,
    /// Child changes so far.
    pub cversion: i32,
    /// ACL changes so far: what `set_acl` checks against.
    pub aversion: i32,
    /// The session an ephemeral znode lives and dies with; `None` for a
    /// persistent znode (ZooKeeper's `0`), so no session id can be mistaken
    /// for "nobody".
    pub ephemeral_owner: Option<SessionId>,
    /// Length of the data in bytes.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
}

/// How `create` makes a znode: whether it dies with the session and whether
/// the parent's counter is appended to its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CreateMode {
    /// Lives until deleted.
    #[default]
    Persistent,
    /// Deleted when the creating session ends.
    Ephemeral,
    /// Persistent, with a 10-digit counter appended to the name.
    PersistentSequential,
    /// Ephemeral, with a 10-digit counter appended to the name.
    EphemeralSequential,
}

impl CreateMode {
    /// Whether the parent's counter is appended: the path is then checked
    /// with its suffix in place, as the server checks it.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential | CreateMode::EphemeralSequential
        )
    }
}

/// Why a call failed, named as ZooKeeper names it (shared with the server).
pub use ensemble_proto::ErrorCode;

/// What changed, in a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// No change (never sent for a change; what an unknown type reads as).
    None,
    /// The znode was created.
    NodeCreated,
    /// The znode was deleted.
    NodeDeleted,
    /// The znode's data was set.
    NodeDataChanged,
    /// A child was created or deleted.
    NodeChildrenChanged,
    /// The node's history no longer reaches back to the client's zxid:
    /// persistent-watch events may have been missed; re-read what you watch.
    Resync,
}

impl EventType {
    /// ZooKeeper's name of the type (`NODE_CREATED`, …), as tools print it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::None => "NONE",
            EventType::NodeCreated => "NODE_CREATED",
            EventType::NodeDeleted => "NODE_DELETED",
            EventType::NodeDataChanged => "NODE_DATA_CHANGED",
            EventType::NodeChildrenChanged => "NODE_CHILDREN_CHANGED",
            EventType::Resync => "RESYNC",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of watch, as `remove_watches` names which to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchMode {
    /// One-shot: the znode's creation, deletion or data change.
    Data,
    /// One-shot: the znode's children change, or it is deleted.
    Children,
    /// Every change of the znode, until removed.
    Persistent,
    /// Creation, deletion and data change of the znode and every
    /// descendant, until removed.
    PersistentRecursive,
}

/// A watch event as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// What changed.
    pub kind: EventType,
    /// The znode it changed on, under the client's base path.
    pub path: String,
    /// The zxid of the change (for `Resync`: the node's applied zxid), so
    /// events can be ordered against replies.
    pub zxid: Zxid,
}
