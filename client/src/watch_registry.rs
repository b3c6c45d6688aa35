//! The client's side of watches: who waits for which event, and what to
//! re-register after moving to another node. The matching rules are the
//! server's (`server/src/api/watches.rs`): the server sends one event per
//! change, and the client hands it to every local watch it satisfies.
//! Watches are keyed by full paths (base path included), as the server
//! names them; the application gets the event under its base path.

use std::collections::HashMap;

use ensemble_proto::v1 as pb;
use ensemble_proto::Zxid;
use tokio::sync::{mpsc, oneshot};

use crate::chroot::Chroot;
use crate::types::{EventType, WatchEvent};

/// The kinds of one-shot watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OneShot {
    /// On an existing znode (get/exists): created, deleted, data changed.
    Data,
    /// On a missing znode (exists): created.
    Exist,
    /// On children (ls): children changed, deleted.
    Child,
}

/// Every local watch, by full path.
#[derive(Default)]
pub(crate) struct Registry {
    one_shot: HashMap<(String, OneShot), Vec<oneshot::Sender<WatchEvent>>>,
    persistent: HashMap<(String, bool), Vec<mpsc::UnboundedSender<WatchEvent>>>,
}

fn fires_one_shot(kind: OneShot, ev: EventType) -> bool {
    use EventType as E;
    match kind {
        OneShot::Data | OneShot::Exist => matches!(ev, E::NodeCreated | E::NodeDeleted | E::NodeDataChanged),
        OneShot::Child => matches!(ev, E::NodeChildrenChanged | E::NodeDeleted),
    }
}

fn is_under(path: &str, root: &str) -> bool {
    root == "/" || path == root || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

impl Registry {
    pub fn add_one_shot(&mut self, path: &str, kind: OneShot) -> oneshot::Receiver<WatchEvent> {
        let (tx, rx) = oneshot::channel();
        self.one_shot
            .entry((path.to_string(), kind))
            .or_default()
            .push(tx);
        rx
    }

    /// A one-shot registered as Data turned out to watch a missing znode.
    pub fn retag(&mut self, path: &str, from: OneShot, to: OneShot) {
        if let Some(waiters) = self.one_shot.remove(&(path.to_string(), from)) {
            self.one_shot
                .entry((path.to_string(), to))
                .or_default()
                .extend(waiters);
        }
    }

    /// Drops one-shot waiters whose request failed (their receivers are gone).
    pub fn prune(&mut self) {
        self.one_shot.retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
        self.persistent.retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
    }

    pub fn add_persistent(&mut self, path: &str, recursive: bool) -> mpsc::UnboundedReceiver<WatchEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.persistent
            .entry((path.to_string(), recursive))
            .or_default()
            .push(tx);
        rx
    }

    /// Forgets persistent watches on a path; true if there were any.
    pub fn remove_persistent(&mut self, path: &str, recursive: bool) -> bool {
        self.persistent.remove(&(path.to_string(), recursive)).is_some()
    }

    /// Hands an event (on a full path) to every local watch it satisfies,
    /// with its path under the base path.
    pub fn dispatch(&mut self, ev: &WatchEvent, chroot: &Chroot) {
        let delivered = WatchEvent {
            path: chroot.strip(ev.path.clone()),
            ..ev.clone()
        };
        if ev.kind == EventType::Resync {
            for ((p, _), senders) in self.persistent.iter() {
                if *p == ev.path {
                    senders.iter().for_each(|s| drop(s.send(delivered.clone())));
                }
            }
            return;
        }
        for kind in [OneShot::Data, OneShot::Exist, OneShot::Child] {
            if fires_one_shot(kind, ev.kind) {
                if let Some(waiters) = self.one_shot.remove(&(ev.path.clone(), kind)) {
                    for w in waiters {
                        let _ = w.send(delivered.clone());
                    }
                }
            }
        }
        for ((p, recursive), senders) in self.persistent.iter() {
            let hit = if *recursive {
                ev.kind != EventType::NodeChildrenChanged && is_under(&ev.path, p)
            } else {
                *p == ev.path
            };
            if hit {
                senders.iter().for_each(|s| drop(s.send(delivered.clone())));
            }
        }
    }

    /// What to re-register on a new node.
    pub fn set_watches(&mut self, last_zxid: Zxid) -> Option<pb::SetWatchesRequest> {
        self.prune();
        if self.one_shot.is_empty() && self.persistent.is_empty() {
            return None;
        }
        let mut req = pb::SetWatchesRequest {
            last_zxid: last_zxid.0,
            ..Default::default()
        };
        for (path, kind) in self.one_shot.keys() {
            match kind {
                OneShot::Data => req.data.push(path.clone()),
                OneShot::Exist => req.exist.push(path.clone()),
                OneShot::Child => req.children.push(path.clone()),
            }
        }
        for (path, recursive) in self.persistent.keys() {
            if *recursive {
                req.persistent_recursive.push(path.clone());
            } else {
                req.persistent.push(path.clone());
            }
        }
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, path: &str) -> WatchEvent {
        WatchEvent {
            kind,
            path: path.into(),
            zxid: Zxid(1),
        }
    }

    #[test]
    fn events_reach_the_watches_they_satisfy() {
        let none = Chroot::default();
        let mut r = Registry::default();
        let mut data = r.add_one_shot("/a", OneShot::Data);
        let mut child = r.add_one_shot("/a", OneShot::Child);
        let mut rec = r.add_persistent("/", true);
        let mut exact = r.add_persistent("/a/b", false);
        r.dispatch(&ev(EventType::NodeChildrenChanged, "/a"), &none);
        assert!(data.try_recv().is_err());
        assert_eq!(child.try_recv().unwrap().kind, EventType::NodeChildrenChanged);
        assert!(rec.try_recv().is_err(), "recursive watches skip children events");
        r.dispatch(&ev(EventType::NodeCreated, "/a/b"), &none);
        assert_eq!(rec.try_recv().unwrap().path, "/a/b");
        assert_eq!(exact.try_recv().unwrap().kind, EventType::NodeCreated);
        r.dispatch(&ev(EventType::NodeDataChanged, "/a"), &none);
        assert_eq!(data.try_recv().unwrap().kind, EventType::NodeDataChanged);
        let set = r.set_watches(Zxid(9)).unwrap();
        assert!(
            set.data.is_empty() && set.children.is_empty(),
            "one-shots are used up"
        );
        assert_eq!(set.persistent_recursive, vec!["/"]);
    }

    #[test]
    fn events_reach_the_application_under_its_base_path() {
        let app = Chroot::new("/app").unwrap();
        let mut r = Registry::default();
        let mut data = r.add_one_shot("/app/a", OneShot::Data);
        let mut tree = r.add_persistent("/app", true);
        r.dispatch(&ev(EventType::NodeDataChanged, "/app/a"), &app);
        assert_eq!(data.try_recv().unwrap().path, "/a");
        assert_eq!(tree.try_recv().unwrap().path, "/a");
    }

    #[test]
    fn under_means_path_components() {
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }
}
