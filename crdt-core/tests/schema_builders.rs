//! Builders write documents the views read back; edits commit one timed change each; concurrent
//! edits of containers created at birth merge field by field.

// Amounts are written soles_céntimos (`1_000_00` is S/ 1,000.00).
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::BTreeMap;

use automerge::{ActorId, ReadDoc};
use crdt_core::schema::*;
use crdt_core::{DocumentId, Ubigeo, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn new_proposal() -> NewProposal {
    NewProposal {
        district: Ubigeo::ATE,
        process_year: 2027,
        title: "Pistas y veredas en la Zona Z de Huaycán".into(),
        description: "Pavimentación de 1,2 km".into(),
        zone: "Huaycán".into(),
        category: "vías y veredas".into(),
        beneficiaries: 3_200,
        estimated_cost: 235_000_000,
        cofinancing: 12_000_000,
        created_by: user("juana"),
        coauthors: vec![user("oscar")],
    }
}

#[test]
fn proposal_round_trips_with_edits_and_history() {
    let actor = ActorId::from([7u8; 16]);
    let mut doc = new_proposal().create(Some(actor.clone()), 1_800_000_000);
    let created = doc.get_heads();
    let change = doc.get_change_by_hash(&created[0]).unwrap();
    assert_eq!(change.message(), Some("create proposal"));
    assert_eq!(change.timestamp(), 1_800_000_000);
    assert_eq!(change.actor_id(), &actor);

    let p = Proposal::read(&doc).unwrap();
    assert_eq!(p.header.doc_type, DocType::Proposal);
    assert_eq!(p.header.district, Ubigeo::ATE);
    assert_eq!(p.title, "Pistas y veredas en la Zona Z de Huaycán");
    assert_eq!(p.status, ProposalStatus::Draft);
    assert_eq!(p.estimated_cost, 235_000_000);
    assert_eq!(p.net_cost(), 223_000_000);
    assert!(p.is_author(&user("oscar")) && !p.is_author(&user("felix")));
    assert_eq!(p.evaluation, Evaluation::default());
    assert!(p.supporters.is_empty() && p.scores.is_empty() && p.comments.is_empty());

    let edits = [
        Edit::SetText {
            field: "title".into(),
            text: "Pistas y veredas en Huaycán, Zona Z".into(),
        },
        Edit::SpliceText {
            field: "description".into(),
            pos: 0,
            delete: 0,
            insert: "Obra: ".into(),
        },
        Edit::SetScalar {
            field: "beneficiaries".into(),
            value: 3_500i64.into(),
        },
        Edit::AddSupporter {
            user: user("sonia"),
            at: 1_800_000_100,
        },
        Edit::AddSupporter {
            user: user("felix"),
            at: 1_800_000_200,
        },
        Edit::RemoveSupporter(user("felix")),
        Edit::AddComment(Comment {
            author: user("sonia"),
            text: "Apoyamos".into(),
            at: 1_800_000_300,
        }),
        Edit::SetProposalStatus(ProposalStatus::Submitted),
        Edit::SetEvaluation {
            evaluator: user("jorge"),
            viable: Some(true),
            validated_cost: Some(230_000_000),
            notes: Some("Viable".into()),
        },
        Edit::SetScore {
            evaluator: user("jorge"),
            criterion: "Evaluación técnica".into(),
            score: 9,
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let hash = apply_edit(&mut doc, edit, 1_800_001_000 + i as i64)
            .unwrap()
            .expect("each edit changes something");
        let change = doc.get_change_by_hash(&hash).unwrap();
        assert_eq!(change.message(), Some(edit.message().as_str()));
        assert_eq!(change.timestamp(), 1_800_001_000 + i as i64);
    }
    // Removing an absent supporter changes nothing and commits nothing.
    assert_eq!(
        apply_edit(&mut doc, &Edit::RemoveSupporter(user("nadie")), 5).unwrap(),
        None
    );

    let p = Proposal::read(&doc).unwrap();
    assert_eq!(p.title, "Pistas y veredas en Huaycán, Zona Z");
    assert_eq!(p.description, "Obra: Pavimentación de 1,2 km");
    assert_eq!(p.beneficiaries, 3_500);
    assert_eq!(
        p.supporters,
        BTreeMap::from([(user("sonia"), 1_800_000_100)])
    );
    assert_eq!(p.comments[0].text, "Apoyamos");
    assert_eq!(p.status, ProposalStatus::Submitted);
    assert_eq!(
        p.evaluation,
        Evaluation {
            viable: Some(true),
            validated_cost: Some(230_000_000),
            notes: Some("Viable".into()),
            evaluator: Some(user("jorge")),
        }
    );
    assert_eq!(p.scores[&user("jorge")]["Evaluación técnica"], 9);

    // The past stays readable.
    let old = Proposal::read_at(&doc, &created).unwrap();
    assert_eq!(old.title, "Pistas y veredas en la Zona Z de Huaycán");
    assert_eq!(old.status, ProposalStatus::Draft);
    assert_eq!(
        DocumentHeader::read_at(&doc, &created)
            .unwrap()
            .process_year,
        2027
    );
}

#[test]
fn concurrent_evaluations_and_supporters_merge() {
    let base = new_proposal().create(None, 1);
    let mut a = base.fork();
    let mut b = base.fork();
    apply_edit(
        &mut a,
        &Edit::SetEvaluation {
            evaluator: user("jorge"),
            viable: Some(true),
            validated_cost: None,
            notes: None,
        },
        2,
    )
    .unwrap();
    apply_edit(
        &mut b,
        &Edit::SetEvaluation {
            evaluator: user("jorge"),
            viable: None,
            validated_cost: Some(100),
            notes: None,
        },
        2,
    )
    .unwrap();
    apply_edit(
        &mut a,
        &Edit::AddSupporter {
            user: user("x"),
            at: 2,
        },
        2,
    )
    .unwrap();
    apply_edit(
        &mut b,
        &Edit::AddSupporter {
            user: user("y"),
            at: 3,
        },
        3,
    )
    .unwrap();
    a.merge(&mut b).unwrap();
    let p = Proposal::read(&a).unwrap();
    assert_eq!(p.evaluation.viable, Some(true));
    assert_eq!(p.evaluation.validated_cost, Some(100));
    assert_eq!(p.supporters.len(), 2);
}

#[test]
fn acta_round_trips_and_counts_signatures() {
    let p1 = DocumentId::random();
    let new = NewActa {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Acta de formalización".into(),
        kind: ActaKind::Formalization,
        date: "2026-06-14".into(),
        place: "Auditorio municipal".into(),
        created_by: user("lucia"),
        committee_members: vec![user("elena")],
        attendees: BTreeMap::from([
            (
                user("rosa"),
                Attendee {
                    name: "Rosa Quispe".into(),
                    organization: "AA.HH. Collique".into(),
                    votes: true,
                },
            ),
            (
                user("lucia"),
                Attendee {
                    name: "Lucía Vargas".into(),
                    organization: "Municipalidad".into(),
                    votes: false,
                },
            ),
        ]),
        agreements: vec!["Priorizar la lista adjunta".into()],
        prioritized: vec![PrioritizedEntry::new(p1, 1, 100_000_00)],
    };
    let mut doc = new.create(None, 10);
    let a = Acta::read(&doc).unwrap();
    assert_eq!(a.kind, ActaKind::Formalization);
    assert_eq!(a.status, ActaStatus::Draft);
    assert_eq!(a.created_by, Some(user("lucia")));
    assert_eq!(a.agreements, vec!["Priorizar la lista adjunta".to_string()]);
    assert_eq!(a.prioritized[0].document_id(), Some(p1));
    assert_eq!(a.voter_signatures(), (0, 1));
    assert!(!a.has_signing_majority());

    for edit in [
        Edit::AddAttendee {
            user: user("julio"),
            attendee: Attendee {
                name: "Julio Mamani".into(),
                organization: "Santa Luzmila".into(),
                votes: true,
            },
        },
        Edit::AddAgreement("Elegir el comité de vigilancia".into()),
        Edit::AddPrioritized(PrioritizedEntry::new(DocumentId::random(), 2, 5_000_00)),
        Edit::AddCommitteeMember(user("julio")),
        Edit::SetActaStatus(ActaStatus::Signing),
        Edit::Sign {
            user: user("rosa"),
            signature: Signature {
                at: 20,
                device: "android".into(),
            },
        },
    ] {
        apply_edit(&mut doc, &edit, 20).unwrap();
    }
    let a = Acta::read(&doc).unwrap();
    assert_eq!(a.status, ActaStatus::Signing);
    assert_eq!(a.agreements.len(), 2);
    assert_eq!(a.prioritized.len(), 2);
    assert_eq!(a.prioritized_total(), 100_000_00 + 5_000_00);
    assert_eq!(a.committee_members.len(), 2);
    assert_eq!(a.voter_signatures(), (1, 2));
    assert!(!a.has_signing_majority(), "1 of 2 is not a majority");
    apply_edit(
        &mut doc,
        &Edit::Sign {
            user: user("julio"),
            signature: Signature {
                at: 21,
                device: "ios".into(),
            },
        },
        21,
    )
    .unwrap();
    assert!(Acta::read(&doc).unwrap().has_signing_majority());

    apply_edit(
        &mut doc,
        &Edit::RemovePrioritized {
            proposal_id: p1.to_string(),
        },
        22,
    )
    .unwrap();
    let a = Acta::read(&doc).unwrap();
    assert_eq!(a.prioritized.len(), 1);
    assert_eq!(a.prioritized[0].rank, 2);
}

#[test]
fn observation_process_and_index_round_trip() {
    let target = DocumentId::random();
    let mut obs = NewObservation {
        district: Ubigeo::ATE,
        process_year: 2027,
        target,
        kind: "agreement_not_kept".into(),
        description: "El PIA reparte en partes iguales".into(),
        evidence: vec!["PIA, página 14".into()],
        created_by: user("teresa"),
    }
    .create(None, 1);
    for edit in [
        Edit::AddEvidence("Acta, acuerdo 2".into()),
        Edit::SetObservationStatus(ObservationStatus::Sent),
        Edit::AddResponse(Comment {
            author: user("carlos"),
            text: "Se revisará".into(),
            at: 3,
        }),
    ] {
        apply_edit(&mut obs, &edit, 3).unwrap();
    }
    let o = Observation::read(&obs).unwrap();
    assert_eq!(o.target_id(), Some(target));
    assert_eq!(o.status, ObservationStatus::Sent);
    assert_eq!(
        o.evidence,
        vec![
            serde_json::json!("PIA, página 14"),
            serde_json::json!("Acta, acuerdo 2")
        ]
    );
    assert_eq!(o.responses[0].author, user("carlos"));
    assert_eq!(o.created_by, Some(user("teresa")));

    let mut process = NewProcess {
        district: Ubigeo::ATE,
        process_year: 2027,
        ceiling: 800_000_000,
        zones: BTreeMap::from([("Huaycán".to_string(), 240_000_000)]),
        phase: ProcessPhase::Concertation,
        criteria: vec![Criterion::new("Pobreza", 60), Criterion::new("Técnica", 40)],
    }
    .create(None, 1);
    apply_edit(
        &mut process,
        &Edit::SetZoneCeiling {
            zone: "Vitarte".into(),
            ceiling: 180_000_000,
        },
        2,
    )
    .unwrap();
    apply_edit(
        &mut process,
        &Edit::SetPhase(ProcessPhase::Formalization),
        2,
    )
    .unwrap();
    let p = Process::read(&process).unwrap();
    assert_eq!(p.zone_ceiling("Vitarte"), Some(180_000_000));
    assert_eq!(p.zone_ceiling("Huaycán"), Some(240_000_000));
    assert_eq!(p.phase, ProcessPhase::Formalization);
    assert_eq!(p.criteria[1], Criterion::new("Técnica", 40));

    let first = DocumentId::random();
    let new_index = NewIndex {
        district: Ubigeo::ATE,
        process_year: 2027,
        docs: BTreeMap::from([(
            first,
            IndexEntry {
                doc_type: DocType::Process,
                created_at: 1,
            },
        )]),
    };
    assert_eq!(new_index.id(), DocumentId::index_for(Ubigeo::ATE, 2027));
    let mut index = new_index.create(None, 1);
    apply_edit(
        &mut index,
        &Edit::AddToIndex {
            id: target,
            entry: IndexEntry {
                doc_type: DocType::Acta,
                created_at: 2,
            },
        },
        2,
    )
    .unwrap();
    let i = Index::read(&index).unwrap();
    assert_eq!(i.docs.len(), 2);
    assert_eq!(i.docs[&target].doc_type, DocType::Acta);
    assert!(matches!(
        AnyDocument::read(&index).unwrap(),
        AnyDocument::Index(_)
    ));
    assert_eq!(
        AnyDocument::read(&process).unwrap().status(),
        Some("formalization")
    );
}

#[test]
fn several_edits_commit_as_one_change() {
    let mut doc = new_proposal().create(None, 1);
    let before = doc.get_changes(&[]).len();
    apply_edits(
        &mut doc,
        &[
            Edit::SetProposalStatus(ProposalStatus::InEvaluation),
            Edit::SetScore {
                evaluator: user("jorge"),
                criterion: "Pobreza".into(),
                score: 7,
            },
        ],
        "start evaluation",
        9,
    )
    .unwrap();
    assert_eq!(doc.get_changes(&[]).len(), before + 1);
    let p = Proposal::read(&doc).unwrap();
    assert_eq!(p.status, ProposalStatus::InEvaluation);
    assert_eq!(p.scores[&user("jorge")]["Pobreza"], 7);
}
