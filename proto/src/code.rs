//! The error codes a refused request carries, named as ZooKeeper names
//! them. One enum for the server (which records codes in log entries, so
//! the order of variants is part of the on-disk format: add at the end
//! only) and the client (which hands them to users). "OK" is not a code
//! here: a success carries none.

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// Why a request was refused; the wire enum `ensemble.v1.ErrorCode` minus
/// `OK`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The znode, or the parent of one being created, does not exist.
    NoNode,
    /// A create found the path taken.
    NodeExists,
    /// The expected version does not match the znode's version.
    BadVersion,
    /// A delete found children under the znode.
    NotEmpty,
    /// A create tried to put a child under an ephemeral znode.
    NoChildrenForEphemerals,
    /// The request is malformed; nothing was applied.
    BadArguments,
    /// The session is gone for good (expired, closed or never proven).
    SessionExpired,
    /// No node answered, or the node lost the cluster; a write's outcome is unknown.
    ConnectionLoss,
    /// The request ran out of time; a write's outcome is unknown.
    OperationTimeout,
    /// An op of a failed multi that was not itself the cause.
    RuntimeInconsistency,
    /// Storage or consensus failed inside the node.
    SystemError,
    /// Credentials were rejected.
    AuthFailed,
    /// The session lacks the permission.
    NoAuth,
    /// An ACL is malformed (unknown scheme, bad id, no permissions).
    InvalidAcl,
}

impl ErrorCode {
    /// ZooKeeper's name of the code (`NO_NODE`, …): the wire enum's name,
    /// and the start of every error message.
    pub fn name(self) -> &'static str {
        pb::ErrorCode::from(self).as_str_name()
    }

    /// The code a wire value names; `None` for `OK`, and `SystemError` for a
    /// value this build does not know (a newer peer's code still fails).
    pub fn from_wire(raw: i32) -> Option<ErrorCode> {
        match pb::ErrorCode::try_from(raw) {
            Ok(code) => ErrorCode::from_proto(code),
            Err(_) => Some(ErrorCode::SystemError),
        }
    }

    /// The code a name (as in the `ensemble-error` metadata) names.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        pb::ErrorCode::from_str_name(name).and_then(ErrorCode::from_proto)
    }

    fn from_proto(code: pb::ErrorCode) -> Option<ErrorCode> {
        Some(match code {
            pb::ErrorCode::Ok => return None,
            pb::ErrorCode::NoNode => ErrorCode::NoNode,
            pb::ErrorCode::NodeExists => ErrorCode::NodeExists,
            pb::ErrorCode::BadVersion => ErrorCode::BadVersion,
            pb::ErrorCode::NotEmpty => ErrorCode::NotEmpty,
            pb::ErrorCode::NoChildrenForEphemerals => ErrorCode::NoChildrenForEphemerals,
            pb::ErrorCode::BadArguments => ErrorCode::BadArguments,
            pb::ErrorCode::SessionExpired => ErrorCode::SessionExpired,
            pb::ErrorCode::ConnectionLoss => ErrorCode::ConnectionLoss,
            pb::ErrorCode::OperationTimeout => ErrorCode::OperationTimeout,
            pb::ErrorCode::RuntimeInconsistency => ErrorCode::RuntimeInconsistency,
            pb::ErrorCode::SystemError => ErrorCode::SystemError,
            pb::ErrorCode::AuthFailed => ErrorCode::AuthFailed,
            pb::ErrorCode::NoAuth => ErrorCode::NoAuth,
            pb::ErrorCode::InvalidAcl => ErrorCode::InvalidAcl,
        })
    }
}

impl From<ErrorCode> for pb::ErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NoNode => pb::ErrorCode::NoNode,
            ErrorCode::NodeExists => pb::ErrorCode::NodeExists,
            ErrorCode::BadVersion => pb::ErrorCode::BadVersion,
            ErrorCode::NotEmpty => pb::ErrorCode::NotEmpty,
            ErrorCode::NoChildrenForEphemerals => pb::ErrorCode::NoChildrenForEphemerals,
            ErrorCode::BadArguments => pb::ErrorCode::BadArguments,
            ErrorCode::SessionExpired => pb::ErrorCode::SessionExpired,
            ErrorCode::ConnectionLoss => pb::ErrorCode::ConnectionLoss,
            ErrorCode::OperationTimeout => pb::ErrorCode::OperationTimeout,
            ErrorCode::RuntimeInconsistency => pb::ErrorCode::RuntimeInconsistency,
            ErrorCode::SystemError => pb::ErrorCode::SystemError,
            ErrorCode::AuthFailed => pb::ErrorCode::AuthFailed,
            ErrorCode::NoAuth => pb::ErrorCode::NoAuth,
            ErrorCode::InvalidAcl => pb::ErrorCode::InvalidAcl,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_code_but_ok_round_trips_by_value_and_name() {
        assert_eq!(ErrorCode::from_wire(0), None);
        for raw in 1..=14 {
            let code = ErrorCode::from_wire(raw).unwrap_or(ErrorCode::SystemError);
            assert_eq!(pb::ErrorCode::from(code) as i32, raw);
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire(99), Some(ErrorCode::SystemError));
        assert_eq!(ErrorCode::NoNode.to_string(), "NO_NODE");
    }
}
