//! Refusals: the one type for "this request was not done, and why", from a
//! failed op deep in the tree to the reply a client gets, with its code
//! named as ZooKeeper names it.

use serde::{Deserialize, Serialize};

pub use ensemble_proto::ErrorCode;

/// A request that was not done: its code, a message naming the path or
/// session, and for a multi the first failing op. Produced by apply (and
/// carried in the log entry's outcome) or by the checks before proposing;
/// the API turns it into a gRPC status or a stream error.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Why.
    pub code: ErrorCode,
    /// Names the path or session concerned; starts without the code name.
    pub message: String,
    /// For a multi: the index of the first op that failed.
    pub op_index: Option<u32>,
    /// Refused before anything was proposed: safe to send again elsewhere.
    pub not_applied: bool,
}

impl Refusal {
    /// A refusal with a code and a message naming the path or session.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            op_index: None,
            not_applied: false,
        }
    }

    /// A malformed request.
    pub fn bad_arguments(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadArguments, message)
    }

    /// The member lost the cluster: a write's outcome is unknown.
    pub fn connection_loss(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConnectionLoss, message)
    }

    /// Marks the refusal as made before anything was proposed.
    pub fn not_applied(mut self) -> Self {
        self.not_applied = true;
        self
    }

    /// Marks the refusal as that of op `i` of a multi.
    pub fn at_op(mut self, i: usize) -> Self {
        self.op_index = Some(i as u32);
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.op_index {
            Some(i) => write!(f, "{}: op {i}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}
