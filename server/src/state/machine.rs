//! The deterministic state machine: applies one log entry's [`Batch`] to the
//! znode tree and the session table. Same log in, same state out: nothing here
//! reads a clock, a random source or anything node-local.

use openraft::{EntryPayload, LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use super::change::{Change, ChangeKind};
use super::command::{Batch, BatchOutcome, Command, Failure, Op, OpOutput, Outcome};
use super::error::ErrorCode;
use super::sessions::{Session, SessionTable};
use super::tree::{OpError, Tree, Undo};
use crate::raft::{NodeId, PeerNode, TypeConfig};
use ensemble_proto::path;

/// Session ids are `log index << SESSION_ID_SHIFT | position in the batch`.
pub const SESSION_ID_SHIFT: u32 = 16;
/// So a batch holds at most this many commands.
pub const MAX_BATCH: usize = 1 << SESSION_ID_SHIFT;

/// What an apply produced besides state, for node-local consumers: the
/// session tracker and the watches.
#[derive(Debug, Default)]
pub struct Effects {
    /// Sessions created or heartbeated: (id, timeout, zxid of the entry).
    pub touched: Vec<(u64, u32, u64)>,
    /// Sessions closed or expired by this entry.
    pub removed: Vec<u64>,
    /// Changes to the tree, in apply order.
    pub changes: Vec<Change>,
}

fn deleted(changes: &mut Vec<Change>, zxid: u64, p: &str) {
    changes.push(Change {
        zxid,
        path: p.to_string(),
        kind: ChangeKind::Deleted,
    });
    changes.push(Change {
        zxid,
        path: path::split(p).0.to_string(),
        kind: ChangeKind::ChildrenChanged,
    });
}

/// Everything a replica holds: the tree, the sessions, and where it stands in the log.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ZState {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, PeerNode>,
    pub tree: Tree,
    pub sessions: SessionTable,
}

