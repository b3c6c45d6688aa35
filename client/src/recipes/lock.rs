//! A distributed lock: one holder at a time, waiters in line, each watching
//! only its predecessor. See the module docs of [`crate::recipes`] for the
//! fencing token.

use crate::client::Client;
use crate::error::Result;

use super::Ticket;

/// A lock named by a znode path.
pub struct Lock {
    client: Client,
    path: String,
}

/// A held lock. Release it with [`LockGuard::release`]; if the session
/// expires, the cluster releases it.
pub struct LockGuard {
    client: Client,
    ticket: Ticket,
    token: u64,
}

impl Lock {
    /// A lock at `path` (created on first use).
    pub fn new(client: &Client, path: &str) -> Lock {
        Lock {
            client: client.clone(),
            path: path.trim_end_matches('/').to_string(),
        }
    }

    /// Waits until the lock is ours.
    pub async fn acquire(&self) -> Result<LockGuard> {
        let (ticket, token) = Ticket::line_up(&self.client, &self.path, vec![]).await?;
        Ok(LockGuard {
            client: self.client.clone(),
            ticket,
            token,
        })
    }
}

impl Lock {
    /// Waits at most `timeout` for the lock; `None` if it did not come, in
    /// which case this client has left the line again (dropping an
    /// `acquire` future instead would leave its place behind, blocking
    /// everyone after it until the session ends).
    pub async fn acquire_within(&self, timeout: std::time::Duration) -> Result<Option<LockGuard>> {
        let ticket = Ticket::join(&self.client, &self.path, vec![]).await?;
        match tokio::time::timeout(timeout, ticket.wait_first(&self.client)).await {
            Ok(Ok(token)) => Ok(Some(LockGuard {
                client: self.client.clone(),
                ticket,
                token,
            })),
            Ok(Err(e)) => {
                let _ = ticket.leave(&self.client).await;
                Err(e)
            }
            Err(_) => {
                ticket.leave(&self.client).await?;
                Ok(None)
            }
        }
    }
}

impl LockGuard {
    /// The fencing token: larger than every earlier holder's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The holder's znode.
    pub fn node(&self) -> &str {
        &self.ticket.node
    }

    /// Releases the lock.
    pub async fn release(self) -> Result<()> {
        self.ticket.leave(&self.client).await
    }
}
