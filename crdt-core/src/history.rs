//! Change history of a document: for each change, in causal order, who (actor), when, the
//! message, its dependencies, and which paths it touched with what action.
//!
//! Built by decoding each change's operations once and placing each operation's object with one
//! walk over the current document (objects no longer visible are placed through the operation
//! that made them), so the cost is linear in the number of operations rather than one diff per
//! change. Paths name list elements by their position in the
//! current document (a deleted element by where it was). Operations inside an object created by
//! the same change are folded into the operation that created it, so a new comment reads as one
//! `comments/3` insert and a retyped title as one `title` splice.

use std::collections::HashSet;

use automerge::legacy::{Key, OpType};
use automerge::{Automerge, Change, ChangeHash, Cursor, ExpandedChange, ObjType, ReadDoc};
use serde::Serialize;

use crate::permissions::ops::{display_path, Seg};
use crate::permissions::place::{exid, obj_key, op_ids, Layout, OpKey, Placer};

/// One change of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The change hash, hex.
    pub hash: String,
    /// The automerge actor id, hex (the server maps it to the user it is bound to).
    pub actor: String,
    /// The change's sequence number for its actor (1-based).
    pub seq: u64,
    /// When the change was made, unix seconds as the author's device recorded it (0: unknown).
    pub time: i64,
    /// The commit message, if any.
    pub message: Option<String>,
    /// Hashes of the changes it builds on, hex.
    pub deps: Vec<String>,
    /// What it changed, in operation order, each path and action once.
    pub changed: Vec<PathChange>,
}

/// One path a change touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PathChange {
    /// E.g. `title`, `supporters/u-1`, `comments/3`, `evaluation/viable`.
    pub path: String,
    /// What happened there.
    pub action: HistoryAction,
}

/// What an operation did at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// A map key or list element was set (to a value or a new object).
    Set,
    /// A map key or list element was deleted.
    Delete,
    /// A list element was inserted.
    Insert,
    /// Characters of a text were inserted or deleted.
    SpliceText,
    /// A counter was incremented.
    Increment,
    /// Text formatting marks were added or removed.
    Mark,
}

impl HistoryAction {
    /// The wire spelling: `set`, `delete`, `insert`, `splice_text`, `increment`, `mark`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HistoryAction::Set => "set",
            HistoryAction::Delete => "delete",
            HistoryAction::Insert => "insert",
            HistoryAction::SpliceText => "splice_text",
            HistoryAction::Increment => "increment",
            HistoryAction::Mark => "mark",
        }
    }
}

/// Every change of `doc`, in causal order.
pub fn history(doc: &Automerge) -> Vec<HistoryEntry> {
    entries(doc, doc.get_changes(&[]))
}

/// The changes of `doc` that `heads` does not already include, in causal order.
pub fn history_since(doc: &Automerge, heads: &[ChangeHash]) -> Vec<HistoryEntry> {
    entries(doc, doc.get_changes(heads))
}

/// Describes `changes` (all present in `doc`), in the order given.
pub fn entries(doc: &Automerge, changes: Vec<Change>) -> Vec<HistoryEntry> {
    let decoded: Vec<ExpandedChange> = changes.iter().map(Change::decode).collect();
    let mut placer = Placer::new(doc, vec![Layout::of(doc)]);
    for d in &decoded {
        placer.learn(d);
    }
    changes
        .iter()
        .zip(&decoded)
        .map(|(change, d)| describe(doc, &mut placer, change, d))
        .collect()
}

fn describe(
    doc: &Automerge,
    placer: &mut Placer<'_>,
    change: &Change,
    decoded: &ExpandedChange,
) -> HistoryEntry {
    let made_here: HashSet<OpKey> = decoded
        .operations
        .iter()
        .zip(op_ids(decoded))
        .filter(|(op, _)| matches!(op.action, OpType::Make(_)))
        .map(|(_, id)| id)
        .collect();
    let not_new = |_: &OpKey| false;
    let mut changed = Vec::new();
    let mut seen = HashSet::new();
    for (op, id) in decoded.operations.iter().zip(op_ids(decoded)) {
        let obj = obj_key(&op.obj);
        if obj.as_ref().is_some_and(|o| made_here.contains(o)) {
            // Folded into the operation that made the object.
            continue;
        }
        let obj_type = match &obj {
            None => ObjType::Map,
            Some(k) => doc.object_type(exid(k)).unwrap_or(ObjType::Map),
        };
        let (path, action) = if obj_type == ObjType::Text {
            let action = match op.action {
                OpType::MarkBegin(_) | OpType::MarkEnd(_) => HistoryAction::Mark,
                _ => HistoryAction::SpliceText,
            };
            (placer.path(obj.as_ref(), not_new), action)
        } else {
            let action = match op.action {
                _ if op.insert => HistoryAction::Insert,
                OpType::Make(_) | OpType::Put(_) => HistoryAction::Set,
                OpType::Delete => HistoryAction::Delete,
                OpType::Increment(_) => HistoryAction::Increment,
                OpType::MarkBegin(_) | OpType::MarkEnd(_) => HistoryAction::Mark,
            };
            let mut path = placer.path(obj.as_ref(), not_new);
            match (&op.key, &obj) {
                (Key::Map(k), _) => path.push(Seg::Key(k.to_string())),
                (Key::Seq(elem), Some(list)) => {
                    let elem = if op.insert {
                        Some(id.clone())
                    } else {
                        elem.as_opid().map(|o| (o.counter(), o.actor().clone()))
                    };
                    // An element no longer visible: where it was just after it was inserted,
                    // or just before it was overwritten or deleted.
                    let hash = [change.hash()];
                    let seen_at = if op.insert { &hash[..] } else { change.deps() };
                    let index = elem.as_ref().and_then(|e| {
                        placer
                            .element_index(list, e)
                            .or_else(|| index_when_seen(doc, list, e, seen_at))
                    });
                    path.push(Seg::Elem {
                        id: String::new(),
                        index,
                        new: false,
                    });
                }
                (Key::Seq(_), None) => {}
            }
            (path, action)
        };
        let entry = PathChange {
            path: display_path(&path),
            action,
        };
        if seen.insert(entry.clone()) {
            changed.push(entry);
        }
    }
    HistoryEntry {
        hash: change.hash().to_string(),
        actor: change.actor_id().to_hex_string(),
        seq: change.seq(),
        time: change.timestamp(),
        message: change.message().map(str::to_owned),
        deps: change.deps().iter().map(ToString::to_string).collect(),
        changed,
    }
}

/// The position a since-deleted list element had at `heads`.
fn index_when_seen(
    doc: &Automerge,
    list: &OpKey,
    elem: &OpKey,
    heads: &[ChangeHash],
) -> Option<usize> {
    let cursor = Cursor::try_from(format!("{}@{}", elem.0, elem.1)).ok()?;
    doc.get_cursor_position(exid(list), &cursor, Some(heads))
        .ok()
}
