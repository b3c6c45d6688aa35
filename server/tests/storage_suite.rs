//! openraft's own storage test suite, run against our sled log store and
//! state machine: the contract openraft relies on for safety.

use ensemble_server::consensus::log_mark::LogMark;
use ensemble_server::consensus::{self, LogStore, StateMachineStore, TypeConfig};
use ensemble_server::state::NodeId;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = consensus::open_db(dir.path()).expect("open sled");
        let (mark, _) = LogMark::open(&dir.path().join("mark")).expect("mark");
        let log = LogStore::new(db.clone(), std::sync::Arc::new(mark)).expect("log trees");
        let (sm, _shared, _events) = StateMachineStore::open(&db, dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
