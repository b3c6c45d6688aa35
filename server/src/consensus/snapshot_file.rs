//! The current snapshot, as one file beside sled.
//!
//! A snapshot is the whole state, hundreds of MiB for a big tree. Kept in
//! sled it shared sled's single flush pipeline with the Raft log: every log
//! append then waited for the snapshot's bytes to reach the disk, and
//! replication timed out while a big snapshot was being saved. A file of its
//! own is written to a temporary name, fsynced, and renamed over the old one
//! (then the directory is fsynced), so a crash leaves the old snapshot or
//! the new one, never a torn one.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ENSSNAP1";

/// Where the current snapshot lives.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    path: PathBuf,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl SnapshotFile {
    /// The snapshot file of the data directory `dir`.
    pub fn new(dir: &Path) -> Self {
        SnapshotFile {
            path: dir.join("snapshot"),
        }
    }

    /// The saved snapshot's metadata and data, if one was saved.
    pub fn load(&self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut header = [0u8; 16];
        file.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Err(invalid("not an Ensemble snapshot file"));
        }
        let meta_len = u64::from_be_bytes(header[8..16].try_into().map_err(|_| invalid("header"))?);
        let meta_len = usize::try_from(meta_len).map_err(|_| invalid("metadata length"))?;
        if meta_len > 64 * 1024 * 1024 {
            return Err(invalid("metadata length"));
        }
        let mut meta = vec![0u8; meta_len];
        file.read_exact(&mut meta)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(Some((meta, data)))
    }

    /// Replaces the saved snapshot, durably. The data goes to disk a few
    /// MiB at a time: a journaling filesystem makes the Raft log's next
    /// fsync wait for every dirty block, and hundreds of MiB of them would
    /// stall replication for seconds.
    pub fn save(&self, meta: &[u8], data: &[u8]) -> std::io::Result<()> {
        const STEP: usize = 4 << 20;
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&(meta.len() as u64).to_be_bytes())?;
            file.write_all(meta)?;
            for chunk in data.chunks(STEP) {
                file.write_all(chunk)?;
                file.sync_data()?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_replaces_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::new(dir.path());
        assert!(f.load().unwrap().is_none());
        f.save(b"m1", b"data one").unwrap();
        f.save(b"meta2", b"data two").unwrap();
        assert_eq!(f.load().unwrap(), Some((b"meta2".to_vec(), b"data two".to_vec())));
        std::fs::write(dir.path().join("snapshot"), b"garbage-garbage-garbage").unwrap();
        assert!(f.load().is_err());
    }
}
