//! # ensemble-client
//!
//! An async client for Ensemble, recipes built on it, and the `ensemble`
//! command-line tool.
//!
//! ```no_run
//! # async fn demo() -> ensemble_client::Result<()> {
//! use ensemble_client::{Client, CreateMode, Options, SessionState};
//! let client = Client::connect(&["127.0.0.1:2181", "127.0.0.1:2182"], Options::default()).await?;
//! assert_eq!(client.state(), SessionState::Connected);
//! let path = client.create("/app", b"config".to_vec(), CreateMode::Persistent).await?;
//! let (data, stat, watch) = client.get_watch(&path).await?;
//! assert_eq!((data.as_slice(), stat.version), (&b"config"[..], 0));
//! client.set(&path, b"v2".to_vec(), 0).await?;
//! let event = watch.wait().await?; // NODE_DATA_CHANGED on /app
//! # let _ = event;
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! - [`client`]: open a session, the znode operations and watches.
//! - [`connection`](crate::client): (internal) heartbeats every T/3, failover
//!   to another node with the same session, watch re-registration.
//! - [`state`]: the session states and the state machine diagram.
//! - [`watches`]: watch events.
//! - [`recipes`]: leader election and a lock, with fencing tokens.
//! - [`error`]: ZooKeeper-style error codes and connection failures.
//! - [`cli`]: the `ensemble` command-line tool.

pub mod cli;
pub mod client;
mod connection;
pub mod error;
pub mod recipes;
pub mod state;
pub mod watches;

pub use client::{Client, OneShotWatch, Options, PersistentWatch, SessionInfo};
pub use ensemble_proto::v1::{
    CreateMode, ErrorCode, EventType, Op, OpResult, Stat, StatusResponse, WatchMode,
};
pub use error::{Error, Result};
pub use state::{SessionState, StateEvent};
pub use watches::WatchEvent;
