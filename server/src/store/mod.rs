//! Document storage: append-only incremental chunks plus compacted snapshots, behind the small
//! [`DocStore`] trait, with a sled implementation ([`SledStore`], the embedded default), a
//! PostgreSQL one ([`PgStore`], shared by several nodes) and an in-memory one ([`MemoryStore`]),
//! which share one conformance suite. [`open`] opens the store a [`StoreSpec`] names.
//!
//! Layout (both implementations): a chunk is addressed by `(document, kind, sha256(chunk))`, so
//! `minka check` can verify every chunk against its key. Incrementals are the output of
//! `Automerge::save_after` for one batch; a snapshot is `Automerge::save` of the whole document.
//!
//! Compaction invariant: the new snapshot and the removal of the incrementals (and old snapshot)
//! it covers are written in ONE atomic batch, so after a crash the store holds either the old
//! chunks or the new snapshot, never neither.

mod memory;
pub mod postgres;
mod sled_store;

use crdt_core::DocumentId;
use sha2::{Digest, Sha256};

pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sled_store::SledStore;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which store to open: `sled:<dir>` or a `postgres://…` (or `postgresql://…`) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sled(PathBuf),
    Postgres(String),
}

impl StoreSpec {
    /// `--store` if given, else the sled store in `data_dir` (the default).
    pub fn or_data_dir(store: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match store {
            Some(s) => s.parse(),
            None => Ok(StoreSpec::Sled(data_dir.to_path_buf())),
        }
    }
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err("`sled:` needs a directory, e.g. sled:./minka-data".into());
            }
            return Ok(StoreSpec::Sled(PathBuf::from(dir)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreSpec::Postgres(s.to_string()));
        }
        Err(format!(
            "unknown store {s:?}: use sled:<dir> or postgres://user@host:port/database"
        ))
    }
}

impl std::fmt::Display for StoreSpec {
    /// For logs: the sled directory, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Sled(dir) => write!(f, "sled:{}", dir.display()),
            StoreSpec::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let userinfo = &url[scheme + 3..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    write!(f, "{}{user}{}", &url[..scheme + 3], &url[at..])
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// Opens (creating if needed) the store `spec` names.
pub fn open(spec: &StoreSpec) -> StoreResult<Arc<dyn DocStore>> {
    Ok(match spec {
        StoreSpec::Sled(dir) => Arc::new(SledStore::open(dir)?),
        StoreSpec::Postgres(url) => Arc::new(PgStore::connect(url)?),
    })
}

/// Whether a chunk holds one batch of changes or a whole document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChunkKind {
    Incremental,
    Snapshot,
}

impl ChunkKind {
    pub(crate) fn tag(self) -> u8 {
        match self {
            ChunkKind::Incremental => b'i',
            ChunkKind::Snapshot => b's',
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'i' => Some(ChunkKind::Incremental),
            b's' => Some(ChunkKind::Snapshot),
            _ => None,
        }
    }
}

/// The address of a stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    pub kind: ChunkKind,
    pub hash: [u8; 32],
}

impl ChunkKey {
    /// The key of `bytes` stored as `kind`.
    pub fn of(kind: ChunkKind, bytes: &[u8]) -> Self {
        Self {
            kind,
            hash: Sha256::digest(bytes).into(),
        }
    }
}

/// One chunk as read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub key: ChunkKey,
    pub bytes: Vec<u8>,
}

impl Chunk {
    /// Whether the bytes still hash to the key they are stored under.
    pub fn verify(&self) -> bool {
        let actual: [u8; 32] = Sha256::digest(&self.bytes).into();
        actual == self.key.hash
    }
}

