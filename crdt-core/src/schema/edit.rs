//! Typed edits of schema v1 documents.
//!
//! An [`Edit`] is one small, composable change (set a status, splice a text, add a supporter,
//! sign an acta, ...). [`Edit::apply`] writes it into any automerge transaction (so the client
//! SDK can batch several into one change); [`apply_edit`] and [`apply_edits`] commit them as one
//! change with a message and a time (automerge's plain `commit()` would store time 0).
//!
//! Edits create a missing container (`supporters`, `comments`, `evaluation`, ...) on first use,
//! so documents written by other clients that omit them can still be edited; a container of the
//! wrong type is a [`SchemaError::WrongType`]. Text fields that a client stored as scalar strings
//! are turned into Text on their first edit.

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjId, ObjType, ScalarValue, Value, ROOT};

use super::acta::{Attendee, PrioritizedEntry, Signature};
use super::header::{commit_options, insert_text, put_text};
use super::index::IndexEntry;
use super::proposal::Comment;
use super::read::describe;
use super::types::{ActaStatus, ObservationStatus, ProcessPhase, ProposalStatus, SchemaError};
use crate::ids::{DocumentId, UserId};

/// Why an edit could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("automerge: {0}")]
    Automerge(#[from] AutomergeError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// One typed change to a document. Root-level `field`s are schema keys (`title`, `zone`, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Replace the Text at root `field` with `text` (a minimal character diff, so concurrent
    /// edits elsewhere in the text survive).
    SetText { field: String, text: String },
    /// Delete `delete` characters at `pos` of the Text at root `field` and insert `insert`
    /// there (positions in the document's text encoding, Unicode code points by default).
    SpliceText {
        field: String,
        pos: usize,
        delete: usize,
        insert: String,
    },
    /// Put a scalar at root `field` (ids, enums, amounts).
    SetScalar { field: String, value: ScalarValue },
    /// Proposal `status`.
    SetProposalStatus(ProposalStatus),
    /// `coauthors[user] = true`.
    AddCoauthor(UserId),
    /// Delete `coauthors[user]`.
    RemoveCoauthor(UserId),
    /// `supporters[user] = at`.
    AddSupporter { user: UserId, at: i64 },
    /// Delete `supporters[user]`.
    RemoveSupporter(UserId),
    /// Append to proposal `comments`.
    AddComment(Comment),
    /// Set the given `evaluation` fields (None leaves a field as is) and `evaluation.evaluator`.
    SetEvaluation {
        evaluator: UserId,
        viable: Option<bool>,
        validated_cost: Option<i64>,
        notes: Option<String>,
    },
    /// `scores[evaluator][criterion] = score`.
    SetScore {
        evaluator: UserId,
        criterion: String,
        score: i64,
    },
    /// `attendees[user] = {name, organization, votes}`.
    AddAttendee { user: UserId, attendee: Attendee },
    /// Append a Text to acta `agreements`.
    AddAgreement(String),
    /// Append to acta `prioritized`.
    AddPrioritized(PrioritizedEntry),
    /// Remove every `prioritized` entry for `proposal_id`.
    RemovePrioritized { proposal_id: String },
    /// `committeeMembers[user] = true`.
    AddCommitteeMember(UserId),
    /// `signatures[user] = {at, device}`.
    Sign { user: UserId, signature: Signature },
    /// Acta `status`.
    SetActaStatus(ActaStatus),
    /// Append to observation `responses`.
    AddResponse(Comment),
    /// Append a scalar string to observation `evidence`.
    AddEvidence(String),
    /// Observation `status`.
    SetObservationStatus(ObservationStatus),
    /// Process `zones[zone] = ceiling`.
    SetZoneCeiling { zone: String, ceiling: i64 },
    /// Process `phase`.
    SetPhase(ProcessPhase),
    /// Index `docs[id] = {type, createdAt}`.
    AddToIndex { id: DocumentId, entry: IndexEntry },
}

