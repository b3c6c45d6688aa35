//! The client gRPC service: sessions and znode operations.
//!
//! Each operation is one `handle_*` method returning the reply or an
//! [`ApiError`]; the unary RPCs and the session stream (`session_stream.rs`)
//! both call them. Writes go through [`Node::submit`] (routing and group
//! commit) and answer once this node has applied them. Reads are served from
//! this node's applied state after it has applied the client's last-seen
//! zxid. A node cut off from the majority refuses both, so clients move on.

use std::sync::Arc;
use std::time::Duration;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_server::Ensemble;
use rand::RngCore;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug_span, field, Instrument, Span};

use super::convert;
use super::errors::ApiError;
use super::watches::{WatchKind, WatcherId};
use crate::node::Node;
use crate::state::sessions::Secret;
use crate::state::tree::Tree;
use crate::state::{Command, ErrorCode, Op, OpOutput, Outcome};

/// How long a read waits for this node to reach the client's last-seen zxid.
const READ_CATCH_UP: Duration = Duration::from_secs(5);

/// Serves clients.
#[derive(Clone)]
pub struct ClientService {
    pub(super) node: Arc<Node>,
}

fn header_session(header: Option<&pb::RequestHeader>) -> Result<&pb::RequestHeader, ApiError> {
    let h = header.ok_or_else(|| ApiError::bad_arguments("request header (session id) is missing"))?;
    if h.session_id == 0 {
        return Err(ApiError::bad_arguments("session id 0 is not a session"));
    }
    Ok(h)
}

fn no_node(path: &str) -> ApiError {
    ApiError::new(ErrorCode::NoNode, format!("{path} does not exist"))
}

fn unexpected(out: impl std::fmt::Debug) -> ApiError {
    ApiError::new(ErrorCode::SystemError, format!("unexpected result {out:?}"))
}

/// A span for one request; session and zxid are filled in as they are known.
pub(super) fn span(name: &'static str, path: &str) -> Span {
    debug_span!("request", op = name, path = %path, session = field::Empty, zxid = field::Empty)
}

impl ClientService {
    /// A service for this node.
    pub fn new(node: Arc<Node>) -> Self {
        ClientService { node }
    }

    /// Checks that this node may serve the session: the caller proved it
    /// (the header's secret), the node is in touch with the majority and
    /// caught up with the client, and the session is open. A proven call
    /// counts as hearing from the session even when the node then refuses:
    /// the client is alive, and the leader should know once this node
    /// reaches it again. An unproven call touches nothing, and its refusal
    /// does not say whether a session with that id exists.
    pub(super) async fn admit(&self, header: Option<&pb::RequestHeader>) -> Result<u64, ApiError> {
        let h = header_session(header)?;
        Span::current().record("session", field::display(format_args!("0x{:x}", h.session_id)));
        // Any proven contact counts at once, before any waiting or refusing.
        if self.proven(h) {
            self.node.activity.touch(h.session_id);
        }
        if !self.node.in_quorum() {
            return Err(self.cut_off());
        }
        self.node
            .shared
            .wait_applied(h.last_zxid, READ_CATCH_UP)
            .await
            .map_err(|e| ApiError::new(ErrorCode::OperationTimeout, e.to_string()))?;
        if !self.proven(h) {
            return Err(ApiError::not_proven(h.session_id));
        }
        self.node.activity.touch(h.session_id);
        Ok(h.session_id)
    }

    /// Whether the session is open here and the header carries its secret.
    fn proven(&self, h: &pb::RequestHeader) -> bool {
        self.node
            .shared
            .read()
            .sessions
            .get(h.session_id)
            .is_some_and(|s| s.secret.matches(&h.secret))
    }

    fn cut_off(&self) -> ApiError {
        let mut e = ApiError::connection_loss(format!(
            "node {} is not in touch with a majority of the cluster; try another node",
            self.node.id
        ));
        e.not_applied = true;
        e
    }

    fn ensure_in_quorum(&self) -> Result<(), ApiError> {
        if self.node.in_quorum() {
            Ok(())
        } else {
            Err(self.cut_off())
        }
    }

    /// Proposes one txn for the session and returns its op outputs.
    async fn txn(
        &self,
        session_id: u64,
        ops: Vec<Op>,
        multi: bool,
    ) -> Result<(u64, Vec<OpOutput>), ApiError> {
        let (zxid, outcome) = self
            .node
            .submit(Command::Txn {
                session_id,
                ops,
                multi,
            })
            .await?;
        Span::current().record("zxid", zxid);
        match outcome {
            Outcome::Txn(outputs) => Ok((zxid, outputs)),
            Outcome::Failed(f) => Err(f.into()),
            other => Err(unexpected(other)),
        }
    }

