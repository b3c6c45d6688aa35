//! The client gRPC service: sessions and znode operations.
//!
//! Writes go through [`Node::submit`] (routing and group commit) and answer
//! once this node has applied them. Reads are served from this node's applied
//! state after it has applied the client's last-seen zxid. A node that is cut
//! off from the majority refuses both, so its clients move to another node.

use std::sync::Arc;
use std::time::Duration;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_server::Ensemble;
use rand::RngCore;
use tonic::{Request, Response, Status};
use tracing::{debug_span, field, Instrument, Span};

use super::convert;
use super::errors::ApiError;
use crate::node::Node;
use crate::state::tree::Tree;
use crate::state::{Command, ErrorCode, Op, OpOutput, Outcome};

/// How long a read waits for this node to reach the client's last-seen zxid.
const READ_CATCH_UP: Duration = Duration::from_secs(5);

/// Serves clients.
pub struct ClientService {
    node: Arc<Node>,
}

impl ClientService {
    /// A service for this node.
    pub fn new(node: Arc<Node>) -> Self {
        ClientService { node }
    }

    /// Checks that this node may serve the session: in touch with the
    /// majority, caught up with the client, and the session open. Counts as
    /// hearing from the session, even when the node then refuses: the client
    /// is alive, and the leader should know once this node reaches it again.
    async fn admit(&self, header: Option<&pb::RequestHeader>) -> Result<u64, ApiError> {
        let h = header.ok_or_else(|| ApiError::bad_arguments("request header (session id) is missing"))?;
        if h.session_id == 0 {
            return Err(ApiError::bad_arguments("session id 0 is not a session"));
        }
        Span::current().record("session", field::display(format_args!("0x{:x}", h.session_id)));
        if !self.node.in_quorum() {
            if self.node.shared.read().sessions.contains(h.session_id) {
                self.node.activity.touch(h.session_id);
            }
            return Err(self.cut_off());
        }
        self.node
            .shared
            .wait_applied(h.last_zxid, READ_CATCH_UP)
            .await
            .map_err(|e| ApiError::new(ErrorCode::OperationTimeout, e.to_string()))?;
        if !self.node.shared.read().sessions.contains(h.session_id) {
            return Err(ApiError::session_expired(h.session_id));
        }
        self.node.activity.touch(h.session_id);
        Ok(h.session_id)
    }

    fn cut_off(&self) -> ApiError {
        ApiError::connection_loss(format!(
            "node {} is not in touch with a majority of the cluster; try another node",
            self.node.id
        ))
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
            other => Err(ApiError::new(
                ErrorCode::SystemError,
                format!("unexpected outcome {other:?}"),
            )),
        }
    }

    async fn single(&self, session_id: u64, op: Op) -> Result<(u64, OpOutput), ApiError> {
        let (zxid, mut outs) = self.txn(session_id, vec![op], false).await?;
        let out = outs
            .pop()
            .ok_or_else(|| ApiError::new(ErrorCode::SystemError, "txn returned no result"))?;
        Ok((zxid, out))
    }
}

fn span(name: &'static str, path: &str) -> Span {
    debug_span!("request", op = name, path = %path, session = field::Empty, zxid = field::Empty)
}

fn unexpected(out: OpOutput) -> ApiError {
    ApiError::new(ErrorCode::SystemError, format!("unexpected op output {out:?}"))
}

