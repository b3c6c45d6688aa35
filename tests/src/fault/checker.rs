//! Checks a recorded history against what Ensemble promises.
//!
//! - **Registers** (conditional sets and reads of one znode): every write
//!   carries the version it produced, so versions order the writes. Writes
//!   and synced reads are linearizable iff versions never go backwards in
//!   real time (an operation that ends before another begins has a version no
//!   larger; a write's strictly larger), every acknowledged write produced
//!   `expected + 1`, no two writes produced one version, and every read saw
//!   the data of the write that produced its version (or of an unknown one).
//!   For registers whose writes carry unique versions this is the verdict a
//!   Wing–Gong search gives, in n log n time. Plain reads are ZooKeeper's
//!   sequentially consistent reads: checked per client, never older than
//!   what that client already saw or wrote.
//! - **Final state**: every acknowledged write is present: the final version
//!   is at least the newest acknowledged one, with matching data.
//! - **Sequential creates**: names unique, and increasing in real time.
//! - **Locks**: tokens strictly increase with acquisition time, and no two
//!   holdings overlap.
//! - **Ephemerals** are checked live by the workload (see `workload.rs`).

use std::collections::{BTreeMap, HashMap};

use super::history::{Op, Record, Status};

/// The final state of one register, read after the run: (version, data).
pub type FinalState = BTreeMap<String, (i32, String)>;

/// A violation, in words.
pub type Violation = String;

/// Every violation found; empty means the history passed.
pub fn check(history: &[Record], finals: &FinalState) -> Vec<Violation> {
    let mut v = Vec::new();
    check_registers(history, finals, &mut v);
    check_sequential(history, &mut v);
    check_locks(history, &mut v);
    v
}

fn check_registers(history: &[Record], finals: &FinalState, v: &mut Vec<Violation>) {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in history {
        match &r.op {
            Op::Write { key, .. } | Op::Read { key, .. } => by_key.entry(key).or_default().push(r),
            _ => {}
        }
    }
    for (key, ops) in by_key {
        // Which write produced each version (acknowledged ones).
        let mut produced: HashMap<i32, &Record> = HashMap::new();
        let mut unknown_data: Vec<&str> = Vec::new();
        for r in &ops {
            if let Op::Write { data, expected, .. } = &r.op {
                match (r.status, r.version) {
                    (Status::Ok, Some(ver)) => {
                        if *expected != -1 && ver != expected + 1 {
                            v.push(format!(
                                "{key}: write {data} expected version {expected} but produced {ver}"
                            ));
                        }
                        if let Some(other) = produced.insert(ver, r) {
                            v.push(format!(
                                "{key}: version {ver} produced twice ({data} and {:?})",
                                other.op
                            ));
                        }
                    }
                    (Status::Unknown, _) => unknown_data.push(data),
                    _ => {}
                }
            }
        }
        // Reads see the data of the write behind their version.
        for r in &ops {
            if let (Op::Read { .. }, Status::Ok, Some(ver), Some(data)) =
                (&r.op, r.status, r.version, &r.seen)
            {
                let ok = match produced.get(&ver) {
                    Some(w) => matches!(&w.op, Op::Write { data: d, .. } if d == data),
                    None => ver == 0 || unknown_data.contains(&data.as_str()),
                };
                if !ok {
                    v.push(format!(
                        "{key}: read saw version {ver} with data {data:?}, which no write produced"
                    ));
                }
            }
        }
        // Per client, versions never go backwards (single system image).
        let mut per_client: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
        for r in ops
            .iter()
            .filter(|r| r.status == Status::Ok && r.version.is_some())
        {
            per_client.entry(r.client).or_default().push(r);
        }
        for (client, mut mine) in per_client {
            mine.sort_by_key(|r| r.invoke_ms);
            for w in mine.windows(2) {
                if w[1].version < w[0].version {
                    v.push(format!(
                        "{key}: client {client} saw version {:?} at {} ms after version {:?}",
                        w[1].version, w[1].invoke_ms, w[0].version
                    ));
                }
            }
        }
        // Writes and synced reads: versions never go backwards in real time.
        let mut done: Vec<&Record> = ops
            .iter()
            .copied()
            .filter(|r| r.status == Status::Ok && r.version.is_some())
            .filter(|r| !matches!(r.op, Op::Read { synced: false, .. }))
            .collect();
        done.sort_by_key(|r| r.complete_ms);
        let mut max_before: Vec<(u64, i32)> = Vec::new(); // (complete_ms, running max version)
        let mut running = i32::MIN;
        for r in &done {
            running = running.max(r.version.unwrap_or(0));
            max_before.push((r.complete_ms, running));
        }
        for r in &done {
            let idx = max_before.partition_point(|(c, _)| *c < r.invoke_ms);
            if idx == 0 {
                continue;
            }
            let floor = max_before[idx - 1].1;
            let ver = r.version.unwrap_or(0);
            let is_write = matches!(r.op, Op::Write { .. });
            if ver < floor || (is_write && ver == floor) {
                v.push(format!(
                    "{key}: {} at {}..{} ms has version {ver}, but version {floor} was already complete",
                    if is_write { "write" } else { "read" },
                    r.invoke_ms,
                    r.complete_ms
                ));
            }
        }
        // Nothing acknowledged is lost.
        let newest = produced.keys().max().copied();
        match (finals.get(key), newest) {
            (Some((fv, fdata)), Some(nv)) => {
                if *fv < nv {
                    v.push(format!(
                        "{key}: acknowledged version {nv} lost; the final version is {fv}"
                    ));
                } else if let Some(w) = produced.get(fv) {
                    if !matches!(&w.op, Op::Write { data, .. } if data == fdata) {
                        v.push(format!(
                            "{key}: final data {fdata:?} differs from the write that made version {fv}"
                        ));
                    }
                }
            }
            (None, Some(nv)) => v.push(format!("{key}: acknowledged version {nv} but the znode is gone")),
            _ => {}
        }
    }
}

