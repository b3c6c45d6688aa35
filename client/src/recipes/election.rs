//! Leader election: candidates line up; the first is the leader. Each
//! candidate watches only its predecessor, and the leader gets a fencing
//! token (see [`crate::recipes`]).

use crate::client::Client;
use crate::error::Result;
use crate::types::ErrorCode;
use crate::watch::OneShotWatch;

use super::{sequence, Ticket};

/// An election named by a znode path.
pub struct Election {
    client: Client,
    path: String,
}

/// This candidate's leadership. Resign with [`Leadership::resign`]; if the
/// session expires, the cluster ends it.
pub struct Leadership {
    client: Client,
    ticket: Ticket,
    token: u64,
}

impl Election {
    /// An election at `path` (created on first use).
    pub fn new(client: &Client, path: &str) -> Election {
        Election {
            client: client.clone(),
            path: path.trim_end_matches('/').to_string(),
        }
    }

    /// Stands as a candidate with `value` (what observers see as the
    /// leader's identity) and waits until elected.
    pub async fn campaign(&self, value: Vec<u8>) -> Result<Leadership> {
        let (ticket, token) = Ticket::line_up(&self.client, &self.path, value).await?;
        Ok(Leadership {
            client: self.client.clone(),
            ticket,
            token,
        })
    }

    /// The current leader's value, if there is a leader, and a watch that
    /// fires when the line of candidates changes.
    pub async fn observe(&self) -> Result<(Option<Vec<u8>>, OneShotWatch)> {
        loop {
            super::ensure_path(&self.client, &self.path).await?;
            let (mut children, _, watch) = self.client.children_watch(&self.path).await?;
            children.retain(|c| sequence(c).is_some());
            children.sort_by_key(|c| sequence(c));
            let Some(first) = children.first() else {
                return Ok((None, watch));
            };
            match self.client.get(&format!("{}/{first}", self.path)).await {
                Ok((data, _)) => return Ok((Some(data), watch)),
                // The leader left between the two reads: look again.
                Err(e) if e.code() == ErrorCode::NoNode => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Leadership {
    /// The fencing token: larger than every earlier leader's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The leader's znode.
    pub fn node(&self) -> &str {
        &self.ticket.node
    }

    /// Steps down.
    pub async fn resign(self) -> Result<()> {
        self.ticket.leave(&self.client).await
    }
}
