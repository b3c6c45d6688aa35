//! The Raft log, vote and commit index in sled.
//!
//! Keys of the `log` tree are big-endian log indexes, so sled's order is the
//! log's order. An append is flushed before openraft hears that it is
//! durable; a vote is flushed before `save_vote` returns. Both then move the
//! acknowledged-log [`LogMark`], which a truncation lowers first.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use tracing::warn;

use ensemble_proto::Zxid;

use super::log_mark::{LogMark, Reached};
use super::{io_error, Entry, StorageError, TypeConfig};
use crate::state::NodeId;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log store; cheap to clone (sled trees are shared handles).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The newest commit index openraft has told us, for status and readiness.
    committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How far the log and vote reached, outside sled.
    mark: std::sync::Arc<LogMark>,
    /// Counts appends whose flush finished: the proposer's cue that the
    /// leader's Raft task is free to take the next entry.
    appended: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

fn encode<T: Serialize>(v: &T, subject: ErrorSubject<NodeId>) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(v).map_err(|e| io_error(subject, ErrorVerb::Write, e))
}

fn decode<T: DeserializeOwned>(b: &[u8], subject: ErrorSubject<NodeId>) -> Result<T, StorageError> {
    bincode::deserialize(b).map_err(|e| io_error(subject, ErrorVerb::Read, e))
}

impl LogStore {
    /// Opens the log trees of `db`; `mark` follows every flush.
    pub fn new(db: sled::Db, mark: std::sync::Arc<LogMark>) -> Result<Self, sled::Error> {
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        Ok(LogStore {
            db,
            log,
            meta,
            committed: Default::default(),
            mark,
            appended: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// How far the log and the vote reach in sled now.
    pub fn reached(&self) -> Result<Reached, StorageError> {
        let vote: Option<Vote<NodeId>> = self.read_meta(VOTE, ErrorSubject::Vote)?;
        Ok(Reached {
            log_end: self.last_log_id()?.map_or(0, |l| l.index + 1),
            vote_term: vote.map_or(0, |v| v.leader_id().get_term()),
        })
    }

    fn mark_error(&self, subject: ErrorSubject<NodeId>, e: std::io::Error) -> StorageError {
        let e = std::io::Error::new(e.kind(), format!("{}: {e}", self.mark.path().display()));
        io_error(subject, ErrorVerb::Write, e)
    }

    /// The index of the newest entry in the log (0 if empty), read at
    /// startup: entries up to it were applied before the restart, so
    /// applying them again says nothing about when their sessions were touched.
    pub fn last_index(&self) -> Result<Zxid, StorageError> {
        Ok(Zxid(self.last_log_id()?.map_or(0, |l| l.index)))
    }

    /// The newest entry's id: the last in the log, else the last purged.
    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError> {
        match self.log.last() {
            Ok(Some((_, v))) => Ok(Some(decode::<Entry>(&v, ErrorSubject::Logs)?.log_id)),
            Ok(None) => self.read_meta(LAST_PURGED, ErrorSubject::Store),
            Err(e) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Read, e)),
        }
    }

    /// Follows the number of appends flushed so far.
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The newest commit index known (shared with every clone).
    pub fn committed_index(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.committed.clone()
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key) {
            Ok(Some(v)) => decode(&v, subject).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error(subject, ErrorVerb::Read, e)),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        v: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = encode(v, subject.clone())?;
        self.meta
            .insert(key, bytes)
            .map(|_| ())
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    /// Removes the log entries whose indexes lie in the range.
    fn remove_range(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut batch = sled::Batch::default();
        for kv in self.log.range::<[u8; 8], _>((start, end)) {
            let (k, _) = kv.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// An append slower than this is logged: replication is in trouble.
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// Most bytes of log entries one AppendEntries carries (at least one entry
/// goes, whatever its size). openraft gives an AppendEntries one Raft
/// heartbeat interval to be sent, appended, flushed and answered; 1 MiB (as
/// etcd's MaxSizePerMsg) fits that on any disk we run on, and a follower
/// far behind then catches up in many small steps instead of timing out on
/// one huge one forever.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

impl RaftLogReader<TypeConfig> for LogStore {
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for kv in self.log.range(start.to_be_bytes()..end.to_be_bytes()) {
            let (_, v) = kv.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if !entries.is_empty() && bytes + v.len() > MAX_APPEND_BYTES {
                break;
            }
            bytes += v.len();
            entries.push(decode(&v, ErrorSubject::Logs)?);
        }
        Ok(entries)
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for kv in self.log.range(start.to_be_bytes()..) {
            let (k, v) = kv.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                io_error(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "log key is not 8 bytes"),
                )
            })?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&v, ErrorSubject::Logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.read_meta(LAST_PURGED, ErrorSubject::Store)?,
            last_log_id: self.last_log_id()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await?;
        self.mark
            .set_vote_term(vote.leader_id().get_term())
            .map_err(|e| self.mark_error(ErrorSubject::Vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.committed
                .fetch_max(c.index, std::sync::atomic::Ordering::Relaxed);
        }
        // Not flushed: a lost commit index is only re-learned from the leader.
        self.write_meta(COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut batch = sled::Batch::default();
        let mut end = None;
        let mut bytes = 0;
        for entry in entries {
            end = Some(entry.log_id.index + 1);
            let value = encode(&entry, ErrorSubject::Logs)?;
            bytes += value.len();
            batch.insert(&entry.log_id.index.to_be_bytes(), value);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Durable only once flushed: only then may openraft count this node's ack.
        let flush = self.db.flush_async().await;
        let took = started.elapsed();
        crate::metrics::log_flushed(bytes, took);
        if took > SLOW_FLUSH {
            warn!(
                ms = took.as_millis() as u64,
                bytes, "slow log append: replication has one Raft heartbeat interval per call"
            );
        }
        let flushed = match flush {
            Ok(_) => match end {
                Some(end) => self.mark.set_log_end(end),
                None => Ok(()),
            },
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        callback.log_io_completed(flushed);
        self.appended.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Lowered first: a crash in between leaves the mark behind the log.
        self.mark
            .set_log_end(log_id.index)
            .map_err(|e| self.mark_error(ErrorSubject::Logs, e))?;
        self.remove_range(log_id.index..)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra
        // entries below it, which is harmless, never a hole above it.
        self.write_meta(LAST_PURGED, &log_id, ErrorSubject::Store)?;
        self.flush(ErrorSubject::Store).await?;
        self.remove_range(..=log_id.index)
    }
}
