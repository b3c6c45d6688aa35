//! Error codes of znode and session operations, named as ZooKeeper names them.

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
