//! The watch handles an application holds: a one-shot watch resolves once,
//! a persistent watch yields events until dropped. The events themselves
//! are [`WatchEvent`](crate::WatchEvent)s, routed here by the session task
//! through `watch_registry.rs`.

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::types::WatchEvent;

/// A one-shot watch: resolves with the first event on its znode.
pub struct OneShotWatch(pub(crate) oneshot::Receiver<WatchEvent>);

impl OneShotWatch {
    /// Waits for the event. `Err(Closed)` if the client ended first.
    pub async fn wait(self) -> Result<WatchEvent> {
        self.0.await.map_err(|_| Error::Closed)
    }
}

/// A persistent watch: every matching event, in zxid order, until dropped.
pub struct PersistentWatch(pub(crate) mpsc::UnboundedReceiver<WatchEvent>);

impl PersistentWatch {
    /// The next event; `None` once the client has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.0.recv().await
    }

    /// The next event if one has arrived.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.0.try_recv().ok()
    }
}
