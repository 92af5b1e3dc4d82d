//! Change history: a proposal edited by two actors, with messages and times.

use std::time::Instant;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use crdt_core::history::{history, history_since, HistoryAction, HistoryEntry, PathChange};

const T0: i64 = 1_790_000_000;

fn commit(doc: &mut Automerge, message: &str, time: i64, f: impl FnOnce(&mut Transaction<'_>)) {
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit_with(
        CommitOptions::default()
            .with_message(message)
            .with_time(time),
    );
}

fn at(tx: &Transaction<'_>, key: &str) -> automerge::ObjId {
    tx.get(ROOT, key).unwrap().unwrap().1
}

fn changed(entry: &HistoryEntry) -> Vec<(String, HistoryAction)> {
    entry
        .changed
        .iter()
        .map(|c| (c.path.clone(), c.action))
        .collect()
}

fn pc(path: &str, action: HistoryAction) -> (String, HistoryAction) {
    (path.to_string(), action)
}

/// Ana creates a proposal; offline, Beto fixes the title while Ana gathers support and a
/// comment; then they merge, Ana edits the comment and Beto evaluates and deletes it.
fn two_actor_doc() -> (Automerge, ActorId, ActorId, Vec<automerge::ChangeHash>) {
    let ana = ActorId::from(&b"ana-phone"[..]);
    let beto = ActorId::from(&b"beto-laptop"[..]);
    let mut a = Automerge::new().with_actor(ana.clone());
    commit(&mut a, "create proposal", T0, |tx| {
        tx.put(ROOT, "type", "proposal").unwrap();
        tx.put(ROOT, "district", "150110").unwrap();
        let t = tx.put_object(ROOT, "title", ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, "Veredas").unwrap();
        tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
        tx.put_object(ROOT, "comments", ObjType::List).unwrap();
        tx.put_object(ROOT, "evaluation", ObjType::Map).unwrap();
    });
    let created = a.get_heads();
    let mut b = a.fork().with_actor(beto.clone());
    commit(&mut b, "fix title", T0 + 10, |tx| {
        let t = at(tx, "title");
        tx.splice_text(&t, 7, 0, " en Comas").unwrap();
    });
    commit(&mut a, "support and comment", T0 + 20, |tx| {
        let s = at(tx, "supporters");
        tx.put(&s, "u-1", T0 + 20).unwrap();
        let c = at(tx, "comments");
        let m = tx.insert_object(&c, 0, ObjType::Map).unwrap();
        tx.put(&m, "author", "u-1").unwrap();
        let text = tx.put_object(&m, "text", ObjType::Text).unwrap();
        tx.splice_text(&text, 0, 0, "Urgente").unwrap();
    });
    a.merge(&mut b).unwrap();
    commit(&mut a, "edit comment", T0 + 30, |tx| {
        let c = at(tx, "comments");
        let m = tx.get(&c, 0).unwrap().unwrap().1;
        let text = tx.get(&m, "text").unwrap().unwrap().1;
        tx.splice_text(&text, 0, 0, "¡").unwrap();
    });
    b.merge(&mut a).unwrap();
    commit(
        &mut b,
        "evaluate, drop the comment and a supporter",
        T0 + 40,
        |tx| {
            let e = at(tx, "evaluation");
            tx.put(&e, "viable", true).unwrap();
            let c = at(tx, "comments");
            tx.delete(&c, 0).unwrap();
            let s = at(tx, "supporters");
            tx.delete(&s, "u-1").unwrap();
        },
    );
    (b, ana, beto, created)
}

#[test]
fn history_lists_every_change_in_causal_order_with_actor_time_message_and_paths() {
    let (doc, ana, beto, _) = two_actor_doc();
    let h = history(&doc);
    assert_eq!(h.len(), 5);

    // Causal order: every dependency appears before the change that names it.
    for (i, e) in h.iter().enumerate() {
        for d in &e.deps {
            let pos = h
                .iter()
                .position(|x| &x.hash == d)
                .expect("dependency is in the history");
            assert!(
                pos < i,
                "{} comes after its dependency",
                e.message.as_deref().unwrap()
            );
        }
    }

    let by_message = |m: &str| h.iter().find(|e| e.message.as_deref() == Some(m)).unwrap();
    let create = by_message("create proposal");
    assert_eq!(create.actor, ana.to_hex_string());
    assert_eq!(create.seq, 1);
    assert_eq!(create.time, T0);
    assert!(create.deps.is_empty());
    assert_eq!(create.hash, doc.get_changes(&[])[0].hash().to_string());
    // The new title's characters are folded into the `title` set.
    assert_eq!(
        changed(create),
        vec![
            pc("type", HistoryAction::Set),
            pc("district", HistoryAction::Set),
            pc("title", HistoryAction::Set),
            pc("supporters", HistoryAction::Set),
            pc("comments", HistoryAction::Set),
            pc("evaluation", HistoryAction::Set),
        ]
    );

    let fix = by_message("fix title");
    assert_eq!(fix.actor, beto.to_hex_string());
    assert_eq!((fix.seq, fix.time), (1, T0 + 10));
    assert_eq!(fix.deps, vec![create.hash.clone()]);
    assert_eq!(changed(fix), vec![pc("title", HistoryAction::SpliceText)]);

    let support = by_message("support and comment");
    assert_eq!(
        (support.actor.as_str(), support.seq),
        (ana.to_hex_string().as_str(), 2)
    );
    assert_eq!(
        changed(support),
        vec![
            pc("supporters/u-1", HistoryAction::Set),
            pc("comments/0", HistoryAction::Insert)
        ]
    );

    let edit = by_message("edit comment");
    assert_eq!(edit.deps.len(), 2, "made after merging both branches");
    // The comment is deleted by now: its path comes from the operation that made it.
    assert_eq!(
        changed(edit),
        vec![pc("comments/?/text", HistoryAction::SpliceText)]
    );

    let last = by_message("evaluate, drop the comment and a supporter");
    assert_eq!(
        (last.actor.as_str(), last.seq, last.time),
        (beto.to_hex_string().as_str(), 2, T0 + 40)
    );
    assert_eq!(
        changed(last),
        vec![
            pc("evaluation/viable", HistoryAction::Set),
            pc("comments/0", HistoryAction::Delete),
            pc("supporters/u-1", HistoryAction::Delete),
        ]
    );
}

#[test]
fn history_since_heads_lists_only_later_changes() {
    let (doc, _, _, created) = two_actor_doc();
    let all = history(&doc);
    let since = history_since(&doc, &created);
    assert_eq!(since.len(), all.len() - 1);
    assert!(since
        .iter()
        .all(|e| e.message.as_deref() != Some("create proposal")));
    assert!(history_since(&doc, &doc.get_heads()).is_empty());
}

#[test]
fn history_serializes_for_the_api() {
    let (doc, _, _, _) = two_actor_doc();
    let json = serde_json::to_value(history(&doc)).unwrap();
    let fix = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"] == "fix title")
        .unwrap();
    assert_eq!(fix["time"], T0 + 10);
    assert_eq!(fix["changed"][0]["path"], "title");
    assert_eq!(fix["changed"][0]["action"], "splice_text");
    assert_eq!(
        PathChange {
            path: "x".into(),
            action: HistoryAction::SpliceText
        }
        .action
        .as_str(),
        "splice_text"
    );
}

#[test]
fn history_of_a_few_thousand_changes_is_quick() {
    let mut doc = Automerge::new().with_actor(ActorId::from(&b"busy"[..]));
    commit(&mut doc, "create", T0, |tx| {
        tx.put_object(ROOT, "title", ObjType::Text).unwrap();
        tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
        tx.put_object(ROOT, "comments", ObjType::List).unwrap();
    });
    for i in 0..3000i64 {
        commit(&mut doc, "typing", T0 + i, |tx| {
            let t = at(tx, "title");
            let len = tx.length(&t);
            tx.splice_text(&t, len, 0, "a").unwrap();
            if i % 10 == 0 {
                let s = at(tx, "supporters");
                tx.put(&s, format!("u-{i}").as_str(), i).unwrap();
                let c = at(tx, "comments");
                let n = tx.length(&c);
                let m = tx.insert_object(&c, n, ObjType::Map).unwrap();
                tx.put(&m, "author", "u").unwrap();
            }
        });
    }
    let started = Instant::now();
    let h = history(&doc);
    let took = started.elapsed();
    assert_eq!(h.len(), 3001);
    assert_eq!(
        changed(&h[1]),
        vec![
            pc("title", HistoryAction::SpliceText),
            pc("supporters/u-0", HistoryAction::Set),
            pc("comments/0", HistoryAction::Insert)
        ]
    );
    assert_eq!(
        changed(&h[2991]).last().unwrap(),
        &pc("comments/299", HistoryAction::Insert)
    );
    println!("history of 3001 changes: {took:?}");
    assert!(took.as_secs() < 20, "history took {took:?}");
}
