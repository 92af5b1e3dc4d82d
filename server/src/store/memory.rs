//! In-memory [`DocStore`] for unit tests of the hub and for tools that need no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crdt_core::DocumentId;

use super::{Chunk, ChunkKey, ChunkKind, DocStore, StoreResult};

type MetaTables = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A [`DocStore`] that keeps everything in memory; `sync` is a no-op.
#[derive(Default)]
pub struct MemoryStore {
    chunks: Mutex<BTreeMap<(DocumentId, ChunkKey), Vec<u8>>>,
    meta: Mutex<MetaTables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl DocStore for MemoryStore {
    fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey> {
        let key = ChunkKey::of(ChunkKind::Incremental, bytes);
        self.chunks
            .lock()
            .unwrap()
            .insert((*doc, key), bytes.to_vec());
        Ok(key)
    }

    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>> {
        let chunks = self.chunks.lock().unwrap();
        let mut out: Vec<Chunk> = chunks
            .iter()
            .filter(|((d, _), _)| d == doc)
            .map(|((_, key), bytes)| Chunk {
                key: *key,
                bytes: bytes.clone(),
            })
            .collect();
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
        let mut chunks = self.chunks.lock().unwrap();
        for old in replaced {
            chunks.remove(&(*doc, *old));
        }
        chunks.insert((*doc, key), snapshot.to_vec());
        Ok(key)
    }

    fn list(&self) -> StoreResult<Vec<DocumentId>> {
        let mut ids: Vec<DocumentId> = self
            .chunks
            .lock()
            .unwrap()
            .keys()
            .map(|(d, _)| *d)
            .collect();
        ids.dedup();
        Ok(ids)
    }

    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    fn meta_get(&self, tree: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .meta
            .lock()
            .unwrap()
            .get(tree)
            .and_then(|t| t.get(key).cloned()))
    }

    fn meta_put(&self, tree: &str, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.meta
            .lock()
            .unwrap()
            .entry(tree.to_string())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn meta_delete(&self, tree: &str, key: &[u8]) -> StoreResult<()> {
        if let Some(t) = self.meta.lock().unwrap().get_mut(tree) {
            t.remove(key);
        }
        Ok(())
    }

    fn meta_tables(&self) -> StoreResult<Vec<String>> {
        let meta = self.meta.lock().unwrap();
        Ok(meta
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(name, _)| name.clone())
            .collect())
    }

    fn meta_scan(&self, tree: &str, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .meta
            .lock()
            .unwrap()
            .get(tree)
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_passes_conformance() {
        super::super::conformance::run_all(&|| Box::new(super::MemoryStore::new()));
    }
}
