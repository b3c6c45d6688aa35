//! Every request that acts for a session, one [`SessionCall`] each: what
//! it checks, how it is admitted, proposed or read, and what it answers.
//! The unary RPCs and the session stream both drive them (see `service.rs`
//! and `session_stream.rs`), so each operation lives here once.

use std::future::Future;
use std::net::IpAddr;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::{SessionId, Zxid};
use tracing::{field, Span};

use super::convert;
use super::refusal::unexpected;
use super::service::ClientService;
use super::watches::{StreamId, WatchKind};
use crate::state::acl::Who;
use crate::state::tree::Tree;
use crate::state::{Command, ErrorCode, Op, OpOutput, Outcome, Refusal, ZState, Znode};
use ensemble_proto::acl::{ADMIN, READ};

/// How a session request sits on the wire: its header, the znode it names
/// and its answer on the session stream.
pub(crate) trait Wire: Send + Sized + 'static {
    /// What it answers.
    type Reply: Send;
    /// Its name in request spans.
    const OP: &'static str;
    /// How `crate::metrics` counts it.
    const METRIC: crate::metrics::Op;
    /// Its header (session id, secret, last zxid).
    fn header(&mut self) -> &mut Option<pb::RequestHeader>;
    /// The znode it names, for request spans.
    fn path(&self) -> &str;
    /// Its answer on the session stream.
    fn wrap(reply: Self::Reply) -> Resp;
}

/// Declares the [`Wire`] of each request: the table of the client API.
macro_rules! wire {
    ($($req:ident => $reply:ident, $op:literal, $variant:ident $(, $path:ident)?;)*) => {
        $(
            impl Wire for pb::$req {
                type Reply = pb::$reply;
                const OP: &'static str = $op;
                const METRIC: crate::metrics::Op = crate::metrics::Op::$variant;

                fn header(&mut self) -> &mut Option<pb::RequestHeader> {
                    &mut self.header
                }

                fn path(&self) -> &str {
                    wire!(@path self $($path)?)
                }

                fn wrap(reply: pb::$reply) -> Resp {
                    Resp::$variant(reply)
                }
            }
        )*
    };
    (@path $s:ident path) => { &$s.path };
    (@path $s:ident) => { "" };
}

wire! {
    HeartbeatRequest => HeartbeatResponse, "heartbeat", Heartbeat;
    CloseSessionRequest => CloseSessionResponse, "close_session", Close;
    CreateRequest => CreateResponse, "create", Create, path;
    SetRequest => SetResponse, "set", Set, path;
    DeleteRequest => DeleteResponse, "delete", Delete, path;
    MultiRequest => MultiResponse, "multi", Multi;
    SyncRequest => SyncResponse, "sync", Sync, path;
    GetRequest => GetResponse, "get", Get, path;
    ExistsRequest => ExistsResponse, "exists", Exists, path;
    ChildrenRequest => ChildrenResponse, "children", Children, path;
    GetAclRequest => GetAclResponse, "get_acl", GetAcl, path;
    SetAclRequest => SetAclResponse, "set_acl", SetAcl, path;
    AddAuthRequest => AddAuthResponse, "add_auth", AddAuth;
    WhoAmIRequest => WhoAmIResponse, "who_am_i", WhoAmI;
}

/// Where a request came from: the session stream it came on, if any
/// (reads leave their watches there), and the client's address as this
/// node sees it (what `ip` ACL entries match).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Caller {
    /// The session stream, for a request that came on one.
    pub stream: Option<StreamId>,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

/// A request that acts for a session: how it is served.
pub(crate) trait SessionCall: Wire {
    /// Whether the session stream ends after this answer.
    fn ends_stream(_answer: &Result<Self::Reply, Refusal>) -> bool {
        false
    }
    /// Serves it for `caller`.
    fn call(
        self,
        svc: &ClientService,
        caller: Caller,
    ) -> impl Future<Output = Result<Self::Reply, Refusal>> + Send;
}

fn no_node(path: &str) -> Refusal {
    Refusal::new(ErrorCode::NoNode, format!("{path} does not exist"))
}

