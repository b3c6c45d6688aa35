//! Durable storage: the Raft log, the vote and the commit index on sled,
//! the current snapshot in a file of its own, and the acknowledged-log mark.
//! Everything openraft is told is durable has been flushed (fsynced) first.
//!
//! openraft's `RaftLogStorage` and `RaftStateMachine` traits are the seam: the
//! sled code lives only in this module, so another engine can replace it
//! behind the same traits.

pub mod log_store;
pub mod mark;
pub mod snapshot_file;

use std::path::Path;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::raft::{NodeId, StorageError};

pub use log_store::LogStore;

/// Storage errors met while opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("can not open the data directory {path}: {source}")]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
}

/// Opens (or creates) the sled database in `dir`.
pub fn open(dir: &Path) -> Result<sled::Db, OpenError> {
    sled::Config::new()
        .path(dir.join("sled"))
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|source| OpenError::Sled {
            path: dir.display().to_string(),
            source,
        })
}

/// Wraps any error as an openraft storage error about `subject`.
pub fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}
