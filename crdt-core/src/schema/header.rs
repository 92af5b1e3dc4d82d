//! The root header every document carries, the [`NewDocument`] builder trait, [`AnyDocument`]
//! and the small writing helpers the builders and edits share.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, AutomergeError, ChangeHash, ObjId, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::read::{Item, Node, Reader};
use super::types::{DocType, SchemaError};
use super::{Acta, Index, Observation, Process, Proposal, SCHEMA_VERSION};
use crate::ids::{Ubigeo, UserId};

/// The fields at every document's root: `type`, `schemaVersion`, `district`, `processYear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentHeader {
    /// `type`.
    #[serde(rename = "type")]
    pub doc_type: DocType,
    /// `schemaVersion`; always [`SCHEMA_VERSION`] once read.
    pub schema_version: i64,
    /// `district` (a 6-digit ubigeo string; a number is accepted too).
    pub district: Ubigeo,
    /// `processYear`, the fiscal year.
    pub process_year: u16,
}

impl DocumentHeader {
    /// Reads the header of the current state.
    pub fn read(doc: &impl ReadDoc) -> Result<Self, SchemaError> {
        Self::read_from(&Reader::new(doc, None))
    }

    /// Reads the header as at `heads`.
    pub fn read_at(doc: &impl ReadDoc, heads: &[ChangeHash]) -> Result<Self, SchemaError> {
        Self::read_from(&Reader::new(doc, Some(heads)))
    }

    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let root = Node::root();
        let schema_version = r.req(&root, "schemaVersion", Reader::int)?;
        if schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion(schema_version));
        }
        let doc_type = r.req(&root, "type", Reader::enumerated)?;
        Self::read_rest(r, doc_type, schema_version)
    }

    /// Reads the header of a document that must be of type `expected`.
    pub(crate) fn read_expecting<D: ReadDoc>(
        r: &Reader<'_, D>,
        expected: DocType,
    ) -> Result<Self, SchemaError> {
        let root = Node::root();
        let schema_version = r.req(&root, "schemaVersion", Reader::int)?;
        if schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion(schema_version));
        }
        let found = r.req(&root, "type", Reader::string)?;
        if found != expected.as_str() {
            return Err(SchemaError::WrongDocType { expected, found });
        }
        Self::read_rest(r, expected, schema_version)
    }

    fn read_rest<D: ReadDoc>(
        r: &Reader<'_, D>,
        doc_type: DocType,
        schema_version: i64,
    ) -> Result<Self, SchemaError> {
        let root = Node::root();
        let district = r.req(&root, "district", read_ubigeo)?;
        let year = r.req(&root, "processYear", Reader::int)?;
        let process_year = u16::try_from(year).map_err(|_| SchemaError::Invalid {
            path: "processYear".into(),
            reason: format!("{year} is not a fiscal year"),
        })?;
        Ok(DocumentHeader {
            doc_type,
            schema_version,
            district,
            process_year,
        })
    }

    /// Writes the four header fields at the root.
    pub fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, self.doc_type, self.district, self.process_year)
    }
}

fn read_ubigeo<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Ubigeo, SchemaError> {
    let path = item.path.clone();
    // A JS client may write the ubigeo as a number; accept it.
    let text = match item.value {
        automerge::Value::Scalar(ref s)
            if matches!(
                s.as_ref(),
                automerge::ScalarValue::Int(_) | automerge::ScalarValue::Uint(_)
            ) =>
        {
            format!("{:06}", r.int(item)?)
        }
        _ => r.string(item)?,
    };
    text.parse()
        .map_err(|e: crate::ids::IdError| SchemaError::Invalid {
            path,
            reason: e.to_string(),
        })
}

/// A builder for a new document of one type (`NewProposal`, `NewActa`, ...).
pub trait NewDocument {
    /// The type this builder writes.
    fn doc_type(&self) -> DocType;

    /// Writes the whole document (header included) at the root of `tx`, without committing.
    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError>;

    /// A new document holding one change, `create <type>`, made by `actor` (random when
    /// `None`) at `at_unix` seconds.
    fn create(&self, actor: Option<ActorId>, at_unix: i64) -> Automerge {
        let mut doc = Automerge::new();
        if let Some(actor) = actor {
            doc.set_actor(actor);
        }
        let mut tx = doc.transaction();
        // Writing fresh keys into an empty document has no failure mode.
        self.write_into(&mut tx)
            .expect("writing a new document cannot fail");
        tx.commit_with(commit_options(
            format!("create {}", self.doc_type()),
            at_unix,
        ));
        doc
    }
}