impl ClientService {
    /// Proposes one txn for the session and returns its op outputs. The
    /// ACL checks happen when it is applied.
    async fn txn(
        &self,
        session_id: SessionId,
        caller: Caller,
        ops: Vec<Op>,
        multi: bool,
    ) -> Result<(Zxid, Vec<OpOutput>), Refusal> {
        let command = Command::Txn {
            session_id,
            ops,
            multi,
            client_ip: caller.ip,
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
    async fn single(
        &self,
        session_id: SessionId,
        caller: Caller,
        op: Op,
    ) -> Result<(Zxid, OpOutput), Refusal> {
        let (zxid, mut outs) = self.txn(session_id, caller, vec![op], false).await?;
        let out = outs
            .pop()
            .ok_or_else(|| Refusal::new(ErrorCode::SystemError, "txn returned no result"))?;
        Ok((zxid, out))
    }
}

impl SessionCall for pb::HeartbeatRequest {
    async fn call(self, svc: &ClientService, _: Caller) -> Result<Self::Reply, Refusal> {
        svc.admit(self.header.as_ref()).await?;
        Ok(pb::HeartbeatResponse {
            zxid: svc.consensus.replica.applied().0,
        })
    }
}

impl SessionCall for pb::CloseSessionRequest {
    fn ends_stream(answer: &Result<Self::Reply, Refusal>) -> bool {
        answer.is_ok()
    }

    async fn call(self, svc: &ClientService, _: Caller) -> Result<Self::Reply, Refusal> {
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
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let op = convert::create_op(
            self.path,
            self.data,
            self.mode,
            self.acl,
            svc.limits.max_data_bytes,
        )?;
        let sid = svc.admit(self.header.as_ref()).await?;
        match svc.single(sid, caller, op).await? {
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
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let op = convert::set_op(
            self.path,
            self.data,
            self.expected_version,
            svc.limits.max_data_bytes,
        )?;
        let sid = svc.admit(self.header.as_ref()).await?;
        match svc.single(sid, caller, op).await? {
            (zxid, OpOutput::Set { stat }) => Ok(pb::SetResponse {
                stat: Some(convert::stat(&stat)),
                zxid: zxid.0,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }
}

impl SessionCall for pb::DeleteRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let op = convert::delete_op(self.path, self.expected_version)?;
        let sid = svc.admit(self.header.as_ref()).await?;
        let (zxid, _) = svc.single(sid, caller, op).await?;
        Ok(pb::DeleteResponse { zxid: zxid.0 })
    }
}

impl SessionCall for pb::MultiRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
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
        let (zxid, outs) = svc.txn(sid, caller, ops, true).await?;
        Ok(pb::MultiResponse {
            results: outs.into_iter().map(convert::op_result).collect(),
            zxid: zxid.0,
        })
    }
}

impl SessionCall for pb::SyncRequest {
    async fn call(self, svc: &ClientService, _: Caller) -> Result<Self::Reply, Refusal> {
        convert::check_path(&self.path, false)?;
        svc.admit(self.header.as_ref()).await?;
        // A read index round, not a log entry: sync costs no write.
        let zxid = svc.consensus.router.catch_up().await?;
        Ok(pb::SyncResponse {
            path: self.path,
            zxid: zxid.0,
        })
    }
}

impl ClientService {
    /// A read: checks the path, admits the session, and hands the znode
    /// (if any) to `answer` under the read lock; if the request asked for a
    /// watch and came on a stream, the watch `answer` names is left in the
    /// same breath, so no change slips in between the read and its watch.
    /// A read needs `perm` on the znode if it exists (0: none, as exists),
    /// checked here against this node's replica, the state it answers from.
    async fn read<R>(
        &self,
        header: Option<&pb::RequestHeader>,
        path: &str,
        perm: u32,
        caller: Caller,
        watch: Option<StreamId>,
        answer: impl FnOnce(Option<&Znode>, Zxid) -> Result<(R, WatchKind), Refusal>,
    ) -> Result<R, Refusal> {
        convert::check_path(path, false)?;
        let sid = self.admit(header).await?;
        let state = self.consensus.replica.read();
        let znode = state.tree.get(path);
        if let Some(z) = znode.filter(|_| perm != 0) {
            who(&state, sid, caller).check(&z.acl, perm, path)?;
        }
        let (reply, kind) = answer(znode, state.zxid())?;
        if let Some(stream) = watch {
            self.watches.add(stream, path, kind);
        }
        Ok(reply)
    }
}

/// Who a session is, from this node's replica, as seen from `caller`.
pub(crate) fn who<'a>(state: &'a ZState, sid: SessionId, caller: Caller) -> Who<'a> {
    Who {
        session_id: sid,
        identities: state
            .sessions
            .get(sid)
            .map_or(&[][..], |s| s.identities.as_slice()),
        ip: caller.ip,
    }
}

