//! Node selection: which node to dial next. A frozen node still accepts TCP
//! connections (the kernel answers for it), so each attempt on it costs a
//! whole attempt timeout; while a new leader is being elected the client
//! must not spend its remaining time there. Nodes that recently stopped
//! answering are tried again only when every other node is silent too, or
//! after a session timeout.

use std::time::{Duration, Instant};

/// Nodes that recently stopped answering.
pub(super) struct Silent {
    since: Vec<Option<Instant>>,
    forget_after: Duration,
}

impl Silent {
    pub fn new(nodes: usize, forget_after: Duration) -> Self {
        Silent {
            since: vec![None; nodes],
            forget_after,
        }
    }

    pub fn mark(&mut self, idx: usize) {
        self.since[idx] = Some(Instant::now());
    }

    pub fn clear(&mut self, idx: usize) {
        self.since[idx] = None;
    }

    fn is_silent(&self, idx: usize) -> bool {
        self.since[idx].is_some_and(|at| at.elapsed() < self.forget_after)
    }

    /// The first node at or after `from` (in turn) that is neither busy nor
    /// silent; failing that the first that is not busy; failing that `from`.
    pub fn next_from(&self, from: usize, busy: &[bool]) -> usize {
        let n = self.since.len();
        let free = || (0..n).map(|k| (from + k) % n).filter(|&i| !busy[i]);
        free()
            .find(|&i| !self.is_silent(i))
            .or_else(|| free().next())
            .unwrap_or(from % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_and_busy_nodes_are_skipped_while_others_are_free() {
        let idle = [false; 3];
        let mut silent = Silent::new(3, Duration::from_secs(60));
        assert_eq!(silent.next_from(4, &idle), 1, "wraps around");
        silent.mark(1);
        assert_eq!(silent.next_from(1, &idle), 2);
        silent.mark(2);
        assert_eq!(silent.next_from(1, &idle), 0);
        assert_eq!(
            silent.next_from(1, &[true, false, false]),
            1,
            "a free silent node before a busy one"
        );
        silent.mark(0);
        assert_eq!(silent.next_from(1, &idle), 1, "all silent: keep the turn");
        silent.clear(2);
        assert_eq!(silent.next_from(0, &idle), 2);
        assert_eq!(silent.next_from(0, &[false, false, true]), 0);

        let mut brief = Silent::new(2, Duration::ZERO);
        brief.mark(0);
        assert_eq!(brief.next_from(0, &[false; 2]), 0, "forgotten at once");
    }
}
