//! The deterministic state machine: applies one log entry's [`Batch`] to the
//! znode tree and the session table (where a create, a close or an expiry
//! is applied). Same log in, same state out: nothing here reads a clock, a
//! random source or anything node-local.

use std::net::IpAddr;

use ensemble_proto::acl::{ADMIN, CREATE, DELETE, READ, WRITE};
use ensemble_proto::{path, SessionId, Zxid};
use openraft::{LogId, Membership, StoredMembership};
use serde::{Deserialize, Serialize};

use super::acl::{self, AclEntry, Identity, Who};
use super::change::{Change, ChangeKind};
use super::command::{Batch, BatchOutcome, Command, Op, OpOutput, Outcome};
use super::error::{ErrorCode, Refusal};
use super::members::{NodeId, PeerNode};
use super::sessions::{Session, SessionTable};
use super::tree::{create_parent, Tree, Undo};

/// Session ids are `zxid << SESSION_ID_SHIFT | position in the batch`.
pub const SESSION_ID_SHIFT: u32 = 16;
/// So a batch holds at most this many commands.
pub const MAX_BATCH: usize = 1 << SESSION_ID_SHIFT;

/// A session an entry showed alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive {
    /// The session.
    pub session_id: SessionId,
    /// Its timeout.
    pub timeout_ms: u32,
    /// The entry.
    pub zxid: Zxid,
    /// How long before the entry was proposed the session was last heard of.
    pub age_ms: u32,
}

/// What an apply produced besides state, for node-local consumers: the
/// liveness loop and the watches.
#[derive(Debug, Default)]
pub struct Effects {
    /// Sessions created or heartbeated by this entry.
    pub touched: Vec<Alive>,
    /// Sessions closed or expired by this entry.
    pub removed: Vec<SessionId>,
    /// Changes to the tree, in apply order.
    pub changes: Vec<Change>,
}

/// The changes of a deletion; `acl` is the one the znode had (the parent's
/// is filled in by [`settle_acls`]).
fn deleted(changes: &mut Vec<Change>, zxid: Zxid, p: &str, acl: Vec<AclEntry>) {
    changes.push(Change {
        zxid,
        path: p.to_string(),
        kind: ChangeKind::Deleted,
        acl,
    });
    changes.push(Change {
        zxid,
        path: path::split(p).0.to_string(),
        kind: ChangeKind::ChildrenChanged,
        acl: Vec::new(),
    });
}

/// Gives each change of one write (a single op or a whole multi) the ACL
/// its znode has once the write is done: a multi that creates a znode and
/// then closes its ACL must not announce it to everyone. A deletion keeps
/// the ACL the znode had when deleted; a change to a znode the same write
/// later deleted takes that one; one whose ACL is unknown fails closed.
fn settle_acls(tree: &Tree, changes: &mut [Change]) {
    for i in 0..changes.len() {
        if changes[i].kind == ChangeKind::Deleted {
            continue;
        }
        let acl = match tree.get(&changes[i].path) {
            Some(z) => z.acl.clone(),
            None => changes[i + 1..]
                .iter()
                .find(|c| c.kind == ChangeKind::Deleted && c.path == changes[i].path)
                .map_or_else(super::change::unknown_acl, |c| c.acl.clone()),
        };
        changes[i].acl = acl;
    }
}

/// Everything a replica holds: the tree, the sessions, and where it stands in the log.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ZState {
    /// The newest entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The newest membership applied.
    pub last_membership: StoredMembership<NodeId, PeerNode>,
    /// The znodes.
    pub tree: Tree,
    /// The open sessions.
    pub sessions: SessionTable,
}

/// Feeds a digest with explicit little-endian bytes, so its value depends on
/// the state alone: not on the build, the Rust version or the platform.
struct Digest(fnv::FnvHasher);