impl Edit {
    /// The change message this edit commits with when applied alone.
    pub fn message(&self) -> String {
        match self {
            Edit::SetText { field, .. } | Edit::SpliceText { field, .. } => format!("edit {field}"),
            Edit::SetScalar { field, .. } => format!("set {field}"),
            Edit::SetProposalStatus(s) => format!("set status {s}"),
            Edit::AddCoauthor(u) => format!("add coauthor {u}"),
            Edit::RemoveCoauthor(u) => format!("remove coauthor {u}"),
            Edit::AddSupporter { user, .. } => format!("support by {user}"),
            Edit::RemoveSupporter(u) => format!("withdraw support by {u}"),
            Edit::AddComment(c) => format!("comment by {}", c.author),
            Edit::SetEvaluation { .. } => "evaluate".to_string(),
            Edit::SetScore { criterion, .. } => format!("score {criterion}"),
            Edit::AddAttendee { attendee, .. } => format!("add attendee {}", attendee.name),
            Edit::AddAgreement(_) => "add agreement".to_string(),
            Edit::AddPrioritized(e) => format!("prioritize {} (rank {})", e.proposal_id, e.rank),
            Edit::RemovePrioritized { proposal_id } => format!("unprioritize {proposal_id}"),
            Edit::AddCommitteeMember(u) => format!("add committee member {u}"),
            Edit::Sign { user, .. } => format!("sign by {user}"),
            Edit::SetActaStatus(s) => format!("set status {s}"),
            Edit::AddResponse(c) => format!("response by {}", c.author),
            Edit::AddEvidence(_) => "add evidence".to_string(),
            Edit::SetObservationStatus(s) => format!("set status {s}"),
            Edit::SetZoneCeiling { zone, .. } => format!("set ceiling of zone {zone}"),
            Edit::SetPhase(p) => format!("set phase {p}"),
            Edit::AddToIndex { id, entry } => format!("index {} {id}", entry.doc_type),
        }
    }

