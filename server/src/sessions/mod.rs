//! Session liveness: who heard from which session when, and the leader's
//! expiry decisions.
//!
//! - [`activity`]: every node's record of its own clients' requests.
//! - [`expiry`]: the leader's deadline tracker with ZooKeeper-style buckets.
//! - [`manager`]: the per-node tick loop: forwards touches to the leader, and
//!   on the leader coalesces heartbeats and proposes expiry (where expiry is
//!   decided, and the rule that keeps clocks out of it).
//! - [`evidence`]: signs of life as nodes report them to a new leader, and
//!   how they merge.
//! - [`notes`]: when this node applied each session's latest heartbeat, kept
//!   across restarts on an uptime clock.

pub mod activity;
pub mod evidence;
pub mod expiry;
pub mod manager;
pub mod notes;

pub use activity::Activity;
