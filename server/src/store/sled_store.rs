//! The embedded default store: sled 0.34 in a local folder.
//!
//! Chunks live in the `chunks` tree under `doc(16) ‖ kind(1) ‖ sha256(32) ‖ part(2, BE)`.
//!
//! **Blob files.** sled 0.34.7 writes a log message to a separate file under `blobs/` when it is
//! larger than `segment_size / 4` minus a header (`pagecache/logger.rs`, `reserve_inner`; 128 KiB
//! with the default 512 KiB segments), and such a file is written without fsync. The messages are
//! not single values but tree pages: a leaf is split only once it holds more than 16 entries
//! (`node.rs`, `should_split`), so a page of 17 values of 32 KiB would go to a blob even though each
//! value is small. Values are therefore kept to [`PART_BYTES`] (4 KiB; 17 × 4 KiB plus keys stays
//! well under the limit): chunks are split into parts of that size, and a side-table value larger
//! than [`META_INLINE`] is stored as parts in a companion tree. The test
//! `large_values_never_reach_blob_files` writes megabytes of both and checks `blobs/` stays empty.
//! [`SledStore::sync`] makes writes durable by `flush` and an explicit `fsync` of the log file
//! (sled 0.34's flush ends in `sync_file_range`, which does not flush the disk cache); should a blob
//! file exist anyway it is fsynced first, so a log record is never durable before the blob it
//! points to.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crdt_core::DocumentId;

use super::{Chunk, ChunkKey, ChunkKind, DocStore, StoreError, StoreResult};

/// Largest chunk part written to sled in one entry.
pub const PART_BYTES: usize = 4 * 1024;

/// Largest side-table value stored as it is; larger ones are split into parts.
pub const META_INLINE: usize = 2 * 1024;

