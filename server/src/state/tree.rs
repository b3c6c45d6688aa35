//! The znode tree: where a create, set or delete is applied.
//!
//! Every function here is deterministic: the zxid and the time come from the
//! log entry, never from a clock. An op checks everything before it changes
//! anything, so a single op needs no undo; a multi records an [`Undo`] log and
//! rolls back when a later op fails.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use ensemble_proto::{path, SessionId, Zxid};

use super::acl::AclEntry;
use super::command::OpOutput;
use super::error::{ErrorCode, Refusal};

/// A znode's metadata, as ZooKeeper's Stat.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Stat {
    /// The zxid that created the znode.
    pub czxid: Zxid,
    /// The zxid that last changed its data (or created it).
    pub mzxid: Zxid,
    /// The zxid that last changed its children (or created it).
    pub pzxid: Zxid,
    /// Creation time: the proposing leader's clock, ms since the epoch.
    pub ctime: i64,
    /// Time of the last data change, likewise.
    pub mtime: i64,
    /// Data changes.
    pub version: i32,
    /// Children created and deleted.
    pub cversion: i32,
    /// ACL changes.
    pub aversion: i32,
    /// The session that owns it if ephemeral, `0x0` if persistent.
    pub ephemeral_owner: SessionId,
    /// Filled in by [`Tree::stat_of`].
    pub data_length: i32,
    /// Filled in by [`Tree::stat_of`].
    pub num_children: i32,
}

/// One znode.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Znode {
    /// Its data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Its metadata (derived fields not kept up to date: see [`Tree::stat_of`]).
    pub stat: Stat,
    /// Child names, sorted.
    pub children: BTreeSet<String>,
    /// Children ever created here: the next sequential suffix. Deletes never lower it.
    pub child_seq: u64,
    /// Who may do what; empty is open to all (`world:anyone:cdrwa`), the
    /// default, at no cost per znode.
    pub acl: Vec<AclEntry>,
}

/// What a multi changed, so a failing op can put everything back. Each step
/// records only what its op changed (a parent's counters, a replaced data
/// buffer moved out, a removed znode), so a multi costs O(ops) in time and
/// memory however many children its parents have.
#[derive(Default)]
pub struct Undo {
    steps: Vec<UndoStep>,
}

/// A parent's fields that creating or deleting a child changes.
struct ParentCounters {
    cversion: i32,
    pzxid: Zxid,
    child_seq: u64,
}

enum UndoStep {
    /// A create: remove the znode and the parent's new child.
    Created {
        path: String,
        parent: String,
        parent_was: ParentCounters,
    },
    /// A set: put back the old data and stat.
    Set { path: String, data: Vec<u8>, stat: Stat },
    /// A set_acl: put back the old ACL and aversion.
    AclSet {
        path: String,
        acl: Vec<AclEntry>,
        aversion: i32,
    },
    /// A delete: put the znode back under its parent.
    Deleted {
        path: String,
        znode: Znode,
        parent: String,
        parent_was: ParentCounters,
    },
}

/// All znodes by full path. The root `/` always exists.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    znodes: BTreeMap<String, Znode>,
}

impl Default for Tree {
    fn default() -> Self {
        let mut znodes = BTreeMap::new();
        znodes.insert("/".to_string(), Znode::default());
        Tree { znodes }
    }
}

fn check_version(path: &str, expected: i32, actual: i32) -> Result<(), Refusal> {
    if expected != -1 && expected != actual {
        return Err(Refusal::new(
            ErrorCode::BadVersion,
            format!("{path} is at version {actual}, not {expected}"),
        ));
    }
    Ok(())
}

fn no_node(path: &str) -> Refusal {
    Refusal::new(ErrorCode::NoNode, format!("{path} does not exist"))
}

/// The parent a create puts its znode under, and the name (or, if
/// sequential, the prefix) it gives it. A sequential path ending in '/'
/// names the parent itself.
pub fn create_parent(path: &str, sequential: bool) -> (&str, &str) {
    if sequential && path.ends_with('/') {
        (if path == "/" { "/" } else { &path[..path.len() - 1] }, "")
    } else {
        path::split(path)
    }
}

