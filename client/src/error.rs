//! Client errors: the server's ZooKeeper-style refusals, plus the client's
//! own failures (no node answered, the session is gone, a request it could
//! tell was malformed), so callers branch on one [`ErrorCode`].

use ensemble_proto::v1 as pb;
use ensemble_proto::{SessionId, ERROR_CODE_KEY, FAILED_OP_KEY};

use crate::convert;
use crate::types::ErrorCode;

/// What a call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The cluster refused the request; `code` says why.
    #[error("{message}")]
    Server {
        /// Why, as ZooKeeper names it.
        code: ErrorCode,
        /// Starts with the code's name and names the path or session.
        message: String,
        /// For a multi: the first failing op.
        op_index: Option<u32>,
    },
    /// No node answered. For a write, its outcome is unknown.
    #[error("CONNECTION_LOSS: {0}")]
    ConnectionLoss(String),
    /// The session is gone for good; open a new client.
    #[error("SESSION_EXPIRED: session {0} has expired")]
    SessionExpired(SessionId),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The cluster rejected the credentials; this client object is done.
    #[error("AUTH_FAILED: the cluster rejected the credentials")]
    AuthFailed,
    /// A request the client itself could tell was malformed; nothing was sent.
    #[error("BAD_ARGUMENTS: {0}")]
    BadArguments(String),
    /// An endpoint is not HOST:PORT.
    #[error("invalid endpoint {0:?}: expected HOST:PORT")]
    BadEndpoint(String),
    /// The TLS options can not be used (a CA or certificate that is not
    /// PEM, say); nothing was dialed.
    #[error("invalid TLS settings: {0}")]
    BadTls(String),
    /// The client and a node disagree about TLS: the node speaks TLS and
    /// the client does not, or the reverse, or the node's certificate is
    /// not signed by the CA the client trusts. The message names the
    /// endpoint and the setting to change. Retrying does not help.
    #[error("{0}")]
    TlsMismatch(String),
}

impl Error {
    /// The ZooKeeper-style code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Server { code, .. } => *code,
            Error::ConnectionLoss(_) | Error::TlsMismatch(_) => ErrorCode::ConnectionLoss,
            Error::SessionExpired(_) | Error::Closed => ErrorCode::SessionExpired,
            Error::BadEndpoint(_) | Error::BadArguments(_) | Error::BadTls(_) => ErrorCode::BadArguments,
            Error::AuthFailed => ErrorCode::AuthFailed,
        }
    }

    /// The error a failed unary call stands for.
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        let code = status
            .metadata()
            .get(ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_name);
        match code {
            Some(code) => Error::Server {
                code,
                message: status.message().to_string(),
                op_index: status
                    .metadata()
                    .get(FAILED_OP_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            },
            None => Error::ConnectionLoss(format!("{}: {}", status.code(), status.message())),
        }
    }

    /// Whether a failed call never reached the service: the connection
    /// could not be made or broke (no refusal from a node).
    pub(crate) fn is_transport(status: &tonic::Status) -> bool {
        status.metadata().get(ERROR_CODE_KEY).is_none()
            && matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            )
    }

    /// The error an error reply on the session stream stands for.
    pub(crate) fn from_reply(e: pb::ErrorReply) -> Self {
        Error::Server {
            code: convert::error_code(e.code),
            message: e.message,
            op_index: u32::try_from(e.op_index).ok(),
        }
    }

    /// Whether another node might serve the request: the node was unreachable
    /// or refused because it is cut off from the cluster.
    pub(crate) fn try_elsewhere(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::ConnectionLoss | ErrorCode::OperationTimeout
        ) && !matches!(
            self,
            Error::SessionExpired(_) | Error::Closed | Error::TlsMismatch(_)
        )
    }
}

/// Results of client calls.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_refusal_keeps_its_code_and_failing_op() {
        let e = Error::from_reply(pb::ErrorReply {
            code: pb::ErrorCode::NoNode as i32,
            message: "NO_NODE: /a".into(),
            op_index: 3,
            not_applied: false,
        });
        assert!(
            matches!(
                e,
                Error::Server {
                    code: ErrorCode::NoNode,
                    op_index: Some(3),
                    ..
                }
            ),
            "{e:?}"
        );
        let e = Error::from_reply(pb::ErrorReply {
            op_index: -1,
            ..Default::default()
        });
        assert!(matches!(e, Error::Server { op_index: None, .. }), "{e:?}");
        assert_eq!(
            Error::SessionExpired(SessionId(0x1a0000)).to_string(),
            "SESSION_EXPIRED: session 0x1a0000 has expired"
        );
    }
}