/// Builds a document from its stored chunks, refusing a chunk whose bytes no longer match its
/// hash. The one loader the hub and the offline tools share.
pub fn assemble(doc: &DocumentId, chunks: &[Chunk]) -> StoreResult<automerge::Automerge> {
    let mut out = automerge::Automerge::new();
    for chunk in chunks {
        if !chunk.verify() {
            return Err(StoreError::Corrupt(format!(
                "document {doc}: chunk {} does not match its hash (run `minka check`)",
                hex::encode(chunk.key.hash)
            )));
        }
        out.load_incremental(&chunk.bytes).map_err(|e| {
            StoreError::Corrupt(format!("document {doc}: chunk does not load: {e}"))
        })?;
    }
    Ok(out)
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("corrupt store entry: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Storage of automerge documents as chunks. Writes become durable only after [`DocStore::sync`].
pub trait DocStore: Send + Sync + 'static {
    /// Stores one incremental chunk (idempotent: same bytes, same key).
    fn append(&self, doc: &DocumentId, bytes: &[u8]) -> StoreResult<ChunkKey>;
    /// Every chunk of a document, snapshots first. Empty when the document is unknown.
    fn load(&self, doc: &DocumentId) -> StoreResult<Vec<Chunk>>;
    /// Atomically stores `snapshot` and removes `replaced` (see the module's compaction invariant).
    fn compact(
        &self,
        doc: &DocumentId,
        snapshot: &[u8],
        replaced: &[ChunkKey],
    ) -> StoreResult<ChunkKey>;
    /// Every document with at least one chunk.
    fn list(&self) -> StoreResult<Vec<DocumentId>>;
    /// Makes every write so far durable (for sled: flush, then fsync).
    fn sync(&self) -> StoreResult<()>;
    /// A small key-value side table (actor bindings, server identity, quarantine…).
    fn meta_get(&self, tree: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    fn meta_put(&self, tree: &str, key: &[u8], value: &[u8]) -> StoreResult<()>;
    /// Removes an entry of a side table (absent is fine).
    fn meta_delete(&self, tree: &str, key: &[u8]) -> StoreResult<()>;
    /// Entries of a side table whose key starts with `prefix`, in key order.
    fn meta_scan(&self, tree: &str, prefix: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Stores `value` under `key` unless the key already has a value, and returns that value
    /// (`None` when this call stored). A store shared by several nodes does it atomically across
    /// all of them (actor bindings are unique per actor); the default is a read then a write,
    /// enough for a store one process owns, whose callers serialise per key.
    fn meta_put_if_absent(
        &self,
        tree: &str,
        key: &[u8],
        value: &[u8],
    ) -> StoreResult<Option<Vec<u8>>> {
        if let Some(old) = self.meta_get(tree, key)? {
            return Ok(Some(old));
        }
        self.meta_put(tree, key, value)?;
        Ok(None)
    }
    /// Names of the side tables that hold entries (for `minka migrate`).
    fn meta_tables(&self) -> StoreResult<Vec<String>>;
    /// Whether other processes write to this store at the same time (several nodes on one
    /// database). Each of them then writes index documents with its own actor.
    fn shared(&self) -> bool {
        false
    }
    /// Documents other nodes sharing this store have written, as their writes commit. `None` for
    /// a store only this process writes.
    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<DocumentId>> {
        None
    }
}

/// Sizes of a document's chunks, to decide when to compact.
#[derive(Debug, Default, Clone)]
pub struct ChunkLedger {
    pub keys: Vec<ChunkKey>,
    pub snapshot_bytes: usize,
    pub incremental_bytes: usize,
}

impl ChunkLedger {
    pub fn from_chunks(chunks: &[Chunk]) -> Self {
        let mut ledger = Self::default();
        for c in chunks {
            ledger.record(c.key, c.bytes.len());
        }
        ledger
    }

    pub fn record(&mut self, key: ChunkKey, len: usize) {
        match key.kind {
            ChunkKind::Snapshot => self.snapshot_bytes += len,
            ChunkKind::Incremental => self.incremental_bytes += len,
        }
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Compaction policy: incrementals have outgrown the snapshot (and are worth rewriting).
    pub fn should_compact(&self) -> bool {
        let incrementals = self
            .keys
            .iter()
            .filter(|k| k.kind == ChunkKind::Incremental)
            .count();
        incrementals > 1 && self.incremental_bytes > self.snapshot_bytes.max(1024)
    }
}

#[doc(hidden)]
pub mod conformance {
    //! One suite every [`DocStore`] implementation must pass (public so the system tests run it
    //! against a real PostgreSQL).
    use super::*;

    pub fn run_all(make: &dyn Fn() -> Box<dyn DocStore>) {
        // Each case writes its own random documents and distinct tables, so one store may serve
        // every case (a database shared by the suite).
        append_and_load(make().as_ref());
        append_is_idempotent(make().as_ref());
        compact_replaces_chunks(make().as_ref());
        large_chunks_round_trip(make().as_ref());
        list_and_isolation(make().as_ref());
        meta_tables(make().as_ref());
    }

    fn append_and_load(s: &dyn DocStore) {
        let d = DocumentId::random();
        assert!(s.load(&d).unwrap().is_empty());
        let k1 = s.append(&d, b"one").unwrap();
        let k2 = s.append(&d, b"two").unwrap();
        s.sync().unwrap();
        let chunks = s.load(&d).unwrap();
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(Chunk::verify));
        let keys: Vec<_> = chunks.iter().map(|c| c.key).collect();
        assert!(keys.contains(&k1) && keys.contains(&k2));
    }

    fn append_is_idempotent(s: &dyn DocStore) {
        let d = DocumentId::random();
        s.append(&d, b"same").unwrap();
        s.append(&d, b"same").unwrap();
        assert_eq!(s.load(&d).unwrap().len(), 1);
    }

    fn compact_replaces_chunks(s: &dyn DocStore) {
        let d = DocumentId::random();
        let a = s.append(&d, b"a").unwrap();
        let b = s.append(&d, b"b").unwrap();
        let snap = s.compact(&d, b"ab", &[a, b]).unwrap();
        let chunks = s.load(&d).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].key, snap);
        assert_eq!(chunks[0].bytes, b"ab");
        // A later incremental sits beside the snapshot, and snapshots load first.
        s.append(&d, b"c").unwrap();
        let chunks = s.load(&d).unwrap();
        assert_eq!(chunks[0].key.kind, ChunkKind::Snapshot);
        assert_eq!(chunks.len(), 2);
    }

    fn large_chunks_round_trip(s: &dyn DocStore) {
        let d = DocumentId::random();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let k = s.append(&d, &big).unwrap();
        s.sync().unwrap();
        let chunks = s.load(&d).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].key, k);
        assert_eq!(chunks[0].bytes, big);
    }

    fn list_and_isolation(s: &dyn DocStore) {
        let d1 = DocumentId::random();
        let d2 = DocumentId::random();
        s.append(&d1, b"x").unwrap();
        s.append(&d2, b"y").unwrap();
        let listed = s.list().unwrap();
        assert!(listed.contains(&d1) && listed.contains(&d2));
        assert_eq!(s.load(&d1).unwrap()[0].bytes, b"x");
        assert_eq!(s.load(&d2).unwrap()[0].bytes, b"y");
    }

    fn meta_tables(s: &dyn DocStore) {
        assert_eq!(s.meta_get("actors", b"k").unwrap(), None);
        s.meta_put("actors", b"k1", b"v1").unwrap();
        s.meta_put("actors", b"k2", b"v2").unwrap();
        s.meta_put("other", b"k1", b"zz").unwrap();
        assert_eq!(s.meta_get("actors", b"k1").unwrap().unwrap(), b"v1");
        let all = s.meta_scan("actors", b"k").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], (b"k2".to_vec(), b"v2".to_vec()));
        s.meta_delete("actors", b"k1").unwrap();
        s.meta_delete("actors", b"absent").unwrap();
        assert_eq!(s.meta_get("actors", b"k1").unwrap(), None);
        assert_eq!(s.meta_get("other", b"k1").unwrap().unwrap(), b"zz");
        assert_eq!(s.meta_scan("actors", b"k").unwrap().len(), 1);
        let mut tables = s.meta_tables().unwrap();
        tables.sort();
        assert_eq!(tables, vec!["actors".to_string(), "other".to_string()]);
        assert_eq!(
            s.meta_put_if_absent("actors", b"k9", b"first").unwrap(),
            None
        );
        assert_eq!(
            s.meta_put_if_absent("actors", b"k9", b"second").unwrap(),
            Some(b"first".to_vec())
        );
        assert_eq!(s.meta_get("actors", b"k9").unwrap().unwrap(), b"first");
        // Large side-table values round-trip (sled splits them into parts).
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        s.meta_put("other", b"big", &big).unwrap();
        assert_eq!(s.meta_get("other", b"big").unwrap().unwrap(), big);
        let mut tables = s.meta_tables().unwrap();
        tables.sort();
        assert_eq!(tables, vec!["actors".to_string(), "other".to_string()]);
    }
}

