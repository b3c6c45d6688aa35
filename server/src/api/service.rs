//! The client gRPC service: opening and resuming sessions, and the tonic
//! methods, one line each, that drive the [`SessionCall`]s of `calls.rs`.
//! Writes go through consensus's router (forwarded to the leader, group
//! committed) and answer once this member has applied them; reads are
//! served from this member's applied state once it has applied the
//! client's last-seen zxid. A member cut off from the majority refuses
//! both, so clients move on.

use std::sync::Arc;
use std::time::Duration;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_server::Ensemble;
use rand::RngCore;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug_span, field, Instrument, Span};

use super::auth::Authenticator;
use super::calls::{Caller, SessionCall};
use super::refusal::{self, not_proven, unexpected};
use super::watches::WatchHub;
use crate::consensus::Consensus;
use crate::liveness::Touches;
use crate::metrics::Op;
use crate::state::sessions::Secret;
use crate::state::{Command, Outcome, Refusal};

/// What clients may ask for, checked before anything is proposed.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest znode data.
    pub max_data_bytes: usize,
    /// Largest request, encoded (the decoding limit).
    pub max_request_bytes: usize,
    /// Most ops in a multi.
    pub max_multi_ops: usize,
    /// Range a requested session timeout is clamped into.
    pub session_timeout: (Duration, Duration),
}

/// Serves clients.
#[derive(Clone)]
pub struct ClientService {
    pub(super) consensus: Consensus,
    pub(super) touches: Arc<Touches>,
    pub(super) watches: Arc<WatchHub>,
    pub(super) limits: Limits,
    /// This member's client address, for status.
    pub(super) client_addr: String,
    /// Checks credentials.
    pub(super) auth: Arc<Authenticator>,
}

/// A span for one request; session and zxid are filled in as they are known.
pub(super) fn span(op: &'static str, path: &str) -> Span {
    debug_span!("request", op, path = %path, session = field::Empty, zxid = field::Empty)
}

impl ClientService {
    /// A service over this member's consensus and liveness.
    pub(crate) fn new(
        consensus: Consensus,
        touches: Arc<Touches>,
        watches: Arc<WatchHub>,
        limits: Limits,
        client_addr: String,
        auth: Arc<Authenticator>,
    ) -> Self {
        ClientService {
            consensus,
            touches,
            watches,
            limits,
            client_addr,
            auth,
        }
    }

    fn max_request_bytes(&self) -> u32 {
        self.limits.max_request_bytes.min(u32::MAX as usize) as u32
    }