/// Marks a side-table value whose bytes live in parts: the marker, then the length (u32 BE).
const META_PARTS_MARK: &[u8] = b"\0minka-parts\0";

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

    fn parts_tree(tree: &str) -> String {
        format!("{tree}#parts")
    }

    /// A side-table value as stored: inline, or reassembled from its parts.
    fn meta_value(&self, tree: &str, key: &[u8], head: &[u8]) -> StoreResult<Vec<u8>> {
        if !(head.starts_with(META_PARTS_MARK) && head.len() == META_PARTS_MARK.len() + 4) {
            return Ok(head.to_vec());
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[META_PARTS_MARK.len()..]);
        let len = u32::from_be_bytes(len) as usize;
        let mut out = Vec::with_capacity(len);
        for part in self.db.open_tree(Self::parts_tree(tree))?.scan_prefix(key) {
            let (k, v) = part?;
            if k.len() == key.len() + 2 {
                out.extend_from_slice(&v);
            }
        }
        if out.len() != len {
            return Err(StoreError::Corrupt(format!(
                "side table {tree}: value of {} bytes where {len} were stored",
                out.len()
            )));
        }
        Ok(out)
    }

    fn insert_parts(batch: &mut sled::Batch, prefix: &[u8], bytes: &[u8]) -> StoreResult<()> {
        let parts: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(PART_BYTES).collect()
        };
        if parts.len() > usize::from(u16::MAX) + 1 {
            return Err(StoreError::Corrupt(format!(
                "a value of {} bytes is over the {} bytes one entry may hold",
                bytes.len(),
                (usize::from(u16::MAX) + 1) * PART_BYTES
            )));
        }
        for (i, part) in parts.into_iter().enumerate() {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&(i as u16).to_be_bytes());
            batch.insert(k, part);
        }
        Ok(())
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
        Self::insert_parts(&mut batch, &chunk_prefix(doc, &key), bytes)?;
        self.chunks.apply_batch(batch)?;
        Ok(key)
    }

    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
        let mut out: Vec<(Chunk, u16)> = Vec::new();
        // Snapshot tag 's' sorts after 'i'; collect then order snapshots first.
        for entry in self.chunks.scan_prefix(doc.as_bytes()) {
            let (k, v) = entry?;
            let (_, key, part) = parse_key(&k)?;
            match out.last_mut().map(|(c, p)| (c, p)) {
                Some((last, last_part)) if last.key == key => {
                    // Parts are consecutive (their size changed over versions: 32 KiB, then 4 KiB).
                    if part != *last_part + 1 {
                        return Err(StoreError::Corrupt(format!(
                            "document {doc}: chunk part {part} out of place"
                        )));
                    }
                    *last_part = part;
                    last.bytes.extend_from_slice(&v);
                }
                _ => {
                    if part != 0 {
                        return Err(StoreError::Corrupt(format!(
                            "document {doc}: chunk starts at part {part}"
                        )));
                    }
                    out.push((
                        Chunk {
                            key,
                            bytes: v.to_vec(),
                        },
                        0,
                    ))
                }
            }
        }
        let mut out: Vec<Chunk> = out.into_iter().map(|(c, _)| c).collect();
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
        Self::insert_parts(&mut batch, &chunk_prefix(doc, &key), snapshot)?;
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
        // Blob files (if any) before the log that points to them.
        self.sync_blobs()?;
        self.log_file.lock().unwrap().sync_all()?;
        Ok(())
    }

    fn meta_get(&self, tree: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.db.open_tree(tree)?.get(key)? {
            Some(v) => Ok(Some(self.meta_value(tree, key, &v)?)),
            None => Ok(None),
        }
    }

    fn meta_put(&self, tree: &str, key: &[u8], value: &[u8]) -> StoreResult<()> {
        // Parts of an earlier value under this key would be read back with the new ones.
        if self
            .db
            .open_tree(tree)?
            .get(key)?
            .is_some_and(|old| old.starts_with(META_PARTS_MARK))
        {
            self.meta_delete(tree, key)?;
        }
        let head = if value.len() <= META_INLINE {
            value.to_vec()
        } else {
            // Parts first, the head last: a reader never sees a head without its parts.
            let mut batch = sled::Batch::default();
            Self::insert_parts(&mut batch, key, value)?;
            self.db
                .open_tree(Self::parts_tree(tree))?
                .apply_batch(batch)?;
            let mut head = META_PARTS_MARK.to_vec();
            head.extend_from_slice(&(value.len() as u32).to_be_bytes());
            head
        };
        self.db.open_tree(tree)?.insert(key, head)?;
        Ok(())
    }

    fn meta_delete(&self, tree: &str, key: &[u8]) -> StoreResult<()> {
        if let Some(old) = self.db.open_tree(tree)?.remove(key)? {
            if old.starts_with(META_PARTS_MARK) {
                let parts = self.db.open_tree(Self::parts_tree(tree))?;
                let mut batch = sled::Batch::default();
                for k in parts.scan_prefix(key).keys() {
                    let k = k?;
                    if k.len() == key.len() + 2 {
                        batch.remove(k);
                    }
                }
                parts.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    fn meta_tables(&self) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            // sled's default tree, the chunks, and the companion trees of split values.
            if name == "__sled__default" || name == "chunks" || name.ends_with("#parts") {
                continue;
            }
            if !self.db.open_tree(&name)?.is_empty() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn meta_scan(&self, tree: &str, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.db
            .open_tree(tree)?
            .scan_prefix(prefix)
            .map(|e| {
                let (k, v) = e?;
                let v = self.meta_value(tree, &k, &v)?;
                Ok((k.to_vec(), v))
            })
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
    fn large_values_never_reach_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut written = Vec::new();
        // Chunks of a few hundred KiB (a big document's snapshot) and large side-table values
        // (the quarantine keeps a rejected change's bytes), many per tree page.
        for i in 0..12u8 {
            let d = DocumentId::random();
            let bytes: Vec<u8> = (0..300_000u32).map(|j| (j as u8) ^ i).collect();
            s.append(&d, &bytes).unwrap();
            let value = vec![i; 150_000 + usize::from(i)];
            s.meta_put("quarantine", &[i; 48], &value).unwrap();
            written.push((d, bytes, value));
        }
        s.sync().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        for (i, (d, bytes, value)) in written.iter().enumerate() {
            assert_eq!(&s.load(d).unwrap()[0].bytes, bytes);
            let key = [i as u8; 48];
            assert_eq!(&s.meta_get("quarantine", &key).unwrap().unwrap(), value);
        }
        assert_eq!(s.meta_scan("quarantine", b"").unwrap().len(), 12);
        // Overwriting a split value with a shorter one leaves no stale parts behind.
        s.meta_put("quarantine", &[1; 48], &[7; 5_000]).unwrap();
        assert_eq!(
            s.meta_get("quarantine", &[1; 48]).unwrap().unwrap(),
            vec![7; 5_000]
        );
        s.meta_delete("quarantine", &[0; 48]).unwrap();
        assert_eq!(s.meta_get("quarantine", &[0; 48]).unwrap(), None);
        assert_eq!(s.meta_scan("quarantine", b"").unwrap().len(), 11);
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
