//! # ensemble-client
//!
//! An async client for Ensemble, and recipes built on it (a lock and a
//! leader election). The command-line tool is a crate of its own
//! (`ensemble-cli`), so applications that link this library do not compile
//! its dependencies.
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
//! client
//!     .multi()
//!     .create("/app/a", b"1".to_vec(), CreateMode::Persistent)
//!     .check("/app", 1)
//!     .run()
//!     .await?;
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! The modules, one concern each:
//!
//! - `client/`: [`Client`]: opening a session (`open`), the typed call
//!   helper (`call`), the znode operations (`znodes`) and watches
//!   (`watching`).
//! - `multi`: [`Multi`], the builder of atomic multis, with [`Op`] and [`OpResult`].
//! - `types`: the value types of the API ([`Stat`], [`CreateMode`],
//!   [`ErrorCode`], [`EventType`], [`WatchMode`], [`WatchEvent`]);
//!   `convert`: their private conversions to and from the proto.
//! - [`acl`]: [`Acl`] entries (`world:anyone:cdrwa`) and [`Identity`].
//! - `options`: [`Options`] and [`SessionInfo`]; `chroot`: the base path.
//! - `session/`: (internal) the session task: hedged dialing and node
//!   selection, serving the stream, reply routing, probes.
//! - `watch`: the watch handles; `watch_registry`: (internal) which local
//!   watch an event satisfies, and what to re-register on another node.
//! - [`state`]: the session states and their diagram.
//! - `status`: a member's [`NodeStatus`] (no session needed).
//! - `error`: [`Error`], ZooKeeper-style codes plus connection failures.
//! - `endpoints`: (internal) the connections sessions share, a few hundred
//!   sessions each; `tls_probe`: (internal) telling a port that speaks TLS
//!   (or does not) from an unreachable one when a connection fails.
//! - [`recipes`]: leader election and a lock, with fencing tokens.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod acl;
mod chroot;
mod client;
mod convert;
mod endpoints;
mod error;
mod multi;
mod options;
pub mod recipes;
mod session;
pub mod state;
mod status;
mod tls_probe;
mod types;
mod watch;
mod watch_registry;

pub use acl::{Acl, Identity};
pub use client::Client;
pub use ensemble_proto::{SessionId, Zxid};
pub use error::{Error, Result};
pub use multi::{Multi, Op, OpResult};
pub use options::{Options, SessionInfo, TlsOptions};
pub use state::{SessionState, StateEvent};
pub use status::{node_status, node_status_tls, node_status_with, Member, NodeStatus, Role};
pub use types::{CreateMode, ErrorCode, EventType, Stat, WatchEvent, WatchMode};
pub use watch::{OneShotWatch, PersistentWatch};
