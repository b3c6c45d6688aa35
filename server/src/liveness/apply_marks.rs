//! Apply marks: when this member applied each session's latest heartbeat
//! or create entry, kept outside the replicated state (apply stays
//! deterministic). A member that becomes leader seeds its deadlines from
//! them, and reports them when a new leader asks.
//!
//! Apply marks survive restarts on an **uptime clock**: milliseconds this
//! member has been running, summed over all its runs, saved with each mark
//! and as a clock reading every tick. Downtime does not advance it, and no
//! wall clock is ever read, so after a restart a mark can only look
//! *younger* than it is (by the downtime), never older, whatever the clocks
//! did meanwhile: an NTP step or a restored VM can delay an expiry, never
//! bring one forward. Such a mark is *uncertain*, and a leader prefers
//! another member's certain mark of the same entry (see `evidence`).
//! Entries applied again after a restart (up to the log's end at startup)
//! leave no mark: their apply time says nothing about the client.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ensemble_proto::{SessionId, Zxid};

/// Key of the uptime clock's reading in the tree (session ids are 8 bytes).
const UPTIME: &[u8] = b"uptime";

/// This node's uptime, continued across restarts.
struct Uptime {
    /// Uptime when this process started.
    base_ms: u64,
    started: Instant,
}

impl Uptime {
    fn now_ms(&self) -> u64 {
        self.at_ms(Instant::now())
    }

    fn at_ms(&self, at: Instant) -> u64 {
        self.base_ms + at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The instant of this run that an uptime reading corresponds to; a
    /// reading from before this run maps to its age at the last mark, as if
    /// no time had passed while the node was down.
    fn instant_of(&self, ms: u64) -> Instant {
        let age = Duration::from_millis(self.base_ms.saturating_sub(ms));
        self.started.checked_sub(age).unwrap_or(self.started)
    }
}

/// One session's apply mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyMark {
    /// The entry that heartbeated or created the session.
    pub zxid: Zxid,
    /// When this node applied it.
    pub at: Instant,
    /// Taken in this run; false if carried across a restart (then `at` may
    /// be later than the truth, by the downtime).
    pub certain: bool,
}

#[derive(Default)]
struct Inner {
    marks: HashMap<SessionId, ApplyMark>,
    /// Changed since the last save.
    dirty: HashSet<SessionId>,
    /// Removed since the last save.
    gone: HashSet<SessionId>,
    /// Everything on disk is stale (a snapshot replaced the sessions).
    cleared: bool,
}

