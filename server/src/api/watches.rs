//! Watches: registered on the node that holds the session's stream, fired
//! when that node applies a change (where a watch is fired).
//!
//! Firing happens inside apply, under the state's write lock and before the
//! applied index moves, so an event is queued on the session's stream before
//! any reply that could reflect its change. A bounded history of recent
//! changes lets a client that reconnects replay what its persistent watches
//! missed, or learn that it must resync.
//!
//! Watches are reads (ZooKeeper's CVE-2024-23944): a persistent or
//! recursive watch hears of a change only if its session may READ the
//! changed znode, judged by the ACL the znode had right after the write
//! (carried by the [`Change`]) and the session's identities when the event
//! is sent. One-shot watches name only the znode they were set on, and keep
//! ZooKeeper's rules: checked when set (`get` and `ls` need READ, `exists`
//! nothing), never filtered when they fire.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ensemble_proto::acl::READ;
use ensemble_proto::v1 as pb;
use tokio::sync::mpsc;
use tracing::debug;

use ensemble_proto::{SessionId, Zxid};

use crate::consensus::state_machine::ChangeListener;
use crate::state::acl::{AclEntry, Who};
use crate::state::{Change, ChangeKind, ZState};

/// Identifies one session stream on this member (the watches of a session
/// live with its stream).
pub type StreamId = u64;

/// What a watch waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// One-shot on an existing znode: created (n/a), deleted, data changed.
    Data,
    /// One-shot on a missing znode: fires when it is created.
    Exist,
    /// One-shot: children changed, or the znode deleted.
    Child,
    /// Every change of the znode.
    Persistent,
    /// Created, deleted and data changed, for the znode and its descendants.
    Recursive,
}

/// Where a session stream's replies and events queue. Boxed: a channel
/// allocates its slots 32 at a time, and a stream that only heartbeats
/// should not hold 32 whole messages' worth of memory.
pub type Outgoing = mpsc::Sender<Box<pb::SessionResponse>>;

struct Watcher {
    tx: Outgoing,
    /// Set when the stream fell too far behind; its task then ends the stream.
    overflowed: Arc<AtomicBool>,
    /// The session the stream is bound to: its identities are looked up
    /// in the state at each event, so an `add_auth` counts at once.
    session_id: SessionId,
    /// The client's address, for `ip` ACL entries.
    ip: Option<IpAddr>,
}

impl Watcher {
    /// Whether the stream's session may READ a znode with this ACL, as the
    /// session stands in `state`.
    fn may_read(&self, state: &ZState, acl: &[AclEntry]) -> bool {
        if acl.is_empty() {
            return true;
        }
        let who = Who {
            session_id: self.session_id,
            identities: state
                .sessions
                .get(self.session_id)
                .map_or(&[][..], |s| s.identities.as_slice()),
            ip: self.ip,
        };
        who.permitted(acl, READ)
    }
}

#[derive(Default)]
struct Inner {
    next_id: StreamId,
    watchers: HashMap<StreamId, Watcher>,
    by_path: HashMap<(String, WatchKind), HashSet<StreamId>>,
    /// The paths that have a recursive watch (also in `by_path`), so a
    /// change looks only at those instead of hashing every ancestor of a
    /// path that may be thousands of levels deep.
    recursive: HashSet<String>,
    /// Recent changes, oldest first.
    history: VecDeque<Change>,
    /// Changes at or below this zxid may be missing from the history.
    forgotten_through: Zxid,
}

/// All watches of this node.
pub struct WatchHub {
    inner: Mutex<Inner>,
    history_cap: usize,
}

fn event_type(kind: ChangeKind) -> pb::EventType {
    match kind {
        ChangeKind::Created => pb::EventType::NodeCreated,
        ChangeKind::Deleted => pb::EventType::NodeDeleted,
        ChangeKind::DataChanged => pb::EventType::NodeDataChanged,
        ChangeKind::ChildrenChanged => pb::EventType::NodeChildrenChanged,
    }
}