impl Tree {
    /// A tree of these znodes (a snapshot's, as read).
    pub(super) fn from_znodes(znodes: BTreeMap<String, Znode>) -> Tree {
        Tree { znodes }
    }

    /// The znode at a path.
    pub fn get(&self, path: &str) -> Option<&Znode> {
        self.znodes.get(path)
    }

    /// How many znodes there are, the root included.
    pub fn len(&self) -> usize {
        self.znodes.len()
    }

    /// Never true: the root always exists.
    pub fn is_empty(&self) -> bool {
        self.znodes.is_empty()
    }

    /// All znodes in path order (for digests and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Znode)> {
        self.znodes.iter()
    }

    /// The stat of a znode, with the derived fields filled in.
    pub fn stat_of(znode: &Znode) -> Stat {
        let mut stat = znode.stat.clone();
        stat.data_length = znode.data.len() as i32;
        stat.num_children = znode.children.len() as i32;
        stat
    }

    /// Fails unless the znode exists at the version.
    pub fn check(&self, path: &str, version: i32) -> Result<OpOutput, Refusal> {
        let znode = self.znodes.get(path).ok_or_else(|| no_node(path))?;
        check_version(path, version, znode.stat.version)?;
        Ok(OpOutput::Check)
    }

    /// Creates a znode. Error precedence as ZooKeeper's: NO_NODE (parent),
    /// NODE_EXISTS, NO_CHILDREN_FOR_EPHEMERALS.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        zxid: Zxid,
        time_ms: i64,
        path: &str,
        data: Vec<u8>,
        ephemeral_owner: SessionId,
        sequential: bool,
        acl: Vec<AclEntry>,
        undo: Option<&mut Undo>,
    ) -> Result<OpOutput, Refusal> {
        if path == "/" && !sequential {
            return Err(Refusal::new(ErrorCode::NodeExists, "/ already exists"));
        }
        // A sequential path ending in '/' names the parent itself.
        let (parent_path, prefix) = create_parent(path, sequential);
        let parent = self.znodes.get(parent_path).ok_or_else(|| {
            Refusal::new(
                ErrorCode::NoNode,
                format!("parent {parent_path} of {path} does not exist"),
            )
        })?;
        let name = if sequential {
            format!("{prefix}{:010}", parent.child_seq)
        } else {
            prefix.to_string()
        };
        let full = path::join(parent_path, &name);
        if self.znodes.contains_key(&full) {
            return Err(Refusal::new(
                ErrorCode::NodeExists,
                format!("{full} already exists"),
            ));
        }
        if parent.stat.ephemeral_owner != SessionId(0) {
            return Err(Refusal::new(
                ErrorCode::NoChildrenForEphemerals,
                format!("{parent_path} is ephemeral and can not have children ({full})"),
            ));
        }
        let parent_path = parent_path.to_string();
        if let Some(parent) = self.znodes.get_mut(&parent_path) {
            if let Some(undo) = undo {
                undo.steps.push(UndoStep::Created {
                    path: full.clone(),
                    parent: parent_path.clone(),
                    parent_was: ParentCounters::of(parent),
                });
            }
            parent.child_seq += 1;
            parent.stat.cversion += 1;
            parent.stat.pzxid = zxid;
            parent.children.insert(name);
        }
        let znode = Znode {
            stat: Stat {
                czxid: zxid,
                mzxid: zxid,
                pzxid: zxid,
                ctime: time_ms,
                mtime: time_ms,
                ephemeral_owner,
                ..Stat::default()
            },
            data,
            children: BTreeSet::new(),
            child_seq: 0,
            acl,
        };
        let stat = Self::stat_of(&znode);
        self.znodes.insert(full.clone(), znode);
        Ok(OpOutput::Create { path: full, stat })
    }

    /// Replaces a znode's data. Precedence: NO_NODE, BAD_VERSION.
    pub fn set(
        &mut self,
        zxid: Zxid,
        time_ms: i64,
        path: &str,
        data: Vec<u8>,
        version: i32,
        undo: Option<&mut Undo>,
    ) -> Result<OpOutput, Refusal> {
        let znode = self.znodes.get_mut(path).ok_or_else(|| no_node(path))?;
        check_version(path, version, znode.stat.version)?;
        let old_data = std::mem::replace(&mut znode.data, data);
        if let Some(undo) = undo {
            undo.steps.push(UndoStep::Set {
                path: path.to_string(),
                data: old_data,
                stat: znode.stat.clone(),
            });
        }
        znode.stat.version += 1;
        znode.stat.mzxid = zxid;
        znode.stat.mtime = time_ms;
        Ok(OpOutput::Set {
            stat: Self::stat_of(znode),
        })
    }

    /// Replaces a znode's ACL if its aversion matches. Precedence: NO_NODE,
    /// BAD_VERSION. Neither the data version nor mzxid change, as in
    /// ZooKeeper.
    pub fn set_acl(
        &mut self,
        path: &str,
        acl: Vec<AclEntry>,
        aversion: i32,
        undo: Option<&mut Undo>,
    ) -> Result<OpOutput, Refusal> {
        let znode = self.znodes.get_mut(path).ok_or_else(|| no_node(path))?;
        if aversion != -1 && aversion != znode.stat.aversion {
            return Err(Refusal::new(
                ErrorCode::BadVersion,
                format!(
                    "the ACL of {path} is at aversion {}, not {aversion}",
                    znode.stat.aversion
                ),
            ));
        }
        let old = std::mem::replace(&mut znode.acl, acl);
        if let Some(undo) = undo {
            undo.steps.push(UndoStep::AclSet {
                path: path.to_string(),
                acl: old,
                aversion: znode.stat.aversion,
            });
        }
        znode.stat.aversion += 1;
        Ok(OpOutput::SetAcl {
            stat: Self::stat_of(znode),
        })
    }

    /// Removes a znode. Precedence: NO_NODE, BAD_VERSION, NOT_EMPTY.
    /// Returns the removed znode's ephemeral owner (`0x0` if persistent).
    pub fn delete(
        &mut self,
        zxid: Zxid,
        path: &str,
        version: i32,
        undo: Option<&mut Undo>,
    ) -> Result<SessionId, Refusal> {
        if path == "/" {
            return Err(Refusal::bad_arguments("the root / can not be deleted"));
        }
        let znode = self.znodes.get(path).ok_or_else(|| no_node(path))?;
        check_version(path, version, znode.stat.version)?;
        if !znode.children.is_empty() {
            return Err(Refusal::new(
                ErrorCode::NotEmpty,
                format!("{path} has {} children", znode.children.len()),
            ));
        }
        let (parent_path, name) = path::split(path);
        let Some(znode) = self.znodes.remove(path) else {
            return Err(no_node(path));
        };
        let owner = znode.stat.ephemeral_owner;
        if let Some(parent) = self.znodes.get_mut(parent_path) {
            if let Some(undo) = undo {
                undo.steps.push(UndoStep::Deleted {
                    path: path.to_string(),
                    znode,
                    parent: parent_path.to_string(),
                    parent_was: ParentCounters::of(parent),
                });
            }
            parent.children.remove(name);
            parent.stat.cversion += 1;
            parent.stat.pzxid = zxid;
        }
        Ok(owner)
    }

    /// Puts back everything a failed multi changed, newest change first.
    pub fn rollback(&mut self, undo: Undo) {
        for step in undo.steps.into_iter().rev() {
            match step {
                UndoStep::Created {
                    path,
                    parent,
                    parent_was,
                } => {
                    self.znodes.remove(&path);
                    if let Some(p) = self.znodes.get_mut(&parent) {
                        p.children.remove(path::split(&path).1);
                        parent_was.restore(p);
                    }
                }
                UndoStep::Set { path, data, stat } => {
                    if let Some(n) = self.znodes.get_mut(&path) {
                        n.data = data;
                        n.stat = stat;
                    }
                }
                UndoStep::AclSet { path, acl, aversion } => {
                    if let Some(n) = self.znodes.get_mut(&path) {
                        n.acl = acl;
                        n.stat.aversion = aversion;
                    }
                }
                UndoStep::Deleted {
                    path,
                    znode,
                    parent,
                    parent_was,
                } => {
                    if let Some(p) = self.znodes.get_mut(&parent) {
                        p.children.insert(path::split(&path).1.to_string());
                        parent_was.restore(p);
                    }
                    self.znodes.insert(path, znode);
                }
            }
        }
    }
}