/// The stream to leave a watch on, if the request asked for one.
fn watch_on(stream: Option<StreamId>, asked: bool) -> Option<StreamId> {
    stream.filter(|_| asked)
}

impl SessionCall for pb::GetRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let watch = watch_on(caller.stream, self.watch);
        svc.read(
            self.header.as_ref(),
            &self.path,
            READ,
            caller,
            watch,
            |znode, zxid| {
                let z = znode.ok_or_else(|| no_node(&self.path))?;
                let reply = pb::GetResponse {
                    data: z.data.clone(),
                    stat: Some(convert::stat(&Tree::stat_of(z))),
                    zxid: zxid.0,
                };
                Ok((reply, WatchKind::Data))
            },
        )
        .await
    }
}

impl SessionCall for pb::ExistsRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let watch = watch_on(caller.stream, self.watch);
        svc.read(
            self.header.as_ref(),
            &self.path,
            0,
            caller,
            watch,
            |znode, zxid| {
                let kind = if znode.is_some() {
                    WatchKind::Data
                } else {
                    WatchKind::Exist
                };
                let reply = pb::ExistsResponse {
                    stat: znode.map(|z| convert::stat(&Tree::stat_of(z))),
                    zxid: zxid.0,
                };
                Ok((reply, kind))
            },
        )
        .await
    }
}

impl SessionCall for pb::ChildrenRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let watch = watch_on(caller.stream, self.watch);
        svc.read(
            self.header.as_ref(),
            &self.path,
            READ,
            caller,
            watch,
            |znode, zxid| {
                let z = znode.ok_or_else(|| no_node(&self.path))?;
                let reply = pb::ChildrenResponse {
                    children: z.children.iter().cloned().collect(),
                    stat: Some(convert::stat(&Tree::stat_of(z))),
                    zxid: zxid.0,
                };
                Ok((reply, WatchKind::Child))
            },
        )
        .await
    }
}

impl SessionCall for pb::GetAclRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        svc.read(
            self.header.as_ref(),
            &self.path,
            READ | ADMIN,
            caller,
            None,
            |znode, zxid| {
                let z = znode.ok_or_else(|| no_node(&self.path))?;
                let reply = pb::GetAclResponse {
                    acl: convert::acl_out(&z.acl),
                    stat: Some(convert::stat(&Tree::stat_of(z))),
                    zxid: zxid.0,
                };
                Ok((reply, WatchKind::Data))
            },
        )
        .await
    }
}

impl SessionCall for pb::SetAclRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let op = convert::set_acl_op(self.path, self.acl, self.expected_aversion)?;
        let sid = svc.admit(self.header.as_ref()).await?;
        match svc.single(sid, caller, op).await? {
            (zxid, OpOutput::SetAcl { stat }) => Ok(pb::SetAclResponse {
                stat: Some(convert::stat(&stat)),
                zxid: zxid.0,
            }),
            (_, out) => Err(unexpected(out)),
        }
    }
}

impl SessionCall for pb::AddAuthRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let info = self
            .auth
            .ok_or_else(|| Refusal::bad_arguments("add_auth needs credentials (scheme and auth)"))?;
        let sid = svc.admit(self.header.as_ref()).await?;
        let identities = svc.auth.verify(&info, caller.ip).await?;
        let mut zxid = Zxid(0);
        for identity in identities {
            let command = Command::AddIdentity {
                session_id: sid,
                identity,
            };
            let (at, outcome) = svc.consensus.router.submit(command).await?;
            Span::current().record("zxid", field::display(at));
            zxid = at;
            if let Outcome::Failed(f) = outcome {
                return Err(f);
            }
        }
        Ok(pb::AddAuthResponse { zxid: zxid.0 })
    }
}

impl SessionCall for pb::WhoAmIRequest {
    async fn call(self, svc: &ClientService, caller: Caller) -> Result<Self::Reply, Refusal> {
        let sid = svc.admit(self.header.as_ref()).await?;
        let state = svc.consensus.replica.read();
        let who = who(&state, sid, caller);
        let mut identities: Vec<pb::Identity> = who
            .identities
            .iter()
            .map(|i| pb::Identity {
                scheme: i.scheme.clone(),
                id: i.user().to_string(),
            })
            .collect();
        if let Some(ip) = caller.ip {
            identities.push(pb::Identity {
                scheme: "ip".into(),
                id: ip.to_string(),
            });
        }
        Ok(pb::WhoAmIResponse { identities })
    }
}