    /// Writes this edit into `tx` without committing.
    pub fn apply<T: Transactable>(&self, tx: &mut T) -> Result<(), EditError> {
        match self {
            Edit::SetText { field, text } => set_text(tx, &ROOT, field, text, field),
            Edit::SpliceText {
                field,
                pos,
                delete,
                insert,
            } => {
                let text = ensure_text(tx, &ROOT, field, field)?;
                let delete = isize::try_from(*delete).map_err(|_| SchemaError::Invalid {
                    path: field.clone(),
                    reason: format!("cannot delete {delete} characters"),
                })?;
                tx.splice_text(&text, *pos, delete, insert)?;
                Ok(())
            }
            Edit::SetScalar { field, value } => Ok(tx.put(ROOT, field.as_str(), value.clone())?),
            Edit::SetProposalStatus(s) => Ok(tx.put(ROOT, "status", s.as_str())?),
            Edit::AddCoauthor(user) => put_in(tx, "coauthors", user.as_str(), true),
            Edit::RemoveCoauthor(user) => delete_in(tx, "coauthors", user.as_str()),
            Edit::AddSupporter { user, at } => put_in(tx, "supporters", user.as_str(), *at),
            Edit::RemoveSupporter(user) => delete_in(tx, "supporters", user.as_str()),
            Edit::AddComment(c) => push_comment(tx, "comments", c),
            Edit::SetEvaluation {
                evaluator,
                viable,
                validated_cost,
                notes,
            } => {
                let eval = ensure(tx, &ROOT, "evaluation", ObjType::Map, "evaluation")?;
                if let Some(v) = viable {
                    tx.put(&eval, "viable", *v)?;
                }
                if let Some(c) = validated_cost {
                    tx.put(&eval, "validatedCost", *c)?;
                }
                if let Some(n) = notes {
                    set_text(tx, &eval, "notes", n, "evaluation.notes")?;
                }
                tx.put(&eval, "evaluator", evaluator.as_str())?;
                Ok(())
            }
            Edit::SetScore {
                evaluator,
                criterion,
                score,
            } => {
                let scores = ensure(tx, &ROOT, "scores", ObjType::Map, "scores")?;
                let path = format!("scores.{evaluator}");
                let mine = ensure(tx, &scores, evaluator.as_str(), ObjType::Map, &path)?;
                tx.put(&mine, criterion.as_str(), *score)?;
                Ok(())
            }
            Edit::AddAttendee { user, attendee } => {
                let attendees = ensure(tx, &ROOT, "attendees", ObjType::Map, "attendees")?;
                Ok(attendee.write(tx, &attendees, user)?)
            }
            Edit::AddAgreement(text) => {
                let list = ensure(tx, &ROOT, "agreements", ObjType::List, "agreements")?;
                let len = tx.length(&list);
                insert_text(tx, &list, len, text)?;
                Ok(())
            }
            Edit::AddPrioritized(entry) => {
                let list = ensure(tx, &ROOT, "prioritized", ObjType::List, "prioritized")?;
                let len = tx.length(&list);
                Ok(entry.insert(tx, &list, len)?)
            }
            Edit::RemovePrioritized { proposal_id } => {
                let list = ensure(tx, &ROOT, "prioritized", ObjType::List, "prioritized")?;
                for i in (0..tx.length(&list)).rev() {
                    let Some((Value::Object(ObjType::Map), entry)) = tx.get(&list, i)? else {
                        continue;
                    };
                    let matches = match tx.get(&entry, "proposalId")? {
                        Some((Value::Scalar(s), _)) => s.as_str() == Some(proposal_id.as_str()),
                        Some((Value::Object(ObjType::Text), text)) => {
                            tx.text(&text)? == *proposal_id
                        }
                        _ => false,
                    };
                    if matches {
                        tx.delete(&list, i)?;
                    }
                }
                Ok(())
            }
            Edit::AddCommitteeMember(user) => put_in(tx, "committeeMembers", user.as_str(), true),
            Edit::Sign { user, signature } => {
                let sigs = ensure(tx, &ROOT, "signatures", ObjType::Map, "signatures")?;
                let obj = tx.put_object(&sigs, user.as_str(), ObjType::Map)?;
                tx.put(&obj, "at", signature.at)?;
                tx.put(&obj, "device", signature.device.as_str())?;
                Ok(())
            }
            Edit::SetActaStatus(s) => Ok(tx.put(ROOT, "status", s.as_str())?),
            Edit::AddResponse(c) => push_comment(tx, "responses", c),
            Edit::AddEvidence(e) => {
                let list = ensure(tx, &ROOT, "evidence", ObjType::List, "evidence")?;
                let len = tx.length(&list);
                Ok(tx.insert(&list, len, e.as_str())?)
            }
            Edit::SetObservationStatus(s) => Ok(tx.put(ROOT, "status", s.as_str())?),
            Edit::SetZoneCeiling { zone, ceiling } => put_in(tx, "zones", zone, *ceiling),
            Edit::SetPhase(p) => Ok(tx.put(ROOT, "phase", p.as_str())?),
            Edit::AddToIndex { id, entry } => {
                let docs = ensure(tx, &ROOT, "docs", ObjType::Map, "docs")?;
                Ok(entry.write(tx, &docs, id)?)
            }
        }
    }
}

/// Applies one edit as one change with [`Edit::message`] and time `at_unix`, made by the
/// document's current actor. `Ok(None)` when the edit changed nothing (e.g. removing an absent
/// supporter). On error nothing is committed.
pub fn apply_edit(
    doc: &mut Automerge,
    edit: &Edit,
    at_unix: i64,
) -> Result<Option<ChangeHash>, EditError> {
    apply_edits(doc, std::slice::from_ref(edit), &edit.message(), at_unix)
}