fn seq_of(path: &str) -> Option<u64> {
    path.len().checked_sub(10).and_then(|i| path[i..].parse().ok())
}

fn check_sequential(history: &[Record], v: &mut Vec<Violation>) {
    let mut by_parent: BTreeMap<&str, Vec<(&Record, u64)>> = BTreeMap::new();
    for r in history {
        if let (Op::SeqCreate { parent }, Status::Ok, Some(p)) = (&r.op, r.status, &r.created) {
            match seq_of(p) {
                Some(s) => by_parent.entry(parent).or_default().push((r, s)),
                None => v.push(format!("{parent}: created {p} has no 10-digit suffix")),
            }
        }
    }
    for (parent, mut creates) in by_parent {
        creates.sort_by_key(|(_, s)| *s);
        for w in creates.windows(2) {
            if w[0].1 == w[1].1 {
                v.push(format!("{parent}: suffix {} handed out twice", w[0].1));
            }
        }
        for (a, sa) in &creates {
            for (b, sb) in &creates {
                if a.complete_ms < b.invoke_ms && sa >= sb {
                    v.push(format!(
                        "{parent}: {sa} finished before {sb} began but is not smaller"
                    ));
                }
            }
        }
    }
}

fn check_locks(history: &[Record], v: &mut Vec<Violation>) {
    let mut by_name: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in history {
        if let (Op::Lock { name }, Status::Ok) = (&r.op, r.status) {
            by_name.entry(name).or_default().push(r);
        }
    }
    for (name, mut holds) in by_name {
        holds.sort_by_key(|r| r.invoke_ms);
        for w in holds.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.invoke_ms < a.complete_ms {
                v.push(format!(
                    "lock {name}: client {} acquired at {} ms while client {} held it until {} ms",
                    b.client, b.invoke_ms, a.client, a.complete_ms
                ));
            }
            if b.token <= a.token {
                v.push(format!(
                    "lock {name}: token {:?} after {:?} does not grow",
                    b.token, a.token
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::load;
    use super::*;

    fn finals(key: &str, version: i32, data: &str) -> FinalState {
        [(key.to_string(), (version, data.to_string()))]
            .into_iter()
            .collect()
    }

    const GOOD: &str = r#"
{"client":1,"op":"write","key":"/r","data":"a","expected":0,"invoke_ms":0,"complete_ms":10,"status":"Ok","version":1}
{"client":2,"op":"read","key":"/r","invoke_ms":11,"complete_ms":12,"status":"Ok","version":1,"seen":"a"}
{"client":2,"op":"write","key":"/r","data":"b","expected":1,"invoke_ms":13,"complete_ms":20,"status":"Unknown"}
{"client":1,"op":"read","key":"/r","invoke_ms":21,"complete_ms":22,"status":"Ok","version":2,"seen":"b"}
{"client":1,"op":"seq_create","parent":"/s","invoke_ms":0,"complete_ms":5,"status":"Ok","created":"/s/n0000000000"}
{"client":2,"op":"seq_create","parent":"/s","invoke_ms":6,"complete_ms":9,"status":"Ok","created":"/s/n0000000001"}
{"client":1,"op":"lock","name":"l","invoke_ms":0,"complete_ms":5,"status":"Ok","token":7}
{"client":2,"op":"lock","name":"l","invoke_ms":6,"complete_ms":9,"status":"Ok","token":9}
"#;

    #[test]
    fn a_correct_history_passes() {
        let h = load(GOOD).unwrap();
        assert_eq!(check(&h, &finals("/r", 2, "b")), Vec::<String>::new());
    }

    /// A server that acknowledged a write before it committed, then lost it
    /// in a crash: the final state is older than an acknowledged version.
    #[test]
    fn an_acknowledged_write_that_vanished_is_caught() {
        let h = load(GOOD).unwrap();
        let v = check(&h, &finals("/r", 0, "init"));
        assert!(
            v.iter().any(|m| m.contains("acknowledged version 1 lost")),
            "{v:?}"
        );
    }

    /// A follower serving stale state (say, one that skipped applying an
    /// entry): a read after a completed write sees the older version.
    #[test]
    fn a_stale_read_is_caught() {
        let bad = r#"
{"client":1,"op":"write","key":"/r","data":"a","expected":0,"invoke_ms":0,"complete_ms":10,"status":"Ok","version":1}
{"client":2,"op":"read","key":"/r","synced":true,"invoke_ms":11,"complete_ms":12,"status":"Ok","version":0,"seen":"init"}
{"client":1,"op":"read","key":"/r","invoke_ms":13,"complete_ms":14,"status":"Ok","version":0,"seen":"init"}
"#;
        let v = check(&load(bad).unwrap(), &finals("/r", 1, "a"));
        assert!(v.iter().any(|m| m.contains("already complete")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("client 1 saw version")), "{v:?}");
    }

    #[test]
    fn duplicate_versions_phantom_reads_seq_and_lock_overlaps_are_caught() {
        let bad = r#"
{"client":1,"op":"write","key":"/r","data":"a","expected":-1,"invoke_ms":0,"complete_ms":10,"status":"Ok","version":1}
{"client":2,"op":"write","key":"/r","data":"b","expected":-1,"invoke_ms":0,"complete_ms":10,"status":"Ok","version":1}
{"client":3,"op":"read","key":"/r","invoke_ms":20,"complete_ms":21,"status":"Ok","version":3,"seen":"zzz"}
{"client":1,"op":"seq_create","parent":"/s","invoke_ms":0,"complete_ms":5,"status":"Ok","created":"/s/n0000000003"}
{"client":2,"op":"seq_create","parent":"/s","invoke_ms":6,"complete_ms":9,"status":"Ok","created":"/s/n0000000003"}
{"client":1,"op":"lock","name":"l","invoke_ms":0,"complete_ms":8,"status":"Ok","token":7}
{"client":2,"op":"lock","name":"l","invoke_ms":6,"complete_ms":9,"status":"Ok","token":5}
"#;
        let v = check(&load(bad).unwrap(), &finals("/r", 3, "zzz")).join("\n");
        for needle in [
            "produced twice",
            "no write produced",
            "handed out twice",
            "held it until",
            "does not grow",
        ] {
            assert!(v.contains(needle), "missing {needle:?} in:\n{v}");
        }
    }
}
