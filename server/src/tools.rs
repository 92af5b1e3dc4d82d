//! Offline tools that work on a store directly (the server stopped): `check`, `compact`, `demo`,
//! `migrate`.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, AutomergeError, LoadOptions, OnPartialLoad, ReadDoc};
use crdt_core::schema::{DocType, DocumentHeader, Index};
use crdt_core::DocumentId;

use crate::hub::UNINDEXED;

use crate::store::{assemble, ChunkKind, DocStore, StoreError, StoreSpec};

/// What `minka check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub documents: usize,
    pub chunks: usize,
    pub seals: usize,
    /// Documents not yet in their index but marked for it (listed at the next `serve`).
    pub unindexed: usize,
    pub problems: Vec<String>,
}

/// A sealed acta must still be at its sealed heads, in status `sealed`, with the same state hash.
pub fn verify_seal(doc: &Automerge, raw: &[u8]) -> Result<(), String> {
    let record: crate::hub::SealRecord =
        serde_json::from_slice(raw).map_err(|e| format!("unreadable seal record: {e}"))?;
    let heads = record
        .heads
        .iter()
        .map(|h| {
            h.parse::<automerge::ChangeHash>()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if heads.iter().any(|h| doc.get_change_by_hash(h).is_none()) {
        return Err("sealed heads are missing from the document".into());
    }
    let hash = crate::hub::state_hash(doc, &heads);
    if hash != record.sha256 {
        return Err(format!(
            "state hash {hash} differs from the sealed {}",
            record.sha256
        ));
    }
    let mut current = doc.get_heads();
    let mut sealed = heads.clone();
    current.sort();
    sealed.sort();
    if current != sealed {
        return Err("the acta changed after it was sealed".into());
    }
    let acta = crdt_core::schema::Acta::read(doc).map_err(|e| e.to_string())?;
    if acta.status != crdt_core::schema::ActaStatus::Sealed {
        return Err(format!("status is `{}`, not `sealed`", acta.status));
    }
    Ok(())
}

/// Verifies every chunk against its hash, that every document loads, that every seal holds, and
/// that every document is listed in its district index (or marked for listing at the next start).
pub fn check(store: &dyn DocStore) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    // (document, its index id) for every non-index document, and what each index lists.
    let mut expected: Vec<(DocumentId, DocumentId)> = Vec::new();
    let mut listed: HashMap<DocumentId, HashSet<DocumentId>> = HashMap::new();
    for id in store.list()? {
        report.documents += 1;
        let chunks = match store.load(&id) {
            Ok(c) => c,
            Err(e) => {
                report.problems.push(format!("document {id}: {e}"));
                continue;
            }
        };
        let mut doc = Automerge::new();
        for chunk in &chunks {
            report.chunks += 1;
            if !chunk.verify() {
                report.problems.push(format!(
                    "document {id}: chunk {} does not match its hash",
                    hex::encode(chunk.key.hash)
                ));
                continue;
            }
            // Strictly on its own first: `load_incremental` into a non-empty document silently
            // skips bytes it cannot parse, so a garbled or truncated chunk after the snapshot
            // would pass unnoticed. Dependencies in other chunks are fine here.
            let strict = LoadOptions::new().on_partial_load(OnPartialLoad::Error);
            match Automerge::load_with_options(&chunk.bytes, strict) {
                Ok(_) | Err(AutomergeError::MissingDeps) => {}
                Err(e) => {
                    report.problems.push(format!(
                        "document {id}: chunk {} does not load: {e}",
                        hex::encode(chunk.key.hash)
                    ));
                    continue;
                }
            }
            if let Err(e) = doc.load_incremental(&chunk.bytes) {
                report
                    .problems
                    .push(format!("document {id}: chunk does not load: {e}"));
            }
        }
        if let Some(raw) = store.meta_get(crate::hub::SEALS, id.as_bytes())? {
            report.seals += 1;
            if let Err(problem) = verify_seal(&doc, &raw) {
                report
                    .problems
                    .push(format!("document {id}: seal: {problem}"));
            }
        }
        let missing = doc.get_missing_deps(&[]);
        if !missing.is_empty() {
            report.problems.push(format!(
                "document {id}: {} changes are missing their dependencies",
                missing.len()
            ));
        }
        let header = DocumentHeader::read(&doc).ok();
        if let Some((district, year)) = id.reserved_index() {
            let is_that_index = header.as_ref().is_some_and(|h| {
                h.doc_type == DocType::Index && h.district == district && h.process_year == year
            });
            if !is_that_index {
                report.problems.push(format!(
                    "document {id}: sits at the reserved index id of district {district} for {year} but is not that index"
                ));
                continue;
            }
        }
        if let Some(header) = header {
            if header.doc_type == DocType::Index {
                let index = Index::read(&doc).map(|i| i.docs.into_keys().collect());
                listed.insert(id, index.unwrap_or_default());
            } else {
                expected.push((
                    id,
                    DocumentId::index_for(header.district, header.process_year),
                ));
            }
        }
    }
    for (id, index) in expected {
        let in_index = listed.get(&index).is_some_and(|docs| docs.contains(&id));
        if !in_index && store.meta_get(UNINDEXED, id.as_bytes())?.is_none() {
            report.problems.push(format!(
                "document {id}: stored but missing from its district index {index}"
            ));
        }
        if !in_index {
            report.unindexed += 1;
        }
    }
    Ok(report)
}

/// Rewrites every document with more than one chunk as one snapshot.
pub fn compact(store: &dyn DocStore) -> Result<(usize, usize), StoreError> {
    let mut compacted = 0;
    let mut total = 0;
    for id in store.list()? {
        total += 1;
        let chunks = store.load(&id)?;
        if chunks.len() < 2 && chunks.iter().all(|c| c.key.kind == ChunkKind::Snapshot) {
            continue;
        }
        let doc = assemble(&id, &chunks)?;
        let keys: Vec<_> = chunks.iter().map(|c| c.key).collect();
        store.compact(&id, &doc.save(), &keys)?;
        compacted += 1;
    }
    store.sync()?;
    Ok((compacted, total))
}

/// Writes documents into the store as snapshots (used by `minka demo`).
pub fn write_documents(
    store: &dyn DocStore,
    docs: impl IntoIterator<Item = (DocumentId, Automerge)>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for (id, doc) in docs {
        let chunks = store.load(&id)?;
        let existing: Vec<_> = chunks.iter().map(|c| c.key).collect();
        let mut merged = assemble(&id, &chunks)?;
        let mut doc = doc;
        doc.merge(&mut merged)
            .map_err(|e| StoreError::Corrupt(format!("document {id}: {e}")))?;
        store.compact(&id, &doc.save(), &existing)?;
        n += 1;
    }
    store.sync()?;
    Ok(n)
}

/// Opens the store an offline tool works on.
pub fn open_store(spec: &StoreSpec) -> Result<Arc<dyn DocStore>, StoreError> {
    crate::store::open(spec)
}

/// What `minka migrate` copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub documents: usize,
    pub snapshots: usize,
    pub incrementals: usize,
    pub side_tables: usize,
    pub side_entries: usize,
}

