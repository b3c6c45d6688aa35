//! Reply routing: what to do with one message from the node. Events go to
//! the watches; a reply goes to the call waiting for its xid; refusals that
//! say the node is cut off keep the call for the next node (a read, or a
//! write the node says was not applied) and tell the stream to drain; an
//! expired session ends everything.

use std::collections::HashMap;

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_response::Response as Resp;
use ensemble_proto::Zxid;

use super::shared::{Call, Shared};
use super::wire::zxid_of;
use crate::convert;
use crate::error::Error;
use crate::types::{ErrorCode, WatchEvent};

/// A request in flight on the stream.
pub(super) enum Pending {
    Api(Call),
    /// Heartbeats and watch re-registration: nobody waits for them.
    Internal,
}

/// What the stream does after a message.
pub(super) enum Handled {
    Continue,
    Expired,
    Closed,
    /// The node is cut off (or we fell behind): drain and go elsewhere.
    Reconnect,
}

/// Routes one message from the node.
pub(super) fn route(
    shared: &Shared,
    msg: pb::SessionResponse,
    pending: &mut HashMap<u64, Pending>,
) -> Handled {
    let Some(resp) = msg.response else {
        return Handled::Continue;
    };
    if let Resp::Event(e) = &resp {
        let ev = WatchEvent {
            kind: convert::event_type(e.r#type),
            path: e.path.clone(),
            zxid: Zxid(e.zxid),
        };
        shared.saw(e.zxid);
        shared.watches().dispatch(&ev, &shared.chroot);
        return Handled::Continue;
    }
    shared.saw(zxid_of(&resp));
    let entry = pending.remove(&msg.xid);
    let result = match resp {
        Resp::Error(e) => {
            let not_applied = e.not_applied;
            let err = Error::from_reply(e);
            if err.code() == ErrorCode::SessionExpired {
                if let Some(Pending::Api(call)) = entry {
                    let _ = call
                        .reply
                        .send(Err(Error::SessionExpired(shared.session.session_id)));
                }
                return Handled::Expired;
            }
            if msg.xid == 0
                || (matches!(entry, Some(Pending::Internal)) && err.code() == ErrorCode::ConnectionLoss)
            {
                // The node is cut off (or we fell behind): go elsewhere.
                if let Some(e) = entry {
                    pending.insert(msg.xid, e);
                }
                return Handled::Reconnect;
            }
            if err.code() == ErrorCode::ConnectionLoss {
                // A cut-off node refused before proposing: send it again
                // elsewhere (a write too, if the node says nothing was applied).
                if let Some(Pending::Api(call)) = entry {
                    if call.idempotent || not_applied {
                        pending.insert(msg.xid, Pending::Api(call));
                        return Handled::Reconnect;
                    }
                    let _ = call.reply.send(Err(err));
                }
                return Handled::Reconnect;
            }
            Err(err)
        }
        other => Ok(other),
    };
    let closed = matches!(result, Ok(Resp::Close(_)));
    if let Some(Pending::Api(call)) = entry {
        let _ = call.reply.send(result);
    }
    if closed {
        Handled::Closed
    } else {
        Handled::Continue
    }
}
