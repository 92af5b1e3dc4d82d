//! What the rules need to know about one state of a document, read leniently from automerge.
//!
//! Readers accept a string field written either as automerge Text (the stock JS client) or as a
//! scalar string (the SDK), and integers written as int, uint or whole floats.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

/// The few facts about a document state that permission rules depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocFacts {
    /// Root `type`, as written (not validated).
    pub doc_type: Option<String>,
    /// Root `schemaVersion`.
    pub schema_version: Option<i64>,
    /// Root `district`, as written (not validated).
    pub district: Option<String>,
    /// Root `processYear`.
    pub process_year: Option<i64>,
    /// Root `status`, as written.
    pub status: Option<String>,
    /// Proposal `createdBy`.
    pub created_by: Option<String>,
    /// Proposal `coauthors` keys whose value is `true`.
    pub coauthors: BTreeSet<String>,
    /// Acta `attendees` keys whose entry has `votes: true`.
    pub voting_attendees: BTreeSet<String>,
    /// Author of each entry of the append-only list of the document (`comments` of a proposal,
    /// `responses` of an observation), keyed by the entry's object id (`counter@actor`).
    /// `None` when the entry has no readable `author`.
    pub entry_authors: BTreeMap<String, Option<String>>,
}

impl DocFacts {
    /// Reads the facts from the current state of `doc`.
    pub fn read(doc: &Automerge) -> Self {
        let doc_type = read_str(doc, &ROOT, "type");
        let entries_key = match doc_type.as_deref() {
            Some("proposal") => Some("comments"),
            Some("observation") => Some("responses"),
            _ => None,
        };
        Self {
            schema_version: read_int(doc, &ROOT, "schemaVersion"),
            // A JS client may write the ubigeo as a number.
            district: read_str(doc, &ROOT, "district")
                .or_else(|| read_int(doc, &ROOT, "district").map(|d| format!("{d:06}"))),
            process_year: read_int(doc, &ROOT, "processYear"),
            status: read_str(doc, &ROOT, "status"),
            created_by: read_str(doc, &ROOT, "createdBy"),
            coauthors: map_keys_where(
                doc,
                "coauthors",
                |doc, obj, key| matches!(doc.get(obj, key), Ok(Some((Value::Scalar(v), _))) if v.as_bool() == Some(true)),
            ),
            voting_attendees: map_keys_where(doc, "attendees", |doc, obj, key| {
                child_obj(doc, obj, key)
                    .is_some_and(|entry| read_bool(doc, &entry, "votes") == Some(true))
            }),
            entry_authors: entries_key
                .map(|k| list_authors(doc, k))
                .unwrap_or_default(),
            doc_type,
        }
    }
}

/// A string at `obj[key]`, whether Text or a scalar string.
pub(crate) fn read_str(doc: &Automerge, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        _ => None,
    }
}

/// A whole number at `obj[key]` (int, uint or a whole float).
pub(crate) fn read_int(doc: &Automerge, obj: &ObjId, key: &str) -> Option<i64> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => scalar_int(&s),
        _ => None,
    }
}

fn scalar_int(s: &ScalarValue) -> Option<i64> {
    match s {
        ScalarValue::Int(i) => Some(*i),
        ScalarValue::Uint(u) => i64::try_from(*u).ok(),
        ScalarValue::F64(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

fn read_bool(doc: &Automerge, obj: &ObjId, key: &str) -> Option<bool> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => s.as_bool(),
        _ => None,
    }
}

/// The map or list object at `obj[key]`.
fn child_obj(doc: &Automerge, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (Value::Object(ObjType::Map | ObjType::Table | ObjType::List), id) => Some(id),
        _ => None,
    }
}

fn map_keys_where(
    doc: &Automerge,
    field: &str,
    keep: impl Fn(&Automerge, &ObjId, &str) -> bool,
) -> BTreeSet<String> {
    let Some(map) = child_obj(doc, &ROOT, field) else {
        return BTreeSet::new();
    };
    doc.keys(&map).filter(|k| keep(doc, &map, k)).collect()
}

fn list_authors(doc: &Automerge, field: &str) -> BTreeMap<String, Option<String>> {
    let Some(list) = child_obj(doc, &ROOT, field) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for i in 0..doc.length(&list) {
        if let Ok(Some((Value::Object(ObjType::Map | ObjType::Table), entry))) = doc.get(&list, i) {
            out.insert(entry.to_string(), read_str(doc, &entry, "author"));
        }
    }
    out
}