/// Commit options with a message and a time in unix seconds (automerge's `commit()` stores 0).
pub fn commit_options(message: impl Into<String>, at_unix: i64) -> CommitOptions {
    CommitOptions::default()
        .with_message(message)
        .with_time(at_unix)
}

/// Any schema v1 document, read by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyDocument {
    Proposal(Proposal),
    Acta(Acta),
    Observation(Observation),
    Process(Process),
    Index(Index),
}

impl AnyDocument {
    /// Reads the current state as whatever type its root says.
    pub fn read(doc: &impl ReadDoc) -> Result<Self, SchemaError> {
        Self::read_from(&Reader::new(doc, None))
    }

    /// Reads the state as at `heads`.
    pub fn read_at(doc: &impl ReadDoc, heads: &[ChangeHash]) -> Result<Self, SchemaError> {
        Self::read_from(&Reader::new(doc, Some(heads)))
    }

    fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_from(r)?;
        Ok(match header.doc_type {
            DocType::Proposal => AnyDocument::Proposal(Proposal::read_from(r)?),
            DocType::Acta => AnyDocument::Acta(Acta::read_from(r)?),
            DocType::Observation => AnyDocument::Observation(Observation::read_from(r)?),
            DocType::Process => AnyDocument::Process(Process::read_from(r)?),
            DocType::Index => AnyDocument::Index(Index::read_from(r)?),
        })
    }

    /// The header of whichever document this is.
    pub fn header(&self) -> &DocumentHeader {
        match self {
            AnyDocument::Proposal(d) => &d.header,
            AnyDocument::Acta(d) => &d.header,
            AnyDocument::Observation(d) => &d.header,
            AnyDocument::Process(d) => &d.header,
            AnyDocument::Index(d) => &d.header,
        }
    }

    /// The document's type.
    pub fn doc_type(&self) -> DocType {
        self.header().doc_type
    }

    /// The document's status as stored (`status` of proposals, actas and observations,
    /// `phase` of a process), for listings and filters.
    pub fn status(&self) -> Option<&'static str> {
        match self {
            AnyDocument::Proposal(d) => Some(d.status.as_str()),
            AnyDocument::Acta(d) => Some(d.status.as_str()),
            AnyDocument::Observation(d) => Some(d.status.as_str()),
            AnyDocument::Process(d) => Some(d.phase.as_str()),
            AnyDocument::Index(_) => None,
        }
    }
}

pub(crate) fn write_header<T: Transactable>(
    tx: &mut T,
    doc_type: DocType,
    district: Ubigeo,
    process_year: u16,
) -> Result<(), AutomergeError> {
    tx.put(ROOT, "type", doc_type.as_str())?;
    tx.put(ROOT, "schemaVersion", SCHEMA_VERSION)?;
    tx.put(ROOT, "district", district.to_string())?;
    tx.put(ROOT, "processYear", i64::from(process_year))?;
    Ok(())
}

/// Puts a new Text object holding `text` at `key` of `obj`.
pub(crate) fn put_text<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    text: &str,
) -> Result<ObjId, AutomergeError> {
    let id = tx.put_object(obj, key, ObjType::Text)?;
    if !text.is_empty() {
        tx.splice_text(&id, 0, 0, text)?;
    }
    Ok(id)
}

/// Inserts a new Text object holding `text` at `index` of the list `obj`.
pub(crate) fn insert_text<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    index: usize,
    text: &str,
) -> Result<ObjId, AutomergeError> {
    let id = tx.insert_object(list, index, ObjType::Text)?;
    if !text.is_empty() {
        tx.splice_text(&id, 0, 0, text)?;
    }
    Ok(id)
}

/// Puts a map `{user: true}` at `key` of `obj`.
pub(crate) fn put_user_set<'u, T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    users: impl IntoIterator<Item = &'u UserId>,
) -> Result<ObjId, AutomergeError> {
    let id = tx.put_object(obj, key, ObjType::Map)?;
    for user in users {
        tx.put(&id, user.as_str(), true)?;
    }
    Ok(id)
}
