//! Conversions between the wire types (`ensemble.v1`) and the state machine's
//! types, with the checks a request must pass before it is proposed.

use ensemble_proto::path;
use ensemble_proto::v1 as pb;

use crate::state::acl::AclEntry;
use crate::state::{ErrorCode, Op, OpOutput, Refusal, Stat};

/// The wire form of a stat.
pub fn stat(s: &Stat) -> pb::Stat {
    pb::Stat {
        czxid: s.czxid.0,
        mzxid: s.mzxid.0,
        pzxid: s.pzxid.0,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner.0,
        data_length: s.data_length,
        num_children: s.num_children,
    }
}

/// Checks a path for an op (sequential creates may end in `/`).
pub fn check_path(p: &str, sequential: bool) -> Result<(), Refusal> {
    path::validate(p, sequential).map_err(Refusal::bad_arguments)
}

fn check_data(p: &str, data: &[u8], max: usize) -> Result<(), Refusal> {
    if data.len() > max {
        return Err(Refusal::bad_arguments(format!(
            "data for {p} is {} bytes; the limit is {max}",
            data.len()
        )));
    }
    Ok(())
}

/// (ephemeral, sequential) of a create mode number; unknown numbers are refused.
pub fn create_mode(mode: i32) -> Result<(bool, bool), Refusal> {
    match pb::CreateMode::try_from(mode) {
        Ok(pb::CreateMode::Persistent) => Ok((false, false)),
        Ok(pb::CreateMode::Ephemeral) => Ok((true, false)),
        Ok(pb::CreateMode::PersistentSequential) => Ok((false, true)),
        Ok(pb::CreateMode::EphemeralSequential) => Ok((true, true)),
        Err(_) => Err(Refusal::bad_arguments(format!("create mode {mode} is unknown"))),
    }
}

/// A checked create op.
pub fn create_op(
    p: String,
    data: Vec<u8>,
    mode: i32,
    acl: Vec<pb::Acl>,
    max_data: usize,
) -> Result<Op, Refusal> {
    let (ephemeral, sequential) = create_mode(mode)?;
    check_path(&p, sequential)?;
    check_data(&p, &data, max_data)?;
    Ok(Op::Create {
        acl: acl_in(&p, acl, true)?,
        path: p,
        data,
        ephemeral,
        sequential,
    })
}

/// Checks a requested ACL: every entry valid, not too many; INVALID_ACL
/// names the path and the fault. Empty is the open ACL for a create, and
/// invalid for set_acl (as in ZooKeeper).
pub fn acl_in(p: &str, acl: Vec<pb::Acl>, empty_ok: bool) -> Result<Vec<AclEntry>, Refusal> {
    let invalid = |why: String| Refusal::new(ErrorCode::InvalidAcl, format!("{p}: {why}"));
    if acl.is_empty() && !empty_ok {
        return Err(invalid("an ACL needs at least one entry".into()));
    }
    if acl.len() > ensemble_proto::acl::MAX_ENTRIES {
        return Err(invalid(format!(
            "the ACL has {} entries; the limit is {}",
            acl.len(),
            ensemble_proto::acl::MAX_ENTRIES
        )));
    }
    acl.into_iter()
        .map(|a| {
            ensemble_proto::acl::validate(&a.scheme, &a.id, a.perms).map_err(invalid)?;
            Ok(AclEntry {
                perms: a.perms,
                scheme: a.scheme,
                id: a.id,
            })
        })
        .collect()
}

/// A stored ACL as clients see it: the open one is `world:anyone:cdrwa`.
pub fn acl_out(acl: &[AclEntry]) -> Vec<pb::Acl> {
    let open = [AclEntry::open()];
    let acl = if acl.is_empty() { &open[..] } else { acl };
    acl.iter()
        .map(|e| pb::Acl {
            perms: e.perms,
            scheme: e.scheme.clone(),
            id: e.id.clone(),
        })
        .collect()
}

/// A checked set_acl.
pub fn set_acl_op(p: String, acl: Vec<pb::Acl>, aversion: i32) -> Result<Op, Refusal> {
    check_path(&p, false)?;
    Ok(Op::SetAcl {
        acl: acl_in(&p, acl, false)?,
        path: p,
        version: aversion,
    })
}

/// A checked set op.
pub fn set_op(p: String, data: Vec<u8>, version: i32, max_data: usize) -> Result<Op, Refusal> {
    check_path(&p, false)?;
    check_data(&p, &data, max_data)?;
    Ok(Op::Set {
        path: p,
        data,
        version,
    })
}

/// A checked delete op. A version below -1 is not refused: as in
/// ZooKeeper, it is an exact version that no znode has (`BAD_VERSION`).
pub fn delete_op(p: String, version: i32) -> Result<Op, Refusal> {
    check_path(&p, false)?;
    Ok(Op::Delete { path: p, version })
}

/// A checked check op.
pub fn check_op(p: String, version: i32) -> Result<Op, Refusal> {
    check_path(&p, false)?;
    Ok(Op::Check { path: p, version })
}

/// A checked op of a multi; errors name the op's index.
pub fn multi_op(i: usize, op: pb::Op, max_data: usize) -> Result<Op, Refusal> {
    let checked = match op.op {
        Some(pb::op::Op::Check(c)) => check_op(c.path, c.expected_version),
        Some(pb::op::Op::Create(c)) => create_op(c.path, c.data, c.mode, c.acl, max_data),
        Some(pb::op::Op::Set(s)) => set_op(s.path, s.data, s.expected_version, max_data),
        Some(pb::op::Op::Delete(d)) => delete_op(d.path, d.expected_version),
        None => Err(Refusal::bad_arguments("op is empty")),
    };
    checked.map_err(|e| e.at_op(i))
}

/// The wire form of one op's result.
pub fn op_result(out: OpOutput) -> pb::OpResult {
    use pb::op_result::Result as R;
    let result = match out {
        OpOutput::Check => R::Check(pb::CheckResult {}),
        OpOutput::Create { path, stat: s } => R::Create(pb::CreateResult {
            path,
            stat: Some(stat(&s)),
        }),
        OpOutput::Set { stat: s } => R::Set(pb::SetResult { stat: Some(stat(&s)) }),
        OpOutput::Delete => R::Delete(pb::DeleteResult {}),
        // A multi carries no set_acl; were it to, its stat is what it returns.
        OpOutput::SetAcl { stat: s } => R::Set(pb::SetResult { stat: Some(stat(&s)) }),
    };
    pb::OpResult { result: Some(result) }
}
