//! Fail-stop: a part of the member that can not go on (a storage write
//! failed, a listener died) stops the whole member, which exits non-zero so
//! its supervisor and its operator see it; it never lingers half-alive.

use tokio::sync::watch;

/// The member's stop switch; cheap to clone.
#[derive(Clone)]
pub struct FailStop {
    tx: watch::Sender<Option<String>>,
}

impl FailStop {
    /// A switch, and the receiver the member's main task waits on.
    pub fn new() -> (Self, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        (FailStop { tx }, rx)
    }

    /// Stops the member; the first reason given is the one reported.
    pub fn stop(&self, why: String) {
        self.tx.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
    }
}
