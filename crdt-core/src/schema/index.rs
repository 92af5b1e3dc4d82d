//! `index` documents: one per district and fiscal year, written by the server only, listing the
//! district's documents so a client can discover them. Its id is
//! [`DocumentId::index_for`](crate::ids::DocumentId::index_for).

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::header::{write_header, DocumentHeader, NewDocument};
use super::read::{Item, Node, Reader};
use super::types::{DocType, SchemaError};
use crate::ids::{DocumentId, Ubigeo};

/// One entry of `docs` {documentId: {type, createdAt}}.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// `type` of the listed document.
    #[serde(rename = "type")]
    pub doc_type: DocType,
    /// `createdAt`, unix seconds.
    pub created_at: i64,
}

impl IndexEntry {
    pub(crate) fn write<T: Transactable>(
        &self,
        tx: &mut T,
        docs: &ObjId,
        id: &DocumentId,
    ) -> Result<(), AutomergeError> {
        let obj = tx.put_object(docs, id.to_string(), ObjType::Map)?;
        tx.put(&obj, "type", self.doc_type.as_str())?;
        tx.put(&obj, "createdAt", self.created_at)?;
        Ok(())
    }

    fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(IndexEntry {
            doc_type: r.req(&node, "type", Reader::enumerated)?,
            created_at: r.req(&node, "createdAt", Reader::time)?,
        })
    }
}

/// A new index document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIndex {
    pub district: Ubigeo,
    pub process_year: u16,
    pub docs: BTreeMap<DocumentId, IndexEntry>,
}

impl NewIndex {
    /// The index's own document id.
    pub fn id(&self) -> DocumentId {
        DocumentId::index_for(self.district, self.process_year)
    }
}

impl NewDocument for NewIndex {
    fn doc_type(&self) -> DocType {
        DocType::Index
    }

    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, DocType::Index, self.district, self.process_year)?;
        let docs = tx.put_object(ROOT, "docs", ObjType::Map)?;
        for (id, entry) in &self.docs {
            entry.write(tx, &docs, id)?;
        }
        Ok(())
    }
}

/// An `index` document as read; a key of `docs` that is not a document id is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub docs: BTreeMap<DocumentId, IndexEntry>,
}

super::impl_read!(Index);

impl Index {
    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_expecting(r, DocType::Index)?;
        let root = Node::root();
        let mut docs = BTreeMap::new();
        if let Some(node) = r.opt(&root, "docs", Reader::map)? {
            for (key, item) in r.entries(&node)? {
                let id = key
                    .parse()
                    .map_err(|e: crate::ids::IdError| SchemaError::Invalid {
                        path: node.child_path(&key),
                        reason: e.to_string(),
                    })?;
                docs.insert(id, IndexEntry::read(r, item)?);
            }
        }
        Ok(Index { header, docs })
    }
}
