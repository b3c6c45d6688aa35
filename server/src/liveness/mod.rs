//! Layer 3: liveness. Which session was touched where and when, and the leader's
//! expiry decisions:
//!
//! - [`touches`]: every member's record of its own clients' requests.
//! - [`apply_marks`]: when this member applied each session's latest
//!   heartbeat, kept across restarts on an uptime clock.
//! - [`evidence`]: what members report to a new leader, and how it merges.
//! - [`deadlines`]: the leader's deadline buckets.
//! - [`decision`]: the leader's expiry decision, a pure function of its
//!   deadlines, the evidence it learned and the time (table-tested).
//! - [`expiry`]: the per-member loop: reports touches to the leader, and on
//!   the leader gathers evidence, asks [`decision`] and proposes what it
//!   says (with the rule that keeps clocks out of it).
//!
//! The peer calls this layer makes (touch reports, report rounds) are the
//! peer network's (`crate::peer`), reached through [`Reporter`].

pub mod apply_marks;
pub mod deadlines;
pub mod decision;
pub mod evidence;
pub mod expiry;
pub mod touches;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ensemble_proto::SessionId;
use tokio::sync::mpsc;

pub use apply_marks::ApplyMarks;
pub use evidence::{Evidence, MergedEvidence};
pub use expiry::Report;
pub use touches::Touches;

use crate::state::{NodeId, PeerNode};

/// What the liveness loop asks of other members. Implemented by the peer
/// network; this layer only says what it needs.
#[tonic::async_trait]
pub trait Reporter: Send + Sync {
    /// Tells `leader` which sessions this member's clients touched, as
    /// (id, age in ms); false if it did not take them (not the leader, or
    /// not reached).
    async fn report_touches(&self, leader: NodeId, node: PeerNode, touches: Vec<(SessionId, u64)>) -> bool;

    /// Asks every other member for its evidence; returns how many voters
    /// answered and their evidence merged per session.
    async fn gather_evidence(&self) -> (usize, HashMap<SessionId, MergedEvidence>);
}

/// What the other layers hold of liveness: cheap to clone.
#[derive(Clone)]
pub(crate) struct Liveness {
    /// This member's clients' touches.
    pub touches: Arc<Touches>,
    /// This member's apply marks.
    pub marks: Arc<ApplyMarks>,
    /// Reports from other members, for the loop.
    pub reports: mpsc::UnboundedSender<Report>,
}

impl Liveness {
    /// The evidence this member holds of every session it knows of: its
    /// apply marks and its clients' touches, aged now.
    pub fn evidence(&self) -> Vec<(SessionId, Evidence)> {
        let now = Instant::now();
        let mut all: HashMap<SessionId, Evidence> = self
            .marks
            .all()
            .into_iter()
            .map(|(id, mark)| (id, Evidence::of_mark(mark, now)))
            .collect();
        for (id, age) in self.touches.ages() {
            all.entry(id).or_default().touch_ms = Some(age);
        }
        all.into_iter().collect()
    }
}