impl Digest {
    fn bytes(&mut self, b: &[u8]) {
        use std::hash::Hasher;
        self.u64(b.len() as u64);
        self.0.write(b);
    }

    fn u64(&mut self, v: u64) {
        use std::hash::Hasher;
        self.0.write(&v.to_le_bytes());
    }
}

impl ZState {
    /// The zxid of the newest applied entry (0 before any).
    pub fn zxid(&self) -> Zxid {
        Zxid(self.last_applied.map(|l| l.index).unwrap_or(0))
    }

    /// A hash of the tree and the sessions: equal on replicas that applied
    /// the same entries, whatever build or platform they run (FNV-1a over
    /// every znode's path, data, stat and counter, then every session's id,
    /// timeout and ephemerals, in order), so replicas of different versions
    /// can be compared during a rolling upgrade.
    pub fn digest(&self) -> u64 {
        use std::hash::Hasher;
        let mut d = Digest(fnv::FnvHasher::default());
        for (path, znode) in self.tree.iter() {
            let s = &znode.stat;
            d.bytes(path.as_bytes());
            d.bytes(&znode.data);
            for v in [s.czxid.0, s.mzxid.0, s.pzxid.0, s.ctime as u64, s.mtime as u64] {
                d.u64(v);
            }
            for v in [s.version, s.cversion, s.aversion] {
                d.u64(v as u32 as u64);
            }
            d.u64(s.ephemeral_owner.0);
            d.u64(znode.child_seq);
            // Only a non-open ACL counts, so states from before ACLs keep their digest.
            for e in &znode.acl {
                d.u64(e.perms as u64);
                d.bytes(e.scheme.as_bytes());
                d.bytes(e.id.as_bytes());
            }
        }
        for (id, session) in self.sessions.iter() {
            d.u64(id.0);
            d.u64(session.timeout_ms as u64);
            d.u64(session.ephemerals.len() as u64);
            for e in &session.ephemerals {
                d.bytes(e.as_bytes());
            }
            for i in &session.identities {
                d.bytes(i.scheme.as_bytes());
                d.bytes(i.id.as_bytes());
            }
        }
        d.0.finish()
    }

    /// Applies an entry that carries nothing (a new leader's first).
    pub fn apply_blank(&mut self, log_id: LogId<NodeId>) -> BatchOutcome {
        self.last_applied = Some(log_id);
        BatchOutcome::default()
    }

    /// Applies a membership entry.
    pub fn apply_membership(
        &mut self,
        log_id: LogId<NodeId>,
        m: Membership<NodeId, PeerNode>,
    ) -> BatchOutcome {
        self.last_applied = Some(log_id);
        self.last_membership = StoredMembership::new(Some(log_id), m);
        BatchOutcome::default()
    }

