//! `observation` documents: a finding of the Comité de Vigilancia about another document, with
//! the evidence and the answers it got.

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::header::{put_text, write_header, DocumentHeader, NewDocument};
use super::json::item_to_json;
use super::proposal::Comment;
use super::read::{Item, Node, Reader};
use super::types::{DocType, ObservationStatus, SchemaError};
use crate::ids::{DocumentId, Ubigeo, UserId};

/// A new observation, written with status `open` and no responses. `createdBy` is written too
/// (an addition to the contract's fields; readers treat it as optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObservation {
    pub district: Ubigeo,
    pub process_year: u16,
    /// `target`: the document observed.
    pub target: DocumentId,
    /// `kind`, free text chosen by the committee, e.g. `agreement_not_kept`,
    /// `missing_information`, `budget_change`, `irregularity`.
    pub kind: String,
    /// `description` (Text).
    pub description: String,
    /// `evidence`: each a scalar string (a URL, a document reference or a short note).
    pub evidence: Vec<String>,
    /// `createdBy`.
    pub created_by: UserId,
}

impl NewDocument for NewObservation {
    fn doc_type(&self) -> DocType {
        DocType::Observation
    }

    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, DocType::Observation, self.district, self.process_year)?;
        tx.put(ROOT, "target", self.target.to_string())?;
        tx.put(ROOT, "kind", self.kind.as_str())?;
        put_text(tx, &ROOT, "description", &self.description)?;
        let evidence = tx.put_object(ROOT, "evidence", ObjType::List)?;
        for (i, e) in self.evidence.iter().enumerate() {
            tx.insert(&evidence, i, e.as_str())?;
        }
        tx.put_object(ROOT, "responses", ObjType::List)?;
        tx.put(ROOT, "status", ObservationStatus::Open.as_str())?;
        tx.put(ROOT, "createdBy", self.created_by.as_str())?;
        Ok(())
    }
}

/// An `observation` document as read.
///
/// Required: the header, `target`, `kind`, `status`. Optional: `description`, `evidence`
/// (any JSON-like values, kept as rendered), `responses`, `createdBy`. `target` stays the stored
/// string: an invalid id is a validation warning (`invalid_target`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub target: String,
    pub kind: String,
    pub description: String,
    pub evidence: Vec<serde_json::Value>,
    /// `responses` [ {author, text, at} ].
    pub responses: Vec<Comment>,
    pub status: ObservationStatus,
    pub created_by: Option<UserId>,
}

super::impl_read!(Observation);

impl Observation {
    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_expecting(r, DocType::Observation)?;
        let root = Node::root();
        let (doc, heads) = r.doc();
        let evidence = r.list_of(&root, "evidence", |_, item: Item<'_>| {
            Ok(item_to_json(doc, heads, &item.value, &item.id))
        })?;
        Ok(Observation {
            header,
            target: r.req(&root, "target", Reader::string)?,
            kind: r.req(&root, "kind", Reader::string)?,
            description: r
                .opt(&root, "description", Reader::string)?
                .unwrap_or_default(),
            evidence,
            responses: r.list_of(&root, "responses", Comment::read)?,
            status: r.req(&root, "status", Reader::enumerated)?,
            created_by: r.opt(&root, "createdBy", Reader::user)?,
        })
    }

    /// The observed document's id, if `target` is a valid id (a bare id or an `automerge:` URL).
    pub fn target_id(&self) -> Option<DocumentId> {
        self.target
            .parse()
            .ok()
            .or_else(|| DocumentId::from_url(&self.target).ok())
    }
}
