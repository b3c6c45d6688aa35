//! The log mark: a small file beside sled that records how far
//! this node's log reached when it last flushed it (so how much it may have
//! acknowledged to a leader) and the newest term it voted in.
//!
//! sled drops a damaged log tail when it opens, silently. Raft's safety rests
//! on a node never coming back with less log, or an older vote, than it
//! promised before it stopped: such a node could vote for a candidate that
//! lacks committed entries. So a node whose log or vote ends before its mark
//! refuses to start ([`LogBehindMark`]). The mark is written (not fsynced)
//! after each flush of the log and vote, and lowered *before* a truncation,
//! so a crash can leave it behind the log, never ahead of it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"ENSMARK1";
const LEN: usize = 8 + 8 + 8 + 8;

/// What the mark records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// One past the newest log index flushed (0: no entry).
    pub log_end: u64,
    /// The newest term a vote was saved for.
    pub vote_term: u64,
}

impl Reached {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.log_end.to_be_bytes());
        b[16..24].copy_from_slice(&self.vote_term.to_be_bytes());
        b[24..32].copy_from_slice(&self.check().to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Reached> {
        let field = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
        };
        if b.get(..8)? != MAGIC {
            return None;
        }
        let r = Reached {
            log_end: field(8)?,
            vote_term: field(16)?,
        };
        (field(24)? == r.check()).then_some(r)
    }

    fn check(&self) -> u64 {
        (self.log_end ^ self.vote_term.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// A node's log or vote is behind what it acknowledged before it stopped.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data directory {dir} holds less than this node acknowledged before it stopped: \
     its Raft log ends at index {log_end} and its vote is for term {vote_term}, but it had \
     flushed the log up to index {mark_log_end} and voted in term {mark_vote_term} (sled \
     dropped a damaged tail, or the directory was restored from an older copy). Starting \
     could let it vote with a shorter log than it promised, which Raft's safety forbids. \
     To fix: stop this node, remove the data directory {dir} entirely, and start it again: \
     it rejoins the cluster empty and copies the data from the leader"
)]
pub struct LogBehindMark {
    /// The data directory.
    pub dir: String,
    /// One past the newest log index sled holds now.
    pub log_end: u64,
    /// The vote term sled holds now.
    pub vote_term: u64,
    /// One past the newest index the mark says was flushed.
    pub mark_log_end: u64,
    /// The newest vote term the mark says was saved.
    pub mark_vote_term: u64,
}

/// The mark file, kept open.
pub struct LogMark {
    path: PathBuf,
    file: Mutex<(File, Reached)>,
}

impl LogMark {
    /// Opens (or creates) the mark at `path`; returns it and what it
    /// recorded before this start (None: new or unreadable).
    pub fn open(path: &Path) -> std::io::Result<(LogMark, Option<Reached>)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let saved = Reached::decode(&bytes);
        let mark = LogMark {
            path: path.to_path_buf(),
            file: Mutex::new((file, saved.unwrap_or_default())),
        };
        Ok((mark, saved))
    }

    /// Where the mark lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn update(&self, change: impl FnOnce(&mut Reached)) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (file, reached) = &mut *guard;
        let before = *reached;
        change(reached);
        if *reached == before {
            return Ok(());
        }
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&reached.encode())
    }

    /// The log was flushed up to `log_end` (one past its newest index), or
    /// is about to be truncated to it.
    pub fn set_log_end(&self, log_end: u64) -> std::io::Result<()> {
        self.update(|r| r.log_end = log_end)
    }

    /// A vote for `term` was flushed.
    pub fn set_vote_term(&self, term: u64) -> std::io::Result<()> {
        self.update(|r| r.vote_term = r.vote_term.max(term))
    }

    /// Records where the log and vote stand now, as checked at startup.
    pub fn reset(&self, now: Reached) -> std::io::Result<()> {
        self.update(|r| *r = now)
    }
}

/// Checks the log and vote found at startup against the mark saved before.
pub fn check(dir: &Path, found: Reached, saved: Option<Reached>) -> Result<(), LogBehindMark> {
    let Some(mark) = saved else { return Ok(()) };
    if found.log_end >= mark.log_end && found.vote_term >= mark.vote_term {
        return Ok(());
    }
    Err(LogBehindMark {
        dir: dir.display().to_string(),
        log_end: found.log_end,
        vote_term: found.vote_term,
        mark_log_end: mark.log_end,
        mark_vote_term: mark.vote_term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_opens_and_refuses_a_shorter_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let (mark, saved) = LogMark::open(&path).unwrap();
        assert_eq!(saved, None);
        mark.set_log_end(42).unwrap();
        mark.set_vote_term(3).unwrap();
        mark.set_vote_term(2).unwrap();
        drop(mark);
        let (_, saved) = LogMark::open(&path).unwrap();
        let saved = saved.unwrap();
        assert_eq!(
            saved,
            Reached {
                log_end: 42,
                vote_term: 3
            }
        );
        let ok = Reached {
            log_end: 42,
            vote_term: 3,
        };
        assert!(check(dir.path(), ok, Some(saved)).is_ok());
        let short = Reached {
            log_end: 40,
            vote_term: 3,
        };
        let e = check(dir.path(), short, Some(saved)).unwrap_err().to_string();
        assert!(
            e.contains("index 40") && e.contains("index 42") && e.contains("remove the data directory"),
            "{e}"
        );
        let old_vote = Reached {
            log_end: 50,
            vote_term: 2,
        };
        assert!(check(dir.path(), old_vote, Some(saved)).is_err());
    }

    #[test]
    fn a_torn_mark_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let mut bytes = Reached {
            log_end: 7,
            vote_term: 1,
        }
        .encode();
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(LogMark::open(&path).unwrap().1, None);
    }
}
