//! Wire helpers of the session stream: stamping a request with the
//! session's header, and reading the zxid a reply carries, one `match` over
//! the proto's oneofs each, so nothing else needs to know every variant.

use ensemble_proto::v1 as pb;
use ensemble_proto::v1::session_request::Request as Req;
use ensemble_proto::v1::session_response::Response as Resp;

/// The zxid a reply carries, if any (0 otherwise).
pub(super) fn zxid_of(r: &Resp) -> u64 {
    match r {
        Resp::Resume(r) => r.zxid,
        Resp::Heartbeat(r) => r.zxid,
        Resp::Close(r) => r.zxid,
        Resp::Create(r) => r.zxid,
        Resp::Get(r) => r.zxid,
        Resp::Set(r) => r.zxid,
        Resp::Delete(r) => r.zxid,
        Resp::Exists(r) => r.zxid,
        Resp::Children(r) => r.zxid,
        Resp::Multi(r) => r.zxid,
        Resp::Sync(r) => r.zxid,
        Resp::AddWatch(r) => r.zxid,
        Resp::SetWatches(r) => r.zxid,
        Resp::GetAcl(r) => r.zxid,
        Resp::SetAcl(r) => r.zxid,
        Resp::AddAuth(r) => r.zxid,
        Resp::RemoveWatches(_) | Resp::WhoAmI(_) | Resp::Error(_) | Resp::Event(_) => 0,
    }
}

/// Puts the session's header (with the newest zxid) into a request.
pub(super) fn stamp(req: &mut Req, header: pb::RequestHeader) {
    let h = Some(header);
    match req {
        Req::Resume(r) => r.header = h,
        Req::Heartbeat(r) => r.header = h,
        Req::Close(r) => r.header = h,
        Req::Create(r) => r.header = h,
        Req::Get(r) => r.header = h,
        Req::Set(r) => r.header = h,
        Req::Delete(r) => r.header = h,
        Req::Exists(r) => r.header = h,
        Req::Children(r) => r.header = h,
        Req::Multi(r) => r.header = h,
        Req::Sync(r) => r.header = h,
        Req::GetAcl(r) => r.header = h,
        Req::SetAcl(r) => r.header = h,
        Req::AddAuth(r) => r.header = h,
        Req::WhoAmI(r) => r.header = h,
        Req::AddWatch(_) | Req::RemoveWatches(_) | Req::SetWatches(_) => {}
    }
}
