//! The embedded default store: sled 0.34 in a local folder.
//!
//! Chunks live in the `chunks` tree under `doc(16) ‖ kind(1) ‖ sha256(32) ‖ part(2, BE)`. A chunk is
//! split into parts of at most [`PART_BYTES`] so sled keeps every value inline in its log instead of
//! writing it to a separate blob file; [`SledStore::sync`] then makes writes durable by `flush` and
//! an explicit `fsync` of the log file (sled 0.34's flush ends in `sync_file_range`, which does not
//! flush the disk cache), plus any blob files sled did create.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crdt_core::DocumentId;

use super::{Chunk, ChunkKey, ChunkKind, DocStore, StoreError, StoreResult};

/// Largest value written to sled in one entry.
pub const PART_BYTES: usize = 32 * 1024;

const KEY_LEN: usize = 16 + 1 + 32 + 2;

/// A [`DocStore`] over a sled database directory.
pub struct SledStore {
    db: sled::Db,
    chunks: sled::Tree,
    dir: PathBuf,
    log_file: Mutex<File>,
}

fn chunk_prefix(doc: &DocumentId, key: &ChunkKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.extend_from_slice(doc.as_bytes());
    k.push(key.kind.tag());
    k.extend_from_slice(&key.hash);
    k
}

fn parse_key(raw: &[u8]) -> StoreResult<(DocumentId, ChunkKey, u16)> {
    if raw.len() != KEY_LEN {
        return Err(StoreError::Corrupt(format!(
            "chunk key of {} bytes",
            raw.len()
        )));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&raw[..16]);
    let kind = ChunkKind::from_tag(raw[16])
        .ok_or_else(|| StoreError::Corrupt(format!("unknown chunk kind {}", raw[16])))?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&raw[17..49]);
    let part = u16::from_be_bytes([raw[49], raw[50]]);
    Ok((DocumentId::from_bytes(id), ChunkKey { kind, hash }, part))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let chunks = db.open_tree("chunks")?;
        let log_file = File::open(dir.join("db"))?;
        // Make the directory entries of sled's files durable once.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            db,
            chunks,
            dir: dir.to_path_buf(),
            log_file: Mutex::new(log_file),
        })
    }

    fn insert_parts(batch: &mut sled::Batch, prefix: &[u8], bytes: &[u8]) {
        let parts: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(PART_BYTES).collect()
        };
        for (i, part) in parts.into_iter().enumerate() {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&(i as u16).to_be_bytes());
            batch.insert(k, part);
        }
    }

    fn remove_parts(&self, batch: &mut sled::Batch, prefix: &[u8]) -> StoreResult<()> {
        for entry in self.chunks.scan_prefix(prefix).keys() {
            batch.remove(entry?);
        }
        Ok(())
    }

    fn sync_blobs(&self) -> StoreResult<()> {
        let blobs = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut any = false;
        for entry in entries {
            let path = entry?.path();
            if let Ok(f) = File::open(&path) {
                f.sync_all()?;
                any = true;
            }
        }
        if any {
            File::open(&blobs)?.sync_all()?;
        }
        Ok(())
    }
}

impl DocStore for SledStore {
    fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey> {
        let key = ChunkKey::of(ChunkKind::Incremental, bytes);
        let mut batch = sled::Batch::default();
        Self::insert_parts(&mut batch, &chunk_prefix(doc, &key), bytes);
        self.chunks.apply_batch(batch)?;
        Ok(key)
    }

    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
        let mut out: Vec<Chunk> = Vec::new();
        // Snapshot tag 's' sorts after 'i'; collect then order snapshots first.
        for entry in self.chunks.scan_prefix(doc.as_bytes()) {
            let (k, v) = entry?;
            let (_, key, part) = parse_key(&k)?;
            match out.last_mut() {
                Some(last) if last.key == key => {
                    if usize::from(part) * PART_BYTES != last.bytes.len() {
                        return Err(StoreError::Corrupt(format!(
                            "document {doc}: chunk part {part} out of place"
                        )));
                    }
                    last.bytes.extend_from_slice(&v);
                }
                _ => {
                    if part != 0 {
                        return Err(StoreError::Corrupt(format!(
                            "document {doc}: chunk starts at part {part}"
                        )));
                    }
                    out.push(Chunk {
                        key,
                        bytes: v.to_vec(),
                    })
                }
            }
        }
        out.sort_by_key(|c| c.key.kind != ChunkKind::Snapshot);
        Ok(out)
    }

    fn compact(
        &self,
        doc: &DocumentId,
        snapshot: &[u8],
        replaced: &[ChunkKey],
    ) -> StoreResult<ChunkKey> {
        let key = ChunkKey::of(ChunkKind::Snapshot, snapshot);
        let mut batch = sled::Batch::default();
        for old in replaced.iter().filter(|k| **k != key) {
            self.remove_parts(&mut batch, &chunk_prefix(doc, old))?;
        }
        Self::insert_parts(&mut batch, &chunk_prefix(doc, &key), snapshot);
        // One atomic batch: the snapshot and the removal of what it replaces land together.
        self.chunks.apply_batch(batch)?;
        Ok(key)
    }

    fn list(&self) -> StoreResult<Vec<DocumentId>> {
        let mut ids = Vec::new();
        let mut next: Option<Vec<u8>> = Some(Vec::new());
        // Skip from document to document instead of walking every chunk.
        while let Some(from) = next.take() {
            let Some(entry) = self.chunks.range(from..).next() else {
                break;
            };
            let (k, _) = entry?;
            let (id, _, _) = parse_key(&k)?;
            ids.push(id);
            let mut after = id.as_bytes().to_vec();
            after.push(0xff);
            next = Some(after);
        }
        Ok(ids)
    }

    fn sync(&self) -> StoreResult<()> {
        self.db.flush()?;
        self.log_file.lock().unwrap().sync_all()?;
        self.sync_blobs()
    }

    fn meta_get(&self, tree: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.open_tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, tree: &str, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.db.open_tree(tree)?.insert(key, value)?;
        Ok(())
    }

    fn meta_scan(&self, tree: &str, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.db
            .open_tree(tree)?
            .scan_prefix(prefix)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_passes_conformance() {
        let dirs = Mutex::new(Vec::new());
        super::super::conformance::run_all(&|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            Box::new(store)
        });
    }

    #[test]
    fn synced_chunks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = DocumentId::random();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.append(&d, b"hello").unwrap();
            s.sync().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let chunks = s.load(&d).unwrap();
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].verify());
        assert_eq!(s.list().unwrap(), vec![d]);
    }
}
