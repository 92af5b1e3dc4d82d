//! Document builders shared by the system tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod misbehave;

use automerge::{ActorId, Automerge};
use crdt_core::schema::{apply_edit, Edit, NewDocument, NewProposal};
use crdt_core::{Ubigeo, UserId};

pub fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A fresh proposal created by `by` in `district`, with `coauthors`.
pub fn proposal(district: Ubigeo, by: &str, title: &str, coauthors: &[&str]) -> Automerge {
    NewProposal {
        district,
        process_year: 2027,
        title: title.into(),
        description: "Veredas y rampas para la zona".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 1200,
        estimated_cost: 35_000_000,
        cofinancing: 0,
        created_by: user(by),
        coauthors: coauthors.iter().map(|c| user(c)).collect(),
    }
    .create(Some(ActorId::random()), 1_790_000_000)
}

/// Appends `text` to the description as one change.
pub fn append_description(doc: &mut Automerge, text: &str) {
    let len = automerge::ReadDoc::text(
        doc,
        automerge::ReadDoc::get(doc, automerge::ROOT, "description")
            .unwrap()
            .unwrap()
            .1,
    )
    .unwrap()
    .chars()
    .count();
    apply_edit(
        doc,
        &Edit::SpliceText {
            field: "description".into(),
            pos: len,
            delete: 0,
            insert: text.into(),
        },
        1_790_000_100,
    )
    .unwrap();
}

/// Forks a document with a fresh actor.
pub fn fork(doc: &Automerge) -> Automerge {
    doc.fork().with_actor(ActorId::random())
}
