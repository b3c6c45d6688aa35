//! Multis: ops applied together in one zxid, or not at all. [`Op`] and
//! [`OpResult`] are the client's own types; [`Multi`] builds the list
//! (`client.multi().create(..).check(..).run().await`). Paths are taken
//! under the base path and checked before anything is sent.

use ensemble_proto::v1 as pb;

use crate::client::Client;
use crate::convert;
use crate::error::Result;
use crate::types::{CreateMode, Stat};

/// One operation of a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Fails the multi unless the znode is at `version` (-1: any).
    Check {
        /// The znode checked.
        path: String,
        /// The version it must be at.
        version: i32,
    },
    /// Creates a znode.
    Create {
        /// Its path (a prefix, if sequential).
        path: String,
        /// Its data.
        data: Vec<u8>,
        /// Ephemeral and/or sequential.
        mode: CreateMode,
    },
    /// Replaces a znode's data if it is at `version` (-1: any).
    Set {
        /// The znode written.
        path: String,
        /// Its new data.
        data: Vec<u8>,
        /// The version it must be at.
        version: i32,
    },
    /// Deletes a childless znode if it is at `version` (-1: any).
    Delete {
        /// The znode deleted.
        path: String,
        /// The version it must be at.
        version: i32,
    },
}

/// What one op of a successful multi did, in the order of the ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The check passed.
    Check,
    /// The znode was created.
    Create {
        /// Its path (with the suffix, if sequential), under the base path.
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// The data was replaced.
    Set {
        /// The znode's new stat.
        stat: Stat,
    },
    /// The znode was deleted.
    Delete,
}

/// A multi being built: add ops, then [`Multi::run`] it.
#[must_use = "a multi does nothing until it is run"]
pub struct Multi<'a> {
    client: &'a Client,
    ops: Vec<Op>,
}

impl<'a> Multi<'a> {
    /// Adds a create.
    pub fn create(self, path: impl Into<String>, data: impl Into<Vec<u8>>, mode: CreateMode) -> Self {
        self.op(Op::Create {
            path: path.into(),
            data: data.into(),
            mode,
        })
    }

    /// Adds a set of the data, if the znode is at `version` (-1: any).
    pub fn set(self, path: impl Into<String>, data: impl Into<Vec<u8>>, version: i32) -> Self {
        self.op(Op::Set {
            path: path.into(),
            data: data.into(),
            version,
        })
    }

    /// Adds a check that the znode is at `version` (-1: exists).
    pub fn check(self, path: impl Into<String>, version: i32) -> Self {
        self.op(Op::Check {
            path: path.into(),
            version,
        })
    }

    /// Adds a delete, if the znode is at `version` (-1: any).
    pub fn delete(self, path: impl Into<String>, version: i32) -> Self {
        self.op(Op::Delete {
            path: path.into(),
            version,
        })
    }

    /// Adds one op.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds ops, for multis built in a loop.
    pub fn ops(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.ops.extend(ops);
        self
    }

    /// Runs the ops atomically: all take effect in one zxid, or none does.
    /// A refusal's `op_index` names the first failing op.
    pub async fn run(self) -> Result<Vec<OpResult>> {
        let client = self.client;
        let ops = self
            .ops
            .into_iter()
            .map(|op| to_proto(client, op))
            .collect::<Result<Vec<_>>>()?;
        let r = client.call(pb::MultiRequest { header: None, ops }).await?;
        Ok(r.results.into_iter().map(|r| from_proto(client, r)).collect())
    }
}

impl Client {
    /// Starts a multi: ops applied together in one zxid, or not at all.
    pub fn multi(&self) -> Multi<'_> {
        Multi {
            client: self,
            ops: Vec::new(),
        }
    }
}

/// The op as sent, its path under the base path.
fn to_proto(client: &Client, op: Op) -> Result<pb::Op> {
    use pb::op::Op as O;
    let op = match op {
        Op::Check { path, version } => O::Check(pb::CheckOp {
            path: client.full_path(&path, false)?,
            expected_version: version,
        }),
        Op::Create { path, data, mode } => O::Create(pb::CreateOp {
            path: client.full_path(&path, mode.is_sequential())?,
            data,
            mode: pb::CreateMode::from(mode) as i32,
        }),
        Op::Set { path, data, version } => O::Set(pb::SetOp {
            path: client.full_path(&path, false)?,
            data,
            expected_version: version,
        }),
        Op::Delete { path, version } => O::Delete(pb::DeleteOp {
            path: client.full_path(&path, false)?,
            expected_version: version,
        }),
    };
    Ok(pb::Op { op: Some(op) })
}

/// An op's result as the application sees it. A result the server left
/// empty reads as a passed check, the op that carries no data.
fn from_proto(client: &Client, r: pb::OpResult) -> OpResult {
    use pb::op_result::Result as R;
    match r.result {
        Some(R::Create(c)) => OpResult::Create {
            path: client.strip(c.path),
            stat: convert::stat(c.stat),
        },
        Some(R::Set(s)) => OpResult::Set {
            stat: convert::stat(s.stat),
        },
        Some(R::Delete(_)) => OpResult::Delete,
        Some(R::Check(_)) | None => OpResult::Check,
    }
}
