//! Undoing and redoing refused changes: the set a rejection removes, the document without it,
//! and the refused content written again as a new change.

use std::collections::{HashMap, HashSet};

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjId, ObjType, PatchAction, Value};

/// `roots` and every change of `doc` that depends on one of them, directly or not.
pub fn with_descendants(doc: &Automerge, roots: &[ChangeHash]) -> HashSet<ChangeHash> {
    let mut bad: HashSet<ChangeHash> = roots.iter().copied().collect();
    let changes = doc.get_changes_meta(&[]);
    loop {
        let before = bad.len();
        for c in &changes {
            if !bad.contains(&c.hash) && c.deps.iter().any(|d| bad.contains(d)) {
                bad.insert(c.hash);
            }
        }
        if bad.len() == before {
            return bad;
        }
    }
}

/// `doc` without the changes in `drop` (which must be closed under descendants).
pub fn without(doc: &Automerge, drop: &HashSet<ChangeHash>) -> Result<Automerge, AutomergeError> {
    let keep = doc
        .get_changes(&[])
        .into_iter()
        .filter(|c| !drop.contains(&c.hash()))
        .collect::<Vec<_>>();
    let mut clean = Automerge::new();
    clean.apply_changes(keep)?;
    Ok(clean)
}

/// Writes into `tx` (a transaction on a document at `before`) what `full` changed between
/// `before` and `after`: the content of the dropped changes, as new operations.
pub fn replay<T: Transactable>(
    tx: &mut T,
    full: &Automerge,
    before: &[ChangeHash],
    after: &[ChangeHash],
) -> Result<(), AutomergeError> {
    let mut ids: HashMap<ObjId, ObjId> = HashMap::new();
    for patch in full.diff(before, after) {
        let obj = ids.get(&patch.obj).cloned().unwrap_or(patch.obj.clone());
        match patch.action {
            PatchAction::PutMap {
                key,
                value: (value, id),
                ..
            } => match value {
                Value::Object(t) => {
                    let new = tx.put_object(&obj, key.as_str(), t)?;
                    ids.insert(id, new);
                }
                Value::Scalar(s) => tx.put(&obj, key.as_str(), s.into_owned())?,
            },
            PatchAction::PutSeq {
                index,
                value: (value, id),
                ..
            } => match value {
                Value::Object(t) => {
                    let new = tx.put_object(&obj, index, t)?;
                    ids.insert(id, new);
                }
                Value::Scalar(s) => tx.put(&obj, index, s.into_owned())?,
            },
            PatchAction::Insert { index, values } => {
                for (i, (value, id, _)) in values.iter().enumerate() {
                    match value {
                        Value::Object(t) => {
                            let new = tx.insert_object(&obj, index + i, *t)?;
                            ids.insert(id.clone(), new);
                        }
                        Value::Scalar(s) => {
                            tx.insert(&obj, index + i, s.clone().into_owned())?;
                        }
                    }
                }
            }
            PatchAction::SpliceText { index, value, .. } => {
                tx.splice_text(&obj, index, 0, &value.make_string())?;
            }
            PatchAction::Increment { prop, value } => tx.increment(&obj, prop, value)?,
            PatchAction::DeleteMap { key } => tx.delete(&obj, key.as_str())?,
            PatchAction::DeleteSeq { index, length } => {
                if tx.object_type(&obj)? == ObjType::Text {
                    tx.splice_text(&obj, index, length as isize, "")?;
                } else {
                    for _ in 0..length {
                        tx.delete(&obj, index)?;
                    }
                }
            }
            PatchAction::Conflict { .. } | PatchAction::Mark { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ReadDoc, ROOT};

    #[test]
    fn refused_content_is_written_again_on_the_clean_document() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let title = tx.put_object(ROOT, "title", ObjType::Text).unwrap();
        tx.splice_text(&title, 0, 0, "Veredas").unwrap();
        tx.put(ROOT, "cost", 100).unwrap();
        tx.put_object(ROOT, "comments", ObjType::List).unwrap();
        tx.commit();
        let accepted = doc.get_heads();
        // The refused change: a text edit, a scalar, a new nested object in a list.
        let mut tx = doc.transaction();
        tx.splice_text(&title, 7, 0, " nuevas").unwrap();
        tx.put(ROOT, "cost", 250).unwrap();
        let comments = tx.get(ROOT, "comments").unwrap().unwrap().1;
        let c = tx.insert_object(&comments, 0, ObjType::Map).unwrap();
        tx.put(&c, "author", "u-1").unwrap();
        tx.commit();
        let refused = doc.get_heads()[0];
        // A later change on top of it is dropped too.
        let mut tx = doc.transaction();
        tx.put(ROOT, "later", true).unwrap();
        tx.commit();

        let drop = with_descendants(&doc, &[refused]);
        assert_eq!(drop.len(), 2);
        let clean = without(&doc, &drop).unwrap();
        assert_eq!(clean.get_heads(), accepted);
        assert_eq!(clean.text(&title).unwrap(), "Veredas");

        let mut redone = clean.fork();
        let mut tx = redone.transaction();
        replay(&mut tx, &doc, &accepted, &doc.get_heads()).unwrap();
        tx.commit();
        assert_eq!(
            crdt_core::schema::to_json(&redone),
            crdt_core::schema::to_json(&doc)
        );
        assert_eq!(redone.get_changes(&accepted).len(), 1);
    }
}