/// The wire message of a watch event.
pub fn event_message(kind: pb::EventType, path: &str, zxid: Zxid) -> pb::SessionResponse {
    pb::SessionResponse {
        xid: 0,
        response: Some(pb::session_response::Response::Event(pb::WatchEvent {
            r#type: kind as i32,
            path: path.to_string(),
            zxid: zxid.0,
        })),
    }
}

/// The watch kinds on the changed path itself that a change fires.
fn kinds_on_path(kind: ChangeKind) -> &'static [WatchKind] {
    match kind {
        ChangeKind::Created => &[WatchKind::Exist, WatchKind::Data, WatchKind::Persistent],
        ChangeKind::Deleted => &[WatchKind::Data, WatchKind::Child, WatchKind::Persistent],
        ChangeKind::DataChanged => &[WatchKind::Data, WatchKind::Persistent],
        ChangeKind::ChildrenChanged => &[WatchKind::Child, WatchKind::Persistent],
    }
}

fn one_shot(kind: WatchKind) -> bool {
    matches!(kind, WatchKind::Data | WatchKind::Exist | WatchKind::Child)
}

/// Whether `p` is `root` or lies under it.
fn is_under(p: &str, root: &str) -> bool {
    root == "/" || p == root || (p.starts_with(root) && p.as_bytes().get(root.len()) == Some(&b'/'))
}

impl Inner {
    /// Who a change notifies: the streams whose one-shot watches it fires
    /// (used up), and those only persistent or recursive watches match.
    fn targets(&mut self, change: &Change) -> (HashSet<StreamId>, HashSet<StreamId>) {
        let mut asked = HashSet::new();
        let mut persistent = HashSet::new();
        for kind in kinds_on_path(change.kind) {
            let key = (change.path.clone(), *kind);
            if one_shot(*kind) {
                if let Some(set) = self.by_path.remove(&key) {
                    asked.extend(set);
                }
            } else if let Some(set) = self.by_path.get(&key) {
                persistent.extend(set.iter().copied());
            }
        }
        if change.kind != ChangeKind::ChildrenChanged {
            for r in self.recursive.iter().filter(|r| is_under(&change.path, r)) {
                if let Some(set) = self.by_path.get(&(r.clone(), WatchKind::Recursive)) {
                    persistent.extend(set.iter().copied());
                }
            }
        }
        persistent.retain(|id| !asked.contains(id));
        (asked, persistent)
    }

    /// Whether stream `id`'s session may READ a znode with this ACL.
    fn may_read(&self, state: &ZState, id: StreamId, acl: &[AclEntry]) -> bool {
        self.watchers.get(&id).is_some_and(|w| w.may_read(state, acl))
    }

    /// Adds a watch.
    fn insert(&mut self, path: &str, kind: WatchKind, id: StreamId) {
        crate::metrics::watch_registered();
        if kind == WatchKind::Recursive {
            self.recursive.insert(path.to_string());
        }
        self.by_path
            .entry((path.to_string(), kind))
            .or_default()
            .insert(id);
    }

    /// Forgets a watch key that has no watcher left.
    fn forget_key(&mut self, key: &(String, WatchKind)) {
        self.by_path.remove(key);
        if key.1 == WatchKind::Recursive {
            self.recursive.remove(&key.0);
        }
    }