impl ParentCounters {
    fn of(parent: &Znode) -> Self {
        ParentCounters {
            cversion: parent.stat.cversion,
            pzxid: parent.stat.pzxid,
            child_seq: parent.child_seq,
        }
    }

    fn restore(self, parent: &mut Znode) {
        parent.stat.cversion = self.cversion;
        parent.stat.pzxid = self.pzxid;
        parent.child_seq = self.child_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: SessionId = SessionId(7);

    /// `/a` (version 0, with child `/a/b`) and `/e`, ephemeral.
    fn fixture() -> Tree {
        let mut t = Tree::default();
        t.create(
            Zxid(1),
            10,
            "/a",
            b"a".to_vec(),
            SessionId(0),
            false,
            vec![],
            None,
        )
        .unwrap();
        t.create(Zxid(2), 20, "/a/b", vec![], SessionId(0), false, vec![], None)
            .unwrap();
        t.create(Zxid(3), 30, "/e", vec![], OWNER, false, vec![], None)
            .unwrap();
        t
    }

    enum TestOp {
        Create(&'static str, bool),
        Set(&'static str, i32),
        Delete(&'static str, i32),
        Check(&'static str, i32),
    }

    fn run(t: &mut Tree, op: &TestOp) -> Result<(), ErrorCode> {
        let z = Zxid(9);
        let r = match op {
            TestOp::Create(p, seq) => t
                .create(z, 90, p, vec![], SessionId(0), *seq, vec![], None)
                .map(|_| ()),
            TestOp::Set(p, v) => t.set(z, 90, p, vec![1], *v, None).map(|_| ()),
            TestOp::Delete(p, v) => t.delete(z, p, *v, None).map(|_| ()),
            TestOp::Check(p, v) => t.check(p, *v).map(|_| ()),
        };
        r.map_err(|e| e.code)
    }

    /// ZooKeeper's precedence when several things are wrong at once.
    #[test]
    fn errors_come_in_zookeepers_order() {
        use ErrorCode::*;
        use TestOp::*;
        let cases: &[(&str, TestOp, Result<(), ErrorCode>)] = &[
            (
                "create under a missing parent",
                Create("/x/y", false),
                Err(NoNode),
            ),
            ("create the root", Create("/", false), Err(NodeExists)),
            ("create a taken path", Create("/a", false), Err(NodeExists)),
            (
                "create a taken child path",
                Create("/a/b", false),
                Err(NodeExists),
            ),
            (
                "create under an ephemeral",
                Create("/e/c", false),
                Err(NoChildrenForEphemerals),
            ),
            (
                "sequential under an ephemeral",
                Create("/e/s", true),
                Err(NoChildrenForEphemerals),
            ),
            ("set a missing znode, bad version too", Set("/x", 5), Err(NoNode)),
            ("set with a wrong version", Set("/a", 5), Err(BadVersion)),
            (
                "set with version -2: exact, never matches",
                Set("/a", -2),
                Err(BadVersion),
            ),
            ("set with any version", Set("/a", -1), Ok(())),
            ("delete a missing znode", Delete("/x", 3), Err(NoNode)),
            (
                "delete with children and a wrong version: version first",
                Delete("/a", 3),
                Err(BadVersion),
            ),
            ("delete with children", Delete("/a", 0), Err(NotEmpty)),
            ("delete the root", Delete("/", -1), Err(BadArguments)),
            ("delete with version -2", Delete("/a/b", -2), Err(BadVersion)),
            ("check a missing znode", Check("/x", 0), Err(NoNode)),
            ("check a wrong version", Check("/a", 1), Err(BadVersion)),
            ("check any version", Check("/a", -1), Ok(())),
        ];
        for (what, op, want) in cases {
            let mut t = fixture();
            let before = t.clone();
            let got = run(&mut t, op);
            assert_eq!(&got, want, "{what}");
            if got.is_err() {
                assert_eq!(t, before, "{what}: a refused op changes nothing");
            }
        }
    }

    #[test]
    fn a_child_changes_the_parents_children_stats_not_its_data_stats() {
        let mut t = fixture();
        let parent = t.get("/a").unwrap().stat.clone();
        t.create(Zxid(10), 100, "/a/c", vec![], SessionId(0), false, vec![], None)
            .unwrap();
        let after = Tree::stat_of(t.get("/a").unwrap());
        assert_eq!(
            (after.pzxid, after.cversion, after.num_children),
            (Zxid(10), parent.cversion + 1, 2)
        );
        assert_eq!(
            (after.mzxid, after.version, after.mtime),
            (parent.mzxid, parent.version, parent.mtime)
        );
        t.delete(Zxid(11), "/a/c", -1, None).unwrap();
        let after = Tree::stat_of(t.get("/a").unwrap());
        assert_eq!(
            (after.pzxid, after.cversion, after.num_children),
            (Zxid(11), parent.cversion + 2, 1)
        );
    }

    #[test]
    fn sequential_names_count_every_child_ever_created() {
        let mut t = Tree::default();
        t.create(Zxid(1), 0, "/q", vec![], SessionId(0), false, vec![], None)
            .unwrap();
        let name = |out: OpOutput| match out {
            OpOutput::Create { path, .. } => path,
            other => panic!("{other:?}"),
        };
        let s0 = name(
            t.create(Zxid(2), 0, "/q/s", vec![], SessionId(0), true, vec![], None)
                .unwrap(),
        );
        let s1 = name(
            t.create(Zxid(3), 0, "/q/s", vec![], SessionId(0), true, vec![], None)
                .unwrap(),
        );
        t.create(Zxid(4), 0, "/q/plain", vec![], SessionId(0), false, vec![], None)
            .unwrap();
        t.delete(Zxid(5), &s0, -1, None).unwrap();
        let s3 = name(
            t.create(Zxid(6), 0, "/q/", vec![], SessionId(0), true, vec![], None)
                .unwrap(),
        );
        let dot = name(
            t.create(Zxid(7), 0, "/q/.", vec![], SessionId(0), true, vec![], None)
                .unwrap(),
        );
        assert_eq!(
            [s0.as_str(), &s1, &s3, &dot],
            [
                "/q/s0000000000",
                "/q/s0000000001",
                "/q/0000000003",
                "/q/.0000000004"
            ]
        );
        assert_eq!(t.get("/q").unwrap().stat.cversion, 6, "creates and deletes");
    }

    #[test]
    fn a_create_stamps_every_zxid_and_time_and_a_set_bumps_the_version() {
        let mut t = Tree::default();
        let OpOutput::Create { stat, .. } = t
            .create(Zxid(5), 55, "/n", b"x".to_vec(), OWNER, false, vec![], None)
            .unwrap()
        else {
            panic!("create")
        };
        assert_eq!((stat.czxid, stat.mzxid, stat.pzxid), (Zxid(5), Zxid(5), Zxid(5)));
        assert_eq!(
            (stat.ctime, stat.mtime, stat.version, stat.data_length),
            (55, 55, 0, 1)
        );
        assert_eq!(stat.ephemeral_owner, OWNER);
        let OpOutput::Set { stat } = t.set(Zxid(6), 66, "/n", b"yz".to_vec(), 0, None).unwrap() else {
            panic!("set")
        };
        assert_eq!(
            (stat.czxid, stat.mzxid, stat.ctime, stat.mtime),
            (Zxid(5), Zxid(6), 55, 66)
        );
        assert_eq!((stat.version, stat.data_length), (1, 2));
    }
}
