//! The znode operations: create, read, write, delete, list, sync and close.
//! Each takes paths under the base path (`crate::chroot`) and speaks the
//! client's own types; the proto messages stay inside.

use ensemble_proto::v1 as pb;

use super::Client;
use crate::chroot::Chroot;
use crate::convert;
use crate::error::{Error, Result};
use crate::types::{CreateMode, Stat};

impl Client {
    /// The client's base path.
    pub(crate) fn chroot(&self) -> &Chroot {
        &self.shared.chroot
    }

    /// The full path of an application's path, checked under the base path.
    pub(super) fn full_path(&self, path: &str, sequential: bool) -> Result<String> {
        self.shared.chroot.full(path, sequential)
    }

    /// Creates a znode; returns its path (with the suffix, if sequential).
    pub async fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode) -> Result<String> {
        self.create_with_stat(path, data, mode).await.map(|(p, _)| p)
    }

    /// Creates a znode; returns its path and stat.
    pub async fn create_with_stat(
        &self,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> Result<(String, Stat)> {
        let r = self
            .call(pb::CreateRequest {
                header: None,
                path: self.full_path(path, mode.is_sequential())?,
                data,
                mode: pb::CreateMode::from(mode) as i32,
                acl: vec![],
            })
            .await?;
        Ok((self.chroot().strip(r.path), convert::stat(r.stat)))
    }

    /// A znode's data and stat.
    pub async fn get(&self, path: &str) -> Result<(Vec<u8>, Stat)> {
        self.get_inner(path, false).await
    }

    pub(super) async fn get_inner(&self, path: &str, watch: bool) -> Result<(Vec<u8>, Stat)> {
        let r = self
            .call(pb::GetRequest {
                header: None,
                path: self.full_path(path, false)?,
                watch,
            })
            .await?;
        Ok((r.data, convert::stat(r.stat)))
    }

    /// Replaces a znode's data if its version is `version` (-1: any).
    pub async fn set(&self, path: &str, data: Vec<u8>, version: i32) -> Result<Stat> {
        let r = self
            .call(pb::SetRequest {
                header: None,
                path: self.full_path(path, false)?,
                data,
                expected_version: version,
            })
            .await?;
        Ok(convert::stat(r.stat))
    }

    /// Deletes a childless znode if its version is `version` (-1: any).
    pub async fn delete(&self, path: &str, version: i32) -> Result<()> {
        self.call(pb::DeleteRequest {
            header: None,
            path: self.full_path(path, false)?,
            expected_version: version,
        })
        .await
        .map(drop)
    }

    /// A znode's stat, or None if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        self.exists_inner(path, false).await
    }

    pub(super) async fn exists_inner(&self, path: &str, watch: bool) -> Result<Option<Stat>> {
        let r = self
            .call(pb::ExistsRequest {
                header: None,
                path: self.full_path(path, false)?,
                watch,
            })
            .await?;
        Ok(r.stat.map(Stat::from))
    }

    /// A znode's child names, sorted, and its stat.
    pub async fn children(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        self.children_inner(path, false).await
    }

    pub(super) async fn children_inner(&self, path: &str, watch: bool) -> Result<(Vec<String>, Stat)> {
        let r = self
            .call(pb::ChildrenRequest {
                header: None,
                path: self.full_path(path, false)?,
                watch,
            })
            .await?;
        Ok((r.children, convert::stat(r.stat)))
    }

    /// Waits until the client's node has caught up with the leader, so the
    /// next read sees every write committed before the sync.
    pub async fn sync(&self, path: &str) -> Result<()> {
        self.call(pb::SyncRequest {
            header: None,
            path: self.full_path(path, false)?,
        })
        .await
        .map(drop)
    }

    /// Ends the session: its ephemerals are deleted at once, on every node.
    /// The state becomes CLOSED.
    pub async fn close(&self) -> Result<()> {
        if self.state().is_terminal() {
            return Ok(());
        }
        match self.call(pb::CloseSessionRequest { header: None }).await {
            Ok(_) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