/// Copies every document's chunks and every side-table entry of `from` into `to`, then makes `to`
/// durable. Chunks are copied as they are (snapshots by `compact` replacing nothing, incrementals
/// by `append`), so their keys and bytes stay the same; a chunk that does not match its hash is
/// refused rather than copied. Copying into a store that already holds some of the same chunks is
/// harmless (chunks are content-addressed); side-table entries overwrite the target's.
pub fn migrate(from: &dyn DocStore, to: &dyn DocStore) -> Result<MigrateReport, StoreError> {
    let mut report = MigrateReport::default();
    for id in from.list()? {
        report.documents += 1;
        for chunk in from.load(&id)? {
            if !chunk.verify() {
                return Err(StoreError::Corrupt(format!(
                    "document {id}: chunk {} does not match its hash (run `minka check` on the source)",
                    hex::encode(chunk.key.hash)
                )));
            }
            let key = match chunk.key.kind {
                ChunkKind::Snapshot => {
                    report.snapshots += 1;
                    to.compact(&id, &chunk.bytes, &[])?
                }
                ChunkKind::Incremental => {
                    report.incrementals += 1;
                    to.append(&id, &chunk.bytes)?
                }
            };
            if key != chunk.key {
                return Err(StoreError::Corrupt(format!(
                    "document {id}: chunk {} was stored under another key",
                    hex::encode(chunk.key.hash)
                )));
            }
        }
    }
    for tree in from.meta_tables()? {
        report.side_tables += 1;
        for (key, value) in from.meta_scan(&tree, b"")? {
            to.meta_put(&tree, &key, &value)?;
            report.side_entries += 1;
        }
    }
    to.sync()?;
    Ok(report)
}
