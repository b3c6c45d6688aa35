//! openraft's state-machine side: applies committed entries to [`ZState`],
//! builds, saves and installs snapshots, and keeps the node-local
//! apply-time notes the session tracker reads.
//!
//! The notes record *when this node applied* a session's latest heartbeat or
//! create, on this node's monotonic clock. They live outside [`ZState`] so
//! apply stays deterministic; a node that becomes leader seeds its expiry
//! deadlines from them. Entries re-applied after a restart (at or below the
//! log's end when the node opened it) and snapshots leave no note: their
//! apply time says nothing about when the client was last heard. Instead,
//! notes are also kept on disk as this node's wall-clock time, so a node that
//! restarts knows how long ago it heard (same machine, same clock).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::machine::Effects;
use super::{BatchOutcome, ZState};
use crate::raft::{Entry, NodeId, PeerNode, StorageError, TypeConfig};
use crate::storage::io_error;

const CURRENT_SNAPSHOT: &[u8] = b"current";

/// What the state machine tells the session tracker after each apply.
#[derive(Debug)]
pub enum SessionEvent {
    /// Sessions created or heartbeated (id, timeout).
    Touched(Vec<(u64, u32)>),
    /// Sessions closed or expired.
    Removed(Vec<u64>),
    /// A snapshot replaced the whole session table.
    Reset,
}

/// Told about every change as it is applied, under the state's write lock
/// (so before any reader can see it). Implemented by the watch hub.
pub trait ChangeListener: Send + Sync {
    /// Changes of the entries just applied, in log order.
    fn on_changes(&self, changes: &[super::Change]);
    /// The whole state was replaced (a snapshot) at `applied`.
    fn on_reset(&self, applied: u64);
}

/// The state shared between the state machine (writer) and the API (readers).
pub struct Shared {
    state: RwLock<ZState>,
    applied: watch::Sender<u64>,
    notes: Mutex<HashMap<u64, Instant>>,
    /// Entries up to this index are replays after a restart: no notes.
    replay_through: std::sync::atomic::AtomicU64,
    /// The notes on disk: session id → wall-clock ms of this node.
    saved_notes: sled::Tree,
    listener: std::sync::OnceLock<Arc<dyn ChangeListener>>,
    events: mpsc::UnboundedSender<SessionEvent>,
}

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("node has applied up to zxid {applied} but the client has seen zxid {wanted}; it did not catch up in {waited_ms} ms")]
    Behind {
        applied: u64,
        wanted: u64,
        waited_ms: u64,
    },
}

impl Shared {
    /// Read access to the applied state. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, ZState> {
        // A poisoned lock means a panic inside apply; the state is still
        // the last fully applied one, since apply mutates only after checks.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest applied zxid.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this node has applied `zxid`, at most `timeout`.
    pub async fn wait_applied(&self, zxid: u64, timeout: Duration) -> Result<u64, WaitError> {
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

    /// When this node applied one session's latest heartbeat or create.
    pub fn note_of(&self, session_id: u64) -> Option<Instant> {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&session_id)
            .copied()
    }

    /// When this node applied each session's latest heartbeat or create.
    pub fn notes(&self) -> HashMap<u64, Instant> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets who hears about changes (once, at startup).
    pub fn set_listener(&self, listener: Arc<dyn ChangeListener>) {
        let _ = self.listener.set(listener);
    }

    /// Marks entries up to `index` as replays of a log written before a restart.
    pub fn set_replay_through(&self, index: u64) {
        self.replay_through
            .store(index, std::sync::atomic::Ordering::Relaxed);
    }

    fn note_effects(&self, effects: Effects) {
        let now = Instant::now();
        let replay = self.replay_through.load(std::sync::atomic::Ordering::Relaxed);
        {
            let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
            let wall = wall_ms().to_be_bytes();
            for (id, _, zxid) in &effects.touched {
                if *zxid > replay {
                    notes.insert(*id, now);
                    // Best effort: not flushed here; the log's flushes carry it.
                    let _ = self.saved_notes.insert(id.to_be_bytes(), &wall);
                }
            }
            for id in &effects.removed {
                notes.remove(id);
                let _ = self.saved_notes.remove(id.to_be_bytes());
            }
        }
        if !effects.touched.is_empty() {
            let touched = effects.touched.into_iter().map(|(id, t, _)| (id, t)).collect();
            let _ = self.events.send(SessionEvent::Touched(touched));
        }
        if !effects.removed.is_empty() {
            let _ = self.events.send(SessionEvent::Removed(effects.removed));
        }
    }

