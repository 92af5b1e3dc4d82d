//! The phone's local store: sled in the app's folder, fsynced on every save.
//!
//! Trees:
//! - `chunks`: `doc(16) ‖ kind(1) ‖ seq(8, BE) ‖ part(2, BE)` → up to [`PART_BYTES`] of a chunk.
//!   Kind 0 is a whole-document snapshot, kind 1 a run of changes (`save_after`). Loading
//!   concatenates a document's chunks in key order, which automerge's `load` accepts; compaction
//!   writes a snapshot and removes everything older in the same sled batch.
//! - `sync`: `doc` → the engine's persisted sync state for it.
//! - `rejected`: `doc ‖ change hash(32)` → the server's reason (JSON).
//! - `meta`: identity and settings of this installation (peer id, storage id, actor, token).
//!
//! Values are kept to 4 KiB parts: sled 0.34.7 writes a tree page larger than a quarter segment
//! to a separate blob file without fsync (the server's store explains it at length), so small
//! values keep everything in the one log file that [`LocalStore::sync`] fsyncs after sled's
//! `flush` (whose `sync_file_range` does not flush the disk cache).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use automerge::{Automerge, ChangeHash};
use crdt_core::DocumentId;

use crate::Error;

/// Largest value written to sled in one entry.
pub const PART_BYTES: usize = 4 * 1024;

/// Runs of changes after which a document is compacted into one snapshot.
const COMPACT_AFTER: usize = 64;

const SNAPSHOT: u8 = 0;
const CHANGES: u8 = 1;

/// A sled database in the app's folder.
pub struct LocalStore {
    db: sled::Db,
    chunks: sled::Tree,
    sync_states: sled::Tree,
    rejected: sled::Tree,
    meta: sled::Tree,
    dir: PathBuf,
    log_file: Mutex<File>,
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Store(e.to_string())
    }
}

