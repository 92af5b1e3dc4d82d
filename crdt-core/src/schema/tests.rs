//! Unit tests of schema v1 readers on deliberately malformed and foreign-written documents.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ScalarValue, ROOT};

use super::*;
use crate::ids::{Ubigeo, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn proposal() -> NewProposal {
    NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Escaleras en Collique".into(),
        description: "Escaleras de concreto".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 300,
        estimated_cost: 12_000_000,
        cofinancing: 0,
        created_by: user("rosa"),
        coauthors: vec![],
    }
}

/// A valid proposal with one more change made by `f`.
fn proposal_with(f: impl FnOnce(&mut automerge::transaction::Transaction<'_>)) -> Automerge {
    let mut doc = proposal().create(None, 1);
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit();
    doc
}

#[test]
fn missing_fields_name_their_path() {
    let doc = proposal_with(|tx| tx.delete(ROOT, "title").unwrap());
    assert_eq!(
        Proposal::read(&doc),
        Err(SchemaError::Missing("title".into()))
    );

    let doc = proposal_with(|tx| {
        let comments = tx.get(ROOT, "comments").unwrap().unwrap().1;
        let c = tx.insert_object(&comments, 0, ObjType::Map).unwrap();
        tx.put(&c, "text", "hola").unwrap();
        tx.put(&c, "at", 5i64).unwrap();
    });
    assert_eq!(
        Proposal::read(&doc),
        Err(SchemaError::Missing("comments[0].author".into()))
    );

    let doc = proposal_with(|tx| tx.delete(ROOT, "type").unwrap());
    assert_eq!(
        DocumentHeader::read(&doc),
        Err(SchemaError::Missing("type".into()))
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let doc = proposal_with(|tx| tx.put(ROOT, "estimatedCost", "mucho").unwrap());
    assert_eq!(
        Proposal::read(&doc),
        Err(SchemaError::WrongType {
            path: "estimatedCost".into(),
            expected: "integer",
            found: "string".into()
        })
    );

    let doc = proposal_with(|tx| {
        let supporters = tx.get(ROOT, "supporters").unwrap().unwrap().1;
        tx.put(&supporters, "julio", true).unwrap();
    });
    assert!(matches!(
        Proposal::read(&doc),
        Err(SchemaError::WrongType { path, found, .. }) if path == "supporters.julio" && found == "boolean"
    ));

    let doc = proposal_with(|tx| {
        tx.put_object(ROOT, "scores", ObjType::List).unwrap();
    });
    assert!(matches!(
        Proposal::read(&doc),
        Err(SchemaError::WrongType { path, expected: "map", found }) if path == "scores" && found == "list"
    ));
}

#[test]
fn unknown_enum_values_are_reported() {
    let doc = proposal_with(|tx| tx.put(ROOT, "status", "approved").unwrap());
    assert_eq!(
        Proposal::read(&doc),
        Err(SchemaError::UnknownValue {
            path: "status".into(),
            value: "approved".into()
        })
    );
    let doc = proposal_with(|tx| tx.put(ROOT, "type", "budget").unwrap());
    assert_eq!(
        DocumentHeader::read(&doc),
        Err(SchemaError::UnknownValue {
            path: "type".into(),
            value: "budget".into()
        })
    );
}

#[test]
fn wrong_doc_type_and_version_are_refused() {
    let doc = proposal().create(None, 1);
    assert_eq!(
        Acta::read(&doc),
        Err(SchemaError::WrongDocType {
            expected: DocType::Acta,
            found: "proposal".into()
        })
    );
    let doc = proposal_with(|tx| tx.put(ROOT, "schemaVersion", 2i64).unwrap());
    assert_eq!(
        Proposal::read(&doc),
        Err(SchemaError::UnsupportedVersion(2))
    );
    assert_eq!(
        AnyDocument::read(&doc),
        Err(SchemaError::UnsupportedVersion(2))
    );
}

#[test]
fn invalid_values_are_reported() {
    let doc = proposal_with(|tx| tx.put(ROOT, "district", "999999").unwrap());
    assert!(matches!(
        DocumentHeader::read(&doc),
        Err(SchemaError::Invalid { path, .. }) if path == "district"
    ));
    let doc = proposal_with(|tx| tx.put(ROOT, "processYear", 70_000i64).unwrap());
    assert!(matches!(
        Proposal::read(&doc),
        Err(SchemaError::Invalid { path, .. }) if path == "processYear"
    ));
    let doc = proposal_with(|tx| tx.put(ROOT, "beneficiaries", 2.5f64).unwrap());
    assert!(matches!(
        Proposal::read(&doc),
        Err(SchemaError::Invalid { path, .. }) if path == "beneficiaries"
    ));
    let doc = proposal_with(|tx| tx.put(ROOT, "createdBy", "").unwrap());
    assert!(matches!(
        Proposal::read(&doc),
        Err(SchemaError::Invalid { path, .. }) if path == "createdBy"
    ));
}

#[test]
fn readers_accept_what_the_js_client_writes() {
    // Plain strings as scalars, numbers as uint/f64, the ubigeo as a number, a Date as timestamp,
    // containers missing altogether.
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "type", "proposal").unwrap();
    tx.put(ROOT, "schemaVersion", 1.0f64).unwrap();
    tx.put(ROOT, "district", 150110i64).unwrap();
    tx.put(ROOT, "processYear", 2027u64).unwrap();
    tx.put(ROOT, "title", "Veredas").unwrap();
    tx.put(ROOT, "zone", "Collique").unwrap();
    tx.put(ROOT, "category", "vías y veredas").unwrap();
    tx.put(ROOT, "estimatedCost", 5_000_000u64).unwrap();
    tx.put(ROOT, "cofinancing", ScalarValue::Null).unwrap();
    tx.put(ROOT, "status", "submitted").unwrap();
    tx.put(ROOT, "createdBy", "rosa").unwrap();
    let supporters = tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
    tx.put(
        &supporters,
        "julio",
        ScalarValue::Timestamp(1_700_000_000_123),
    )
    .unwrap();
    let coauthors = tx.put_object(ROOT, "coauthors", ObjType::Map).unwrap();
    tx.put(&coauthors, "carmen", true).unwrap();
    tx.put(&coauthors, "ex", false).unwrap();
    tx.commit();

    let p = Proposal::read(&doc).unwrap();
    assert_eq!(p.header.district, Ubigeo::COMAS);
    assert_eq!(p.header.process_year, 2027);
    assert_eq!(p.title, "Veredas");
    assert_eq!(p.description, "");
    assert_eq!(p.estimated_cost, 5_000_000);
    assert_eq!(p.cofinancing, 0);
    assert_eq!(p.supporters[&user("julio")], 1_700_000_000);
    assert_eq!(
        p.coauthors.iter().collect::<Vec<_>>(),
        vec![&user("carmen")]
    );
    assert!(p.comments.is_empty());
    assert_eq!(p.evaluation, Evaluation::default());
}

#[test]
fn header_and_any_document_dispatch() {
    let doc = proposal().create(None, 1);
    let header = DocumentHeader::read(&doc).unwrap();
    assert_eq!(header.doc_type, DocType::Proposal);
    assert_eq!(header.schema_version, SCHEMA_VERSION);
    let any = AnyDocument::read(&doc).unwrap();
    assert_eq!(any.doc_type(), DocType::Proposal);
    assert_eq!(any.status(), Some("draft"));
    assert_eq!(any.header(), &header);
}

#[test]
fn edits_refuse_containers_of_the_wrong_type() {
    let mut doc = proposal_with(|tx| {
        tx.put(ROOT, "supporters", "nadie").unwrap();
    });
    let heads = doc.get_heads();
    let err = apply_edit(
        &mut doc,
        &Edit::AddSupporter {
            user: user("julio"),
            at: 3,
        },
        3,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        EditError::Schema(SchemaError::WrongType { ref path, expected: "map", .. }) if path == "supporters"
    ));
    assert_eq!(doc.get_heads(), heads, "nothing committed");
}

#[test]
fn edits_turn_scalar_strings_into_text() {
    let mut doc = proposal_with(|tx| tx.put(ROOT, "title", "Veredas").unwrap());
    let edit = Edit::SpliceText {
        field: "title".into(),
        pos: 7,
        delete: 0,
        insert: " nuevas".into(),
    };
    apply_edit(&mut doc, &edit, 9).unwrap();
    let (value, _) = doc.get(ROOT, "title").unwrap().unwrap();
    assert_eq!(value, automerge::Value::Object(ObjType::Text));
    assert_eq!(Proposal::read(&doc).unwrap().title, "Veredas nuevas");
}
