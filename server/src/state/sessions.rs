//! The replicated session table: which sessions exist, their secrets,
//! timeouts and ephemeral znodes. No deadlines live here: time is node-local
//! and belongs to the leader's deadlines (`crate::liveness`).

use std::collections::{BTreeMap, BTreeSet};

use ensemble_proto::SessionId;
use serde::{Deserialize, Serialize};

use super::acl::{Identity, MAX_IDENTITIES};

/// Whether `a` and `b` are equal, in time that does not depend on where
/// the first difference is (for comparing secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The bytes that prove a client owns a session: made at random by the
/// node that proposed the session, carried in the log, checked on every
/// call. Never printed: its `Debug` is redacted, so it stays out of logs.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(#[serde(with = "serde_bytes")] Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// The bytes, to hand to the session's client and nobody else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on
    /// where the first difference is (no timing oracle for guessing it).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One open session, as every replica knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Presented by every call of the session's client.
    pub secret: Secret,
    /// The negotiated timeout.
    pub timeout_ms: u32,
    /// Paths of the ephemeral znodes this session owns, sorted, so expiry
    /// deletes them in the same order everywhere.
    pub ephemerals: BTreeSet<String>,
    /// Who the session is, for ACL checks: proven when added, kept until
    /// the session ends.
    pub identities: Vec<Identity>,
}

/// All open sessions by id.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    sessions: BTreeMap<SessionId, Session>,
}

impl SessionTable {
    /// A table of these sessions (a snapshot's, as read).
    pub(super) fn from_sessions(sessions: BTreeMap<SessionId, Session>) -> SessionTable {
        SessionTable { sessions }
    }

    /// The session with this id, if it is open.
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Whether the session is open.
    pub fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every open session's id and timeout.
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    pub(super) fn insert(&mut self, id: SessionId, session: Session) {
        self.sessions.insert(id, session);
    }

    pub(super) fn remove(&mut self, id: SessionId) -> Option<Session> {
        self.sessions.remove(&id)
    }

    pub(super) fn add_ephemeral(&mut self, id: SessionId, path: String) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.ephemerals.insert(path);
        }
    }

    /// Adds an identity; false if the session already holds the most
    /// allowed. Holding it already is a success.
    pub(super) fn add_identity(&mut self, id: SessionId, identity: Identity) -> Option<bool> {
        let s = self.sessions.get_mut(&id)?;
        if s.identities.contains(&identity) {
            return Some(true);
        }
        if s.identities.len() >= MAX_IDENTITIES {
            return Some(false);
        }
        s.identities.push(identity);
        Some(true)
    }

    pub(super) fn remove_ephemeral(&mut self, id: SessionId, path: &str) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.ephemerals.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_only_itself_and_never_prints() {
        let s = Secret::new(vec![1, 2, 3, 4]);
        assert!(s.matches(&[1, 2, 3, 4]));
        assert!(!s.matches(&[1, 2, 3, 5]));
        assert!(!s.matches(&[1, 2, 3]));
        assert!(!s.matches(&[]));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let session = Session {
            secret: s,
            timeout_ms: 1,
            ephemerals: Default::default(),
            identities: vec![],
        };
        assert!(!format!("{session:?}").contains("1, 2"));
    }
}
