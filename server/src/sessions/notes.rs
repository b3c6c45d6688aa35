//! Apply-time notes: when this node applied each session's latest heartbeat
//! or create, kept outside the replicated state (apply stays deterministic).
//! A node that becomes leader seeds its deadlines from them, and reports them
//! when a new leader asks.
//!
//! Notes survive restarts on an **uptime clock**: milliseconds this node has
//! been running, summed over all its runs, saved with each note and as a
//! mark every tick. Downtime does not advance it, and no wall clock is ever
//! read, so after a restart a note can only look *younger* than it is (by
//! the downtime), never older, whatever the clocks did meanwhile: an NTP
//! step or a restored VM can delay an expiry, never bring one forward. Such
//! a note is marked uncertain, and a leader prefers another node's certain
//! note of the same entry (see `evidence`). Entries applied again after a
//! restart (up to the log's end at startup) leave no note: their apply time
//! says nothing about the client.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Key of the uptime mark in the notes tree (session ids are 8 bytes).
const MARK: &[u8] = b"uptime";

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

/// One session's note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    /// The entry that heartbeated or created the session.
    pub zxid: u64,
    /// When this node applied it.
    pub at: Instant,
    /// Taken in this run; false if carried across a restart (then `at` may
    /// be later than the truth, by the downtime).
    pub certain: bool,
}

#[derive(Default)]
struct Inner {
    notes: HashMap<u64, Note>,
    /// Changed since the last save.
    dirty: HashSet<u64>,
    /// Removed since the last save.
    gone: HashSet<u64>,
    /// Everything on disk is stale (a snapshot replaced the sessions).
    cleared: bool,
}

/// The notes of this node, in memory and on disk.
pub struct Notes {
    inner: Mutex<Inner>,
    tree: sled::Tree,
    uptime: Uptime,
    /// Entries up to this log index are replays of the log written before
    /// this start: they leave no note.
    replay_through: u64,
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl Notes {
    /// Loads the notes saved in `tree` before this start; entries up to
    /// `replay_through` will be applied again and leave no note.
    pub fn open(tree: sled::Tree, replay_through: u64) -> Result<Notes, sled::Error> {
        let mut saved = Vec::new();
        let mut base_ms = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv?;
            if k.as_ref() == MARK {
                base_ms = base_ms.max(be_u64(&v).unwrap_or(0));
                continue;
            }
            let (Some(id), Some(zxid), Some(ms)) = (
                be_u64(&k),
                v.get(..8).and_then(be_u64),
                v.get(8..).and_then(be_u64),
            ) else {
                continue;
            };
            // A note can be newer than the last mark that reached the disk.
            base_ms = base_ms.max(ms);
            saved.push((id, zxid, ms));
        }
        let uptime = Uptime {
            base_ms,
            started: Instant::now(),
        };
        let notes = saved
            .into_iter()
            .map(|(id, zxid, ms)| {
                let at = uptime.instant_of(ms);
                (
                    id,
                    Note {
                        zxid,
                        at,
                        certain: false,
                    },
                )
            })
            .collect();
        Ok(Notes {
            inner: Mutex::new(Inner {
                notes,
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
    /// applied `at`. Returns false (and notes nothing) for a replay.
    pub fn note(&self, id: u64, zxid: u64, at: Instant) -> bool {
        if zxid <= self.replay_through {
            return false;
        }
        let mut inner = self.lock();
        inner.notes.insert(
            id,
            Note {
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
    pub fn forget(&self, id: u64) {
        let mut inner = self.lock();
        if inner.notes.remove(&id).is_some() {
            inner.dirty.remove(&id);
            inner.gone.insert(id);
        }
    }

    /// A snapshot replaced the session table: no note says anything now.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.notes.clear();
        inner.dirty.clear();
        inner.gone.clear();
        inner.cleared = true;
    }

    /// When this node applied the session's latest heartbeat or create.
    pub fn get(&self, id: u64) -> Option<Note> {
        self.lock().notes.get(&id).copied()
    }

    /// Every note.
    pub fn all(&self) -> HashMap<u64, Note> {
        self.lock().notes.clone()
    }

    /// Saves what changed since the last save, and the uptime mark, in one
    /// batch. Not flushed here: sled's own flushes and the log's carry it;
    /// a save lost in a crash only makes notes look younger.
    pub fn save(&self) -> Result<(), sled::Error> {
        let (cleared, dirty, gone) = {
            let mut inner = self.lock();
            let dirty: Vec<(u64, Note)> = inner
                .dirty
                .drain()
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|id| inner.notes.get(&id).map(|at| (id, *at)))
                .collect();
            let gone: Vec<u64> = inner.gone.drain().collect();
            (std::mem::take(&mut inner.cleared), dirty, gone)
        };
        if cleared {
            self.tree.clear()?;
        }
        let mut batch = sled::Batch::default();
        for (id, note) in dirty {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&note.zxid.to_be_bytes());
            value[8..].copy_from_slice(&self.uptime.at_ms(note.at).to_be_bytes());
            batch.insert(&id.to_be_bytes(), &value);
        }
        for id in gone {
            batch.remove(&id.to_be_bytes());
        }
        batch.insert(MARK, &self.uptime.now_ms().to_be_bytes());
        self.tree.apply_batch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("notes").unwrap();
        (dir, db, tree)
    }

    #[test]
    fn a_restart_keeps_ages_and_never_adds_downtime() {
        let (_dir, _db, t) = tree();
        let notes = Notes::open(t.clone(), 0).unwrap();
        notes.note(1, 10, Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        notes.note(2, 11, Instant::now());
        notes.note(3, 12, Instant::now());
        notes.forget(3);
        notes.save().unwrap();
        drop(notes);
        // "Down" for a while, whatever the wall clock says meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        let notes = Notes::open(t, 12).unwrap();
        let one = notes.get(1).unwrap();
        assert_eq!((one.zxid, one.certain), (10, false), "carried across a restart");
        let age = one.at.elapsed();
        assert!(
            age >= Duration::from_millis(300) && age < Duration::from_millis(450),
            "age {age:?}: the run before counts, the downtime does not"
        );
        assert!(notes.get(2).unwrap().at.elapsed() < Duration::from_millis(150));
        assert!(notes.get(3).is_none(), "forgotten stays forgotten");
        assert!(
            !notes.note(4, 12, Instant::now()),
            "a replayed entry leaves no note"
        );
        assert!(notes.note(4, 13, Instant::now()));
        assert!(notes.get(4).unwrap().certain);
    }

    #[test]
    fn a_cleared_table_forgets_saved_notes() {
        let (_dir, _db, t) = tree();
        let notes = Notes::open(t.clone(), 0).unwrap();
        notes.note(1, 1, Instant::now());
        notes.save().unwrap();
        notes.clear();
        notes.save().unwrap();
        assert!(Notes::open(t, 0).unwrap().all().is_empty());
    }
}
