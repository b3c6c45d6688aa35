//! The node-local record of when this node last heard from each of its
//! clients' sessions. Read by the tick loop, which forwards it to the leader
//! as ages (never as clock readings: clocks differ between machines).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Heard {
    at: Instant,
    /// Not yet reported to the leader.
    dirty: bool,
}

/// Sessions this node's clients touched, and when.
#[derive(Default)]
pub struct Activity {
    heard: Mutex<HashMap<u64, Heard>>,
}

impl Activity {
    /// A client of this node just used the session.
    pub fn touch(&self, session_id: u64) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.insert(
            session_id,
            Heard {
                at: Instant::now(),
                dirty: true,
            },
        );
    }

    /// The session is gone: forget it.
    pub fn forget(&self, session_id: u64) {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_id);
    }

    /// Touches not yet reported (all recent ones when `all`), as (id, age in
    /// ms); marks them reported. Entries older than `keep` are dropped.
    pub fn take_report(&self, all: bool, keep: Duration) -> Vec<(u64, u64)> {
        let now = Instant::now();
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.retain(|_, h| now.duration_since(h.at) <= keep);
        heard
            .iter_mut()
            .filter(|(_, h)| all || h.dirty)
            .map(|(id, h)| {
                h.dirty = false;
                (*id, now.duration_since(h.at).as_millis() as u64)
            })
            .collect()
    }

    /// Every recorded touch as (id, age in ms), reported or not.
    pub fn ages(&self) -> Vec<(u64, u64)> {
        let now = Instant::now();
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, h)| (*id, now.duration_since(h.at).as_millis() as u64))
            .collect()
    }

    /// Marks every recent touch unreported again (a report to the leader failed).
    pub fn mark_all_dirty(&self) {
        for h in self.heard.lock().unwrap_or_else(|p| p.into_inner()).values_mut() {
            h.dirty = true;
        }
    }
}
