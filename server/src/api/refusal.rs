//! Refusals as clients see them: a gRPC status whose message starts with
//! the ZooKeeper-style code name, with the code in the `ensemble-error`
//! metadata (unary calls), or an `ErrorReply` on the session stream. One
//! type, `state::Refusal`, is behind both.

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::{ERROR_CODE_KEY, FAILED_OP_KEY};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::state::{ErrorCode, Refusal};

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
        ErrorCode::AuthFailed => Code::Unauthenticated,
        ErrorCode::NoAuth => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// The status a unary call answers with.
pub fn status(r: Refusal) -> Status {
    let mut status = Status::new(grpc_code(r.code), r.to_string());
    status
        .metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from_static(r.code.name()));
    if let Some(i) = r.op_index {
        if let Ok(v) = MetadataValue::try_from(i.to_string()) {
            status.metadata_mut().insert(FAILED_OP_KEY, v);
        }
    }
    status
}

/// The reply on the session stream.
pub fn stream_reply(r: Refusal) -> Resp {
    Resp::Error(pb::ErrorReply {
        code: pb::ErrorCode::from(r.code) as i32,
        message: r.to_string(),
        op_index: r.op_index.map(|i| i as i32).unwrap_or(-1),
        not_applied: r.not_applied,
    })
}

/// The call did not prove an open session: unknown, expired or closed, or
/// the secret is missing or wrong. One message for all, so a caller without
/// the secret learns nothing about which ids exist.
pub fn not_proven(session_id: ensemble_proto::SessionId) -> Refusal {
    Refusal::new(
        ErrorCode::SessionExpired,
        format!("no open session {session_id} with this secret (expired, closed, or never opened)"),
    )
}

/// A reply the handler did not expect from apply.
pub fn unexpected(out: impl std::fmt::Debug) -> Refusal {
    Refusal::new(ErrorCode::SystemError, format!("unexpected result {out:?}"))
}
