//! Layer 1, pure: the replicated state and the deterministic apply that
//! turns log entries into it. Nothing here reads a clock, does I/O or knows
//! of openraft's runtime; the layers above feed it entries.
//!
//! - [`acl`]: ACL entries, identities, and where access is decided.
//! - [`command`]: what a log entry carries and what applying it returns.
//! - [`encoding`]: the state's bytes in a snapshot, old layouts included.
//! - [`machine`]: applies an entry (where a create, a close or an expiry is applied).
//! - [`tree`]: znodes and their ZooKeeper semantics.
//! - [`sessions`]: the session table, ephemeral ownership and secrets.
//! - [`change`]: what apply reports to watchers.
//! - [`error`]: refusals and their codes.
//! - [`members`]: member ids and addresses.

pub mod acl;
pub mod change;
pub mod command;
pub mod encoding;
pub mod error;
pub mod machine;
pub mod members;
pub mod sessions;
pub mod tree;

pub use change::{Change, ChangeKind};
pub use command::{Batch, BatchOutcome, Command, Op, OpOutput, Outcome};
pub use error::{ErrorCode, Refusal};
pub use machine::ZState;
pub use members::{NodeId, PeerNode};
pub use tree::{Stat, Znode};
