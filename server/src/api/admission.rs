//! Admission: whether this member may serve a request for a session (where
//! a call's session is proven). The caller must prove the session with its
//! secret, the member must be in touch with a majority and have applied
//! the client's last-seen zxid, and the session must be open.

use std::time::Duration;

use ensemble_proto::v1 as pb;
use ensemble_proto::{SessionId, Zxid};
use tracing::{field, Span};

use super::refusal::not_proven;
use super::service::ClientService;
use crate::state::{ErrorCode, Refusal};

/// How long a request waits for this member to reach the client's last-seen zxid.
const CATCH_UP: Duration = Duration::from_secs(5);

impl ClientService {
    /// Admits a request for the session its header names. A proven call
    /// counts as a touch even when the member then refuses: the client is
    /// alive, and the leader should know once this member reaches it again.
    /// An unproven call touches nothing, and its refusal does not say
    /// whether a session with that id exists.
    pub(super) async fn admit(&self, header: Option<&pb::RequestHeader>) -> Result<SessionId, Refusal> {
        let h = header.ok_or_else(|| Refusal::bad_arguments("request header (session id) is missing"))?;
        if h.session_id == 0 {
            return Err(Refusal::bad_arguments("session id 0 is not a session"));
        }
        let id = SessionId(h.session_id);
        Span::current().record("session", field::display(id));
        // Any proven contact counts at once, before any waiting or refusing.
        let proven = self.proven(id, &h.secret);
        if proven {
            self.touches.touch(id);
        }
        self.ensure_in_quorum()?;
        let wanted = Zxid(h.last_zxid);
        if self.consensus.replica.applied() >= wanted {
            // Nothing to wait for: the check above stands (the usual case,
            // and every heartbeat's).
            return if proven { Ok(id) } else { Err(not_proven(id)) };
        }
        self.consensus
            .replica
            .wait_applied(wanted, CATCH_UP)
            .await
            .map_err(|e| Refusal::new(ErrorCode::OperationTimeout, e.to_string()))?;
        // The session may have closed or expired while this member caught up.
        if !self.proven(id, &h.secret) {
            return Err(not_proven(id));
        }
        self.touches.touch(id);
        Ok(id)
    }

    /// Whether the session is open here and `secret` is its secret.
    fn proven(&self, id: SessionId, secret: &[u8]) -> bool {
        self.consensus
            .replica
            .read()
            .sessions
            .get(id)
            .is_some_and(|s| s.secret.matches(secret))
    }

    /// Refuses when this member is cut off, so its clients move at once.
    pub(super) fn ensure_in_quorum(&self) -> Result<(), Refusal> {
        if self.consensus.in_quorum() {
            return Ok(());
        }
        Err(Refusal::connection_loss(format!(
            "member {} is not in touch with a majority of the cluster; try another member",
            self.consensus.id
        ))
        .not_applied())
    }
}