impl ZState {
    /// The zxid of the newest applied entry (0 before any).
    pub fn zxid(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// A hash of the tree and the sessions: equal on replicas that applied
    /// the same entries. Deterministic for one build of the server.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (path, node) in self.tree.iter() {
            path.hash(&mut h);
            node.data.hash(&mut h);
            node.stat.hash(&mut h);
            node.child_seq.hash(&mut h);
        }
        for (id, s) in self.sessions.iter() {
            id.hash(&mut h);
            s.timeout_ms.hash(&mut h);
            s.ephemerals.hash(&mut h);
        }
        h.finish()
    }

    /// Applies one log entry. Returns the entry's outcome and its session effects.
    pub fn apply_entry(
        &mut self,
        entry: &openraft::Entry<TypeConfig>,
        effects: &mut Effects,
    ) -> BatchOutcome {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => BatchOutcome::default(),
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                BatchOutcome::default()
            }
            EntryPayload::Normal(batch) => self.apply_batch(entry.log_id.index, batch, effects),
        }
    }

    fn apply_batch(&mut self, zxid: u64, batch: &Batch, effects: &mut Effects) -> BatchOutcome {
        let outcomes = batch
            .commands
            .iter()
            .enumerate()
            .map(|(pos, cmd)| self.apply_command(zxid, pos, batch.time_ms, cmd, effects))
            .collect();
        BatchOutcome { outcomes }
    }

    fn apply_command(
        &mut self,
        zxid: u64,
        pos: usize,
        time_ms: i64,
        cmd: &Command,
        effects: &mut Effects,
    ) -> Outcome {
        match cmd {
            Command::CreateSession { secret, timeout_ms } => {
                let session_id = (zxid << SESSION_ID_SHIFT) | (pos as u64 & (MAX_BATCH as u64 - 1));
                self.sessions.insert(
                    session_id,
                    Session {
                        secret: secret.clone(),
                        timeout_ms: *timeout_ms,
                        ephemerals: Default::default(),
                    },
                );
                effects.touched.push((session_id, *timeout_ms, zxid));
                Outcome::SessionCreated {
                    session_id,
                    timeout_ms: *timeout_ms,
                }
            }
            Command::Heartbeats { session_ids } => {
                for id in session_ids {
                    if let Some(s) = self.sessions.get(*id) {
                        effects.touched.push((*id, s.timeout_ms, zxid));
                    }
                }
                Outcome::Done
            }
            Command::CloseSession { session_id } => {
                if self.end_session(zxid, *session_id, effects) {
                    effects.removed.push(*session_id);
                    Outcome::Done
                } else {
                    Outcome::Failed(session_expired(*session_id))
                }
            }
            Command::ExpireSessions { session_ids } => {
                for id in session_ids {
                    if self.end_session(zxid, *id, effects) {
                        effects.removed.push(*id);
                    }
                }
                Outcome::Done
            }
            Command::Txn {
                session_id,
                ops,
                multi,
            } => self.apply_txn(zxid, time_ms, *session_id, ops, *multi, effects),
            Command::Sync => Outcome::Done,
        }
    }

    /// Deletes a session's ephemerals in path order and removes it.
    fn end_session(&mut self, zxid: u64, id: u64, effects: &mut Effects) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        for path in &session.ephemerals {
            // An ephemeral has no children and any version goes, so this can not fail.
            if self.tree.delete(zxid, path, -1, None).is_ok() {
                deleted(&mut effects.changes, zxid, path);
            }
        }
        true
    }

    fn apply_txn(
        &mut self,
        zxid: u64,
        time_ms: i64,
        session_id: u64,
        ops: &[Op],
        multi: bool,
        effects: &mut Effects,
    ) -> Outcome {
        if !self.sessions.contains(session_id) {
            return Outcome::Failed(session_expired(session_id));
        }
        // Ephemeral ownership changes wait until the whole txn has succeeded.
        let mut owned: Vec<(bool, u64, String)> = Vec::new();
        let mut undo = if multi { Some(Undo::default()) } else { None };
        let mut outputs = Vec::with_capacity(ops.len());
        let mut changes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.apply_op(
                zxid,
                time_ms,
                session_id,
                op,
                undo.as_mut(),
                &mut owned,
                &mut changes,
            ) {
                Ok(out) => outputs.push(out),
                Err((code, message)) => {
                    if let Some(undo) = undo {
                        self.tree.rollback(undo);
                    }
                    return Outcome::Failed(Failure {
                        code,
                        op_index: multi.then_some(i as u32),
                        message,
                    });
                }
            }
        }
        effects.changes.extend(changes);
        for (added, owner, path) in owned {
            if added {
                self.sessions.add_ephemeral(owner, path);
            } else {
                self.sessions.remove_ephemeral(owner, &path);
            }
        }
        Outcome::Txn(outputs)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_op(
        &mut self,
        zxid: u64,
        time_ms: i64,
        session_id: u64,
        op: &Op,
        undo: Option<&mut Undo>,
        owned: &mut Vec<(bool, u64, String)>,
        changes: &mut Vec<Change>,
    ) -> Result<OpOutput, OpError> {
        match op {
            Op::Check { path, version } => self.tree.check(path, *version),
            Op::Create {
                path,
                data,
                ephemeral,
                sequential,
            } => {
                let owner = if *ephemeral { session_id } else { 0 };
                let out = self
                    .tree
                    .create(zxid, time_ms, path, data.clone(), owner, *sequential, undo)?;
                if let OpOutput::Create { path: created, .. } = &out {
                    if *ephemeral {
                        owned.push((true, owner, created.clone()));
                    }
                    changes.push(Change {
                        zxid,
                        path: created.clone(),
                        kind: ChangeKind::Created,
                    });
                    changes.push(Change {
                        zxid,
                        path: path::split(created).0.to_string(),
                        kind: ChangeKind::ChildrenChanged,
                    });
                }
                Ok(out)
            }
            Op::Set { path, data, version } => {
                let out = self.tree.set(zxid, time_ms, path, data.clone(), *version, undo)?;
                changes.push(Change {
                    zxid,
                    path: path.clone(),
                    kind: ChangeKind::DataChanged,
                });
                Ok(out)
            }
            Op::Delete { path, version } => {
                let owner = self.tree.delete(zxid, path, *version, undo)?;
                if owner != 0 {
                    owned.push((false, owner, path.clone()));
                }
                deleted(changes, zxid, path);
                Ok(OpOutput::Delete)
            }
        }
    }
}