/// Runs a handler body in its span and turns its error into a gRPC status.
async fn traced<T>(
    span: Span,
    body: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, Status> {
    body.instrument(span).await.map_err(Status::from)
}

#[tonic::async_trait]
impl Ensemble for ClientService {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let req = request.into_inner();
        traced(span("create_session", ""), async {
            self.ensure_in_quorum()?;
            let cfg = &self.node.config;
            let timeout_ms = (req.timeout_ms as u64).clamp(
                cfg.min_session_timeout.as_millis() as u64,
                cfg.max_session_timeout.as_millis() as u64,
            ) as u32;
            let mut secret = vec![0u8; 16];
            rand::thread_rng().fill_bytes(&mut secret);
            let (zxid, outcome) = self
                .node
                .submit(Command::CreateSession {
                    secret: secret.clone(),
                    timeout_ms,
                })
                .await?;
            match outcome {
                Outcome::SessionCreated {
                    session_id,
                    timeout_ms,
                } => {
                    Span::current().record("session", field::display(format_args!("0x{session_id:x}")));
                    Span::current().record("zxid", zxid);
                    self.node.activity.touch(session_id);
                    Ok(Response::new(pb::CreateSessionResponse {
                        session_id,
                        secret,
                        timeout_ms,
                        zxid,
                    }))
                }
                Outcome::Failed(f) => Err(ApiError::from(f)),
                other => Err(ApiError::new(
                    ErrorCode::SystemError,
                    format!("unexpected outcome {other:?}"),
                )),
            }
        })
        .await
    }

    async fn resume_session(
        &self,
        request: Request<pb::ResumeSessionRequest>,
    ) -> Result<Response<pb::ResumeSessionResponse>, Status> {
        let req = request.into_inner();
        traced(span("resume_session", ""), async {
            let id = self.admit(req.header.as_ref()).await?;
            let state = self.node.shared.read();
            let session = state
                .sessions
                .get(id)
                .ok_or_else(|| ApiError::session_expired(id))?;
            if session.secret != req.secret {
                return Err(ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("session 0x{id:x}: the secret does not match"),
                ));
            }
            Ok(Response::new(pb::ResumeSessionResponse {
                timeout_ms: session.timeout_ms,
                zxid: state.zxid(),
            }))
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        self.admit(req.header.as_ref()).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            zxid: self.node.shared.applied(),
        }))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let req = request.into_inner();
        traced(span("close_session", ""), async {
            let session_id = self.admit(req.header.as_ref()).await?;
            let (zxid, outcome) = self.node.submit(Command::CloseSession { session_id }).await?;
            Span::current().record("zxid", zxid);
            self.node.activity.forget(session_id);
            match outcome {
                Outcome::Failed(f) => Err(f.into()),
                _ => Ok(Response::new(pb::CloseSessionResponse { zxid })),
            }
        })
        .await
    }

    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let req = request.into_inner();
        let span = span("create", &req.path);
        traced(span, async {
            let op = convert::create_op(req.path, req.data, req.mode, self.node.config.max_data_bytes)?;
            let sid = self.admit(req.header.as_ref()).await?;
            match self.single(sid, op).await? {
                (zxid, OpOutput::Create { path, stat }) => Ok(Response::new(pb::CreateResponse {
                    path,
                    stat: Some(convert::stat(&stat)),
                    zxid,
                })),
                (_, out) => Err(unexpected(out)),
            }
        })
        .await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref())
            .instrument(span("get", &req.path))
            .await?;
        let state = self.node.shared.read();
        let node = state
            .tree
            .get(&req.path)
            .ok_or_else(|| ApiError::new(ErrorCode::NoNode, format!("{} does not exist", req.path)))?;
        Ok(Response::new(pb::GetResponse {
            data: node.data.clone(),
            stat: Some(convert::stat(&Tree::stat_of(node))),
            zxid: state.zxid(),
        }))
    }

    async fn set(&self, request: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let req = request.into_inner();
        let span = span("set", &req.path);
        traced(span, async {
            let op = convert::set_op(
                req.path,
                req.data,
                req.expected_version,
                self.node.config.max_data_bytes,
            )?;
            let sid = self.admit(req.header.as_ref()).await?;
            match self.single(sid, op).await? {
                (zxid, OpOutput::Set { stat }) => Ok(Response::new(pb::SetResponse {
                    stat: Some(convert::stat(&stat)),
                    zxid,
                })),
                (_, out) => Err(unexpected(out)),
            }
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = request.into_inner();
        let span = span("delete", &req.path);
        traced(span, async {
            let op = convert::delete_op(req.path, req.expected_version)?;
            let sid = self.admit(req.header.as_ref()).await?;
            let (zxid, _) = self.single(sid, op).await?;
            Ok(Response::new(pb::DeleteResponse { zxid }))
        })
        .await
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        let req = request.into_inner();
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref())
            .instrument(span("exists", &req.path))
            .await?;
        let state = self.node.shared.read();
        Ok(Response::new(pb::ExistsResponse {
            stat: state
                .tree
                .get(&req.path)
                .map(|n| convert::stat(&Tree::stat_of(n))),
            zxid: state.zxid(),
        }))
    }

    async fn children(
        &self,
        request: Request<pb::ChildrenRequest>,
    ) -> Result<Response<pb::ChildrenResponse>, Status> {
        let req = request.into_inner();
        convert::check_path(&req.path, false)?;
        self.admit(req.header.as_ref())
            .instrument(span("children", &req.path))
            .await?;
        let state = self.node.shared.read();
        let node = state
            .tree
            .get(&req.path)
            .ok_or_else(|| ApiError::new(ErrorCode::NoNode, format!("{} does not exist", req.path)))?;
        Ok(Response::new(pb::ChildrenResponse {
            children: node.children.iter().cloned().collect(),
            stat: Some(convert::stat(&Tree::stat_of(node))),
            zxid: state.zxid(),
        }))
    }

    async fn multi(&self, request: Request<pb::MultiRequest>) -> Result<Response<pb::MultiResponse>, Status> {
        let req = request.into_inner();
        let span = span("multi", "");
        traced(span, async {
            let max = self.node.config.max_data_bytes;
            let ops = req
                .ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| convert::multi_op(i, op, max))
                .collect::<Result<Vec<_>, _>>()?;
            let sid = self.admit(req.header.as_ref()).await?;
            if ops.is_empty() {
                return Ok(Response::new(pb::MultiResponse {
                    results: vec![],
                    zxid: self.node.shared.applied(),
                }));
            }
            let (zxid, outs) = self.txn(sid, ops, true).await?;
            Ok(Response::new(pb::MultiResponse {
                results: outs.into_iter().map(convert::op_result).collect(),
                zxid,
            }))
        })
        .await
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Result<Response<pb::SyncResponse>, Status> {
        let req = request.into_inner();
        let span = span("sync", &req.path);
        traced(span, async {
            self.admit(req.header.as_ref()).await?;
            let (zxid, _) = self.node.submit(Command::Sync).await?;
            Ok(Response::new(pb::SyncResponse { path: req.path, zxid }))
        })
        .await
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
