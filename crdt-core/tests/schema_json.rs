//! JSON rendering of documents, now and at earlier heads.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ScalarValue, ROOT};
use crdt_core::schema::*;
use crdt_core::{Ubigeo, UserId};
use serde_json::json;

#[test]
fn small_document_renders_every_value_kind() {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    let title = tx.put_object(ROOT, "title", ObjType::Text).unwrap();
    tx.splice_text(&title, 0, 0, "Veredas en Año Nuevo")
        .unwrap();
    tx.put(ROOT, "zone", "Año Nuevo").unwrap();
    tx.put(ROOT, "cost", 12_345_678i64).unwrap();
    tx.put(ROOT, "big", u64::MAX).unwrap();
    tx.put(ROOT, "ratio", 0.5f64).unwrap();
    tx.put(ROOT, "nan", f64::NAN).unwrap();
    tx.put(ROOT, "ok", true).unwrap();
    tx.put(ROOT, "none", ScalarValue::Null).unwrap();
    tx.put(ROOT, "raw", ScalarValue::Bytes(vec![0xde, 0xad, 0x01]))
        .unwrap();
    tx.put(ROOT, "views", ScalarValue::counter(3)).unwrap();
    tx.put(ROOT, "when", ScalarValue::Timestamp(1_700_000_000_000))
        .unwrap();
    let list = tx.put_object(ROOT, "list", ObjType::List).unwrap();
    tx.insert(&list, 0, 1i64).unwrap();
    let m = tx.insert_object(&list, 1, ObjType::Map).unwrap();
    tx.put(&m, "b", "2").unwrap();
    tx.put(&m, "a", "1").unwrap();
    tx.commit();
    let first = doc.get_heads();

    let expected = json!({
        "big": u64::MAX,
        "cost": 12_345_678,
        "list": [1, {"a": "1", "b": "2"}],
        "nan": null,
        "none": null,
        "ok": true,
        "raw": "dead01",
        "ratio": 0.5,
        "title": "Veredas en Año Nuevo",
        "views": 3,
        "when": 1_700_000_000_000i64,
        "zone": "Año Nuevo",
    });
    assert_eq!(to_json(&doc), expected);
    // Keys come out sorted, so the text is deterministic too.
    assert!(serde_json::to_string(&to_json(&doc))
        .unwrap()
        .starts_with("{\"big\":"));

    let mut tx = doc.transaction();
    tx.increment(ROOT, "views", 2).unwrap();
    tx.delete(ROOT, "nan").unwrap();
    tx.commit();
    assert_eq!(to_json(&doc)["views"], 5);
    assert_eq!(to_json_at(&doc, &first), expected);
    assert_eq!(
        object_to_json(&doc, &list, None),
        json!([1, {"a": "1", "b": "2"}])
    );
}

#[test]
fn a_built_proposal_renders_with_schema_field_names() {
    let doc = NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Losa deportiva".into(),
        description: "Losa con arcos".into(),
        zone: "Collique".into(),
        category: "deporte".into(),
        beneficiaries: 900,
        estimated_cost: 26_000_000,
        cofinancing: 2_000_000,
        created_by: UserId::new("carmen").unwrap(),
        coauthors: vec![UserId::new("rosa").unwrap()],
    }
    .create(None, 1);
    assert_eq!(
        to_json(&doc),
        json!({
            "type": "proposal",
            "schemaVersion": 1,
            "district": "150110",
            "processYear": 2027,
            "title": "Losa deportiva",
            "description": "Losa con arcos",
            "zone": "Collique",
            "category": "deporte",
            "beneficiaries": 900,
            "estimatedCost": 26_000_000,
            "cofinancing": 2_000_000,
            "status": "draft",
            "createdBy": "carmen",
            "coauthors": {"rosa": true},
            "supporters": {},
            "comments": [],
            "evaluation": {},
            "scores": {},
        })
    );
    // The typed view serializes with the same field names.
    let view = serde_json::to_value(Proposal::read(&doc).unwrap()).unwrap();
    assert_eq!(view["estimatedCost"], 26_000_000);
    assert_eq!(view["type"], "proposal");
    assert_eq!(view["district"], "150110");
}
