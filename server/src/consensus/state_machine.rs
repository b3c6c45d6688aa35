//! openraft's state-machine side: applies committed entries to
//! [`ZState`], builds, saves and installs snapshots, and reports what each
//! apply did: changes to the watchers (a [`ChangeListener`], under the
//! write lock) and sessions touched or removed to the liveness layer (as
//! [`SessionEvent`]s, with the instant of apply, from which it keeps its
//! apply marks outside the replicated state).

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use ensemble_proto::{SessionId, Zxid};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::info;

use super::snapshot_file::SnapshotFile;
use super::{io_error, Entry, StorageError, TypeConfig};
use crate::state::machine::{Alive, Effects};
use crate::state::{BatchOutcome, Change, NodeId, PeerNode, ZState};

/// What apply tells the liveness layer.
#[derive(Debug)]
pub enum SessionEvent {
    /// Sessions created or heartbeated by entries applied at `at`.
    Touched {
        /// The sessions.
        sessions: Vec<Alive>,
        /// When this member applied them.
        at: Instant,
    },
    /// Sessions closed or expired.
    Removed(Vec<SessionId>),
    /// A snapshot replaced the whole session table.
    Reset,
}

/// Told about every change as it is applied, under the state's write lock
/// (so before any reader can see it). Implemented by the watch hub.
pub trait ChangeListener: Send + Sync {
    /// Changes of the entries just applied, in log order; `state` is the
    /// state they led to (whose session table says who each watcher is).
    fn on_changes(&self, state: &ZState, changes: &[Change]);
    /// The whole state was replaced (a snapshot) at `applied`.
    fn on_reset(&self, applied: Zxid);
}

/// This member's copy of the state: written by apply, read by the API.
pub struct Replica {
    state: RwLock<ZState>,
    applied: watch::Sender<Zxid>,
    listener: std::sync::OnceLock<Arc<dyn ChangeListener>>,
    events: mpsc::UnboundedSender<SessionEvent>,
}

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The member did not apply far enough in time.
    #[error("member has applied up to zxid {applied} but the client has seen zxid {wanted}; it did not catch up in {waited_ms} ms")]
    Behind {
        /// How far it applied.
        applied: Zxid,
        /// How far the client has seen.
        wanted: Zxid,
        /// How long it waited.
        waited_ms: u64,
    },
}

impl Replica {
    /// Read access to the applied state. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, ZState> {
        // A poisoned lock means a panic inside apply; the state is still
        // the last fully applied one, since apply mutates only after checks.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest applied zxid.
    pub fn applied(&self) -> Zxid {
        *self.applied.borrow()
    }

