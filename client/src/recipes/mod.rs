//! Coordination recipes: [`lock::Lock`] and [`election::Election`].
//!
//! Both queue contenders as ephemeral sequential znodes under one parent;
//! each waiter watches only its predecessor, so a release wakes one client,
//! not all (no herd effect). The holder (or leader) gets a **fencing
//! token**: the zxid at which it learned it was first in line. Tokens only
//! grow from one holder to the next.
//!
//! # Why a token, and how to use it
//!
//! A session's expiry is a failure detector, not a mutex: a holder that
//! pauses (GC, a stopped VM) may still believe it holds the lock after the
//! cluster expired it and gave the lock to someone else. So pass the token
//! with every write to the resource the lock protects, and have the resource
//! remember the highest token it has accepted and refuse anything lower:
//!
//! ```text
//! guard = lock.acquire()                      // guard.token() == 120
//! storage.write(key, value, token = 120)      // storage: 120 >= 97, accept, remember 120
//! ... a stale holder with token 97 wakes up ...
//! storage.write(key, value, token = 97)       // storage: 97 < 120, refuse
//! ```
//!
//! If the resource is a znode, a multi with a check on the lock node does
//! the same job.

pub mod election;
pub mod lock;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{CreateMode, ErrorCode};

/// Creates `path` and its missing parents as persistent znodes.
pub async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match client.create(&prefix, vec![], CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NodeExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The sequence number of a ticket's name (`n-<16 hex digits>-<10 digits>`,
/// as [`Ticket::join`] makes it); `None` for any other name. Anyone may
/// create a znode under a lock directory, so a name is parsed, never sliced
/// at a byte offset (a non-ASCII name must not panic every waiter), and a
/// name that merely ends in digits takes no place in line.
fn sequence(name: &str) -> Option<u64> {
    let (tag, number) = name.strip_prefix("n-")?.split_once('-')?;
    let hex = tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = number.len() == 10 && number.bytes().all(|b| b.is_ascii_digit());
    if hex && digits {
        number.parse().ok()
    } else {
        None
    }
}

/// A place in a queue of contenders under `dir`.
pub(crate) struct Ticket {
    pub dir: String,
    /// Full path of our ephemeral sequential znode.
    pub node: String,
    /// The random tag in its name, shared by every create this join tried.
    tag: String,
}

impl Ticket {
    /// Joins the queue under `dir` with `data`. The name carries a random
    /// tag, so if the create's outcome is unknown (connection lost) the
    /// ticket is found again instead of being left behind in the line,
    /// where it would block everyone after it until the session ends
    /// (ZooKeeper's "protected" create).
    pub async fn join(client: &Client, dir: &str, data: Vec<u8>) -> Result<Ticket> {
        ensure_path(client, dir).await?;
        let tag = format!("{:016x}", rand::random::<u64>());
        let mut last = None;
        for _ in 0..5 {
            match client
                .create(
                    &format!("{dir}/n-{tag}-"),
                    data.clone(),
                    CreateMode::EphemeralSequential,
                )
                .await
            {
                Ok(node) => {
                    return Ok(Ticket {
                        dir: dir.to_string(),
                        node,
                        tag,
                    })
                }
                Err(e) if matches!(e.code(), ErrorCode::ConnectionLoss | ErrorCode::OperationTimeout) => {
                    // After a sync through the current leader, a create that
                    // will ever commit has committed: look for it.
                    let _ = client.sync(dir).await;
                    if let Ok((children, _)) = client.children(dir).await {
                        if let Some(mine) = children.iter().find(|c| c.contains(&tag)) {
                            return Ok(Ticket {
                                dir: dir.to_string(),
                                node: format!("{dir}/{mine}"),
                                tag,
                            });
                        }
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::ConnectionLoss("could not join the line".into())))
    }

    /// Joins the line and waits to be first; leaves it again on error.
    /// Returns the ticket and its fencing token.
    pub async fn line_up(client: &Client, dir: &str, data: Vec<u8>) -> Result<(Ticket, u64)> {
        let ticket = Ticket::join(client, dir, data).await?;
        match ticket.wait_first(client).await {
            Ok(token) => Ok((ticket, token)),
            Err(e) => {
                let _ = ticket.leave(client).await;
                Err(e)
            }
        }
    }

    fn name(&self) -> &str {
        self.node.rsplit('/').next().unwrap_or(&self.node)
    }

    /// Our other znodes in `children`: creates of this join whose replies
    /// were lost and that landed after we had looked for them (a write
    /// forwarded to the leader can still be on its way when the client has
    /// moved on). Each would hold a place in line until the session ends.
    fn strays<'a>(&'a self, children: &'a [String]) -> impl Iterator<Item = &'a String> {
        children
            .iter()
            .filter(move |c| c.contains(&self.tag) && c.as_str() != self.name())
    }

    /// Deletes our stray znodes; whether there were any.
    async fn remove_strays(&self, client: &Client, children: &[String]) -> Result<bool> {
        let mut any = false;
        for stray in self.strays(children) {
            any = true;
            match client.delete(&format!("{}/{stray}", self.dir), -1).await {
                Err(e) if e.code() != ErrorCode::NoNode => return Err(e),
                _ => {}
            }
        }
        Ok(any)
    }

    /// Waits until this ticket is first in line; returns the fencing token.
    pub async fn wait_first(&self, client: &Client) -> Result<u64> {
        loop {
            let (mut children, _) = client.children(&self.dir).await?;
            if self.remove_strays(client, &children).await? {
                continue;
            }
            children.retain(|c| sequence(c).is_some());
            children.sort_by_key(|c| sequence(c));
            let Some(pos) = children.iter().position(|c| c == self.name()) else {
                return Err(Error::Server {
                    code: ErrorCode::NoNode,
                    message: format!("NO_NODE: {} is gone: the session lost its place", self.node),
                    op_index: None,
                });
            };
            if pos == 0 {
                // Every reply so far came from state at or before this zxid,
                // which is past the previous holder's release.
                return Ok(client.last_zxid().0);
            }
            let predecessor = format!("{}/{}", self.dir, children[pos - 1]);
            let (stat, watch) = client.exists_watch(&predecessor).await?;
            if stat.is_some() {
                watch.wait().await?;
            }
        }
    }

    /// Leaves the queue (releases, resigns), with any stray of this join
    /// that has landed since.
    pub async fn leave(&self, client: &Client) -> Result<()> {
        match client.delete(&self.node, -1).await {
            Err(e) if e.code() != ErrorCode::NoNode => return Err(e),
            _ => {}
        }
        // Best effort: the place itself is already given up.
        if let Ok((children, _)) = client.children(&self.dir).await {
            let _ = self.remove_strays(client, &children).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strays_are_other_znodes_with_our_tag() {
        let ticket = super::Ticket {
            dir: "/lock".into(),
            node: "/lock/n-00ab-0000000002".into(),
            tag: "00ab".into(),
        };
        let children: Vec<String> = [
            "n-00ab-0000000001",
            "n-77ff-0000000003",
            "n-00ab-0000000002",
            "n-00ab-0000000004",
        ]
        .map(String::from)
        .to_vec();
        let strays: Vec<&String> = ticket.strays(&children).collect();
        assert_eq!(strays, ["n-00ab-0000000001", "n-00ab-0000000004"]);
    }

    #[test]
    fn sequence_is_the_tickets_ten_digits() {
        assert_eq!(super::sequence("n-00000000000000ab-0000000042"), Some(42));
        assert_eq!(super::sequence("short"), None);
    }

    #[test]
    fn names_that_are_not_tickets_have_no_sequence() {
        for name in [
            "é",
            "日本",
            "日本語のロック",
            "n-日本-0000000000",
            "n-00000000000000ab-000000004é",
            "n-0000000000000éab-0000000042",
            "0000000000",
            "x-0000000042",
            "n-00000000000000ab-00000000042",
        ] {
            assert_eq!(super::sequence(name), None, "{name}");
        }
    }
}
