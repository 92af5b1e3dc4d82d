//! The demo data reads back as schema v1, is stable, and its actas fit their ceilings.

// Amounts are written soles_céntimos (`1_000_00` is S/ 1,000.00).
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::{BTreeMap, BTreeSet};

use crdt_core::demo::{demo_actor, demo_documents, demo_users, DemoDoc, SERVER_USER};
use crdt_core::schema::*;
use crdt_core::{DocumentId, Ubigeo, UserId};

const YEAR: u16 = 2027;
const NOW: i64 = 1_780_000_000;

fn by_district(docs: &[DemoDoc], district: Ubigeo) -> Vec<&DemoDoc> {
    docs.iter().filter(|d| d.district == district).collect()
}

#[test]
fn every_demo_document_reads_back_with_its_declared_type_and_district() {
    let docs = demo_documents(YEAR, NOW);
    let districts: BTreeSet<_> = docs.iter().map(|d| d.district).collect();
    assert_eq!(
        districts,
        BTreeSet::from([Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES, Ubigeo::ATE])
    );
    let ids: BTreeSet<_> = docs.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), docs.len(), "ids are unique");
    for d in &docs {
        let any = AnyDocument::read(&d.doc).unwrap_or_else(|e| panic!("{:?}: {e}", d.doc_type));
        assert_eq!(any.doc_type(), d.doc_type);
        assert_eq!(any.header().district, d.district);
        assert_eq!(any.header().process_year, YEAR);
        for change in d.doc.get_changes(&[]) {
            assert_eq!(change.timestamp(), NOW);
            assert!(change.message().is_some());
        }
    }
}

#[test]
fn each_district_has_process_proposals_acta_and_an_index_of_all() {
    let docs = demo_documents(YEAR, NOW);
    for district in [Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES, Ubigeo::ATE] {
        let mine = by_district(&docs, district);
        let count = |t: DocType| mine.iter().filter(|d| d.doc_type == t).count();
        assert_eq!(count(DocType::Process), 1);
        assert_eq!(count(DocType::Index), 1);
        assert_eq!(count(DocType::Acta), 1);
        assert!((4..=6).contains(&count(DocType::Proposal)));

        let index_doc = mine.iter().find(|d| d.doc_type == DocType::Index).unwrap();
        assert_eq!(index_doc.id, DocumentId::index_for(district, YEAR));
        let index = Index::read(&index_doc.doc).unwrap();
        let listed: BTreeMap<_, _> = index.docs.iter().map(|(id, e)| (*id, e.doc_type)).collect();
        let expected: BTreeMap<_, _> = mine
            .iter()
            .filter(|d| d.doc_type != DocType::Index)
            .map(|d| (d.id, d.doc_type))
            .collect();
        assert_eq!(listed, expected);

        let process = mine
            .iter()
            .find(|d| d.doc_type == DocType::Process)
            .unwrap();
        let process = Process::read(&process.doc).unwrap();
        assert!(process_warnings(&process).is_empty(), "{district:?}");
    }
}

#[test]
fn demo_actas_have_no_budget_violations() {
    let docs = demo_documents(YEAR, NOW);
    for district in [Ubigeo::COMAS, Ubigeo::SAN_JUAN_DE_MIRAFLORES, Ubigeo::ATE] {
        let mine = by_district(&docs, district);
        let process = Process::read(
            &mine
                .iter()
                .find(|d| d.doc_type == DocType::Process)
                .unwrap()
                .doc,
        )
        .unwrap();
        let proposals: Vec<(DocumentId, Proposal)> = mine
            .iter()
            .filter(|d| d.doc_type == DocType::Proposal)
            .map(|d| (d.id, Proposal::read(&d.doc).unwrap()))
            .collect();
        let ctx = BudgetContext::new(
            Some(process.clone()),
            proposals.iter().map(|(id, p)| (*id, p)),
        );
        for d in &mine {
            let any = AnyDocument::read(&d.doc).unwrap();
            let ws = warnings(&any, &ctx);
            assert!(ws.is_empty(), "{district:?} {:?}: {ws:#?}", d.doc_type);
        }
        let acta = mine.iter().find(|d| d.doc_type == DocType::Acta).unwrap();
        let acta = Acta::read(&acta.doc).unwrap();
        assert!(!acta.prioritized.is_empty());
        assert!(budget_violations(&process, &acta, &ctx.proposal_zones).is_empty());
    }
}