#[cfg(test)]
mod spec_tests {
    use super::StoreSpec;
    use std::path::{Path, PathBuf};

    #[test]
    fn store_specs_parse_and_default_to_sled_in_the_data_dir() {
        let data = Path::new("./minka-data");
        assert_eq!(
            StoreSpec::or_data_dir(None, data).unwrap(),
            StoreSpec::Sled(data.to_path_buf())
        );
        assert_eq!(
            StoreSpec::or_data_dir(Some("sled:/var/lib/minka"), data).unwrap(),
            StoreSpec::Sled(PathBuf::from("/var/lib/minka"))
        );
        let url = "postgres://minka:s3cret@10.0.0.5:5432/minka";
        assert_eq!(
            StoreSpec::or_data_dir(Some(url), data).unwrap(),
            StoreSpec::Postgres(url.into())
        );
        assert!(StoreSpec::or_data_dir(Some("sled:"), data).is_err());
        assert!(StoreSpec::or_data_dir(Some("mysql://x"), data).is_err());
        assert!(StoreSpec::or_data_dir(Some("./dir"), data).is_err());
        // Logs show the URL without its password.
        assert_eq!(
            StoreSpec::Postgres(url.into()).to_string(),
            "postgres://minka@10.0.0.5:5432/minka"
        );
    }
}
