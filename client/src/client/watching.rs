//! The watch operations: reads that leave a one-shot watch, persistent
//! watches, and removing them. The local registration comes before the
//! request, so no event can arrive before someone waits for it.

use ensemble_proto::v1 as pb;

use super::Client;
use crate::error::Result;
use crate::types::{Stat, WatchMode};
use crate::watch::{OneShotWatch, PersistentWatch};
use crate::watch_registry::OneShot;

impl Client {
    /// A znode's data and stat, and a one-shot watch on it.
    pub async fn get_watch(&self, path: &str) -> Result<(Vec<u8>, Stat, OneShotWatch)> {
        let full = self.full_path(path, false)?;
        let rx = self.shared.watches().add_one_shot(&full, OneShot::Data);
        let (data, stat) = self.get_inner(path, true).await?;
        Ok((data, stat, OneShotWatch(rx)))
    }

    /// A znode's stat (None if missing), and a one-shot watch that fires when
    /// it is created, deleted or changed.
    pub async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneShotWatch)> {
        let full = self.full_path(path, false)?;
        let rx = self.shared.watches().add_one_shot(&full, OneShot::Data);
        let stat = self.exists_inner(path, true).await?;
        if stat.is_none() {
            self.shared.watches().retag(&full, OneShot::Data, OneShot::Exist);
        }
        Ok((stat, OneShotWatch(rx)))
    }

    /// Children and stat, and a one-shot watch on the children.
    pub async fn children_watch(&self, path: &str) -> Result<(Vec<String>, Stat, OneShotWatch)> {
        let full = self.full_path(path, false)?;
        let rx = self.shared.watches().add_one_shot(&full, OneShot::Child);
        let (c, s) = self.children_inner(path, true).await?;
        Ok((c, s, OneShotWatch(rx)))
    }

    /// Watches a znode (or, `recursive`, its whole subtree) until the
    /// returned watch is dropped. Events missed while the client moves
    /// between nodes are replayed, or a `RESYNC` event says to re-read.
    pub async fn add_watch(&self, path: &str, recursive: bool) -> Result<PersistentWatch> {
        let full = self.full_path(path, false)?;
        let rx = self.shared.watches().add_persistent(&full, recursive);
        let mode = if recursive {
            WatchMode::PersistentRecursive
        } else {
            WatchMode::Persistent
        };
        self.call(pb::AddWatchRequest {
            path: full,
            mode: pb::WatchMode::from(mode) as i32,
        })
        .await?;
        Ok(PersistentWatch(rx))
    }

    /// Removes this client's watches of a mode on a path (every mode if
    /// `None`); whether the node had any.
    pub async fn remove_watches(&self, path: &str, mode: Option<WatchMode>) -> Result<bool> {
        let full = self.full_path(path, false)?;
        {
            let mut w = self.shared.watches();
            if matches!(mode, None | Some(WatchMode::Persistent)) {
                w.remove_persistent(&full, false);
            }
            if matches!(mode, None | Some(WatchMode::PersistentRecursive)) {
                w.remove_persistent(&full, true);
            }
        }
        let r = self
            .call(pb::RemoveWatchesRequest {
                path: full,
                mode: pb::WatchMode::from(mode.unwrap_or(WatchMode::Data)) as i32,
                any: mode.is_none(),
            })
            .await?;
        Ok(r.removed)
    }
}
