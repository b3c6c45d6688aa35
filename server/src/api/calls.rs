//! Every request that acts for a session, one [`SessionCall`] each: what
//! it checks, how it is admitted, proposed or read, and what it answers.
//! The unary RPCs and the session stream both drive them (see `service.rs`
//! and `session_stream.rs`), so each operation lives here once.

use std::future::Future;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::{SessionId, Zxid};
use tracing::{field, Span};

use super::convert;
use super::refusal::unexpected;
use super::service::ClientService;
use super::watches::{StreamId, WatchKind};
use crate::state::tree::Tree;
use crate::state::{Command, ErrorCode, Op, OpOutput, Outcome, Refusal};

/// A request that acts for a session.
pub(crate) trait SessionCall: Send + Sized + 'static {
    /// What it answers.
    type Reply: Send;
    /// Its name in request spans.
    const OP: &'static str;
    /// Its header (session id, secret, last zxid).
    fn header(&mut self) -> &mut Option<pb::RequestHeader>;
    /// The znode it names, for request spans.
    fn path(&self) -> &str {
        ""
    }
    /// Its answer on the session stream.
    fn wrap(reply: Self::Reply) -> Resp;
    /// Whether the session stream ends after this answer.
    fn ends_stream(_answer: &Result<Self::Reply, Refusal>) -> bool {
        false
    }
    /// Serves it; `stream` is the session stream it came on, if any (reads
    /// leave their watches there).
    fn call(
        self,
        svc: &ClientService,
        stream: Option<StreamId>,
    ) -> impl Future<Output = Result<Self::Reply, Refusal>> + Send;
}

fn no_node(path: &str) -> Refusal {
    Refusal::new(ErrorCode::NoNode, format!("{path} does not exist"))
}

impl ClientService {
    /// Proposes one txn for the session and returns its op outputs.
    async fn txn(
        &self,
        session_id: SessionId,
        ops: Vec<Op>,
        multi: bool,
    ) -> Result<(Zxid, Vec<OpOutput>), Refusal> {
        let command = Command::Txn {
            session_id,
            ops,
            multi,
        };
        let (zxid, outcome) = self.consensus.router.submit(command).await?;
        Span::current().record("zxid", field::display(zxid));
        match outcome {
            Outcome::Txn(outputs) => Ok((zxid, outputs)),
            Outcome::Failed(f) => Err(f),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes one op for the session.
    async fn single(&self, session_id: SessionId, op: Op) -> Result<(Zxid, OpOutput), Refusal> {
        let (zxid, mut outs) = self.txn(session_id, vec![op], false).await?;
        let out = outs
            .pop()
            .ok_or_else(|| Refusal::new(ErrorCode::SystemError, "txn returned no result"))?;
        Ok((zxid, out))
    }
}

impl SessionCall for pb::HeartbeatRequest {
    type Reply = pb::HeartbeatResponse;
    const OP: &'static str = "heartbeat";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Heartbeat(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        svc.admit(self.header.as_ref()).await?;
        Ok(pb::HeartbeatResponse {
            zxid: svc.consensus.replica.applied().0,
        })
    }
}

impl SessionCall for pb::CloseSessionRequest {
    type Reply = pb::CloseSessionResponse;
    const OP: &'static str = "close_session";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Close(reply)
    }

    fn ends_stream(answer: &Result<Self::Reply, Refusal>) -> bool {
        answer.is_ok()
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        let session_id = svc.admit(self.header.as_ref()).await?;
        let (zxid, outcome) = svc
            .consensus
            .router
            .submit(Command::CloseSession { session_id })
            .await?;
        Span::current().record("zxid", field::display(zxid));
        svc.touches.forget(session_id);
        match outcome {
            Outcome::Failed(f) => Err(f),
            _ => Ok(pb::CloseSessionResponse { zxid: zxid.0 }),
        }
    }
}

