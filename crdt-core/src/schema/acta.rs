//! `acta` documents: the record of a meeting (workshop, formalization of agreements, committee
//! session), its attendees, agreements, prioritized projects and signatures.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ReadDoc, ROOT};
use serde::Serialize;

use super::header::{
    insert_text, put_text, put_user_set, write_header, DocumentHeader, NewDocument,
};
use super::read::{Item, Node, Reader};
use super::types::{ActaKind, ActaStatus, DocType, SchemaError};
use crate::ids::{DocumentId, Ubigeo, UserId};

/// One entry of `attendees` {user: {name, organization, votes}}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attendee {
    /// `name`.
    pub name: String,
    /// `organization` (the civil-society organization or municipal office represented).
    pub organization: String,
    /// `votes`: an agente participante with vote (false: voice without vote, e.g. the equipo técnico).
    pub votes: bool,
}

impl Attendee {
    pub(crate) fn write<T: Transactable>(
        &self,
        tx: &mut T,
        attendees: &ObjId,
        user: &UserId,
    ) -> Result<(), AutomergeError> {
        let obj = tx.put_object(attendees, user.as_str(), ObjType::Map)?;
        tx.put(&obj, "name", self.name.as_str())?;
        tx.put(&obj, "organization", self.organization.as_str())?;
        tx.put(&obj, "votes", self.votes)?;
        Ok(())
    }

    fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(Attendee {
            name: r.req(&node, "name", Reader::string)?,
            organization: r
                .opt(&node, "organization", Reader::string)?
                .unwrap_or_default(),
            votes: r.opt(&node, "votes", Reader::boolean)?.unwrap_or(false),
        })
    }
}

/// One entry of `signatures` {user: {at, device}}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// `at`, unix seconds.
    pub at: i64,
    /// `device`: a label of the device that signed.
    pub device: String,
}

impl Signature {
    fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(Signature {
            at: r.req(&node, "at", Reader::time)?,
            device: r.opt(&node, "device", Reader::string)?.unwrap_or_default(),
        })
    }
}

/// One entry of `prioritized` [ {proposalId, rank, amount} ].
///
/// `proposal_id` stays the stored string: an invalid id is a validation warning
/// (`invalid_proposal_id`), not a read error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrioritizedEntry {
    /// `proposalId`: the proposal's document id (base58check).
    pub proposal_id: String,
    /// `rank`, 1 = highest priority.
    pub rank: i64,
    /// `amount` assigned, in céntimos.
    pub amount: i64,
}

impl PrioritizedEntry {
    /// An entry for a proposal.
    pub fn new(proposal: DocumentId, rank: i64, amount: i64) -> Self {
        PrioritizedEntry {
            proposal_id: proposal.to_string(),
            rank,
            amount,
        }
    }

    /// The proposal id, if it is a valid document id.
    pub fn document_id(&self) -> Option<DocumentId> {
        self.proposal_id.parse().ok()
    }

    pub(crate) fn insert<T: Transactable>(
        &self,
        tx: &mut T,
        list: &ObjId,
        index: usize,
    ) -> Result<(), AutomergeError> {
        let obj = tx.insert_object(list, index, ObjType::Map)?;
        tx.put(&obj, "proposalId", self.proposal_id.as_str())?;
        tx.put(&obj, "rank", self.rank)?;
        tx.put(&obj, "amount", self.amount)?;
        Ok(())
    }

    fn read<D: ReadDoc>(r: &Reader<'_, D>, item: Item<'_>) -> Result<Self, SchemaError> {
        let node = r.map(item)?;
        Ok(PrioritizedEntry {
            proposal_id: r.req(&node, "proposalId", Reader::string)?,
            rank: r.req(&node, "rank", Reader::int)?,
            amount: r.req(&node, "amount", Reader::int)?,
        })
    }
}

/// A new acta, written with status `draft` and no signatures. `createdBy` is written too
/// (an addition to the contract's fields; readers treat it as optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActa {
    pub district: Ubigeo,
    pub process_year: u16,
    /// `title` (Text).
    pub title: String,
    pub kind: ActaKind,
    /// `date`, ISO 8601 (`2027-05-14`).
    pub date: String,
    /// `place`.
    pub place: String,
    /// `createdBy`.
    pub created_by: UserId,
    /// `committeeMembers` {user: true}: the Comité de Vigilancia elected or present.
    pub committee_members: Vec<UserId>,
    pub attendees: BTreeMap<UserId, Attendee>,
    /// `agreements`, each a Text.
    pub agreements: Vec<String>,
    pub prioritized: Vec<PrioritizedEntry>,
}