    fn send(&self, id: StreamId, msg: pb::SessionResponse) {
        if let Some(w) = self.watchers.get(&id) {
            crate::metrics::watch_fired();
            if w.tx.try_send(Box::new(msg)).is_err() {
                w.overflowed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn remember(&mut self, change: &Change, cap: usize) {
        self.history.push_back(change.clone());
        while self.history.len() > cap {
            if let Some(old) = self.history.pop_front() {
                self.forgotten_through = self.forgotten_through.max(old.zxid);
            }
        }
    }
}

impl WatchHub {
    /// A hub keeping the last `history_cap` changes for replay; changes up to
    /// `applied` (the state at startup) are not in the history.
    pub fn new(history_cap: usize, applied: Zxid) -> Self {
        WatchHub {
            inner: Mutex::new(Inner {
                forgotten_through: applied,
                ..Inner::default()
            }),
            history_cap: history_cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the stream of `session_id`, whose client is at `ip`;
    /// events go to `tx`.
    pub fn add_watcher(
        &self,
        tx: Outgoing,
        session_id: SessionId,
        ip: Option<IpAddr>,
    ) -> (StreamId, Arc<AtomicBool>) {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let overflowed = Arc::new(AtomicBool::new(false));
        inner.watchers.insert(
            id,
            Watcher {
                tx,
                overflowed: overflowed.clone(),
                session_id,
                ip,
            },
        );
        (id, overflowed)
    }

    /// Drops a stream and all its watches.
    pub fn remove_watcher(&self, id: StreamId) {
        let mut inner = self.lock();
        inner.watchers.remove(&id);
        inner.by_path.retain(|_, set| {
            set.remove(&id);
            !set.is_empty()
        });
        let Inner {
            by_path, recursive, ..
        } = &mut *inner;
        recursive.retain(|p| by_path.contains_key(&(p.clone(), WatchKind::Recursive)));
    }

    /// How many session streams are registered, and how many watches they hold.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.watchers.len(),
            inner.by_path.values().map(HashSet::len).sum(),
        )
    }

    /// Adds a watch. Call it while holding the state's read lock, right
    /// after the read it belongs to, so no change slips in between.
    pub fn add(&self, id: StreamId, path: &str, kind: WatchKind) {
        self.lock().insert(path, kind, id);
    }

    /// Removes the stream's watches of these kinds on a path; true if any was there.
    pub fn remove(&self, id: StreamId, path: &str, kinds: &[WatchKind]) -> bool {
        let mut inner = self.lock();
        let mut removed = false;
        for kind in kinds {
            let key = (path.to_string(), *kind);
            if let Some(set) = inner.by_path.get_mut(&key) {
                removed |= set.remove(&id);
                if set.is_empty() {
                    inner.forget_key(&key);
                }
            }
        }
        removed
    }

    /// Re-registers a reconnected client's watches as of `since` (its last
    /// zxid): fires at once what changed after it, replays persistent-watch
    /// events from the history, or sends RESYNC when the history is too short.
    /// Call it while holding the state's read lock.
    ///
    /// The checks are those of setting each watch afresh: a child watch or
    /// a persistent one on an existing znode the session may not READ is
    /// not registered (skipped, as ZooKeeper does; the paths skipped are
    /// returned). Data and exist watches need nothing, as `exists` (the
    /// client can not tell a data watch left by `get` from one left by
    /// `exists`). Replayed events pass the READ filter of live ones.
    pub fn set_watches(
        &self,
        id: StreamId,
        state: &ZState,
        since: Zxid,
        req: &pb::SetWatchesRequest,
    ) -> Vec<String> {
        let mut inner = self.lock();
        let now = state.zxid();
        let mut skipped = Vec::new();
        let readable = |inner: &Inner, p: &str| {
            state
                .tree
                .get(p)
                .is_none_or(|z| inner.may_read(state, id, &z.acl))
        };
        for p in &req.data {
            match state.tree.get(p) {
                None => inner.send(id, event_message(pb::EventType::NodeDeleted, p, now)),
                Some(n) if n.stat.mzxid > since => {
                    inner.send(id, event_message(pb::EventType::NodeDataChanged, p, n.stat.mzxid))
                }
                Some(_) => inner.insert(p, WatchKind::Data, id),
            }
        }
        for p in &req.exist {
            match state.tree.get(p) {
                Some(n) => inner.send(id, event_message(pb::EventType::NodeCreated, p, n.stat.czxid)),
                None => inner.insert(p, WatchKind::Exist, id),
            }
        }
        for p in &req.children {
            if !readable(&inner, p) {
                skipped.push(p.clone());
                continue;
            }
            match state.tree.get(p) {
                None => inner.send(id, event_message(pb::EventType::NodeDeleted, p, now)),
                Some(n) if n.stat.pzxid > since => inner.send(
                    id,
                    event_message(pb::EventType::NodeChildrenChanged, p, n.stat.pzxid),
                ),
                Some(_) => inner.insert(p, WatchKind::Child, id),
            }
        }
        let complete = inner.forgotten_through <= since;
        let mut persistent: Vec<&String> = Vec::new();
        let mut recursive: Vec<&String> = Vec::new();
        for (paths, kind) in [
            (&req.persistent, WatchKind::Persistent),
            (&req.persistent_recursive, WatchKind::Recursive),
        ] {
            for p in paths {
                if !readable(&inner, p) {
                    skipped.push(p.clone());
                    continue;
                }
                inner.insert(p, kind, id);
                if kind == WatchKind::Persistent {
                    persistent.push(p);
                } else {
                    recursive.push(p);
                }
                if !complete {
                    inner.send(id, event_message(pb::EventType::Resync, p, now));
                }
            }
        }
        if complete {
            let missed: Vec<(pb::EventType, String, Zxid)> = inner
                .history
                .iter()
                .filter(|c| c.zxid > since)
                .filter(|c| {
                    let exact = kinds_on_path(c.kind).contains(&WatchKind::Persistent)
                        && persistent.contains(&&c.path);
                    let under = c.kind != ChangeKind::ChildrenChanged
                        && recursive.iter().any(|r| is_under(&c.path, r));
                    exact || under
                })
                .filter(|c| inner.may_read(state, id, &c.acl))
                .map(|c| (event_type(c.kind), c.path.clone(), c.zxid))
                .collect();
            for (kind, p, zxid) in missed {
                inner.send(id, event_message(kind, &p, zxid));
            }
        }
        if !skipped.is_empty() {
            debug!(
                stream = id,
                ?skipped,
                "set_watches skipped watches the session may not read"
            );
        }
        skipped
    }
}

impl ChangeListener for WatchHub {
    fn on_changes(&self, state: &ZState, changes: &[Change]) {
        let mut inner = self.lock();
        for change in changes {
            inner.remember(change, self.history_cap);
            if inner.watchers.is_empty() {
                continue;
            }
            let kind = event_type(change.kind);
            let (asked, persistent) = inner.targets(change);
            for id in asked {
                inner.send(id, event_message(kind, &change.path, change.zxid));
            }
            for id in persistent {
                if inner.may_read(state, id, &change.acl) {
                    inner.send(id, event_message(kind, &change.path, change.zxid));
                }
            }
        }
    }

    fn on_reset(&self, applied: Zxid) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.forgotten_through = applied;
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;
    use crate::state::acl::Identity;
    use crate::state::machine::Effects;
    use crate::state::sessions::Secret;
    use crate::state::{Batch, Command, Op, Outcome};
    use ensemble_proto::acl::ALL;

    fn change(zxid: u64, path: &str, kind: ChangeKind) -> Change {
        Change {
            zxid: Zxid(zxid),
            path: path.into(),
            kind,
            acl: Vec::new(),
        }
    }

    fn events(rx: &mut mpsc::Receiver<Box<pb::SessionResponse>>) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(pb::session_response::Response::Event(e)) = m.response {
                out.push((e.r#type, e.path));
            }
        }
        out
    }

    fn paths(rx: &mut mpsc::Receiver<Box<pb::SessionResponse>>) -> Vec<String> {
        events(rx).into_iter().map(|(_, p)| p).collect()
    }

    /// A stream of an unknown session: only open znodes are readable to it.
    fn watcher(hub: &WatchHub) -> (StreamId, mpsc::Receiver<Box<pb::SessionResponse>>) {
        stream_of(hub, SessionId(0))
    }

    fn stream_of(hub: &WatchHub, sid: SessionId) -> (StreamId, mpsc::Receiver<Box<pb::SessionResponse>>) {
        let (tx, rx) = mpsc::channel(100);
        let (id, _) = hub.add_watcher(tx, sid, None);
        (id, rx)
    }

    #[test]
    fn one_shot_fires_once_persistent_keeps_firing() {
        let hub = WatchHub::new(100, Zxid(0));
        let (id, mut rx) = watcher(&hub);
        let state = ZState::default();
        hub.add(id, "/a", WatchKind::Data);
        hub.add(id, "/a", WatchKind::Persistent);
        hub.add(id, "/", WatchKind::Recursive);
        hub.on_changes(&state, &[change(5, "/a", ChangeKind::DataChanged)]);
        hub.on_changes(&state, &[change(6, "/a", ChangeKind::DataChanged)]);
        hub.on_changes(&state, &[change(7, "/a", ChangeKind::ChildrenChanged)]);
        let got = events(&mut rx);
        let changed = pb::EventType::NodeDataChanged as i32;
        // One event per change however many watches matched.
        assert_eq!(
            got,
            vec![
                (changed, "/a".into()),
                (changed, "/a".into()),
                (pb::EventType::NodeChildrenChanged as i32, "/a".into())
            ]
        );
        assert!(hub.remove(id, "/a", &[WatchKind::Persistent]));
        assert!(
            !hub.remove(id, "/a", &[WatchKind::Data]),
            "the one-shot was used up"
        );
    }

    #[test]
    fn recursive_watches_see_their_subtree_only() {
        let hub = WatchHub::new(100, Zxid(0));
        let (id, mut rx) = watcher(&hub);
        let state = ZState::default();
        hub.add(id, "/a", WatchKind::Recursive);
        hub.on_changes(
            &state,
            &[
                change(1, "/a/b/c", ChangeKind::Created),
                change(2, "/ab", ChangeKind::Created),
                change(3, "/a", ChangeKind::DataChanged),
                change(4, "/a/b", ChangeKind::ChildrenChanged),
            ],
        );
        assert_eq!(paths(&mut rx), vec!["/a/b/c", "/a"]);
        assert!(hub.remove(id, "/a", &[WatchKind::Recursive]));
        hub.on_changes(&state, &[change(5, "/a/x", ChangeKind::Created)]);
        assert!(events(&mut rx).is_empty());
    }

    #[test]
    fn reconnect_replays_history_or_asks_for_resync() {
        let hub = WatchHub::new(2, Zxid(0));
        let state = ZState::default();
        hub.on_changes(
            &state,
            &[
                change(3, "/r/x", ChangeKind::Created),
                change(4, "/r/x", ChangeKind::DataChanged),
            ],
        );
        let (id, mut rx) = watcher(&hub);
        let req = pb::SetWatchesRequest {
            persistent_recursive: vec!["/r".into()],
            ..Default::default()
        };
        hub.set_watches(id, &state, Zxid(2), &req);
        assert_eq!(events(&mut rx).len(), 2);
        hub.on_changes(&state, &[change(5, "/r/y", ChangeKind::Created)]);
        let _ = events(&mut rx);
        // The history (2 changes) no longer reaches back to zxid 2.
        hub.set_watches(id, &state, Zxid(2), &req);
        assert_eq!(events(&mut rx), vec![(pb::EventType::Resync as i32, "/r".into())]);
    }

    /// A replica to apply real commands to: ACLs of changes come from apply.
    struct Replica {
        state: ZState,
        index: u64,
    }

    impl Replica {
        fn new() -> Replica {
            Replica {
                state: ZState::default(),
                index: 0,
            }
        }

        /// Applies one entry; its changes go to `hub`.
        fn apply(&mut self, hub: &WatchHub, commands: Vec<Command>) -> Vec<Outcome> {
            self.index += 1;
            let batch = Batch {
                time_ms: 1000,
                commands,
            };
            let mut effects = Effects::default();
            let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.index);
            let out = self.state.apply_batch(log_id, &batch, &mut effects).outcomes;
            hub.on_changes(&self.state, &effects.changes);
            out
        }

        fn session(&mut self, hub: &WatchHub, identities: Vec<Identity>) -> SessionId {
            let command = Command::CreateSession {
                secret: Secret::new(vec![1]),
                timeout_ms: 5000,
                identities,
            };
            match &self.apply(hub, vec![command])[0] {
                Outcome::SessionCreated { session_id, .. } => *session_id,
                other => panic!("{other:?}"),
            }
        }

        fn txn(&mut self, hub: &WatchHub, sid: SessionId, ops: Vec<Op>) {
            let multi = ops.len() > 1;
            let out = self.apply(
                hub,
                vec![Command::Txn {
                    session_id: sid,
                    ops,
                    multi,
                    client_ip: None,
                }],
            );
            assert!(matches!(out[0], Outcome::Txn(_)), "{out:?}");
        }
    }

    fn user(name: &str) -> Identity {
        Identity {
            scheme: "digest".into(),
            id: format!("{name}:HASH="),
        }
    }

    fn only(name: &str) -> Vec<AclEntry> {
        vec![AclEntry {
            perms: ALL,
            scheme: "digest".into(),
            id: name.into(),
        }]
    }

    fn create(path: &str, acl: Vec<AclEntry>) -> Op {
        Op::Create {
            path: path.into(),
            data: vec![],
            ephemeral: false,
            sequential: false,
            acl,
        }
    }

    fn set(path: &str) -> Op {
        Op::Set {
            path: path.into(),
            data: b"x".to_vec(),
            version: -1,
        }
    }

    fn delete(path: &str) -> Op {
        Op::Delete {
            path: path.into(),
            version: -1,
        }
    }

    fn set_acl(path: &str, acl: Vec<AclEntry>) -> Op {
        Op::SetAcl {
            path: path.into(),
            acl,
            version: -1,
        }
    }

    fn named_secret(paths: &[String]) -> Vec<&String> {
        paths.iter().filter(|p| p.starts_with("/secret")).collect()
    }

    #[test]
    fn persistent_watches_hear_only_of_what_their_session_may_read() {
        let hub = WatchHub::new(100, Zxid(0));
        let mut r = Replica::new();
        let alice = r.session(&hub, vec![user("alice")]);
        let bob = r.session(&hub, vec![user("bob")]);
        let root = r.session(
            &hub,
            vec![Identity {
                scheme: "super".into(),
                id: "root".into(),
            }],
        );
        let streams: Vec<_> = [alice, bob, root].iter().map(|s| stream_of(&hub, *s)).collect();
        for (id, _) in &streams {
            hub.add(*id, "/", WatchKind::Recursive);
            hub.add(*id, "/secret", WatchKind::Recursive);
            hub.add(*id, "/secret", WatchKind::Persistent);
        }
        r.txn(&hub, alice, vec![create("/secret", only("alice"))]);
        r.txn(&hub, alice, vec![create("/secret/child", only("alice"))]);
        r.txn(&hub, alice, vec![set("/secret/child")]);
        r.txn(&hub, alice, vec![delete("/secret/child")]);
        r.txn(&hub, bob, vec![create("/open", vec![])]);
        let all = [
            "/secret",
            "/secret/child",
            "/secret",
            "/secret/child",
            "/secret/child",
            "/secret",
            "/open",
        ];
        let mut streams = streams.into_iter();
        let (_, mut alice_rx) = streams.next().unwrap();
        let (_, mut bob_rx) = streams.next().unwrap();
        let (_, mut root_rx) = streams.next().unwrap();
        assert_eq!(paths(&mut alice_rx), all, "the owner hears of everything");
        assert_eq!(paths(&mut root_rx), all, "so does the super user");
        assert_eq!(paths(&mut bob_rx), vec!["/open"], "bob hears of nothing secret");
    }

    #[test]
    fn an_acl_counts_as_the_write_leaves_it_and_identities_as_they_are_now() {
        let hub = WatchHub::new(100, Zxid(0));
        let mut r = Replica::new();
        let alice = r.session(&hub, vec![user("alice")]);
        let bob = r.session(&hub, vec![]);
        let (id, mut rx) = stream_of(&hub, bob);
        hub.add(id, "/", WatchKind::Recursive);
        // Created open and closed in one multi: never readable, never named.
        r.txn(
            &hub,
            alice,
            vec![create("/secret", vec![]), set_acl("/secret", only("alice"))],
        );
        // Closed and deleted: the deletion is judged by the ACL it had.
        r.txn(&hub, alice, vec![create("/secret/gone", only("alice"))]);
        r.txn(&hub, alice, vec![delete("/secret/gone")]);
        // Created and deleted in one multi: the ACL it had when deleted.
        r.txn(
            &hub,
            alice,
            vec![
                create("/secret/brief", vec![]),
                set_acl("/secret/brief", only("alice")),
                delete("/secret/brief"),
            ],
        );
        assert!(events(&mut rx).is_empty(), "bob heard of a secret");
        // Opened later: events from then on.
        r.txn(&hub, alice, vec![set_acl("/secret", vec![])]);
        r.txn(&hub, alice, vec![set("/secret")]);
        assert_eq!(paths(&mut rx), vec!["/secret"]);
        // An identity added to bob's session counts from the next event.
        r.txn(&hub, alice, vec![create("/secret/later", only("alice"))]);
        r.apply(
            &hub,
            vec![Command::AddIdentity {
                session_id: bob,
                identity: user("alice"),
            }],
        );
        r.txn(&hub, alice, vec![set("/secret/later")]);
        assert_eq!(paths(&mut rx), vec!["/secret/later"]);
    }

    #[test]
    fn one_shot_watches_keep_zookeepers_rules() {
        let hub = WatchHub::new(100, Zxid(0));
        let mut r = Replica::new();
        let alice = r.session(&hub, vec![user("alice")]);
        let bob = r.session(&hub, vec![]);
        let (id, mut rx) = stream_of(&hub, bob);
        // exists needs no permission: an exist watch hears of the creation
        // of the znode it names, whatever its ACL.
        hub.add(id, "/secret", WatchKind::Exist);
        r.txn(&hub, alice, vec![create("/secret", only("alice"))]);
        hub.add(id, "/secret", WatchKind::Data);
        r.txn(&hub, alice, vec![set("/secret")]);
        assert_eq!(paths(&mut rx), vec!["/secret", "/secret"]);
    }

    #[test]
    fn set_watches_checks_and_filters_as_live_watches_do() {
        let hub = WatchHub::new(100, Zxid(0));
        let mut r = Replica::new();
        let alice = r.session(&hub, vec![user("alice")]);
        let bob = r.session(&hub, vec![]);
        r.txn(&hub, alice, vec![create("/secret", only("alice"))]);
        r.txn(&hub, alice, vec![create("/secret/child", only("alice"))]);
        r.txn(&hub, alice, vec![create("/open", vec![])]);
        r.txn(&hub, alice, vec![create("/open/secret", only("alice"))]);
        let req = pb::SetWatchesRequest {
            last_zxid: 1,
            children: vec!["/secret".into()],
            persistent: vec!["/secret".into()],
            persistent_recursive: vec!["/".into(), "/secret".into(), "/open".into()],
            ..Default::default()
        };
        let (bob_stream, mut bob_rx) = stream_of(&hub, bob);
        let mut skipped = hub.set_watches(bob_stream, &r.state, Zxid(1), &req);
        skipped.sort();
        assert_eq!(skipped, vec!["/secret", "/secret", "/secret"]);
        let got = paths(&mut bob_rx);
        assert!(named_secret(&got).is_empty(), "{got:?}");
        assert_eq!(got, vec!["/open"], "its creation, once for / and /open");
        // Nothing under /secret registered for bob.
        assert!(!hub.remove(
            bob_stream,
            "/secret",
            &[WatchKind::Recursive, WatchKind::Persistent, WatchKind::Child]
        ));
        r.txn(
            &hub,
            alice,
            vec![set("/secret/child"), set("/open/secret"), set("/open")],
        );
        assert_eq!(paths(&mut bob_rx), vec!["/open"]);

        let (alice_stream, mut alice_rx) = stream_of(&hub, alice);
        let skipped = hub.set_watches(alice_stream, &r.state, Zxid(1), &req);
        assert!(skipped.is_empty(), "{skipped:?}");
        let got = paths(&mut alice_rx);
        assert!(got.contains(&"/secret/child".to_string()), "{got:?}");
        assert!(got.contains(&"/open/secret".to_string()), "{got:?}");
    }
}
