//! The replicated session table: which sessions exist, their secrets,
//! timeouts and ephemeral znodes. No deadlines live here: time is node-local
//! and belongs to the leader's expiry tracker (`crate::sessions`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One open session, as every replica knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Presented on resume; made by the proposing node, carried in the log.
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
    /// The negotiated timeout.
    pub timeout_ms: u32,
    /// Paths of the ephemeral znodes this session owns, sorted, so expiry
    /// deletes them in the same order everywhere.
    pub ephemerals: BTreeSet<String>,
}

/// All open sessions by id.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    sessions: BTreeMap<u64, Session>,
}

impl SessionTable {
    /// The session with this id, if it is open.
    pub fn get(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Whether the session is open.
    pub fn contains(&self, id: u64) -> bool {
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
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    pub(super) fn insert(&mut self, id: u64, session: Session) {
        self.sessions.insert(id, session);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Session> {
        self.sessions.remove(&id)
    }

    pub(super) fn add_ephemeral(&mut self, id: u64, path: String) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.ephemerals.insert(path);
        }
    }

    pub(super) fn remove_ephemeral(&mut self, id: u64, path: &str) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.ephemerals.remove(path);
        }
    }
}
