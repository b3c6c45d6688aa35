//! Refusals: the one type for "this request was not done, and why", from a
//! failed op deep in the tree to the reply a client gets, with its code
//! named as ZooKeeper names it.

use serde::{Deserialize, Serialize};

/// The code of a refused operation; mirrors `ensemble.v1.ErrorCode`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The znode, or the parent of one being created, does not exist.
    NoNode,
    /// The path is taken.
    NodeExists,
    /// The expected version does not match.
    BadVersion,
    /// The znode has children.
    NotEmpty,
    /// Ephemeral znodes can not have children.
    NoChildrenForEphemerals,
    /// The request is malformed.
    BadArguments,
    /// The session is gone (expired, closed or unknown) and can not come back.
    SessionExpired,
    /// The node lost the cluster; a write's outcome is unknown.
    ConnectionLoss,
    /// The request ran out of time; a write's outcome is unknown.
    OperationTimeout,
    /// An op of a failed multi that was not itself the cause.
    RuntimeInconsistency,
    /// Storage or consensus failed inside the node.
    SystemError,
}

impl ErrorCode {
    /// The proto enum's name, also the prefix of every error message.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoNode => "NO_NODE",
            ErrorCode::NodeExists => "NODE_EXISTS",
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::NotEmpty => "NOT_EMPTY",
            ErrorCode::NoChildrenForEphemerals => "NO_CHILDREN_FOR_EPHEMERALS",
            ErrorCode::BadArguments => "BAD_ARGUMENTS",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::ConnectionLoss => "CONNECTION_LOSS",
            ErrorCode::OperationTimeout => "OPERATION_TIMEOUT",
            ErrorCode::RuntimeInconsistency => "RUNTIME_INCONSISTENCY",
            ErrorCode::SystemError => "SYSTEM_ERROR",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
