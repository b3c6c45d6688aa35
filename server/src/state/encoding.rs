//! The state's bytes in a snapshot. A snapshot written by this version
//! starts with a format mark (`ZST2`); one without it was written before znodes had
//! ACLs and sessions identities, and is read with the layout of then
//! (every znode open to all, every session anonymous). An older snapshot's
//! first byte is the tag of an `Option` (0 or 1), so the two never mix.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_proto::SessionId;
use openraft::{LogId, StoredMembership};
use serde::Deserialize;

use super::machine::ZState;
use super::members::{NodeId, PeerNode};
use super::sessions::{Secret, Session, SessionTable};
use super::tree::{Stat, Tree, Znode};

/// Marks the current layout (with ACLs and identities).
const FORMAT: &[u8; 4] = b"ZST2";

impl ZState {
    /// The state as a snapshot holds it.
    pub fn encode(&self) -> bincode::Result<Vec<u8>> {
        let mut out = FORMAT.to_vec();
        bincode::serialize_into(&mut out, self)?;
        Ok(out)
    }

    /// A state from a snapshot of this version or an earlier one.
    pub fn decode(bytes: &[u8]) -> bincode::Result<ZState> {
        match bytes.strip_prefix(FORMAT) {
            Some(rest) => bincode::deserialize(rest),
            None => bincode::deserialize::<ZStateV1>(bytes).map(ZStateV1::upgrade),
        }
    }
}

/// The layout before ACLs and identities.
#[derive(Deserialize)]
struct ZStateV1 {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, PeerNode>,
    znodes: BTreeMap<String, ZnodeV1>,
    sessions: BTreeMap<SessionId, SessionV1>,
}

#[derive(Deserialize)]
struct ZnodeV1 {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    stat: Stat,
    children: BTreeSet<String>,
    child_seq: u64,
}

#[derive(Deserialize)]
struct SessionV1 {
    secret: Secret,
    timeout_ms: u32,
    ephemerals: BTreeSet<String>,
}

impl ZStateV1 {
    fn upgrade(self) -> ZState {
        let znodes = self.znodes.into_iter().map(|(path, z)| {
            let znode = Znode {
                data: z.data,
                stat: z.stat,
                children: z.children,
                child_seq: z.child_seq,
                acl: Vec::new(),
            };
            (path, znode)
        });
        let sessions = self.sessions.into_iter().map(|(id, s)| {
            let session = Session {
                secret: s.secret,
                timeout_ms: s.timeout_ms,
                ephemerals: s.ephemerals,
                identities: Vec::new(),
            };
            (id, session)
        });
        ZState {
            last_applied: self.last_applied,
            last_membership: self.last_membership,
            tree: Tree::from_znodes(znodes.collect()),
            sessions: SessionTable::from_sessions(sessions.collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct OldZnode {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        stat: Stat,
        children: BTreeSet<String>,
        child_seq: u64,
    }

    #[derive(Serialize)]
    struct OldSession {
        secret: Secret,
        timeout_ms: u32,
        ephemerals: BTreeSet<String>,
    }

    #[test]
    fn a_snapshot_from_before_acls_reads_as_open_znodes_and_anonymous_sessions() {
        let mut znodes = BTreeMap::new();
        znodes.insert(
            "/".to_string(),
            OldZnode {
                data: vec![],
                stat: Stat::default(),
                children: ["a".to_string()].into(),
                child_seq: 1,
            },
        );
        znodes.insert(
            "/a".to_string(),
            OldZnode {
                data: b"x".to_vec(),
                stat: Stat {
                    version: 3,
                    ..Stat::default()
                },
                children: BTreeSet::new(),
                child_seq: 0,
            },
        );
        let mut sessions = BTreeMap::new();
        sessions.insert(
            SessionId(7),
            OldSession {
                secret: Secret::new(vec![1, 2]),
                timeout_ms: 5000,
                ephemerals: BTreeSet::new(),
            },
        );
        let old = bincode::serialize(&(
            None::<LogId<NodeId>>,
            StoredMembership::<NodeId, PeerNode>::default(),
            znodes,
            sessions,
        ))
        .unwrap();
        let state = ZState::decode(&old).unwrap();
        let a = state.tree.get("/a").unwrap();
        assert_eq!(
            (a.data.as_slice(), a.stat.version, a.acl.len()),
            (&b"x"[..], 3, 0)
        );
        let s = state.sessions.get(SessionId(7)).unwrap();
        assert_eq!((s.timeout_ms, s.identities.len()), (5000, 0));
        // And the current layout round-trips.
        let again = ZState::decode(&state.encode().unwrap()).unwrap();
        assert_eq!(again.digest(), state.digest());
    }
}
