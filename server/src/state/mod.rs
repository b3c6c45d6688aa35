//! The replicated state: commands, the znode tree, the session table, and
//! the deterministic apply that turns log entries into state.
//!
//! - [`command`]: what a log entry carries and what applying it returns.
//! - [`machine`]: applies an entry (where a create, expiry or close is applied).
//! - [`tree`]: znodes and their ZooKeeper semantics.
//! - [`sessions`]: the session table and ephemeral ownership.
//! - [`store`]: openraft's state-machine trait, snapshots, and the apply-time notes.

pub mod change;
pub mod command;
pub mod error;
pub mod machine;
pub mod sessions;
pub mod store;
pub mod tree;

pub use change::{Change, ChangeKind};
pub use command::{Batch, BatchOutcome, Command, Failure, Op, OpOutput, Outcome};
pub use error::ErrorCode;
pub use machine::ZState;
pub use tree::{Stat, Znode};
