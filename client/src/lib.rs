//! # ensemble-client
//!
//! An async client for Ensemble, and the `ensemble` command-line tool.
//!
//! ```no_run
//! # async fn demo() -> ensemble_client::Result<()> {
//! use ensemble_client::{Client, CreateMode, Options};
//! let client = Client::connect(&["127.0.0.1:2181", "127.0.0.1:2182"], Options::default()).await?;
//! let path = client.create("/app", b"config".to_vec(), CreateMode::Persistent).await?;
//! let (data, stat) = client.get(&path).await?;
//! assert_eq!(data, b"config");
//! assert_eq!(stat.version, 0);
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! - [`client`]: the session: connect, heartbeats every T/3, failover to
//!   another node with the same session, and the znode operations.
//! - [`error`]: ZooKeeper-style error codes and connection failures.
//! - [`cli`]: the `ensemble` command-line tool.

pub mod cli;
pub mod client;
pub mod error;

pub use client::{Client, Options, SessionInfo};
pub use ensemble_proto::v1::{CreateMode, ErrorCode, Op, OpResult, Stat, StatusResponse};
pub use error::{Error, Result};
