//! Checks of the Raft messages a member receives (requests on its peer
//! port, and the answers to its own calls) before openraft sees them.
//!
//! Peers are authenticated first (`Gate`, the TLS handshake); these checks
//! are the second line, against a member that misbehaves. openraft trusts
//! what it is given: one AppendEntries with term `u64::MAX` is adopted by
//! every member, and the next election adds one to it, wraps, and panics
//! the Raft core of every member (decision 014). A message is refused when
//! it is impossible: a term or index no cluster reaches, entries that do not
//! follow their predecessor, an entry from a later term than its sender's.
//! Large but possible jumps are accepted: a member cut off for long comes
//! back with a much higher term, and refusing it could leave the cluster
//! without a leader for good.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};

use crate::consensus::TypeConfig;
use crate::state::NodeId;

/// The highest term a member accepts. An election every millisecond for
/// 8 900 years stays below it; `u64::MAX` minus it is room enough that no
/// arithmetic on a term can overflow.
pub const MAX_TERM: u64 = 1 << 48;

/// The highest log index a member accepts (a million entries a second for
/// 146 000 years).
pub const MAX_INDEX: u64 = 1 << 62;

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Impossible(String);

fn check_vote(what: &str, vote: &Vote<NodeId>) -> Result<(), Impossible> {
    if vote.leader_id.term > MAX_TERM {
        return Err(Impossible(format!(
            "{what}: term {} is beyond any reachable term (at most {MAX_TERM})",
            vote.leader_id.term
        )));
    }
    Ok(())
}

fn check_log_id(what: &str, id: &LogId<NodeId>, vote: &Vote<NodeId>) -> Result<(), Impossible> {
    if id.index > MAX_INDEX {
        return Err(Impossible(format!(
            "{what}: log index {} is beyond any reachable index",
            id.index
        )));
    }
    if id.leader_id.term > vote.leader_id.term {
        return Err(Impossible(format!(
            "{what}: log id {id} is from a later term than the sender's ({})",
            vote.leader_id.term
        )));
    }
    Ok(())
}

/// An AppendEntries: its entries follow `prev_log_id` one by one, in terms
/// that never go back and never pass the leader's.
pub fn append_entries(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), Impossible> {
    let what = "append entries";
    check_vote(what, &req.vote)?;
    if let Some(prev) = &req.prev_log_id {
        check_log_id(what, prev, &req.vote)?;
    }
    if let Some(commit) = &req.leader_commit {
        check_log_id(what, commit, &req.vote)?;
    }
    let first = req.prev_log_id.map_or(0, |p| p.index + 1);
    let mut term = req.prev_log_id.map_or(0, |p| p.leader_id.term);
    for (expected, entry) in (first..).zip(&req.entries) {
        check_log_id(what, &entry.log_id, &req.vote)?;
        if entry.log_id.index != expected {
            return Err(Impossible(format!(
                "{what}: entry {} where index {expected} should follow",
                entry.log_id
            )));
        }
        if entry.log_id.leader_id.term < term {
            return Err(Impossible(format!(
                "{what}: entry {} goes back to an earlier term than the entry before it",
                entry.log_id
            )));
        }
        term = entry.log_id.leader_id.term;
    }
    Ok(())
}

/// A vote request.
pub fn vote(req: &VoteRequest<NodeId>) -> Result<(), Impossible> {
    check_vote("vote", &req.vote)?;
    if let Some(last) = &req.last_log_id {
        check_log_id("vote", last, &req.vote)?;
    }
    Ok(())
}

/// A snapshot chunk.
pub fn install_snapshot(req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Impossible> {
    let what = "install snapshot";
    check_vote(what, &req.vote)?;
    if let Some(last) = &req.meta.last_log_id {
        check_log_id(what, last, &req.vote)?;
    }
    Ok(())
}

/// The vote in a peer's answer (a higher vote makes this member step
/// down and adopt it, so it is checked like a request's).
pub fn answer_vote(vote: &Vote<NodeId>) -> Result<(), Impossible> {
    check_vote("a peer's answer", vote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::TypeConfig;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    fn vote(term: u64) -> Vote<NodeId> {
        Vote::new_committed(term, 1)
    }

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append(
        term: u64,
        prev: Option<LogId<NodeId>>,
        entries: &[LogId<NodeId>],
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(term),
            prev_log_id: prev,
            leader_commit: prev,
            entries: entries
                .iter()
                .map(|l| Entry::<TypeConfig> {
                    log_id: *l,
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    #[test]
    fn possible_messages_pass_and_impossible_ones_are_refused() {
        let cases: Vec<(&str, AppendEntriesRequest<TypeConfig>, bool)> = vec![
            ("heartbeat", append(5, Some(id(4, 10)), &[]), true),
            ("first entries", append(1, None, &[id(1, 0), id(1, 1)]), true),
            (
                "entries over a term change",
                append(7, Some(id(3, 9)), &[id(3, 10), id(7, 11)]),
                true,
            ),
            (
                "a huge but possible jump",
                append(1_000_000, Some(id(3, 9)), &[]),
                true,
            ),
            ("the highest term", append(MAX_TERM, Some(id(3, 9)), &[]), true),
            ("term u64::MAX", append(u64::MAX, Some(id(3, 9)), &[]), false),
            ("term past the limit", append(MAX_TERM + 1, None, &[]), false),
            ("a gap", append(5, Some(id(4, 10)), &[id(5, 12)]), false),
            (
                "a repeated index",
                append(5, Some(id(4, 10)), &[id(5, 11), id(5, 11)]),
                false,
            ),
            (
                "an entry from a later term",
                append(5, Some(id(4, 10)), &[id(6, 11)]),
                false,
            ),
            (
                "a term going back",
                append(5, Some(id(4, 10)), &[id(3, 11)]),
                false,
            ),
            ("prev from a later term", append(5, Some(id(9, 10)), &[]), false),
            (
                "index past the limit",
                append(5, Some(id(4, MAX_INDEX + 1)), &[]),
                false,
            ),
            (
                "commit index u64::MAX",
                {
                    let mut r = append(5, Some(id(4, 10)), &[]);
                    r.leader_commit = Some(id(4, u64::MAX));
                    r
                },
                false,
            ),
        ];
        for (name, req, ok) in cases {
            assert_eq!(
                append_entries(&req).is_ok(),
                ok,
                "{name}: {:?}",
                append_entries(&req)
            );
        }
        let v = |term, last| VoteRequest::<NodeId> {
            vote: Vote::new(term, 2),
            last_log_id: last,
        };
        assert!(super::vote(&v(12, Some(id(11, 40)))).is_ok());
        assert!(super::vote(&v(12 + 1_000_000, Some(id(11, 40)))).is_ok());
        assert!(super::vote(&v(u64::MAX, Some(id(11, 40)))).is_err());
        assert!(super::vote(&v(12, Some(id(13, 40)))).is_err());
        assert!(answer_vote(&vote(u64::MAX)).is_err());
        assert!(answer_vote(&vote(3)).is_ok());
    }
}