/// Applies several edits as one change with `message` and time `at_unix`. On error nothing is
/// committed.
pub fn apply_edits(
    doc: &mut Automerge,
    edits: &[Edit],
    message: &str,
    at_unix: i64,
) -> Result<Option<ChangeHash>, EditError> {
    let mut tx = doc.transaction();
    for edit in edits {
        if let Err(e) = edit.apply(&mut tx) {
            tx.rollback();
            return Err(e);
        }
    }
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok(None);
    }
    Ok(tx.commit_with(commit_options(message, at_unix)).0)
}

/// The object of type `obj_type` at `key` of `parent`, created when absent.
fn ensure<T: Transactable>(
    tx: &mut T,
    parent: &ObjId,
    key: &str,
    obj_type: ObjType,
    path: &str,
) -> Result<ObjId, EditError> {
    match tx.get(parent, key)? {
        None => Ok(tx.put_object(parent, key, obj_type)?),
        Some((Value::Object(found), id))
            if found == obj_type || (obj_type == ObjType::Map && found == ObjType::Table) =>
        {
            Ok(id)
        }
        Some((value, _)) => Err(SchemaError::WrongType {
            path: path.to_string(),
            expected: match obj_type {
                ObjType::List => "list",
                ObjType::Text => "text",
                ObjType::Map | ObjType::Table => "map",
            },
            found: describe(&value),
        }
        .into()),
    }
}

/// The Text at `key`, created when absent; a scalar string there becomes a Text with its content.
fn ensure_text<T: Transactable>(
    tx: &mut T,
    parent: &ObjId,
    key: &str,
    path: &str,
) -> Result<ObjId, EditError> {
    let existing = match tx.get(parent, key)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            ScalarValue::Null => None,
            _ => {
                return Err(SchemaError::WrongType {
                    path: path.to_string(),
                    expected: "text",
                    found: describe(&Value::Scalar(s)),
                }
                .into())
            }
        },
        _ => None,
    };
    match existing {
        Some(s) => Ok(put_text(tx, parent, key, &s)?),
        None => ensure(tx, parent, key, ObjType::Text, path),
    }
}

fn set_text<T: Transactable>(
    tx: &mut T,
    parent: &ObjId,
    key: &str,
    text: &str,
    path: &str,
) -> Result<(), EditError> {
    if let Some((Value::Object(ObjType::Text), id)) = tx.get(parent, key)? {
        tx.update_text(&id, text)?;
        return Ok(());
    }
    let id = ensure_text(tx, parent, key, path)?;
    tx.update_text(&id, text)?;
    Ok(())
}

fn put_in<T: Transactable, V: Into<ScalarValue>>(
    tx: &mut T,
    map: &str,
    key: &str,
    value: V,
) -> Result<(), EditError> {
    let obj = ensure(tx, &ROOT, map, ObjType::Map, map)?;
    tx.put(&obj, key, value)?;
    Ok(())
}

fn delete_in<T: Transactable>(tx: &mut T, map: &str, key: &str) -> Result<(), EditError> {
    let obj = match tx.get(ROOT, map)? {
        None => return Ok(()),
        Some(_) => ensure(tx, &ROOT, map, ObjType::Map, map)?,
    };
    if tx.get(&obj, key)?.is_some() {
        tx.delete(&obj, key)?;
    }
    Ok(())
}

fn push_comment<T: Transactable>(tx: &mut T, list: &str, c: &Comment) -> Result<(), EditError> {
    let list = ensure(tx, &ROOT, list, ObjType::List, list)?;
    let len = tx.length(&list);
    let obj = tx.insert_object(&list, len, ObjType::Map)?;
    tx.put(&obj, "author", c.author.as_str())?;
    put_text(tx, &obj, "text", &c.text)?;
    tx.put(&obj, "at", c.at)?;
    Ok(())
}