    /// Replaces the state (snapshot install or startup) and clears the notes:
    /// a snapshot says nothing about when its sessions were last heard.
    fn replace(&self, state: ZState) {
        let applied = state.zxid();
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let _ = self.saved_notes.clear();
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

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    /// Loads the notes saved before a restart, turning their wall-clock times
    /// into instants. A time in the future (the clock stepped back) counts as now.
    fn load_saved_notes(&self) {
        let now = Instant::now();
        let wall_now = wall_ms();
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in self.saved_notes.iter().flatten() {
            let (Ok(id), Ok(at)) = (<[u8; 8]>::try_from(k.as_ref()), <[u8; 8]>::try_from(v.as_ref())) else {
                continue;
            };
            let age = Duration::from_millis(wall_now.saturating_sub(u64::from_be_bytes(at)));
            notes.insert(u64::from_be_bytes(id), now.checked_sub(age).unwrap_or(now));
        }
    }
}

/// A snapshot as saved in sled.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, PeerNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// openraft's state machine: owns apply, shares the state through [`Shared`].
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
    snapshots: sled::Tree,
    db: sled::Db,
}

impl StateMachineStore {
    /// Opens the state machine, loading the newest saved snapshot. Returns the
    /// store, its shared state, and the receiver of session events.
    pub fn open(
        db: sled::Db,
    ) -> Result<(Self, Arc<Shared>, mpsc::UnboundedReceiver<SessionEvent>), StorageError> {
        let snapshots = db
            .open_tree("snapshot")
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let saved_notes = db
            .open_tree("session_notes")
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(ZState::default()),
            applied,
            notes: Mutex::new(HashMap::new()),
            replay_through: Default::default(),
            saved_notes,
            listener: std::sync::OnceLock::new(),
            events,
        });
        let store = StateMachineStore {
            shared: shared.clone(),
            snapshots,
            db,
        };
        if let Some(snap) = store.load_snapshot()? {
            let state = decode_state(&snap.meta, &snap.data)?;
            // Not `replace`: that would drop the notes saved before the restart.
            let applied = state.zxid();
            *shared.state.write().unwrap_or_else(|p| p.into_inner()) = state;
            shared.applied.send_replace(applied);
        }
        shared.load_saved_notes();
        Ok((store, shared, events_rx))
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let subject = ErrorSubject::Snapshot(None);
        match self.snapshots.get(CURRENT_SNAPSHOT) {
            Ok(Some(v)) => bincode::deserialize(&v)
                .map(Some)
                .map_err(|e| io_error(subject, ErrorVerb::Read, e)),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error(subject, ErrorVerb::Read, e)),
        }
    }

    async fn save_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        let bytes = bincode::serialize(snap).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.snapshots
            .insert(CURRENT_SNAPSHOT, bytes)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))?;
        Ok(())
    }
}

fn decode_state(meta: &SnapshotMeta<NodeId, PeerNode>, data: &[u8]) -> Result<ZState, StorageError> {
    bincode::deserialize(data)
        .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Serialize under the read lock so the data and its log id agree.
        let (data, last_log_id, last_membership) = {
            let state = self.shared.read();
            let data = bincode::serialize(&*state)
                .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            (data, state.last_applied, state.last_membership.clone())
        };
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>), StorageError> {
        let state = self.shared.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut effects = Effects::default();
        let (outcomes, applied) = {
            let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            let outcomes: Vec<BatchOutcome> = entries
                .into_iter()
                .map(|entry| state.apply_entry(&entry, &mut effects))
                .collect();
            // Still under the write lock: events are queued before any
            // reader can see the changes behind them.
            if let Some(l) = self.shared.listener.get() {
                if !effects.changes.is_empty() {
                    l.on_changes(&effects.changes);
                }
            }
            (outcomes, state.zxid())
        };
        self.shared.note_effects(effects);
        self.shared.applied.send_replace(applied);
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
        let data = snapshot.into_inner();
        let state = decode_state(meta, &data)?;
        self.save_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        self.shared.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.load_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
