//! Access control on a session: creating with an ACL, reading and
//! replacing a znode's ACL, adding an identity (ZooKeeper's addAuth) and
//! asking who the session is.

use ensemble_proto::v1 as pb;

use super::Client;
use crate::acl::{Acl, Identity};
use crate::convert;
use crate::error::Result;
use crate::types::{CreateMode, Stat};

impl Client {
    /// Creates a znode with an ACL (empty: `world:anyone:cdrwa`); returns
    /// its path. `auth` entries stand for this session's identities.
    pub async fn create_with_acl(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
        acl: &[Acl],
    ) -> Result<String> {
        let r = self
            .call(pb::CreateRequest {
                header: None,
                path: self.full_path(path, mode.is_sequential())?,
                data,
                mode: pb::CreateMode::from(mode) as i32,
                acl: acl.iter().map(pb::Acl::from).collect(),
            })
            .await?;
        Ok(self.chroot().strip(r.path))
    }

    /// A znode's ACL and stat (needs READ or ADMIN on it).
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let r = self
            .call(pb::GetAclRequest {
                header: None,
                path: self.full_path(path, false)?,
            })
            .await?;
        Ok((r.acl.into_iter().map(Acl::from).collect(), convert::stat(r.stat)))
    }

    /// Replaces a znode's ACL if its ACL version is `aversion` (-1: any);
    /// needs ADMIN on it. Returns the new stat.
    pub async fn set_acl(&self, path: &str, acl: &[Acl], aversion: i32) -> Result<Stat> {
        let r = self
            .call(pb::SetAclRequest {
                header: None,
                path: self.full_path(path, false)?,
                acl: acl.iter().map(pb::Acl::from).collect(),
                expected_aversion: aversion,
            })
            .await?;
        Ok(convert::stat(r.stat))
    }

    /// Adds an identity to the session (`digest`, `user:password`). The
    /// session keeps it until it ends, on every node. Rejected credentials
    /// fail the call with `AUTH_FAILED`; the session stays as it was.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        self.call(pb::AddAuthRequest {
            header: None,
            auth: Some(pb::AuthInfo {
                scheme: scheme.to_string(),
                auth: auth.to_vec(),
            }),
        })
        .await
        .map(drop)
    }

    /// The session's identities (empty for an anonymous session).
    pub async fn who_am_i(&self) -> Result<Vec<Identity>> {
        let r = self.call(pb::WhoAmIRequest { header: None }).await?;
        Ok(r.identities.into_iter().map(Identity::from).collect())
    }
}