/// Opens sled in `dir`. sled's background threads hold the database, and its file lock, for a
/// moment after the store is dropped (sled issue #1289), so an app that closed its client and
/// opened it again at once got "could not acquire lock": a lock still held is waited for, up to
/// two seconds.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new().path(dir).open() {
            // sled reports it as an `Other` error whose text carries the `WouldBlock`.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn chunk_prefix(doc: &DocumentId, kind: u8, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + 1 + 8 + 2);
    k.extend_from_slice(doc.as_bytes());
    k.push(kind);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl LocalStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let db = open_db(dir)?;
        let log_file = File::open(dir.join("db"))?;
        File::open(dir)?.sync_all()?;
        Ok(Self {
            chunks: db.open_tree("chunks")?,
            sync_states: db.open_tree("sync")?,
            rejected: db.open_tree("rejected")?,
            meta: db.open_tree("meta")?,
            db,
            dir: dir.to_path_buf(),
            log_file: Mutex::new(log_file),
        })
    }

    /// Makes every write so far durable: sled's flush, then an fsync of its log (and of any blob
    /// file, first).
    pub fn sync(&self) -> Result<(), Error> {
        self.db.flush()?;
        if let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) {
            for entry in entries.flatten() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        self.log_file
            .lock()
            .map_err(|_| Error::Store("store lock poisoned".into()))?
            .sync_all()?;
        Ok(())
    }

    fn insert_parts(batch: &mut sled::Batch, prefix: &[u8], bytes: &[u8]) {
        for (i, part) in bytes.chunks(PART_BYTES).enumerate() {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&(i as u16).to_be_bytes());
            batch.insert(k, part);
        }
    }

    /// The ids of every stored document.
    pub fn documents(&self) -> Result<Vec<DocumentId>, Error> {
        let mut out = Vec::new();
        let mut next: Option<Vec<u8>> = Some(Vec::new());
        while let Some(from) = next.take() {
            let Some(entry) = self.chunks.range(from..).next() else {
                break;
            };
            let (k, _) = entry?;
            let mut id = [0u8; 16];
            id.copy_from_slice(&k[..16]);
            out.push(DocumentId::from_bytes(id));
            let mut after = k[..16].to_vec();
            after.push(0xff);
            next = Some(after);
        }
        Ok(out)
    }

    /// Loads a document (empty if none is stored) and how many change runs follow its snapshot.
    pub fn load(&self, doc: &DocumentId) -> Result<(Automerge, usize), Error> {
        let mut bytes = Vec::new();
        let mut runs = 0;
        for entry in self.chunks.scan_prefix(doc.as_bytes()) {
            let (k, v) = entry?;
            if k[16] == CHANGES && k[25..27] == [0, 0] {
                runs += 1;
            }
            bytes.extend_from_slice(&v);
        }
        if bytes.is_empty() {
            return Ok((Automerge::new(), 0));
        }
        let doc = Automerge::load(&bytes)
            .map_err(|e| Error::Store(format!("document {doc} does not load: {e}")))?;
        Ok((doc, runs))
    }

    fn next_seq(&self, doc: &DocumentId) -> Result<u64, Error> {
        Ok(match self.chunks.scan_prefix(doc.as_bytes()).next_back() {
            Some(entry) => {
                let (k, _) = entry?;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&k[17..25]);
                u64::from_be_bytes(seq) + 1
            }
            None => 0,
        })
    }

    /// Appends changes (`save_after` bytes) to a document; returns the runs stored after its
    /// snapshot. Not durable until [`Self::sync`].
    pub fn append(&self, doc: &DocumentId, bytes: &[u8]) -> Result<(), Error> {
        let seq = self.next_seq(doc)?;
        let mut batch = sled::Batch::default();
        Self::insert_parts(&mut batch, &chunk_prefix(doc, CHANGES, seq), bytes);
        self.chunks.apply_batch(batch)?;
        Ok(())
    }

    /// Replaces everything stored for a document by one snapshot, atomically.
    pub fn replace(&self, doc: &DocumentId, snapshot: &[u8]) -> Result<(), Error> {
        let seq = self.next_seq(doc)?;
        let mut batch = sled::Batch::default();
        for k in self.chunks.scan_prefix(doc.as_bytes()).keys() {
            batch.remove(k?);
        }
        Self::insert_parts(&mut batch, &chunk_prefix(doc, SNAPSHOT, seq), snapshot);
        self.chunks.apply_batch(batch)?;
        Ok(())
    }

    /// Whether a document with this many change runs should be compacted.
    pub fn wants_compaction(runs: usize) -> bool {
        runs >= COMPACT_AFTER
    }

    pub fn put_sync_state(&self, doc: &DocumentId, state: &[u8]) -> Result<(), Error> {
        self.sync_states.insert(doc.as_bytes(), state)?;
        Ok(())
    }

    pub fn sync_state(&self, doc: &DocumentId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.sync_states.get(doc.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn put_rejection(
        &self,
        doc: &DocumentId,
        change: &ChangeHash,
        record: &[u8],
    ) -> Result<(), Error> {
        let mut k = doc.as_bytes().to_vec();
        k.extend_from_slice(&change.0);
        self.rejected.insert(k, record)?;
        Ok(())
    }

    pub fn remove_rejection(&self, doc: &DocumentId, change: &ChangeHash) -> Result<(), Error> {
        let mut k = doc.as_bytes().to_vec();
        k.extend_from_slice(&change.0);
        self.rejected.remove(k)?;
        Ok(())
    }

    pub fn rejections(&self, doc: &DocumentId) -> Result<Vec<(ChangeHash, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        for entry in self.rejected.scan_prefix(doc.as_bytes()) {
            let (k, v) = entry?;
            if let Ok(h) = ChangeHash::try_from(&k[16..]) {
                out.push((h, v.to_vec()));
            }
        }
        Ok(out)
    }

    pub fn clear_rejections(&self, doc: &DocumentId) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for k in self.rejected.scan_prefix(doc.as_bytes()).keys() {
            batch.remove(k?);
        }
        self.rejected.apply_batch(batch)?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.meta.insert(key, value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::ROOT;

    #[test]
    fn a_store_closed_and_opened_again_at_once_opens_every_time() {
        // sled's flusher thread used to hold the file lock past the drop (sled issue #1289): a
        // Kotlin test that closed its client and opened it again failed with WouldBlock in CI.
        let dir = tempfile::tempdir().unwrap();
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        for i in 0..50i64 {
            let store = LocalStore::open(dir.path())
                .unwrap_or_else(|e| panic!("open {i} after a close: {e}"));
            let before = doc.get_heads();
            let mut tx = doc.transaction();
            tx.put(ROOT, "n", i).unwrap();
            tx.commit();
            store.append(&id, &doc.save_after(&before)).unwrap();
            store.sync().unwrap();
        }
        let (loaded, _) = LocalStore::open(dir.path()).unwrap().load(&id).unwrap();
        assert_eq!(loaded.get_heads(), doc.get_heads());
    }

    #[test]
    fn a_store_open_elsewhere_is_refused_after_a_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = LocalStore::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let second = LocalStore::open(dir.path());
        assert!(second.is_err(), "two stores open on one directory");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn chunks_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let id = DocumentId::random();
        let mut doc = Automerge::new();
        {
            let store = LocalStore::open(dir.path()).unwrap();
            for i in 0..70i64 {
                let before = doc.get_heads();
                let mut tx = doc.transaction();
                // Large enough that a run spans several parts.
                tx.put(ROOT, "blob", "x".repeat(5000 + i as usize)).unwrap();
                tx.commit();
                store.append(&id, &doc.save_after(&before)).unwrap();
            }
            store.sync().unwrap();
            let (loaded, runs) = store.load(&id).unwrap();
            assert_eq!(runs, 70);
            assert_eq!(loaded.get_heads(), doc.get_heads());
            assert!(LocalStore::wants_compaction(runs));
            store.replace(&id, &doc.save()).unwrap();
            store.sync().unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        let (loaded, runs) = store.load(&id).unwrap();
        assert_eq!(runs, 0);
        assert_eq!(loaded.get_heads(), doc.get_heads());
        assert_eq!(store.documents().unwrap(), vec![id]);
        assert!(
            std::fs::read_dir(dir.path().join("blobs"))
                .map(|d| d.count())
                .unwrap_or(0)
                == 0,
            "a value reached sled's un-fsynced blob files"
        );
    }
}
