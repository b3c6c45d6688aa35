//! Ensemble's wire types: the client API (`ensemble.v1`) and the node-to-node
//! API (`ensemble.peer.v1`), generated from `proto/*.proto` by tonic.
#![allow(missing_docs)]

/// The client API: sessions and znodes.
pub mod v1 {
    tonic::include_proto!("ensemble.v1");
}

/// The node-to-node API: Raft messages, forwarded writes and session touches.
pub mod peer {
    tonic::include_proto!("ensemble.peer.v1");
}

/// The metadata key whose value names the [`v1::ErrorCode`] of a failed call.
pub const ERROR_CODE_KEY: &str = "ensemble-error";
/// The metadata key naming the index of a multi's first failing operation.
pub const FAILED_OP_KEY: &str = "ensemble-failed-op";
