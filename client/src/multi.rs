//! Multis: ops applied together in one zxid, or not at all. [`Op`] and
//! [`OpResult`] are the client's own types; [`Multi`] builds the list
//! (`client.multi().create(..).check(..).run().await`). Paths are taken
//! under the base path and checked before anything is sent.

use ensemble_proto::v1 as pb;

use crate::acl::Acl;
use crate::chroot::Chroot;
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
        /// Its ACL; empty: `world:anyone:cdrwa`.
        acl: Vec<Acl>,
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
        self.create_with_acl(path, data, mode, &[])
    }

    /// Adds a create with an ACL (empty: `world:anyone:cdrwa`).
    pub fn create_with_acl(
        self,
        path: impl Into<String>,
        data: impl Into<Vec<u8>>,
        mode: CreateMode,
        acl: &[Acl],
    ) -> Self {
        self.op(Op::Create {
            path: path.into(),
            data: data.into(),
            mode,
            acl: acl.to_vec(),
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
        let chroot = self.client.chroot();
        let ops = self
            .ops
            .into_iter()
            .map(|op| to_proto(chroot, op))
            .collect::<Result<Vec<_>>>()?;
        let r = self.client.call(pb::MultiRequest { header: None, ops }).await?;
        Ok(r.results.into_iter().map(|r| from_proto(chroot, r)).collect())
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
fn to_proto(chroot: &Chroot, op: Op) -> Result<pb::Op> {
    use pb::op::Op as O;
    let op = match op {
        Op::Check { path, version } => O::Check(pb::CheckOp {
            path: chroot.full(&path, false)?,
            expected_version: version,
        }),
        Op::Create {
            path,
            data,
            mode,
            acl,
        } => O::Create(pb::CreateOp {
            path: chroot.full(&path, mode.is_sequential())?,
            data,
            mode: pb::CreateMode::from(mode) as i32,
            acl: acl.iter().map(pb::Acl::from).collect(),
        }),
        Op::Set { path, data, version } => O::Set(pb::SetOp {
            path: chroot.full(&path, false)?,
            data,
            expected_version: version,
        }),
        Op::Delete { path, version } => O::Delete(pb::DeleteOp {
            path: chroot.full(&path, false)?,
            expected_version: version,
        }),
    };
    Ok(pb::Op { op: Some(op) })
}

/// An op's result as the application sees it. A result the server left
/// empty reads as a passed check, the op that carries no data.
fn from_proto(chroot: &Chroot, r: pb::OpResult) -> OpResult {
    use pb::op_result::Result as R;
    match r.result {
        Some(R::Create(c)) => OpResult::Create {
            path: chroot.strip(c.path),
            stat: convert::stat(c.stat),
        },
        Some(R::Set(s)) => OpResult::Set {
            stat: convert::stat(s.stat),
        },
        Some(R::Delete(_)) => OpResult::Delete,
        Some(R::Check(_)) | None => OpResult::Check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn ops_are_taken_under_the_base_path_and_checked_first() {
        let app = Chroot::new("/app").unwrap();
        let op = to_proto(
            &app,
            Op::Create {
                path: "/q-".into(),
                data: b"d".to_vec(),
                mode: CreateMode::EphemeralSequential,
                acl: vec![Acl::open()],
            },
        )
        .unwrap();
        let expected = pb::op::Op::Create(pb::CreateOp {
            path: "/app/q-".into(),
            data: b"d".to_vec(),
            mode: pb::CreateMode::EphemeralSequential as i32,
            acl: vec![pb::Acl::from(&Acl::open())],
        });
        assert_eq!(op.op, Some(expected));
        for bad in [
            Op::Check {
                path: "x".into(),
                version: 0,
            },
            Op::Set {
                path: "/a/".into(),
                data: vec![],
                version: -1,
            },
            Op::Delete {
                path: "/../x".into(),
                version: -1,
            },
        ] {
            assert!(
                matches!(to_proto(&app, bad.clone()), Err(Error::BadArguments(_))),
                "{bad:?}"
            );
        }
        let result = pb::OpResult {
            result: Some(pb::op_result::Result::Create(pb::CreateResult {
                path: "/app/q-0000000003".into(),
                stat: None,
            })),
        };
        assert_eq!(
            from_proto(&app, result),
            OpResult::Create {
                path: "/q-0000000003".into(),
                stat: Stat::default()
            }
        );
    }
}