    /// Waits until this member has applied `zxid`, at most `timeout`.
    pub async fn wait_applied(&self, zxid: Zxid, timeout: Duration) -> Result<Zxid, WaitError> {
        let mut rx = self.applied.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= zxid)).await;
        match waited {
            Ok(Ok(a)) => Ok(*a),
            _ => Err(WaitError::Behind {
                applied: self.applied(),
                wanted: zxid,
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Sets who hears about changes (once, at startup).
    pub fn set_listener(&self, listener: Arc<dyn ChangeListener>) {
        let _ = self.listener.set(listener);
    }

    fn report(&self, effects: Effects) {
        if !effects.touched.is_empty() {
            let _ = self.events.send(SessionEvent::Touched {
                sessions: effects.touched,
                at: Instant::now(),
            });
        }
        if !effects.removed.is_empty() {
            let _ = self.events.send(SessionEvent::Removed(effects.removed));
        }
    }

    /// Replaces the state (snapshot install); liveness hears of it, since a
    /// snapshot says nothing about when its sessions were last touched.
    fn replace(&self, state: ZState) {
        let applied = state.zxid();
        {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            *guard = state;
            if let Some(l) = self.listener.get() {
                l.on_reset(applied);
            }
        }
        self.applied.send_replace(applied);
        let _ = self.events.send(SessionEvent::Reset);
    }
}

/// openraft's state machine: owns apply, shares the state through [`Replica`].
#[derive(Clone)]
pub struct StateMachineStore {
    replica: Arc<Replica>,
    file: SnapshotFile,
    /// The current snapshot, kept in memory once read or written: a leader
    /// about to send it to a follower must not leave that follower without
    /// word while it reads hundreds of MiB from disk.
    current: Arc<std::sync::Mutex<Option<Arc<StoredSnapshot>>>>,
}

/// A snapshot as loaded or saved: openraft's metadata and the encoded state.
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, PeerNode>,
    data: Vec<u8>,
}

impl StateMachineStore {
    /// Opens the state machine of the data directory `dir`, loading the
    /// newest saved snapshot. Returns the store, the replica it applies to, and the
    /// receiver of session events.
    pub fn open(
        db: &sled::Db,
        dir: &Path,
    ) -> Result<(Self, Arc<Replica>, mpsc::UnboundedReceiver<SessionEvent>), StorageError> {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (applied, _) = watch::channel(Zxid(0));
        let replica = Arc::new(Replica {
            state: RwLock::new(ZState::default()),
            applied,
            listener: std::sync::OnceLock::new(),
            events,
        });
        let store = StateMachineStore {
            replica: replica.clone(),
            file: SnapshotFile::new(dir),
            current: Default::default(),
        };
        store.move_snapshot_out_of_sled(db)?;
        if let Some(snap) = store.load_snapshot()? {
            let state = decode_state(&snap.meta, &snap.data)?;
            // Not `replace`: the apply marks saved before the restart still hold.
            let applied = state.zxid();
            *replica.state.write().unwrap_or_else(|p| p.into_inner()) = state;
            replica.applied.send_replace(applied);
        }
        Ok((store, replica, events_rx))
    }

    /// Data directories of earlier versions kept the snapshot in sled.
    fn move_snapshot_out_of_sled(&self, db: &sled::Db) -> Result<(), StorageError> {
        let read = |e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        if !db.tree_names().iter().any(|n| n.as_ref() == b"snapshot") {
            return Ok(());
        }
        let tree = db.open_tree("snapshot").map_err(read)?;
        if let Some(v) = tree.get(b"current").map_err(read)? {
            #[derive(Deserialize)]
            struct Old {
                meta: SnapshotMeta<NodeId, PeerNode>,
                #[serde(with = "serde_bytes")]
                data: Vec<u8>,
            }
            let old: Old = bincode::deserialize(&v)
                .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
            self.write_file(&StoredSnapshot {
                meta: old.meta,
                data: old.data,
            })?;
        }
        db.drop_tree("snapshot").map_err(read)?;
        Ok(())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Arc<StoredSnapshot>>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current snapshot, from memory if it is there.
    fn current_snapshot(&self) -> Result<Option<Arc<StoredSnapshot>>, StorageError> {
        if let Some(s) = self.cached().clone() {
            return Ok(Some(s));
        }
        let loaded = self.load_snapshot()?.map(Arc::new);
        self.cached().clone_from(&loaded);
        Ok(loaded)
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let Some((meta, data)) = self
            .file
            .load()
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let meta = bincode::deserialize(&meta)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(StoredSnapshot { meta, data }))
    }

    fn write_file(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        let meta =
            bincode::serialize(&snap.meta).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.file
            .save(&meta, &snap.data)
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    /// Saves a snapshot off the async threads (it can be hundreds of MiB);
    /// hands it back once it is durable.
    async fn save_snapshot(&self, snap: StoredSnapshot) -> Result<Arc<StoredSnapshot>, StorageError> {
        let store = self.clone();
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        let saved = tokio::task::spawn_blocking(move || store.write_file(&snap).map(|_| Arc::new(snap)))
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))??;
        *self.cached() = Some(saved.clone());
        Ok(saved)
    }
}

fn decode_state(meta: &SnapshotMeta<NodeId, PeerNode>, data: &[u8]) -> Result<ZState, StorageError> {
    ZState::decode(data)
        .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Serialize under the read lock so the data and its log id agree,
        // on a blocking thread: a big tree takes a while, and the async
        // threads serve Raft and the clients meanwhile.
        let started = std::time::Instant::now();
        let replica = self.replica.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let state = replica.read();
            state
                .encode()
                .map(|data| (data, state.last_applied, state.last_membership.clone()))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let (data, last_log_id, last_membership) =
            encoded.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let encoded_in = started.elapsed();
        let stored = self.save_snapshot(StoredSnapshot { meta, data }).await?;
        info!(
            index = last_log_id.map_or(0, |l| l.index),
            bytes = stored.data.len(),
            encode_ms = encoded_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        Ok(Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>), StorageError> {
        let state = self.replica.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut effects = Effects::default();
        // A panic in apply (a bug) must not kill openraft's state machine
        // task silently: openraft would notice only at the next entry.
        // As a storage error it is fatal to Raft at once, and the member
        // stops (fail-stop) before anyone reads the half-applied state.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut state = self.replica.state.write().unwrap_or_else(|p| p.into_inner());
            let outcomes: Vec<BatchOutcome> = entries
                .into_iter()
                .map(|entry| match entry.payload {
                    EntryPayload::Blank => state.apply_blank(entry.log_id),
                    EntryPayload::Membership(m) => state.apply_membership(entry.log_id, m),
                    EntryPayload::Normal(batch) => {
                        super::observe::apply_batch(&mut state, entry.log_id, &batch, &mut effects)
                    }
                })
                .collect();
            // Still under the write lock: events are queued before any
            // reader can see the changes behind them.
            if let Some(l) = self.replica.listener.get() {
                if !effects.changes.is_empty() {
                    l.on_changes(&state, &effects.changes);
                }
            }
            (outcomes, state.zxid())
        }));
        let (outcomes, applied) = applied.map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            io_error(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                std::io::Error::other(format!("apply panicked: {why}")),
            )
        })?;
        self.replica.report(effects);
        self.replica.applied.send_replace(applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let bytes = data.len();
        let state = decode_state(meta, &data)?;
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        self.replica.replace(state);
        info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current_snapshot()?.map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