fn session_expired(id: u64) -> Failure {
    Failure::new(
        ErrorCode::SessionExpired,
        format!("session 0x{id:x} has expired or was closed"),
    )
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::Entry;
    use crate::state::sessions::Secret;

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch {
                time_ms: 1000 + index as i64,
                commands,
            }),
        }
    }

    fn apply(state: &mut ZState, index: u64, commands: Vec<Command>) -> Vec<Outcome> {
        state
            .apply_entry(&entry(index, commands), &mut Effects::default())
            .outcomes
    }

    fn create(path: &str, ephemeral: bool, sequential: bool) -> Op {
        Op::Create {
            path: path.into(),
            data: vec![],
            ephemeral,
            sequential,
        }
    }

    fn txn(session_id: u64, ops: Vec<Op>, multi: bool) -> Command {
        Command::Txn {
            session_id,
            ops,
            multi,
        }
    }

    fn open_session(state: &mut ZState, index: u64) -> u64 {
        match &apply(
            state,
            index,
            vec![Command::CreateSession {
                secret: Secret::new(vec![1]),
                timeout_ms: 5000,
            }],
        )[0]
        {
            Outcome::SessionCreated { session_id, .. } => *session_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expiry_deletes_exactly_the_sessions_ephemerals() {
        let mut s = ZState::default();
        let a = open_session(&mut s, 1);
        let b = open_session(&mut s, 2);
        apply(
            &mut s,
            3,
            vec![
                txn(a, vec![create("/a", true, false)], false),
                txn(b, vec![create("/b", true, false)], false),
            ],
        );
        apply(&mut s, 4, vec![txn(a, vec![create("/p", false, false)], false)]);
        let mut effects = Effects::default();
        s.apply_entry(
            &entry(5, vec![Command::ExpireSessions { session_ids: vec![a] }]),
            &mut effects,
        );
        assert_eq!(effects.removed, vec![a]);
        assert!(s.tree.get("/a").is_none());
        assert!(s.tree.get("/p").is_some(), "persistent znodes stay");
        assert!(s.tree.get("/b").is_some());
        assert!(!s.sessions.contains(a));
        // Any later use of the session fails.
        let out = apply(&mut s, 6, vec![txn(a, vec![create("/x", false, false)], false)]);
        assert!(matches!(&out[0], Outcome::Failed(f) if f.code == ErrorCode::SessionExpired));
    }

    #[test]
    fn a_failed_multi_leaves_no_trace() {
        let mut s = ZState::default();
        let a = open_session(&mut s, 1);
        apply(&mut s, 2, vec![txn(a, vec![create("/m", false, false)], false)]);
        let before = s.clone();
        let out = apply(
            &mut s,
            3,
            vec![txn(
                a,
                vec![
                    create("/m/", false, true),
                    create("/m/e", true, false),
                    Op::Set {
                        path: "/m".into(),
                        data: b"x".to_vec(),
                        version: 0,
                    },
                    Op::Delete {
                        path: "/m/e".into(),
                        version: 5,
                    },
                ],
                true,
            )],
        );
        match &out[0] {
            Outcome::Failed(f) => assert_eq!((f.code, f.op_index), (ErrorCode::BadVersion, Some(3))),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.tree, before.tree);
        assert_eq!(s.sessions, before.sessions);
    }

    #[test]
    fn a_failed_multi_of_thousands_of_ops_leaves_no_trace() {
        let mut s = ZState::default();
        let a = open_session(&mut s, 1);
        apply(
            &mut s,
            2,
            vec![txn(
                a,
                vec![create("/p", false, false), create("/p/x", false, false)],
                true,
            )],
        );
        let before = s.clone();
        let mut ops: Vec<Op> = (0..5000)
            .map(|i| create(&format!("/p/c{i}"), i % 2 == 0, false))
            .collect();
        ops.extend([
            Op::Set {
                path: "/p/x".into(),
                data: b"new".to_vec(),
                version: -1,
            },
            Op::Delete {
                path: "/p/x".into(),
                version: -1,
            },
            create("/p/", false, true),
            create("/p/x", true, false),
            Op::Check {
                path: "/p".into(),
                version: 99,
            },
        ]);
        let out = apply(&mut s, 3, vec![txn(a, ops, true)]);
        match &out[0] {
            Outcome::Failed(f) => assert_eq!((f.code, f.op_index), (ErrorCode::BadVersion, Some(5004))),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.tree, before.tree);
        assert_eq!(s.sessions, before.sessions);
        assert_eq!(s.tree.get("/p").map(|p| p.child_seq), Some(1));
    }

    #[test]
    fn same_log_gives_same_state() {
        let log: Vec<Vec<Command>> = vec![
            vec![Command::CreateSession {
                secret: Secret::new(vec![7]),
                timeout_ms: 3000,
            }],
            vec![txn(
                1 << SESSION_ID_SHIFT,
                vec![create("/s", false, false)],
                false,
            )],
            vec![
                txn(1 << SESSION_ID_SHIFT, vec![create("/s/n", false, true)], false),
                txn(1 << SESSION_ID_SHIFT, vec![create("/s/n", true, true)], false),
                Command::Heartbeats {
                    session_ids: vec![1 << SESSION_ID_SHIFT],
                },
            ],
            vec![Command::CloseSession {
                session_id: 1 << SESSION_ID_SHIFT,
            }],
        ];
        let run = || {
            let mut s = ZState::default();
            for (i, cmds) in log.iter().enumerate() {
                apply(&mut s, i as u64 + 1, cmds.clone());
            }
            s
        };
        let (x, y) = (run(), run());
        assert_eq!(x.digest(), y.digest());
        assert_eq!(x.tree, y.tree);
        let names: Vec<_> = x.tree.get("/s").unwrap().children.iter().cloned().collect();
        assert_eq!(
            names,
            vec!["n0000000000"],
            "the ephemeral one went with the session"
        );
    }
}

#[cfg(test)]
mod change_tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::state::sessions::Secret;

    #[test]
    fn every_op_reports_its_changes() {
        let mut s = ZState::default();
        let mut fx = Effects::default();
        let e = |index: u64, commands: Vec<Command>| crate::raft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch { time_ms: 0, commands }),
        };
        s.apply_entry(
            &e(
                1,
                vec![Command::CreateSession {
                    secret: Secret::new(vec![]),
                    timeout_ms: 1000,
                }],
            ),
            &mut fx,
        );
        let sid = 1 << SESSION_ID_SHIFT;
        let txn = |ops| Command::Txn {
            session_id: sid,
            ops,
            multi: false,
        };
        s.apply_entry(
            &e(
                2,
                vec![
                    txn(vec![Op::Create {
                        path: "/a".into(),
                        data: vec![],
                        ephemeral: true,
                        sequential: false,
                    }]),
                    txn(vec![Op::Set {
                        path: "/a".into(),
                        data: vec![1],
                        version: -1,
                    }]),
                    txn(vec![Op::Delete {
                        path: "/a".into(),
                        version: -1,
                    }]),
                ],
            ),
            &mut fx,
        );
        let kinds: Vec<(ChangeKind, &str)> = fx.changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::Created, "/a"),
                (ChangeKind::ChildrenChanged, "/"),
                (ChangeKind::DataChanged, "/a"),
                (ChangeKind::Deleted, "/a"),
                (ChangeKind::ChildrenChanged, "/"),
            ]
        );
    }
}
