//! Ensemble's shared vocabulary: the wire types of the client API
//! (`ensemble.v1`) and of the node-to-node API (`ensemble.peer.v1`),
//! generated from `proto/*.proto` by tonic, and what the server and the
//! client must agree on beyond the wire: [`ids`] (session ids and zxids),
//! [`path`] (ZooKeeper's path rules) and [`code`] (error codes) and [`acl`] (ACLs' text form and rules). See `docs/glossary.md`.
#![deny(missing_docs)]

pub mod acl;
pub mod code;
pub mod codec;
pub mod ids;
pub mod path;

/// The client API: sessions and znodes.
#[allow(missing_docs)]
pub mod v1 {
    tonic::include_proto!("ensemble.v1");
}

/// The node-to-node API: Raft messages, forwarded writes, touch reports and
/// report rounds.
#[allow(missing_docs)]
pub mod peer {
    tonic::include_proto!("ensemble.peer.v1");
}

pub use code::ErrorCode;
pub use ids::{SessionId, Zxid};

/// The metadata key whose value names the [`v1::ErrorCode`] of a failed call.
pub const ERROR_CODE_KEY: &str = "ensemble-error";
/// The metadata key naming the index of a multi's first failing operation.
pub const FAILED_OP_KEY: &str = "ensemble-failed-op";
