//! Session liveness: who heard from which session when, and the leader's
//! expiry decisions.
//!
//! - [`activity`]: every node's record of its own clients' requests.
//! - [`expiry`]: the leader's deadline tracker with ZooKeeper-style buckets.
//! - [`manager`]: the per-node tick loop: forwards touches to the leader, and
//!   on the leader coalesces heartbeats and proposes expiry (where expiry is decided).

pub mod activity;
pub mod expiry;
pub mod manager;

pub use activity::Activity;
