//! Errors as clients see them: a gRPC status whose message starts with the
//! ZooKeeper-style code name, and the code in the `ensemble-error` metadata.

use ensemble_proto::{ERROR_CODE_KEY, FAILED_OP_KEY};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::state::{ErrorCode, Failure};

/// A refused request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For a multi: the first failing op.
    pub op_index: Option<u32>,
    /// Refused before anything was proposed: safe to retry elsewhere.
    pub not_applied: bool,
}

impl ApiError {
    /// An error with a code and a message naming the path or session.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
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

    /// The call did not prove an open session: unknown, expired or closed,
    /// or the secret is missing or wrong. One message for all, so a caller
    /// without the secret learns nothing about which ids exist.
    pub fn not_proven(session_id: u64) -> Self {
        Self::new(
            ErrorCode::SessionExpired,
            format!("no open session 0x{session_id:x} with this secret (expired, closed, or never opened)"),
        )
    }

    /// The node lost the cluster: a write's outcome is unknown.
    pub fn connection_loss(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConnectionLoss, message)
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        ApiError {
            code: f.code,
            message: f.message,
            op_index: f.op_index,
            not_applied: false,
        }
    }
}

fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NoNode => Code::NotFound,
        ErrorCode::NodeExists => Code::AlreadyExists,
        ErrorCode::BadVersion
        | ErrorCode::NotEmpty
        | ErrorCode::NoChildrenForEphemerals
        | ErrorCode::SessionExpired => Code::FailedPrecondition,
        ErrorCode::BadArguments => Code::InvalidArgument,
        ErrorCode::ConnectionLoss => Code::Unavailable,
        ErrorCode::OperationTimeout => Code::DeadlineExceeded,
        ErrorCode::RuntimeInconsistency => Code::Aborted,
        ErrorCode::SystemError => Code::Internal,
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let message = match e.op_index {
            Some(i) => format!("{}: op {i}: {}", e.code, e.message),
            None => format!("{}: {}", e.code, e.message),
        };
        let mut status = Status::new(grpc_code(e.code), message);
        status
            .metadata_mut()
            .insert(ERROR_CODE_KEY, MetadataValue::from_static(e.code.name()));
        if let Some(i) = e.op_index {
            if let Ok(v) = MetadataValue::try_from(i.to_string()) {
                status.metadata_mut().insert(FAILED_OP_KEY, v);
            }
        }
        status
    }
}