    /// Applies an entry's batch of commands; returns one outcome per command.
    pub fn apply_batch(
        &mut self,
        log_id: LogId<NodeId>,
        batch: &Batch,
        effects: &mut Effects,
    ) -> BatchOutcome {
        self.last_applied = Some(log_id);
        let zxid = Zxid(log_id.index);
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
        zxid: Zxid,
        pos: usize,
        time_ms: i64,
        cmd: &Command,
        effects: &mut Effects,
    ) -> Outcome {
        match cmd {
            Command::CreateSessionBare { secret, timeout_ms } => {
                self.create_session(zxid, pos, secret, *timeout_ms, vec![], effects)
            }
            Command::CreateSession {
                secret,
                timeout_ms,
                identities,
            } => self.create_session(zxid, pos, secret, *timeout_ms, identities.clone(), effects),
            Command::AddIdentity { session_id, identity } => {
                match self.sessions.add_identity(*session_id, identity.clone()) {
                    None => Outcome::Failed(session_expired(*session_id)),
                    Some(true) => Outcome::Done,
                    Some(false) => Outcome::Failed(Refusal::bad_arguments(format!(
                        "session {session_id} already holds {} identities, the most allowed",
                        acl::MAX_IDENTITIES
                    ))),
                }
            }
            Command::Heartbeats { sessions } => {
                for (id, age_ms) in sessions {
                    self.heard(zxid, *id, *age_ms, effects);
                }
                Outcome::Done
            }
            Command::HeartbeatsUnaged { session_ids } => {
                for id in session_ids {
                    self.heard(zxid, *id, 0, effects);
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
            Command::TxnNoAddress {
                session_id,
                ops,
                multi,
            } => self.apply_txn(zxid, time_ms, *session_id, ops, *multi, None, effects),
            Command::Txn {
                session_id,
                ops,
                multi,
                client_ip,
            } => self.apply_txn(zxid, time_ms, *session_id, ops, *multi, *client_ip, effects),
            Command::Sync => Outcome::Done,
        }
    }

    fn create_session(
        &mut self,
        zxid: Zxid,
        pos: usize,
        secret: &super::sessions::Secret,
        timeout_ms: u32,
        identities: Vec<Identity>,
        effects: &mut Effects,
    ) -> Outcome {
        let session_id = SessionId((zxid.0 << SESSION_ID_SHIFT) | (pos as u64 & (MAX_BATCH as u64 - 1)));
        self.sessions.insert(
            session_id,
            Session {
                secret: secret.clone(),
                timeout_ms,
                ephemerals: Default::default(),
                identities,
            },
        );
        effects.touched.push(Alive {
            session_id,
            timeout_ms,
            zxid,
            age_ms: 0,
        });
        Outcome::SessionCreated {
            session_id,
            timeout_ms,
        }
    }

    /// A heartbeat of an open session (one that is gone stays gone).
    fn heard(&self, zxid: Zxid, session_id: SessionId, age_ms: u32, effects: &mut Effects) {
        if let Some(s) = self.sessions.get(session_id) {
            effects.touched.push(Alive {
                session_id,
                timeout_ms: s.timeout_ms,
                zxid,
                age_ms,
            });
        }
    }

    /// Deletes a session's ephemerals in path order and removes it.
    fn end_session(&mut self, zxid: Zxid, id: SessionId, effects: &mut Effects) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let first = effects.changes.len();
        for path in &session.ephemerals {
            let acl = self.tree.get(path).map(|z| z.acl.clone());
            // An ephemeral has no children and any version goes, so this can not fail.
            if self.tree.delete(zxid, path, -1, None).is_ok() {
                let acl = acl.unwrap_or_else(super::change::unknown_acl);
                deleted(&mut effects.changes, zxid, path, acl);
            }
        }
        settle_acls(&self.tree, &mut effects.changes[first..]);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_txn(
        &mut self,
        zxid: Zxid,
        time_ms: i64,
        session_id: SessionId,
        ops: &[Op],
        multi: bool,
        client_ip: Option<IpAddr>,
        effects: &mut Effects,
    ) -> Outcome {
        let Some(session) = self.sessions.get(session_id) else {
            return Outcome::Failed(session_expired(session_id));
        };
        let who = Who {
            session_id,
            identities: &session.identities,
            ip: client_ip,
        };
        let mut txn = Txn {
            zxid,
            time_ms,
            session_id,
            undo: multi.then(Undo::default),
            owned: Vec::new(),
            changes: Vec::new(),
        };
        let mut outputs = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match txn.apply(&mut self.tree, op, &who) {
                Ok(out) => outputs.push(out),
                Err(refusal) => {
                    if let Some(undo) = txn.undo {
                        self.tree.rollback(undo);
                    }
                    return Outcome::Failed(if multi { refusal.at_op(i) } else { refusal });
                }
            }
        }
        settle_acls(&self.tree, &mut txn.changes);
        effects.changes.extend(txn.changes);
        for (added, owner, path) in txn.owned {
            if added {
                self.sessions.add_ephemeral(owner, path);
            } else {
                self.sessions.remove_ephemeral(owner, &path);
            }
        }
        Outcome::Txn(outputs)
    }
}

/// One txn being applied: what its ops share, and what they did so far.
struct Txn {
    zxid: Zxid,
    time_ms: i64,
    session_id: SessionId,
    /// For a multi: how to put the tree back if a later op fails.
    undo: Option<Undo>,
    /// Ephemeral ownership changes, made only once the whole txn succeeded.
    owned: Vec<(bool, SessionId, String)>,
    /// Changes for watchers, fired only if the whole txn succeeded.
    changes: Vec<Change>,
}

/// Checks that `who` may do `op`, after the checks ZooKeeper makes first:
/// a missing znode (or parent) is NO_NODE, not NO_AUTH.
fn authorize(tree: &Tree, op: &Op, who: &Who) -> Result<(), Refusal> {
    let on = |path: &str, mask: u32| match tree.get(path) {
        Some(z) => who.check(&z.acl, mask, path),
        None => Ok(()),
    };
    match op {
        Op::Check { path, .. } => on(path, READ),
        Op::Set { path, .. } => on(path, WRITE),
        Op::SetAcl { path, .. } => on(path, ADMIN),
        Op::Create { path, sequential, .. } | Op::CreateOpen { path, sequential, .. } => {
            on(create_parent(path, *sequential).0, CREATE)
        }
        Op::Delete { path, .. } if tree.get(path).is_some() => on(path::split(path).0, DELETE),
        Op::Delete { .. } => Ok(()),
    }
}

impl Txn {
    fn apply(&mut self, tree: &mut Tree, op: &Op, who: &Who) -> Result<OpOutput, Refusal> {
        authorize(tree, op, who)?;
        let zxid = self.zxid;
        if let Some(c) = op.as_create() {
            let (path, ephemeral) = (c.path, c.ephemeral);
            let acl: Vec<AclEntry> = acl::resolve(c.acl, who.identities)?;
            let owner = if ephemeral { self.session_id } else { SessionId(0) };
            let out = tree.create(
                zxid,
                self.time_ms,
                path,
                c.data.to_vec(),
                owner,
                c.sequential,
                acl,
                self.undo.as_mut(),
            )?;
            if let OpOutput::Create { path: created, .. } = &out {
                if ephemeral {
                    self.owned.push((true, owner, created.clone()));
                }
                // ACLs are filled in when the txn is done (`settle_acls`).
                self.changes.push(Change {
                    zxid,
                    path: created.clone(),
                    kind: ChangeKind::Created,
                    acl: Vec::new(),
                });
                self.changes.push(Change {
                    zxid,
                    path: path::split(created).0.to_string(),
                    kind: ChangeKind::ChildrenChanged,
                    acl: Vec::new(),
                });
            }
            return Ok(out);
        }
        match op {
            Op::Check { path, version } => tree.check(path, *version),
            Op::SetAcl { path, acl, version } => {
                let acl = acl::resolve(acl, who.identities)?;
                tree.set_acl(path, acl, *version, self.undo.as_mut())
            }
            Op::Create { .. } | Op::CreateOpen { .. } => Err(Refusal::new(
                ErrorCode::SystemError,
                "a create was not taken as one",
            )),
            Op::Set { path, data, version } => {
                let out = tree.set(
                    zxid,
                    self.time_ms,
                    path,
                    data.clone(),
                    *version,
                    self.undo.as_mut(),
                )?;
                self.changes.push(Change {
                    zxid,
                    path: path.clone(),
                    kind: ChangeKind::DataChanged,
                    acl: Vec::new(),
                });
                Ok(out)
            }
            Op::Delete { path, version } => {
                let acl = tree.get(path).map(|z| z.acl.clone());
                let owner = tree.delete(zxid, path, *version, self.undo.as_mut())?;
                if owner != SessionId(0) {
                    self.owned.push((false, owner, path.clone()));
                }
                let acl = acl.unwrap_or_else(super::change::unknown_acl);
                deleted(&mut self.changes, zxid, path, acl);
                Ok(OpOutput::Delete)
            }
        }
    }
}

fn session_expired(id: SessionId) -> Refusal {
    Refusal::new(
        ErrorCode::SessionExpired,
        format!("session {id} has expired or was closed"),
    )
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::state::sessions::Secret;
    use ensemble_proto::acl::ALL;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn apply_with(
        state: &mut ZState,
        index: u64,
        commands: Vec<Command>,
        effects: &mut Effects,
    ) -> Vec<Outcome> {
        let batch = Batch {
            time_ms: 1000 + index as i64,
            commands,
        };
        state.apply_batch(log_id(index), &batch, effects).outcomes
    }

    fn apply(state: &mut ZState, index: u64, commands: Vec<Command>) -> Vec<Outcome> {
        apply_with(state, index, commands, &mut Effects::default())
    }

    fn create(path: &str, ephemeral: bool, sequential: bool) -> Op {
        Op::Create {
            path: path.into(),
            data: vec![],
            ephemeral,
            sequential,
            acl: vec![],
        }
    }

    fn txn(session_id: SessionId, ops: Vec<Op>, multi: bool) -> Command {
        Command::Txn {
            session_id,
            ops,
            multi,
            client_ip: None,
        }
    }

    fn open_session(state: &mut ZState, index: u64) -> SessionId {
        match &apply(
            state,
            index,
            vec![Command::CreateSession {
                secret: Secret::new(vec![1]),
                timeout_ms: 5000,
                identities: vec![],
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
        apply_with(
            &mut s,
            5,
            vec![Command::ExpireSessions { session_ids: vec![a] }],
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
                identities: vec![],
            }],
            vec![txn(
                SessionId(1 << SESSION_ID_SHIFT),
                vec![create("/s", false, false)],
                false,
            )],
            vec![
                txn(
                    SessionId(1 << SESSION_ID_SHIFT),
                    vec![create("/s/n", false, true)],
                    false,
                ),
                txn(
                    SessionId(1 << SESSION_ID_SHIFT),
                    vec![create("/s/n", true, true)],
                    false,
                ),
                Command::Heartbeats {
                    sessions: vec![(SessionId(1 << SESSION_ID_SHIFT), 250)],
                },
                Command::HeartbeatsUnaged {
                    session_ids: vec![SessionId(1 << SESSION_ID_SHIFT)],
                },
            ],
            vec![Command::CloseSession {
                session_id: SessionId(1 << SESSION_ID_SHIFT),
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

    #[test]
    fn every_op_reports_its_changes() {
        let mut s = ZState::default();
        let sid = open_session(&mut s, 1);
        let one = |op| txn(sid, vec![op], false);
        let mut fx = Effects::default();
        apply_with(
            &mut s,
            2,
            vec![
                one(create("/a", true, false)),
                one(Op::Set {
                    path: "/a".into(),
                    data: vec![1],
                    version: -1,
                }),
                one(Op::Delete {
                    path: "/a".into(),
                    version: -1,
                }),
            ],
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

    /// The digest is a fixed function of the state: this value must hold
    /// for every build, Rust version and platform (a std `DefaultHasher`
    /// gave values stable only within one build: a rolling upgrade would
    /// have reported divergence that was not there).
    #[test]
    fn the_digest_is_the_same_for_every_build() {
        let mut s = ZState::default();
        let a = open_session(&mut s, 1);
        apply(
            &mut s,
            2,
            vec![txn(
                a,
                vec![
                    create("/app", false, false),
                    create("/app/e", true, false),
                    Op::Set {
                        path: "/app".into(),
                        data: b"config".to_vec(),
                        version: 0,
                    },
                ],
                true,
            )],
        );
        assert_eq!(s.digest(), EXPECTED_DIGEST, "digest {:#x}", s.digest());
    }

    const EXPECTED_DIGEST: u64 = 0xa2ab_afb4_0c47_36ce;

    fn acl(scheme: &str, id: &str, perms: u32) -> AclEntry {
        AclEntry {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    /// Writes are checked when applied: the same entry is refused on every
    /// replica alike, changes nothing, and `auth` becomes the creator.
    #[test]
    fn a_write_is_checked_against_the_acl_when_applied() {
        let mut state = ZState::default();
        let alice = vec![Identity {
            scheme: "digest".into(),
            id: "alice:H".into(),
        }];
        let owner = match &apply(
            &mut state,
            1,
            vec![Command::CreateSession {
                secret: Secret::new(vec![1]),
                timeout_ms: 5000,
                identities: alice,
            }],
        )[0]
        {
            Outcome::SessionCreated { session_id, .. } => *session_id,
            other => panic!("{other:?}"),
        };
        let other = open_session(&mut state, 2);
        let mut mine = create("/mine", false, false);
        if let Op::Create { acl: a, .. } = &mut mine {
            *a = vec![acl("auth", "", READ | CREATE), acl("world", "anyone", READ)];
        }
        assert!(matches!(
            &apply(&mut state, 3, vec![txn(owner, vec![mine], false)])[0],
            Outcome::Txn(_)
        ));
        assert_eq!(
            state.tree.get("/mine").unwrap().acl,
            vec![
                acl("digest", "alice", READ | CREATE),
                acl("world", "anyone", READ)
            ]
        );
        let before = state.digest();
        for (who, op, want) in [
            (other, create("/mine/x", false, false), Some(ErrorCode::NoAuth)),
            (
                other,
                Op::Set {
                    path: "/mine".into(),
                    data: vec![1],
                    version: -1,
                },
                Some(ErrorCode::NoAuth),
            ),
            (
                owner,
                Op::Set {
                    path: "/mine".into(),
                    data: vec![1],
                    version: -1,
                },
                Some(ErrorCode::NoAuth),
            ),
            (
                owner,
                Op::SetAcl {
                    path: "/mine".into(),
                    acl: vec![],
                    version: -1,
                },
                Some(ErrorCode::NoAuth),
            ),
            (other, create("/nope/x", false, false), Some(ErrorCode::NoNode)),
        ] {
            match &apply(&mut state, 4, vec![txn(who, vec![op.clone()], false)])[0] {
                Outcome::Failed(r) => assert_eq!(Some(r.code), want, "{op:?}: {r}"),
                other => panic!("{op:?}: {other:?}"),
            }
        }
        assert_eq!(state.digest(), before, "refused writes change nothing");
        assert!(matches!(
            &apply(
                &mut state,
                5,
                vec![txn(owner, vec![create("/mine/x", false, false)], false)]
            )[0],
            Outcome::Txn(_)
        ));
        let ip_only = Op::SetAcl {
            path: "/mine/x".into(),
            acl: vec![acl("ip", "10.0.0.0/8", ALL)],
            version: 0,
        };
        assert!(matches!(
            &apply(&mut state, 6, vec![txn(owner, vec![ip_only], false)])[0],
            Outcome::Txn(_)
        ));
        let from = |ip: &str| Command::Txn {
            session_id: other,
            ops: vec![Op::Set {
                path: "/mine/x".into(),
                data: vec![2],
                version: -1,
            }],
            multi: false,
            client_ip: ip.parse().ok(),
        };
        assert!(matches!(
            &apply(&mut state, 7, vec![from("127.0.0.1")])[0],
            Outcome::Failed(_)
        ));
        assert!(matches!(
            &apply(&mut state, 8, vec![from("10.1.2.3")])[0],
            Outcome::Txn(_)
        ));
        assert_eq!(state.tree.get("/mine/x").unwrap().stat.aversion, 1);
    }
}