#[test]
fn demo_has_varied_statuses_and_realistic_content() {
    let docs = demo_documents(YEAR, NOW);
    let proposals: Vec<Proposal> = docs
        .iter()
        .filter(|d| d.doc_type == DocType::Proposal)
        .map(|d| Proposal::read(&d.doc).unwrap())
        .collect();
    let statuses: BTreeSet<_> = proposals.iter().map(|p| p.status).collect();
    assert!(statuses.len() >= 7, "{statuses:?}");
    let categories: BTreeSet<_> = proposals.iter().map(|p| p.category.as_str()).collect();
    for c in [
        "vías y veredas",
        "agua y saneamiento",
        "seguridad ciudadana",
        "áreas verdes",
        "deporte",
    ] {
        assert!(categories.contains(c), "{c}");
    }
    let zones: BTreeSet<_> = proposals.iter().map(|p| p.zone.as_str()).collect();
    for z in ["Collique", "Pamplona Alta", "Huaycán"] {
        assert!(zones.contains(z), "{z}");
    }
    let min = proposals.iter().map(|p| p.estimated_cost).min().unwrap();
    let max = proposals.iter().map(|p| p.estimated_cost).max().unwrap();
    assert!(
        (10_000_00..100_000_00).contains(&min),
        "tens of thousands of soles"
    );
    assert!(
        (1_000_000_00..10_000_000_00).contains(&max),
        "a few million soles"
    );
    assert!(proposals.iter().any(|p| !p.supporters.is_empty()));
    assert!(proposals.iter().any(|p| !p.comments.is_empty()));
    assert!(proposals.iter().any(|p| p.evaluation.viable == Some(true)));

    let actas: Vec<Acta> = docs
        .iter()
        .filter(|d| d.doc_type == DocType::Acta)
        .map(|d| Acta::read(&d.doc).unwrap())
        .collect();
    assert!(actas.iter().any(|a| a.has_signing_majority()));
    assert!(actas
        .iter()
        .all(|a| !a.attendees.is_empty() && !a.agreements.is_empty()));
    assert!(docs.iter().any(|d| d.doc_type == DocType::Observation));
}

#[test]
fn demo_is_stable_and_written_by_its_users_actors() {
    let a = demo_documents(YEAR, NOW);
    let b = demo_documents(YEAR, NOW);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.doc.get_heads(), y.doc.get_heads());
    }

    let users = demo_users();
    let mut actors: BTreeMap<_, UserId> = users
        .iter()
        .map(|u| (demo_actor(&u.id), u.id.clone()))
        .collect();
    let server = UserId::new(SERVER_USER).unwrap();
    actors.insert(demo_actor(&server), server);
    for d in &a {
        for change in d.doc.get_changes(&[]) {
            let author = actors
                .get(change.actor_id())
                .unwrap_or_else(|| panic!("unknown actor in {:?}", d.doc_type));
            if d.doc_type == DocType::Index {
                assert_eq!(author.as_str(), SERVER_USER);
            }
        }
        if let Ok(p) = Proposal::read(&d.doc) {
            // A proposal's first change is made by its author.
            let first = &d.doc.get_changes(&[])[0];
            assert_eq!(actors[first.actor_id()], p.created_by);
            assert!(users
                .iter()
                .any(|u| u.id == p.created_by && u.district == d.district));
        }
    }
}