    async fn single(&self, session_id: u64, op: Op) -> Result<(u64, OpOutput), ApiError> {
        let (zxid, mut outs) = self.txn(session_id, vec![op], false).await?;
        let out = outs
            .pop()
            .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "txn returned no result"))?;
        Ok((zxid, out))
    }

    pub(super) async fn handle_create_session(
        &self,
        req: pb::CreateSessionRequest,
    ) -> Result<pb::CreateSessionResponse, ApiError> {
        self.ensure_in_quorum()?;
        let cfg = &self.node.config;
        let timeout_ms = (req.timeout_ms as u64).clamp(
            cfg.min_session_timeout.as_millis() as u64,
            cfg.max_session_timeout.as_millis() as u64,
        ) as u32;
        let mut secret = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        let command = Command::CreateSession {
            secret: Secret::new(secret.clone()),
            timeout_ms,
        };
        match self.node.submit(command).await? {
            (
                zxid,
                Outcome::SessionCreated {
                    session_id,
                    timeout_ms,
                },
            ) => {
                Span::current().record("session", field::display(format_args!("0x{session_id:x}")));
                Span::current().record("zxid", zxid);
                self.node.activity.touch(session_id);
                Ok(pb::CreateSessionResponse {
                    session_id,
                    secret,
                    timeout_ms,
                    zxid,
                    max_request_bytes: self.max_request_bytes(),
                })
            }
            (_, Outcome::Failed(f)) => Err(f.into()),
            (_, other) => Err(unexpected(other)),
        }
    }

    fn max_request_bytes(&self) -> u32 {
        self.node.config.max_request_bytes.min(u32::MAX as usize) as u32
    }

    pub(super) async fn handle_resume(
        &self,
        mut req: pb::ResumeSessionRequest,
    ) -> Result<pb::ResumeSessionResponse, ApiError> {
        // The secret may come in the resume itself or in its header.
        if let Some(h) = req.header.as_mut().filter(|_| !req.secret.is_empty()) {
            h.secret = std::mem::take(&mut req.secret);
        }
        let id = self.admit(req.header.as_ref()).await?;
        let state = self.node.shared.read();
        let session = state.sessions.get(id).ok_or_else(|| ApiError::not_proven(id))?;
        Ok(pb::ResumeSessionResponse {
            timeout_ms: session.timeout_ms,
            zxid: state.zxid(),
            max_request_bytes: self.max_request_bytes(),
        })
    }

    pub(super) async fn handle_heartbeat(
        &self,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, ApiError> {
        self.admit(req.header.as_ref()).await?;
        Ok(pb::HeartbeatResponse {
            zxid: self.node.shared.applied(),
        })
    }

    pub(super) async fn handle_close(
        &self,
        req: pb::CloseSessionRequest,
    ) -> Result<pb::CloseSessionResponse, ApiError> {
        let session_id = self.admit(req.header.as_ref()).await?;
        let (zxid, outcome) = self.node.submit(Command::CloseSession { session_id }).await?;
        Span::current().record("zxid", zxid);
        self.node.activity.forget(session_id);
        match outcome {
            Outcome::Failed(f) => Err(f.into()),
            _ => Ok(pb::CloseSessionResponse { zxid }),
        }
    }

    pub(super) async fn handle_create(&self, req: pb::CreateRequest) -> Result<pb::CreateResponse, ApiError> {
        let op = convert::create_op(req.path, req.data, req.mode, self.node.config.max_data_bytes)?;
        let sid = self.admit(req.header.as_ref()).await?;
        match self.single(sid, op).await? {
            (zxid, OpOutput::Create { path, stat }) => Ok(pb::CreateResponse {
                path,
                stat: Some(convert::stat(&stat)),
                zxid,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }

    pub(super) async fn handle_set(&self, req: pb::SetRequest) -> Result<pb::SetResponse, ApiError> {
        let op = convert::set_op(
            req.path,
            req.data,
            req.expected_version,
            self.node.config.max_data_bytes,
        )?;
        let sid = self.admit(req.header.as_ref()).await?;
        match self.single(sid, op).await? {
            (zxid, OpOutput::Set { stat }) => Ok(pb::SetResponse {
                stat: Some(convert::stat(&stat)),
                zxid,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }

    pub(super) async fn handle_delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse, ApiError> {
        let op = convert::delete_op(req.path, req.expected_version)?;
        let sid = self.admit(req.header.as_ref()).await?;
        let (zxid, _) = self.single(sid, op).await?;
        Ok(pb::DeleteResponse { zxid })
    }

    pub(super) async fn handle_multi(&self, req: pb::MultiRequest) -> Result<pb::MultiResponse, ApiError> {
        let limit = self.node.config.max_multi_ops;
        if req.ops.len() > limit {
            return Err(ApiError::bad_arguments(format!(
                "multi has {} ops; the limit is {limit} (max_multi_ops)",
                req.ops.len()
            )));
        }
        let max = self.node.config.max_data_bytes;
        let ops = req
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| convert::multi_op(i, op, max))
            .collect::<Result<Vec<_>, _>>()?;
        let sid = self.admit(req.header.as_ref()).await?;
        if ops.is_empty() {
            return Ok(pb::MultiResponse {
                results: vec![],
                zxid: self.node.shared.applied(),
            });
        }
        let (zxid, outs) = self.txn(sid, ops, true).await?;
        Ok(pb::MultiResponse {
            results: outs.into_iter().map(convert::op_result).collect(),
            zxid,
        })
    }

    pub(super) async fn handle_sync(&self, req: pb::SyncRequest) -> Result<pb::SyncResponse, ApiError> {
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref()).await?;
        let (zxid, _) = self.node.submit(Command::Sync).await?;
        Ok(pb::SyncResponse { path: req.path, zxid })
    }

    /// A read; with `watcher`, a one-shot watch is left under the same lock.
    pub(super) async fn handle_get(
        &self,
        req: pb::GetRequest,
        watcher: Option<WatcherId>,
    ) -> Result<pb::GetResponse, ApiError> {
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref()).await?;
        let state = self.node.shared.read();
        let node = state.tree.get(&req.path).ok_or_else(|| no_node(&req.path))?;
        if let (Some(w), true) = (watcher, req.watch) {
            self.node.watches.add(w, &req.path, WatchKind::Data);
        }
        Ok(pb::GetResponse {
            data: node.data.clone(),
            stat: Some(convert::stat(&Tree::stat_of(node))),
            zxid: state.zxid(),
        })
    }

    pub(super) async fn handle_exists(
        &self,
        req: pb::ExistsRequest,
        watcher: Option<WatcherId>,
    ) -> Result<pb::ExistsResponse, ApiError> {
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref()).await?;
        let state = self.node.shared.read();
        let node = state.tree.get(&req.path);
        if let (Some(w), true) = (watcher, req.watch) {
            let kind = if node.is_some() {
                WatchKind::Data
            } else {
                WatchKind::Exist
            };
            self.node.watches.add(w, &req.path, kind);
        }
        Ok(pb::ExistsResponse {
            stat: node.map(|n| convert::stat(&Tree::stat_of(n))),
            zxid: state.zxid(),
        })
    }

    pub(super) async fn handle_children(
        &self,
        req: pb::ChildrenRequest,
        watcher: Option<WatcherId>,
    ) -> Result<pb::ChildrenResponse, ApiError> {
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref()).await?;
        let state = self.node.shared.read();
        let node = state.tree.get(&req.path).ok_or_else(|| no_node(&req.path))?;
        if let (Some(w), true) = (watcher, req.watch) {
            self.node.watches.add(w, &req.path, WatchKind::Child);
        }
        Ok(pb::ChildrenResponse {
            children: node.children.iter().cloned().collect(),
            stat: Some(convert::stat(&Tree::stat_of(node))),
            zxid: state.zxid(),
        })
    }
}

/// Runs a handler in its span and turns its result into a gRPC reply.
async fn unary<T>(
    span: Span,
    body: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    body.instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
}

#[tonic::async_trait]
impl Ensemble for ClientService {
    type SessionStream = super::session_stream::Outbound;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Ok(Response::new(super::session_stream::start(
            self.clone(),
            request.into_inner(),
        )))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        unary(
            span("create_session", ""),
            self.handle_create_session(request.into_inner()),
        )
        .await
    }

    async fn resume_session(
        &self,
        request: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
        unary(
            span("resume_session", ""),
            self.handle_resume(request.into_inner()),
        )
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        unary(span("heartbeat", ""), self.handle_heartbeat(request.into_inner())).await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        unary(span("close_session", ""), self.handle_close(request.into_inner())).await
    }

    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let req = request.into_inner();
        unary(span("create", &req.path.clone()), self.handle_create(req)).await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        unary(span("get", &req.path.clone()), self.handle_get(req, None)).await
    }

    async fn set(&self, request: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let req = request.into_inner();
        unary(span("set", &req.path.clone()), self.handle_set(req)).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = request.into_inner();
        unary(span("delete", &req.path.clone()), self.handle_delete(req)).await
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        let req = request.into_inner();
        unary(span("exists", &req.path.clone()), self.handle_exists(req, None)).await
    }

    async fn children(
        &self,
        request: Request<pb::ChildrenRequest>,
    ) -> Result<Response<pb::ChildrenResponse>, Status> {
        let req = request.into_inner();
        unary(
            span("children", &req.path.clone()),
            self.handle_children(req, None),
        )
        .await
    }

    async fn multi(&self, request: Request<pb::MultiRequest>) -> Result<Response<pb::MultiResponse>, Status> {
        unary(span("multi", ""), self.handle_multi(request.into_inner())).await
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Result<Response<pb::SyncResponse>, Status> {
        let req = request.into_inner();
        unary(span("sync", &req.path.clone()), self.handle_sync(req)).await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(crate::admin::status(
            &self.node,
            request.get_ref().with_digest,
        )))
    }
}
