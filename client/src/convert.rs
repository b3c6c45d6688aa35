//! Conversions between the client's public types and the proto types. They
//! are the only place the two meet, so the wire format can change without
//! changing the client's API; everything here is private to the crate.

use ensemble_proto::v1 as pb;
use ensemble_proto::{SessionId, Zxid};

use crate::status::{Member, NodeStatus, Role};
use crate::types::{CreateMode, ErrorCode, EventType, Stat, WatchMode};

impl From<pb::Stat> for Stat {
    fn from(s: pb::Stat) -> Self {
        Stat {
            czxid: Zxid(s.czxid),
            mzxid: Zxid(s.mzxid),
            pzxid: Zxid(s.pzxid),
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: (s.ephemeral_owner != 0).then_some(SessionId(s.ephemeral_owner)),
            data_length: s.data_length,
            num_children: s.num_children,
        }
    }
}

/// A stat the server left out reads as all zeros, as before.
pub(crate) fn stat(s: Option<pb::Stat>) -> Stat {
    s.unwrap_or_default().into()
}

impl From<CreateMode> for pb::CreateMode {
    fn from(m: CreateMode) -> Self {
        match m {
            CreateMode::Persistent => pb::CreateMode::Persistent,
            CreateMode::Ephemeral => pb::CreateMode::Ephemeral,
            CreateMode::PersistentSequential => pb::CreateMode::PersistentSequential,
            CreateMode::EphemeralSequential => pb::CreateMode::EphemeralSequential,
        }
    }
}

/// The code a reply on the stream carries; one this client does not know
/// reads as `SYSTEM_ERROR`.
pub(crate) fn error_code(raw: i32) -> ErrorCode {
    ErrorCode::from_wire(raw).unwrap_or(ErrorCode::SystemError)
}

/// The type of an event on the stream; one this client does not know
/// reads as `None` (it fires no watch).
pub(crate) fn event_type(raw: i32) -> EventType {
    match pb::EventType::try_from(raw) {
        Ok(pb::EventType::NodeCreated) => EventType::NodeCreated,
        Ok(pb::EventType::NodeDeleted) => EventType::NodeDeleted,
        Ok(pb::EventType::NodeDataChanged) => EventType::NodeDataChanged,
        Ok(pb::EventType::NodeChildrenChanged) => EventType::NodeChildrenChanged,
        Ok(pb::EventType::Resync) => EventType::Resync,
        Ok(pb::EventType::None) | Err(_) => EventType::None,
    }
}

impl From<WatchMode> for pb::WatchMode {
    fn from(m: WatchMode) -> Self {
        match m {
            WatchMode::Data => pb::WatchMode::Data,
            WatchMode::Children => pb::WatchMode::Children,
            WatchMode::Persistent => pb::WatchMode::Persistent,
            WatchMode::PersistentRecursive => pb::WatchMode::PersistentRecursive,
        }
    }
}

impl From<pb::StatusResponse> for NodeStatus {
    fn from(s: pb::StatusResponse) -> Self {
        NodeStatus {
            node_id: s.node_id,
            role: Role::from_name(&s.role),
            leader_id: (s.leader_id != 0).then_some(s.leader_id),
            term: s.term,
            last_log_zxid: Zxid(s.last_log_index),
            commit_zxid: Zxid(s.commit_index),
            applied_zxid: Zxid(s.applied_index),
            snapshot_zxid: Zxid(s.snapshot_index),
            purged_zxid: Zxid(s.purged_index),
            session_count: s.session_count,
            znode_count: s.znode_count,
            client_addr: s.client_addr,
            members: s
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    client_addr: m.client_addr,
                    peer_addr: m.peer_addr,
                })
                .collect(),
            digest: s.digest,
            ready: s.ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persistent_znode_has_no_owner() {
        let s = stat(Some(pb::Stat {
            czxid: 5,
            ephemeral_owner: 0,
            ..Default::default()
        }));
        assert_eq!((s.czxid, s.ephemeral_owner), (Zxid(5), None));
        let e: Stat = pb::Stat {
            ephemeral_owner: 0x1a0000,
            ..Default::default()
        }
        .into();
        assert_eq!(e.ephemeral_owner, Some(SessionId(0x1a0000)));
    }

    #[test]
    fn codes_keep_zookeepers_names() {
        assert_eq!(error_code(0), ErrorCode::SystemError, "an error reply saying OK");
        assert_eq!(error_code(99), ErrorCode::SystemError);
        assert_eq!(event_type(5).as_str(), pb::EventType::Resync.as_str_name());
        assert_eq!(event_type(42), EventType::None);
    }
}