impl SessionCall for pb::CreateRequest {
    type Reply = pb::CreateResponse;
    const OP: &'static str = "create";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Create(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        let op = convert::create_op(self.path, self.data, self.mode, svc.limits.max_data_bytes)?;
        let sid = svc.admit(self.header.as_ref()).await?;
        match svc.single(sid, op).await? {
            (zxid, OpOutput::Create { path, stat }) => Ok(pb::CreateResponse {
                path,
                stat: Some(convert::stat(&stat)),
                zxid: zxid.0,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }
}

impl SessionCall for pb::SetRequest {
    type Reply = pb::SetResponse;
    const OP: &'static str = "set";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Set(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        let op = convert::set_op(
            self.path,
            self.data,
            self.expected_version,
            svc.limits.max_data_bytes,
        )?;
        let sid = svc.admit(self.header.as_ref()).await?;
        match svc.single(sid, op).await? {
            (zxid, OpOutput::Set { stat }) => Ok(pb::SetResponse {
                stat: Some(convert::stat(&stat)),
                zxid: zxid.0,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }
}

impl SessionCall for pb::DeleteRequest {
    type Reply = pb::DeleteResponse;
    const OP: &'static str = "delete";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Delete(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        let op = convert::delete_op(self.path, self.expected_version)?;
        let sid = svc.admit(self.header.as_ref()).await?;
        let (zxid, _) = svc.single(sid, op).await?;
        Ok(pb::DeleteResponse { zxid: zxid.0 })
    }
}

impl SessionCall for pb::MultiRequest {
    type Reply = pb::MultiResponse;
    const OP: &'static str = "multi";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Multi(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        let limit = svc.limits.max_multi_ops;
        if self.ops.len() > limit {
            return Err(Refusal::bad_arguments(format!(
                "multi has {} ops; the limit is {limit} (max_multi_ops)",
                self.ops.len()
            )));
        }
        let max = svc.limits.max_data_bytes;
        let ops = self
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| convert::multi_op(i, op, max))
            .collect::<Result<Vec<_>, _>>()?;
        let sid = svc.admit(self.header.as_ref()).await?;
        if ops.is_empty() {
            return Ok(pb::MultiResponse {
                results: vec![],
                zxid: svc.consensus.replica.applied().0,
            });
        }
        let (zxid, outs) = svc.txn(sid, ops, true).await?;
        Ok(pb::MultiResponse {
            results: outs.into_iter().map(convert::op_result).collect(),
            zxid: zxid.0,
        })
    }
}

impl SessionCall for pb::SyncRequest {
    type Reply = pb::SyncResponse;
    const OP: &'static str = "sync";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Sync(reply)
    }

    async fn call(self, svc: &ClientService, _: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        convert::check_path(&self.path, false)?;
        svc.admit(self.header.as_ref()).await?;
        let (zxid, _) = svc.consensus.router.submit(Command::Sync).await?;
        Ok(pb::SyncResponse {
            path: self.path,
            zxid: zxid.0,
        })
    }
}

impl SessionCall for pb::GetRequest {
    type Reply = pb::GetResponse;
    const OP: &'static str = "get";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Get(reply)
    }

    async fn call(self, svc: &ClientService, stream: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        convert::check_path(&self.path, false)?;
        svc.admit(self.header.as_ref()).await?;
        let state = svc.consensus.replica.read();
        let znode = state.tree.get(&self.path).ok_or_else(|| no_node(&self.path))?;
        // Under the read lock, so no change slips in between the read and its watch.
        if let (Some(s), true) = (stream, self.watch) {
            svc.watches.add(s, &self.path, WatchKind::Data);
        }
        Ok(pb::GetResponse {
            data: znode.data.clone(),
            stat: Some(convert::stat(&Tree::stat_of(znode))),
            zxid: state.zxid().0,
        })
    }
}

impl SessionCall for pb::ExistsRequest {
    type Reply = pb::ExistsResponse;
    const OP: &'static str = "exists";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Exists(reply)
    }

    async fn call(self, svc: &ClientService, stream: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        convert::check_path(&self.path, false)?;
        svc.admit(self.header.as_ref()).await?;
        let state = svc.consensus.replica.read();
        let znode = state.tree.get(&self.path);
        if let (Some(s), true) = (stream, self.watch) {
            let kind = if znode.is_some() {
                WatchKind::Data
            } else {
                WatchKind::Exist
            };
            svc.watches.add(s, &self.path, kind);
        }
        Ok(pb::ExistsResponse {
            stat: znode.map(|z| convert::stat(&Tree::stat_of(z))),
            zxid: state.zxid().0,
        })
    }
}

impl SessionCall for pb::ChildrenRequest {
    type Reply = pb::ChildrenResponse;
    const OP: &'static str = "children";

    fn header(&mut self) -> &mut Option<pb::RequestHeader> {
        &mut self.header
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn wrap(reply: Self::Reply) -> Resp {
        Resp::Children(reply)
    }

    async fn call(self, svc: &ClientService, stream: Option<StreamId>) -> Result<Self::Reply, Refusal> {
        convert::check_path(&self.path, false)?;
        svc.admit(self.header.as_ref()).await?;
        let state = svc.consensus.replica.read();
        let znode = state.tree.get(&self.path).ok_or_else(|| no_node(&self.path))?;
        if let (Some(s), true) = (stream, self.watch) {
            svc.watches.add(s, &self.path, WatchKind::Child);
        }
        Ok(pb::ChildrenResponse {
            children: znode.children.iter().cloned().collect(),
            stat: Some(convert::stat(&Tree::stat_of(znode))),
            zxid: state.zxid().0,
        })
    }
}