/// The apply marks of this member, in memory and on disk.
pub struct ApplyMarks {
    inner: Mutex<Inner>,
    tree: sled::Tree,
    uptime: Uptime,
    /// Entries up to this log index are replays of the log written before
    /// this start: they leave no mark.
    replay_through: Zxid,
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl ApplyMarks {
    /// Loads the marks saved in `tree` before this start; entries up to
    /// `replay_through` will be applied again and leave no mark.
    pub fn open(tree: sled::Tree, replay_through: Zxid) -> Result<ApplyMarks, sled::Error> {
        let mut saved = Vec::new();
        let mut base_ms = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv?;
            if k.as_ref() == UPTIME {
                base_ms = base_ms.max(be_u64(&v).unwrap_or(0));
                continue;
            }
            let (Some(id), Some(zxid), Some(ms)) = (
                be_u64(&k).map(SessionId),
                v.get(..8).and_then(be_u64).map(Zxid),
                v.get(8..).and_then(be_u64),
            ) else {
                continue;
            };
            // A mark can be newer than the last uptime reading that reached the disk.
            base_ms = base_ms.max(ms);
            saved.push((id, zxid, ms));
        }
        let uptime = Uptime {
            base_ms,
            started: Instant::now(),
        };
        let marks = saved
            .into_iter()
            .map(|(id, zxid, ms)| {
                let at = uptime.instant_of(ms);
                (
                    id,
                    ApplyMark {
                        zxid,
                        at,
                        certain: false,
                    },
                )
            })
            .collect();
        Ok(ApplyMarks {
            inner: Mutex::new(Inner {
                marks,
                ..Inner::default()
            }),
            tree,
            uptime,
            replay_through,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry at `zxid` that heartbeated or created the session was
    /// applied `at`. Returns false (and marks nothing) for a replay.
    pub fn mark(&self, id: SessionId, zxid: Zxid, at: Instant) -> bool {
        if zxid <= self.replay_through {
            return false;
        }
        let mut inner = self.lock();
        inner.marks.insert(
            id,
            ApplyMark {
                zxid,
                at,
                certain: true,
            },
        );
        inner.gone.remove(&id);
        inner.dirty.insert(id);
        true
    }

    /// The session is gone.
    pub fn forget(&self, id: SessionId) {
        let mut inner = self.lock();
        if inner.marks.remove(&id).is_some() {
            inner.dirty.remove(&id);
            inner.gone.insert(id);
        }
    }

    /// A snapshot replaced the session table: no mark says anything now.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.marks.clear();
        inner.dirty.clear();
        inner.gone.clear();
        inner.cleared = true;
    }

    /// When this member applied the session's latest heartbeat or create.
    pub fn get(&self, id: SessionId) -> Option<ApplyMark> {
        self.lock().marks.get(&id).copied()
    }

    /// Every mark.
    pub fn all(&self) -> HashMap<SessionId, ApplyMark> {
        self.lock().marks.clone()
    }

    /// Saves what changed since the last save, and the uptime clock. Not
    /// flushed here: sled's own flushes and the log's carry it; a save lost
    /// in a crash only makes marks look younger. Key by key, not as one
    /// sled batch: a batch takes sled's global write lock, which waits for
    /// every write in progress, the log's appends among them. The uptime
    /// goes first, so a saved mark is never later than the saved uptime.
    /// It blocks on the disk: call it off the async workers.
    pub fn save(&self) -> Result<(), sled::Error> {
        let (cleared, dirty, gone) = {
            let mut inner = self.lock();
            let dirty: Vec<(SessionId, ApplyMark)> = inner
                .dirty
                .drain()
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|id| inner.marks.get(&id).map(|at| (id, *at)))
                .collect();
            let gone: Vec<SessionId> = inner.gone.drain().collect();
            (std::mem::take(&mut inner.cleared), dirty, gone)
        };
        if cleared {
            self.tree.clear()?;
        }
        self.tree.insert(UPTIME, &self.uptime.now_ms().to_be_bytes())?;
        for (id, mark) in dirty {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&mark.zxid.0.to_be_bytes());
            value[8..].copy_from_slice(&self.uptime.at_ms(mark.at).to_be_bytes());
            self.tree.insert(id.0.to_be_bytes(), &value)?;
        }
        for id in gone {
            self.tree.remove(id.0.to_be_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("marks").unwrap();
        (dir, db, tree)
    }

    #[test]
    fn a_restart_keeps_ages_and_never_adds_downtime() {
        let (_dir, _db, t) = tree();
        let marks = ApplyMarks::open(t.clone(), Zxid(0)).unwrap();
        marks.mark(SessionId(1), Zxid(10), Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        marks.mark(SessionId(2), Zxid(11), Instant::now());
        marks.mark(SessionId(3), Zxid(12), Instant::now());
        marks.forget(SessionId(3));
        marks.save().unwrap();
        drop(marks);
        // "Down" for a while, whatever the wall clock says meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        let marks = ApplyMarks::open(t, Zxid(12)).unwrap();
        let one = marks.get(SessionId(1)).unwrap();
        assert_eq!(
            (one.zxid, one.certain),
            (Zxid(10), false),
            "carried across a restart"
        );
        let age = one.at.elapsed();
        assert!(
            age >= Duration::from_millis(300) && age < Duration::from_millis(450),
            "age {age:?}: the run before counts, the downtime does not"
        );
        assert!(marks.get(SessionId(2)).unwrap().at.elapsed() < Duration::from_millis(150));
        assert!(marks.get(SessionId(3)).is_none(), "forgotten stays forgotten");
        assert!(
            !marks.mark(SessionId(4), Zxid(12), Instant::now()),
            "a replayed entry leaves no mark"
        );
        assert!(marks.mark(SessionId(4), Zxid(13), Instant::now()));
        assert!(marks.get(SessionId(4)).unwrap().certain);
    }

    #[test]
    fn a_cleared_table_forgets_saved_marks() {
        let (_dir, _db, t) = tree();
        let marks = ApplyMarks::open(t.clone(), Zxid(0)).unwrap();
        marks.mark(SessionId(1), Zxid(1), Instant::now());
        marks.save().unwrap();
        marks.clear();
        marks.save().unwrap();
        assert!(ApplyMarks::open(t, Zxid(0)).unwrap().all().is_empty());
    }
}
