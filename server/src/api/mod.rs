//! Layer 4, client-facing: the gRPC service clients talk to.
//!
//! - [`service`]: session setup and the tonic methods; [`calls`]: every
//!   request that acts for a session, once; [`session_stream`]: the
//!   per-session ordered stream.
//! - [`auth`]: who a session is (users, password checks).
//! - [`admission`]: whether this member may serve a session's call (where
//!   the caller proves the session).
//! - [`watches`]: where a watch is fired.
//! - [`convert`]: wire types to state types, with the request checks;
//!   [`limits`]: request sizes; [`refusal`]: refusals as clients see them.
//! - [`status`]: what a member says of itself; [`metered`]: where every
//!   request is counted and timed.

pub mod admission;
pub mod auth;
pub mod calls;
pub mod convert;
pub mod limits;
pub mod metered;
pub mod refusal;
pub mod service;
pub mod session_stream;
pub mod status;
pub mod watches;

pub use service::{ClientService, Limits};
