//! `proposal` documents: one project proposal sheet (ficha de proyecto) per document.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::header::{put_text, put_user_set, write_header, DocumentHeader, NewDocument};
use super::read::{Item, Node, Reader};
use super::types::{DocType, ProposalStatus, SchemaError};
use crate::ids::{Ubigeo, UserId};

/// A new proposal. It is written with status `draft`, empty `supporters` and `comments`, and
/// `evaluation` and `scores` as **empty maps** (present from creation, so that two offline
/// técnicos filling them in concurrently merge field by field instead of racing to create the map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProposal {
    pub district: Ubigeo,
    pub process_year: u16,
    /// `title` (Text).
    pub title: String,
    /// `description` (Text): the problem addressed and what the project does.
    pub description: String,
    /// `zone`, one of the process's zones.
    pub zone: String,
    /// `category`, e.g. "vías y veredas".
    pub category: String,
    /// `beneficiaries`: people who benefit.
    pub beneficiaries: i64,
    /// `estimatedCost` in céntimos.
    pub estimated_cost: i64,
    /// `cofinancing` in céntimos (the community's or a third party's share).
    pub cofinancing: i64,
    /// `createdBy`.
    pub created_by: UserId,
    /// `coauthors` {user: true}.
    pub coauthors: Vec<UserId>,
}

impl NewDocument for NewProposal {
    fn doc_type(&self) -> DocType {
        DocType::Proposal
    }

    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, DocType::Proposal, self.district, self.process_year)?;
        put_text(tx, &ROOT, "title", &self.title)?;
        put_text(tx, &ROOT, "description", &self.description)?;
        tx.put(ROOT, "zone", self.zone.as_str())?;
        tx.put(ROOT, "category", self.category.as_str())?;
        tx.put(ROOT, "beneficiaries", self.beneficiaries)?;
        tx.put(ROOT, "estimatedCost", self.estimated_cost)?;
        tx.put(ROOT, "cofinancing", self.cofinancing)?;
        tx.put(ROOT, "status", ProposalStatus::Draft.as_str())?;
        tx.put(ROOT, "createdBy", self.created_by.as_str())?;
        put_user_set(tx, &ROOT, "coauthors", &self.coauthors)?;
        tx.put_object(ROOT, "supporters", ObjType::Map)?;
        tx.put_object(ROOT, "comments", ObjType::List)?;
        tx.put_object(ROOT, "evaluation", ObjType::Map)?;
        tx.put_object(ROOT, "scores", ObjType::Map)?;
        Ok(())
    }
}

/// One entry of `comments` (also the shape of an observation's `responses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    /// `author` (a user id).
    pub author: UserId,
    /// `text` (Text).
    pub text: String,
    /// `at`, unix seconds.
    pub at: i64,
}

impl Comment {
    pub(crate) fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(Comment {
            author: r.req(&node, "author", Reader::user)?,
            text: r.req(&node, "text", Reader::string)?,
            at: r.req(&node, "at", Reader::time)?,
        })
    }
}

/// The técnico's `evaluation`; every field is optional until filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// `viable`.
    pub viable: Option<bool>,
    /// `validatedCost` in céntimos.
    pub validated_cost: Option<i64>,
    /// `notes` (Text).
    pub notes: Option<String>,
    /// `evaluator` (a user id).
    pub evaluator: Option<UserId>,
}

/// A `proposal` document as read.
///
/// Required: the header, `title`, `zone`, `category`, `estimatedCost`, `status`, `createdBy`.
/// Optional (read as empty/zero when absent): `description`, `beneficiaries`, `cofinancing`,
/// `coauthors`, `supporters`, `comments`, `evaluation`, `scores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub title: String,
    pub description: String,
    pub zone: String,
    pub category: String,
    pub beneficiaries: i64,
    /// Céntimos.
    pub estimated_cost: i64,
    /// Céntimos.
    pub cofinancing: i64,
    pub status: ProposalStatus,
    pub created_by: UserId,
    pub coauthors: BTreeSet<UserId>,
    /// user → unix seconds when they gave their support.
    pub supporters: BTreeMap<UserId, i64>,
    pub comments: Vec<Comment>,
    pub evaluation: Evaluation,
    /// evaluator → criterion → score.
    pub scores: BTreeMap<UserId, BTreeMap<String, i64>>,
}

super::impl_read!(Proposal);

impl Proposal {
    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_expecting(r, DocType::Proposal)?;
        let root = Node::root();
        let evaluation = match r.opt(&root, "evaluation", Reader::map)? {
            None => Evaluation::default(),
            Some(node) => Evaluation {
                viable: r.opt(&node, "viable", Reader::boolean)?,
                validated_cost: r.opt(&node, "validatedCost", Reader::int)?,
                notes: r.opt(&node, "notes", Reader::string)?,
                evaluator: r.opt(&node, "evaluator", Reader::user)?,
            },
        };
        let scores = r.user_map(&root, "scores", |r, item| {
            let node = r.map(item)?;
            r.entries(&node)?
                .into_iter()
                .map(|(k, item)| Ok((k, r.int(item)?)))
                .collect()
        })?;
        Ok(Proposal {
            header,
            title: r.req(&root, "title", Reader::string)?,
            description: r
                .opt(&root, "description", Reader::string)?
                .unwrap_or_default(),
            zone: r.req(&root, "zone", Reader::string)?,
            category: r.req(&root, "category", Reader::string)?,
            beneficiaries: r.opt(&root, "beneficiaries", Reader::int)?.unwrap_or(0),
            estimated_cost: r.req(&root, "estimatedCost", Reader::int)?,
            cofinancing: r.opt(&root, "cofinancing", Reader::int)?.unwrap_or(0),
            status: r.req(&root, "status", Reader::enumerated)?,
            created_by: r.req(&root, "createdBy", Reader::user)?,
            coauthors: r.user_set(&root, "coauthors")?,
            supporters: r.user_map(&root, "supporters", Reader::time)?,
            comments: r.list_of(&root, "comments", Comment::read)?,
            evaluation,
            scores,
        })
    }

    /// Whether `user` created or co-authors this proposal.
    pub fn is_author(&self, user: &UserId) -> bool {
        self.created_by == *user || self.coauthors.contains(user)
    }

    /// The cost the district would pay: `estimatedCost - cofinancing` (céntimos).
    pub fn net_cost(&self) -> i64 {
        self.estimated_cost.saturating_sub(self.cofinancing)
    }
}
