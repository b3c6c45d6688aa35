//! The typed call helper: each request type names the reply variant it
//! expects and whether it may be sent again after a lost connection, so one
//! generic [`Client::call`] replaces a `match` on the reply in every
//! operation. Also what a call fails with once the session task is gone.

use std::time::Instant;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;
use tokio::sync::oneshot;

use super::Client;
use crate::error::{Error, Result};
use crate::session::Call;
use crate::state::SessionState;

/// A request of the session stream and the reply it expects.
pub(crate) trait Request {
    /// The reply's message.
    type Reply;
    /// Safe to send again after a lost connection (reads, watches, close).
    const IDEMPOTENT: bool;
    /// The request as the stream carries it.
    fn into_request(self) -> Req;
    /// The expected reply, or the reply that came instead.
    fn reply(resp: Resp) -> std::result::Result<Self::Reply, Resp>;
}

macro_rules! requests {
    ($($request:ident => $variant:ident($reply:ident), idempotent: $idempotent:expr;)*) => {$(
        impl Request for pb::$request {
            type Reply = pb::$reply;
            const IDEMPOTENT: bool = $idempotent;
            fn into_request(self) -> Req {
                Req::$variant(self)
            }
            fn reply(resp: Resp) -> std::result::Result<pb::$reply, Resp> {
                match resp {
                    Resp::$variant(r) => Ok(r),
                    other => Err(other),
                }
            }
        }
    )*};
}

requests! {
    CreateRequest => Create(CreateResponse), idempotent: false;
    GetRequest => Get(GetResponse), idempotent: true;
    SetRequest => Set(SetResponse), idempotent: false;
    DeleteRequest => Delete(DeleteResponse), idempotent: false;
    ExistsRequest => Exists(ExistsResponse), idempotent: true;
    ChildrenRequest => Children(ChildrenResponse), idempotent: true;
    MultiRequest => Multi(MultiResponse), idempotent: false;
    SyncRequest => Sync(SyncResponse), idempotent: true;
    AddWatchRequest => AddWatch(AddWatchResponse), idempotent: true;
    RemoveWatchesRequest => RemoveWatches(RemoveWatchesResponse), idempotent: true;
    CloseSessionRequest => Close(CloseSessionResponse), idempotent: true;
    GetAclRequest => GetAcl(GetAclResponse), idempotent: true;
    SetAclRequest => SetAcl(SetAclResponse), idempotent: false;
    AddAuthRequest => AddAuth(AddAuthResponse), idempotent: false;
    WhoAmIRequest => WhoAmI(WhoAmIResponse), idempotent: true;
}

impl Client {
    /// Sends a request through the session task and waits for its reply,
    /// up to the request timeout.
    pub(crate) async fn call<R: Request>(&self, request: R) -> Result<R::Reply> {
        let resp = self.send(request.into_request(), R::IDEMPOTENT).await?;
        R::reply(resp).map_err(|other| Error::ConnectionLoss(format!("unexpected reply {other:?}")))
    }

    async fn send(&self, request: Req, idempotent: bool) -> Result<Resp> {
        self.shared.check_size(&request)?;
        let (reply, rx) = oneshot::channel();
        let call = Call {
            request,
            idempotent,
            deadline: Instant::now() + self.options.request_timeout,
            reply,
        };
        self.calls.send(call).await.map_err(|_| self.ended())?;
        match tokio::time::timeout(self.options.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.ended()),
            Err(_) => Err(Error::ConnectionLoss(format!(
                "no reply within {:?}{}",
                self.options.request_timeout,
                if idempotent {
                    ""
                } else {
                    ": the write's outcome is unknown"
                }
            ))),
        }
    }

    /// What a call fails with once the session task has stopped.
    pub(super) fn ended(&self) -> Error {
        match self.state() {
            SessionState::AuthFailed => Error::AuthFailed,
            _ if self.is_expired() => Error::SessionExpired(self.session_id()),
            _ => Error::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_only_its_own_reply() {
        let get = pb::GetResponse {
            data: b"d".to_vec(),
            ..Default::default()
        };
        assert_eq!(pb::GetRequest::reply(Resp::Get(get.clone())), Ok(get));
        let set = Resp::Set(pb::SetResponse::default());
        assert_eq!(pb::GetRequest::reply(set.clone()), Err(set));
        assert!(matches!(
            pb::CloseSessionRequest { header: None }.into_request(),
            Req::Close(_)
        ));
        // Reads, watches and close may go again after a lost connection; writes may not.
        const {
            assert!(pb::GetRequest::IDEMPOTENT && pb::SyncRequest::IDEMPOTENT);
            assert!(pb::CloseSessionRequest::IDEMPOTENT && pb::AddWatchRequest::IDEMPOTENT);
            assert!(!pb::CreateRequest::IDEMPOTENT && !pb::MultiRequest::IDEMPOTENT);
            assert!(!pb::SetRequest::IDEMPOTENT && !pb::DeleteRequest::IDEMPOTENT);
        }
    }
}