    async fn create_session(
        &self,
        req: pb::CreateSessionRequest,
        ip: Option<std::net::IpAddr>,
    ) -> Result<pb::CreateSessionResponse, Refusal> {
        self.ensure_in_quorum()?;
        if req.auth.len() > crate::state::acl::MAX_IDENTITIES {
            return Err(Refusal::bad_arguments(format!(
                "{} credentials; the limit is {}",
                req.auth.len(),
                crate::state::acl::MAX_IDENTITIES
            )));
        }
        let mut identities = Vec::new();
        for info in &req.auth {
            for identity in self.auth.verify(info, ip).await? {
                if !identities.contains(&identity) {
                    identities.push(identity);
                }
            }
        }
        if identities.is_empty() && self.auth.required() {
            crate::metrics::auth_failed();
            tracing::warn!(from = ?ip, "session refused: authentication is required");
            return Err(Refusal::new(
                crate::state::ErrorCode::AuthFailed,
                "this cluster requires authentication: open the session with a user's credentials",
            ));
        }
        let (min, max) = self.limits.session_timeout;
        let timeout_ms = (req.timeout_ms as u64).clamp(min.as_millis() as u64, max.as_millis() as u64) as u32;
        let mut secret = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        let command = Command::CreateSession {
            secret: Secret::new(secret.clone()),
            timeout_ms,
            identities,
        };
        match self.consensus.router.submit(command).await? {
            (
                zxid,
                Outcome::SessionCreated {
                    session_id,
                    timeout_ms,
                },
            ) => {
                Span::current().record("session", field::display(session_id));
                Span::current().record("zxid", field::display(zxid));
                self.touches.touch(session_id);
                Ok(pb::CreateSessionResponse {
                    session_id: session_id.0,
                    secret,
                    timeout_ms,
                    zxid: zxid.0,
                    max_request_bytes: self.max_request_bytes(),
                })
            }
            (_, Outcome::Failed(f)) => Err(f),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Attaches a client to its session on this member.
    pub(super) async fn resume(
        &self,
        mut req: pb::ResumeSessionRequest,
    ) -> Result<pb::ResumeSessionResponse, Refusal> {
        // The secret may come in the resume itself or in its header.
        if let Some(h) = req.header.as_mut().filter(|_| !req.secret.is_empty()) {
            h.secret = std::mem::take(&mut req.secret);
        }
        let id = self.admit(req.header.as_ref()).await?;
        let state = self.consensus.replica.read();
        let session = state.sessions.get(id).ok_or_else(|| not_proven(id))?;
        Ok(pb::ResumeSessionResponse {
            timeout_ms: session.timeout_ms,
            zxid: state.zxid().0,
            max_request_bytes: self.max_request_bytes(),
        })
    }

    /// Serves one unary call in its span.
    async fn unary<C: SessionCall>(&self, request: Request<C>) -> Result<Response<C::Reply>, Status> {
        let caller = Caller {
            stream: None,
            ip: request.remote_addr().map(|a| a.ip()),
        };
        let req = request.into_inner();
        let span = span(C::OP, req.path());
        super::metered::call(req, self, caller)
            .instrument(span)
            .await
            .map(Response::new)
            .map_err(refusal::status)
    }
}

/// The tonic service: the session stream, session setup and status, and a
/// unary method per [`SessionCall`].
macro_rules! client_api {
    ($($method:ident: $req:ty => $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Ensemble for ClientService {
            type SessionStream = super::session_stream::Outbound;

            async fn session(
                &self,
                request: Request<Streaming<pb::SessionRequest>>,
            ) -> Result<Response<Self::SessionStream>, Status> {
                let ip = request.remote_addr().map(|a| a.ip());
                Ok(Response::new(super::session_stream::start(self.clone(), request.into_inner(), ip)))
            }

            async fn create_session(
                &self,
                request: Request<pb::CreateSessionRequest>,
            ) -> Result<Response<pb::CreateSessionResponse>, Status> {
                let ip = request.remote_addr().map(|a| a.ip());
                super::metered::record(Op::CreateSession, self.create_session(request.into_inner(), ip))
                    .instrument(span("create_session", ""))
                    .await
                    .map(Response::new)
                    .map_err(refusal::status)
            }

            async fn resume_session(
                &self,
                request: Request<pb::ResumeSessionRequest>,
            ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
                super::metered::record(Op::ResumeSession, self.resume(request.into_inner()))
                    .instrument(span("resume_session", ""))
                    .await
                    .map(Response::new)
                    .map_err(refusal::status)
            }

            async fn status(
                &self,
                request: Request<pb::StatusRequest>,
            ) -> Result<Response<pb::StatusResponse>, Status> {
                Ok(Response::new(super::status::status(self, request.get_ref().with_digest)))
            }

            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.unary(request).await
                }
            )*
        }
    };
}

client_api! {
    heartbeat: pb::HeartbeatRequest => pb::HeartbeatResponse;
    close_session: pb::CloseSessionRequest => pb::CloseSessionResponse;
    create: pb::CreateRequest => pb::CreateResponse;
    get: pb::GetRequest => pb::GetResponse;
    set: pb::SetRequest => pb::SetResponse;
    delete: pb::DeleteRequest => pb::DeleteResponse;
    exists: pb::ExistsRequest => pb::ExistsResponse;
    children: pb::ChildrenRequest => pb::ChildrenResponse;
    multi: pb::MultiRequest => pb::MultiResponse;
    sync: pb::SyncRequest => pb::SyncResponse;
    get_acl: pb::GetAclRequest => pb::GetAclResponse;
    set_acl: pb::SetAclRequest => pb::SetAclResponse;
    add_auth: pb::AddAuthRequest => pb::AddAuthResponse;
    who_am_i: pb::WhoAmIRequest => pb::WhoAmIResponse;
}