impl NewDocument for NewActa {
    fn doc_type(&self) -> DocType {
        DocType::Acta
    }

    fn write_into<T: Transactable>(&self, tx: &mut T) -> Result<(), AutomergeError> {
        write_header(tx, DocType::Acta, self.district, self.process_year)?;
        put_text(tx, &ROOT, "title", &self.title)?;
        tx.put(ROOT, "kind", self.kind.as_str())?;
        tx.put(ROOT, "date", self.date.as_str())?;
        tx.put(ROOT, "place", self.place.as_str())?;
        tx.put(ROOT, "createdBy", self.created_by.as_str())?;
        let attendees = tx.put_object(ROOT, "attendees", ObjType::Map)?;
        for (user, attendee) in &self.attendees {
            attendee.write(tx, &attendees, user)?;
        }
        let agreements = tx.put_object(ROOT, "agreements", ObjType::List)?;
        for (i, text) in self.agreements.iter().enumerate() {
            insert_text(tx, &agreements, i, text)?;
        }
        let prioritized = tx.put_object(ROOT, "prioritized", ObjType::List)?;
        for (i, entry) in self.prioritized.iter().enumerate() {
            entry.insert(tx, &prioritized, i)?;
        }
        put_user_set(tx, &ROOT, "committeeMembers", &self.committee_members)?;
        tx.put_object(ROOT, "signatures", ObjType::Map)?;
        tx.put(ROOT, "status", ActaStatus::Draft.as_str())?;
        Ok(())
    }
}

/// An `acta` document as read.
///
/// Required: the header, `title`, `kind`, `status`. Optional (empty when absent): `date`,
/// `place`, `createdBy`, `attendees`, `agreements`, `prioritized`, `committeeMembers`, `signatures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Acta {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub title: String,
    pub kind: ActaKind,
    pub date: String,
    pub place: String,
    pub created_by: Option<UserId>,
    pub attendees: BTreeMap<UserId, Attendee>,
    pub agreements: Vec<String>,
    pub prioritized: Vec<PrioritizedEntry>,
    pub committee_members: BTreeSet<UserId>,
    pub signatures: BTreeMap<UserId, Signature>,
    pub status: ActaStatus,
}

super::impl_read!(Acta);

impl Acta {
    pub(crate) fn read_from<D: ReadDoc>(r: &Reader<'_, D>) -> Result<Self, SchemaError> {
        let header = DocumentHeader::read_expecting(r, DocType::Acta)?;
        let root = Node::root();
        Ok(Acta {
            header,
            title: r.req(&root, "title", Reader::string)?,
            kind: r.req(&root, "kind", Reader::enumerated)?,
            date: r.opt(&root, "date", Reader::string)?.unwrap_or_default(),
            place: r.opt(&root, "place", Reader::string)?.unwrap_or_default(),
            created_by: r.opt(&root, "createdBy", Reader::user)?,
            attendees: r.user_map(&root, "attendees", Attendee::read)?,
            agreements: r.list_of(&root, "agreements", Reader::string)?,
            prioritized: r.list_of(&root, "prioritized", PrioritizedEntry::read)?,
            committee_members: r.user_set(&root, "committeeMembers")?,
            signatures: r.user_map(&root, "signatures", Signature::read)?,
            status: r.req(&root, "status", Reader::enumerated)?,
        })
    }

    /// Attendees with a vote.
    pub fn voters(&self) -> impl Iterator<Item = &UserId> {
        self.attendees
            .iter()
            .filter(|(_, a)| a.votes)
            .map(|(user, _)| user)
    }

    /// `(voting attendees who signed, voting attendees)`.
    pub fn voter_signatures(&self) -> (usize, usize) {
        let voters = self.voters().count();
        let signed = self
            .voters()
            .filter(|u| self.signatures.contains_key(*u))
            .count();
        (signed, voters)
    }

    /// Whether more than half of the voting attendees signed (the sealing rule).
    pub fn has_signing_majority(&self) -> bool {
        let (signed, voters) = self.voter_signatures();
        voters > 0 && signed * 2 > voters
    }

    /// Sum of the prioritized amounts, in céntimos.
    pub fn prioritized_total(&self) -> i64 {
        self.prioritized
            .iter()
            .fold(0i64, |sum, e| sum.saturating_add(e.amount))
    }
}
