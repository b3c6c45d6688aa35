//! Watches: registered on the node that holds the session's stream, fired
//! when that node applies a change (where a watch is fired).
//!
//! Firing happens inside apply, under the state's write lock and before the
//! applied index moves, so an event is queued on the session's stream before
//! any reply that could reflect its change. A bounded history of recent
//! changes lets a client that reconnects replay what its persistent watches
//! missed, or learn that it must resync.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ensemble_proto::v1 as pb;
use tokio::sync::mpsc;

use ensemble_proto::Zxid;

use crate::consensus::state_machine::ChangeListener;
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
    /// Who a change notifies, each once; one-shot watches are used up.
    fn targets(&mut self, change: &Change) -> HashSet<StreamId> {
        let mut out = HashSet::new();
        for kind in kinds_on_path(change.kind) {
            let key = (change.path.clone(), *kind);
            if one_shot(*kind) {
                if let Some(set) = self.by_path.remove(&key) {
                    out.extend(set);
                }
            } else if let Some(set) = self.by_path.get(&key) {
                out.extend(set.iter().copied());
            }
        }
        if change.kind != ChangeKind::ChildrenChanged {
            for r in self.recursive.iter().filter(|r| is_under(&change.path, r)) {
                if let Some(set) = self.by_path.get(&(r.clone(), WatchKind::Recursive)) {
                    out.extend(set.iter().copied());
                }
            }
        }
        out
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

    /// Registers a session stream; events go to `tx`.
    pub fn add_watcher(&self, tx: Outgoing) -> (StreamId, Arc<AtomicBool>) {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let overflowed = Arc::new(AtomicBool::new(false));
        inner.watchers.insert(
            id,
            Watcher {
                tx,
                overflowed: overflowed.clone(),
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
    pub fn set_watches(&self, id: StreamId, state: &ZState, since: Zxid, req: &pb::SetWatchesRequest) {
        let mut inner = self.lock();
        let now = state.zxid();
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
        for (paths, kind) in [
            (&req.persistent, WatchKind::Persistent),
            (&req.persistent_recursive, WatchKind::Recursive),
        ] {
            for p in paths {
                inner.insert(p, kind, id);
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
                        && req.persistent.contains(&c.path);
                    let under = c.kind != ChangeKind::ChildrenChanged
                        && req.persistent_recursive.iter().any(|r| is_under(&c.path, r));
                    exact || under
                })
                .map(|c| (event_type(c.kind), c.path.clone(), c.zxid))
                .collect();
            for (kind, p, zxid) in missed {
                inner.send(id, event_message(kind, &p, zxid));
            }
        }
    }
}

impl ChangeListener for WatchHub {
    fn on_changes(&self, changes: &[Change]) {
        let mut inner = self.lock();
        for change in changes {
            inner.remember(change, self.history_cap);
            if inner.watchers.is_empty() {
                continue;
            }
            let kind = event_type(change.kind);
            for id in inner.targets(change) {
                inner.send(id, event_message(kind, &change.path, change.zxid));
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
    use super::*;

    fn change(zxid: u64, path: &str, kind: ChangeKind) -> Change {
        Change {
            zxid: Zxid(zxid),
            path: path.into(),
            kind,
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

    #[test]
    fn one_shot_fires_once_persistent_keeps_firing() {
        let hub = WatchHub::new(100, Zxid(0));
        let (tx, mut rx) = mpsc::channel(100);
        let (id, _) = hub.add_watcher(tx);
        hub.add(id, "/a", WatchKind::Data);
        hub.add(id, "/a", WatchKind::Persistent);
        hub.add(id, "/", WatchKind::Recursive);
        hub.on_changes(&[change(5, "/a", ChangeKind::DataChanged)]);
        hub.on_changes(&[change(6, "/a", ChangeKind::DataChanged)]);
        hub.on_changes(&[change(7, "/a", ChangeKind::ChildrenChanged)]);
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
        let (tx, mut rx) = mpsc::channel(100);
        let (id, _) = hub.add_watcher(tx);
        hub.add(id, "/a", WatchKind::Recursive);
        hub.on_changes(&[
            change(1, "/a/b/c", ChangeKind::Created),
            change(2, "/ab", ChangeKind::Created),
            change(3, "/a", ChangeKind::DataChanged),
            change(4, "/a/b", ChangeKind::ChildrenChanged),
        ]);
        let paths: Vec<String> = events(&mut rx).into_iter().map(|(_, p)| p).collect();
        assert_eq!(paths, vec!["/a/b/c", "/a"]);
        assert!(hub.remove(id, "/a", &[WatchKind::Recursive]));
        hub.on_changes(&[change(5, "/a/x", ChangeKind::Created)]);
        assert!(events(&mut rx).is_empty());
    }

    #[test]
    fn reconnect_replays_history_or_asks_for_resync() {
        let hub = WatchHub::new(2, Zxid(0));
        hub.on_changes(&[
            change(3, "/r/x", ChangeKind::Created),
            change(4, "/r/x", ChangeKind::DataChanged),
        ]);
        let (tx, mut rx) = mpsc::channel(100);
        let (id, _) = hub.add_watcher(tx);
        let req = pb::SetWatchesRequest {
            persistent_recursive: vec!["/r".into()],
            ..Default::default()
        };
        hub.set_watches(id, &ZState::default(), Zxid(2), &req);
        assert_eq!(events(&mut rx).len(), 2);
        hub.on_changes(&[change(5, "/r/y", ChangeKind::Created)]);
        let _ = events(&mut rx);
        // The history (2 changes) no longer reaches back to zxid 2.
        hub.set_watches(id, &ZState::default(), Zxid(2), &req);
        assert_eq!(events(&mut rx), vec![(pb::EventType::Resync as i32, "/r".into())]);
    }
}
