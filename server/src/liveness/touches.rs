//! Touches: when a client of this member last used each of its sessions
//! (any proven request, heartbeats included). Read by the liveness loop,
//! which reports them to the leader as ages, never as clock readings:
//! clocks differ between machines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ensemble_proto::SessionId;

#[derive(Clone, Copy)]
struct Touch {
    at: Instant,
    /// Not yet reported to the leader.
    unreported: bool,
}

/// The sessions this member's clients touched, and when.
#[derive(Default)]
pub struct Touches {
    touches: Mutex<HashMap<SessionId, Touch>>,
}

impl Touches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Touch>> {
        self.touches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client of this member just used the session.
    pub fn touch(&self, session_id: SessionId) {
        crate::metrics::touched();
        self.lock().insert(
            session_id,
            Touch {
                at: Instant::now(),
                unreported: true,
            },
        );
    }

    /// The session is gone: forget it.
    pub fn forget(&self, session_id: SessionId) {
        self.lock().remove(&session_id);
    }

    /// Touches not yet reported (all recent ones when `all`), as (id, age in
    /// ms); marks them reported. Touches older than `keep` are dropped.
    pub fn take_report(&self, all: bool, keep: Duration) -> Vec<(SessionId, u64)> {
        let now = Instant::now();
        let mut touches = self.lock();
        touches.retain(|_, t| now.duration_since(t.at) <= keep);
        touches
            .iter_mut()
            .filter(|(_, t)| all || t.unreported)
            .map(|(id, t)| {
                t.unreported = false;
                (*id, now.duration_since(t.at).as_millis() as u64)
            })
            .collect()
    }

    /// Every recorded touch as (id, age in ms), reported or not.
    pub fn ages(&self) -> Vec<(SessionId, u64)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(id, t)| (*id, now.duration_since(t.at).as_millis() as u64))
            .collect()
    }

    /// Marks every recent touch unreported again (a report to the leader failed).
    pub fn mark_all_unreported(&self) {
        for t in self.lock().values_mut() {
            t.unreported = true;
        }
    }
}
