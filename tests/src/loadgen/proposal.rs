//! Schema-v1 proposal documents and the offline edits a phone makes to them.

use anyhow::{anyhow, Result};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};

/// The district every benchmark document and user belongs to (Comas).
pub const DISTRICT: &str = "150110";
pub const PROCESS_YEAR: i64 = 2027;

const ZONES: &[&str] = &["Zona 1", "Zona 2", "Zona 3", "Zona 4", "Zona 5"];
const CATEGORIES: &[&str] = &[
    "infraestructura",
    "salud",
    "educacion",
    "ambiente",
    "seguridad",
];

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A new proposal created by `created_by` with every user in `coauthors` as co-author: one change.
pub fn new_proposal(
    actor: ActorId,
    index: usize,
    created_by: &str,
    coauthors: &[String],
) -> Result<Automerge> {
    let mut doc = Automerge::new().with_actor(actor);
    let at = now_secs();
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| {
            CommitOptions::default()
                .with_message("create proposal")
                .with_time(at)
        },
        |tx| {
            tx.put(ROOT, "type", "proposal")?;
            tx.put(ROOT, "schemaVersion", 1_i64)?;
            tx.put(ROOT, "district", DISTRICT)?;
            tx.put(ROOT, "processYear", PROCESS_YEAR)?;
            let title = tx.put_object(ROOT, "title", ObjType::Text)?;
            tx.splice_text(
                &title,
                0,
                0,
                &format!("Mejoramiento de la losa deportiva del sector {index}"),
            )?;
            let description = tx.put_object(ROOT, "description", ObjType::Text)?;
            tx.splice_text(
                &description,
                0,
                0,
                "Construcción de graderías, cerco perimétrico e iluminación para la losa \
                 deportiva, que hoy usan más de 300 vecinos sin condiciones de seguridad.",
            )?;
            tx.put(ROOT, "zone", ZONES[index % ZONES.len()])?;
            tx.put(ROOT, "category", CATEGORIES[index % CATEGORIES.len()])?;
            tx.put(ROOT, "beneficiaries", 300_i64 + index as i64)?;
            tx.put(
                ROOT,
                "estimatedCost",
                45_000_000_i64 + 10_000 * index as i64,
            )?;
            tx.put(ROOT, "cofinancing", 2_000_000_i64)?;
            tx.put(ROOT, "status", "draft")?;
            tx.put(ROOT, "createdBy", created_by)?;
            let co = tx.put_object(ROOT, "coauthors", ObjType::Map)?;
            for user in coauthors {
                tx.put(&co, user.as_str(), true)?;
            }
            tx.put_object(ROOT, "supporters", ObjType::Map)?;
            tx.put_object(ROOT, "comments", ObjType::List)?;
            Ok(())
        },
    )
    .map_err(|f| anyhow!("creating proposal: {}", f.error))?;
    Ok(doc)
}

fn obj(doc: &Automerge, key: &str) -> Result<ObjId> {
    match doc.get(ROOT, key)? {
        Some((Value::Object(_), id)) => Ok(id),
        _ => Err(anyhow!("proposal has no object `{key}`")),
    }
}

/// One offline edit by `user`, as one automerge change. `n` picks the kind of edit:
/// a splice into `description`, a comment appended to `comments`, or `supporters/<user>` set.
pub fn edit(doc: &mut Automerge, user: &str, n: usize) -> Result<()> {
    let at = now_secs();
    let kind = n % 3;
    let description = obj(doc, "description")?;
    let comments = obj(doc, "comments")?;
    let supporters = obj(doc, "supporters")?;
    let desc_len = doc.length(&description);
    let comments_len = doc.length(&comments);
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(at),
        |tx| {
            match kind {
                0 => {
                    let pos = (n * 7919) % (desc_len + 1);
                    tx.splice_text(&description, pos, 0, &format!(" (aporte {user} #{n})"))?;
                }
                1 => {
                    let c = tx.insert_object(&comments, comments_len, ObjType::Map)?;
                    tx.put(&c, "author", user)?;
                    let t = tx.put_object(&c, "text", ObjType::Text)?;
                    tx.splice_text(
                        &t,
                        0,
                        0,
                        &format!("Propongo priorizar el tramo {n}; lo acordamos en la asamblea."),
                    )?;
                    tx.put(&c, "at", at)?;
                }
                _ => {
                    tx.put(&supporters, user, at + n as i64)?;
                }
            }
            Ok(())
        },
    )
    .map_err(|f| anyhow!("editing proposal: {}", f.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_one_change_each() {
        let users = vec!["u0".to_string(), "u1".to_string()];
        let mut doc = new_proposal(ActorId::random(), 3, "u0", &users).unwrap();
        assert_eq!(doc.get_changes(&[]).len(), 1);
        for n in 0..6 {
            edit(&mut doc, "u1", n).unwrap();
        }
        assert_eq!(doc.get_changes(&[]).len(), 7);
        assert_eq!(doc.length(obj(&doc, "comments").unwrap()), 2);
    }
}
