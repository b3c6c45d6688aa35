//! The client-facing side: the gRPC service, request routing (a follower
//! forwards writes to the leader), group commit on the leader, and the
//! mapping of error codes to gRPC statuses.

pub mod convert;
pub mod errors;
pub mod limits;
pub mod proposer;
pub mod router;
pub mod service;
pub mod session_stream;
pub mod watches;
