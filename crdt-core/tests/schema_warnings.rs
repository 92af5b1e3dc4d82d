//! Validation warnings and the budget checks that block sealing.

// Amounts are written soles_céntimos (`1_000_00` is S/ 1,000.00).
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::BTreeMap;

use crdt_core::schema::*;
use crdt_core::{DocumentId, Ubigeo, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn codes(ws: &[Warning]) -> Vec<WarningCode> {
    ws.iter().map(|w| w.code).collect()
}

fn process(ceiling: i64, zones: &[(&str, i64)], weights: &[i64]) -> Process {
    let doc = NewProcess {
        district: Ubigeo::COMAS,
        process_year: 2027,
        ceiling,
        zones: zones.iter().map(|(z, c)| (z.to_string(), *c)).collect(),
        phase: ProcessPhase::Concertation,
        criteria: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Criterion::new(format!("c{i}"), *w))
            .collect(),
    }
    .create(None, 1);
    Process::read(&doc).unwrap()
}

fn acta(entries: Vec<PrioritizedEntry>) -> Acta {
    let doc = NewActa {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Acta".into(),
        kind: ActaKind::Formalization,
        date: "2026-06-14".into(),
        place: "Comas".into(),
        created_by: user("lucia"),
        committee_members: vec![],
        attendees: BTreeMap::new(),
        agreements: vec![],
        prioritized: entries,
    }
    .create(None, 1);
    Acta::read(&doc).unwrap()
}

fn proposal(cost: i64, cofinancing: i64, zone: &str) -> Proposal {
    let doc = NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "t".into(),
        description: String::new(),
        zone: zone.into(),
        category: "deporte".into(),
        beneficiaries: 10,
        estimated_cost: cost,
        cofinancing,
        created_by: user("rosa"),
        coauthors: vec![],
    }
    .create(None, 1);
    Proposal::read(&doc).unwrap()
}

#[test]
fn proposal_cost_warnings() {
    let ctx = BudgetContext::default();
    assert!(proposal_warnings(&proposal(1_000_00, 0, "Collique"), &ctx).is_empty());
    assert_eq!(
        codes(&proposal_warnings(&proposal(0, 0, "Collique"), &ctx)),
        vec![WarningCode::CostNotPositive]
    );
    let ws = proposal_warnings(&proposal(1_000_00, 2_000_00, "Collique"), &ctx);
    assert_eq!(codes(&ws), vec![WarningCode::CofinancingExceedsCost]);
    assert_eq!(ws[0].path, "cofinancing");
    assert_eq!(
        ws[0].message,
        "co-financing S/ 2,000.00 is more than the estimated cost S/ 1,000.00"
    );
    assert_eq!(
        codes(&proposal_warnings(
            &proposal(1_000_00, -1, "Collique"),
            &ctx
        )),
        vec![WarningCode::CofinancingNegative]
    );

    let ctx = BudgetContext {
        process: Some(process(100, &[("Collique", 100)], &[])),
        proposal_zones: BTreeMap::new(),
    };
    let ws = warnings(
        &AnyDocument::Proposal(proposal(1_000_00, 0, "Kollique")),
        &ctx,
    );
    assert_eq!(codes(&ws), vec![WarningCode::UnknownZone]);
    assert_eq!(ws[0].path, "zone");
}

#[test]
fn process_ceiling_and_weight_warnings() {
    assert!(
        process_warnings(&process(10_000, &[("A", 6_000), ("B", 4_000)], &[60, 40])).is_empty()
    );
    let ws = process_warnings(&process(10_000, &[("A", 6_000), ("B", 5_000)], &[60, 30]));
    assert_eq!(
        codes(&ws),
        vec![
            WarningCode::ZoneCeilingsOverCeiling,
            WarningCode::CriteriaWeightsNot100
        ]
    );
    assert_eq!(
        ws[0].message,
        "zone ceilings add up to S/ 110.00, over the district ceiling S/ 100.00 by S/ 10.00"
    );
    let ws = process_warnings(&process(10_000, &[("A", 12_000), ("B", 0)], &[]));
    assert_eq!(
        codes(&ws),
        vec![
            WarningCode::CeilingNotPositive,
            WarningCode::ZoneCeilingOverCeiling,
            WarningCode::ZoneCeilingsOverCeiling
        ]
    );
    assert_eq!(ws[0].path, "zones.B");
    assert_eq!(ws[1].path, "zones.A");
}

#[test]
fn acta_local_warnings_without_a_process() {
    let p = DocumentId::random();
    let q = DocumentId::random();
    let a = acta(vec![
        PrioritizedEntry::new(p, 1, 100),
        PrioritizedEntry::new(q, 1, 100),
        PrioritizedEntry::new(p, 0, 0),
        PrioritizedEntry {
            proposal_id: "no-es-un-id".into(),
            rank: 3,
            amount: 100,
        },
    ]);
    let ws = acta_warnings(&a, &BudgetContext::default());
    assert_eq!(
        codes(&ws),
        vec![
            WarningCode::DuplicateRank,
            WarningCode::RankNotPositive,
            WarningCode::DuplicateProposal,
            WarningCode::AmountNotPositive,
            WarningCode::InvalidProposalId,
        ]
    );
    assert_eq!(ws[0].path, "prioritized[1].rank");
    assert_eq!(ws[4].path, "prioritized[3].proposalId");
}

#[test]
fn budget_violations_say_what_is_over_which_ceiling() {
    let (a1, a2, b1, c1) = (
        DocumentId::random(),
        DocumentId::random(),
        DocumentId::random(),
        DocumentId::random(),
    );
    let zones = BTreeMap::from([
        (a1, "Collique".to_string()),
        (a2, "Collique".to_string()),
        (b1, "Año Nuevo".to_string()),
        (c1, "Atlántida".to_string()),
    ]);
    let pr = process(
        3_000_000_00,
        &[("Collique", 1_500_000_00), ("Año Nuevo", 1_500_000_00)],
        &[],
    );

    // Within every ceiling: nothing.
    let ok = acta(vec![
        PrioritizedEntry::new(a1, 1, 1_000_000_00),
        PrioritizedEntry::new(a2, 2, 500_000_00),
        PrioritizedEntry::new(b1, 3, 1_500_000_00),
    ]);
    assert!(budget_violations(&pr, &ok, &zones).is_empty());

    // Collique over its ceiling, total over the district's.
    let over = acta(vec![
        PrioritizedEntry::new(a1, 1, 1_000_000_00),
        PrioritizedEntry::new(a2, 2, 734_567_89),
        PrioritizedEntry::new(b1, 3, 1_500_000_00),
    ]);
    let ws = budget_violations(&pr, &over, &zones);
    assert_eq!(
        codes(&ws),
        vec![WarningCode::ZoneOverCeiling, WarningCode::TotalOverCeiling]
    );
    assert_eq!(
        ws[0].message,
        "zone Collique: prioritized S/ 1,734,567.89 is over the zone ceiling S/ 1,500,000.00 by S/ 234,567.89"
    );
    assert_eq!(
        ws[1].message,
        "prioritized total S/ 3,234,567.89 is over the district ceiling S/ 3,000,000.00 by S/ 234,567.89"
    );

    // Entries that cannot be checked block sealing too.
    let unknown = acta(vec![
        PrioritizedEntry::new(DocumentId::random(), 1, 100),
        PrioritizedEntry::new(c1, 2, 100),
    ]);
    assert_eq!(
        codes(&budget_violations(&pr, &unknown, &zones)),
        vec![WarningCode::UnknownProposal, WarningCode::UnknownZone]
    );

    // The same through `warnings` with a context.
    let ctx = BudgetContext {
        process: Some(pr.clone()),
        proposal_zones: zones.clone(),
    };
    assert_eq!(
        codes(&warnings(&AnyDocument::Acta(over), &ctx)),
        vec![WarningCode::ZoneOverCeiling, WarningCode::TotalOverCeiling]
    );

    // A process of another district does not vouch for this acta.
    let mut other = pr;
    other.header.district = Ubigeo::ATE;
    assert_eq!(
        codes(&budget_violations(&other, &ok, &zones)),
        vec![WarningCode::ProcessMismatch]
    );
}

#[test]
fn signatures_by_non_voters_and_bad_targets_are_flagged() {
    let mut doc = NewActa {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Acta".into(),
        kind: ActaKind::Workshop,
        date: String::new(),
        place: String::new(),
        created_by: user("lucia"),
        committee_members: vec![],
        attendees: BTreeMap::new(),
        agreements: vec![],
        prioritized: vec![],
    }
    .create(None, 1);
    apply_edit(
        &mut doc,
        &Edit::Sign {
            user: user("intruso"),
            signature: Signature {
                at: 1,
                device: "x".into(),
            },
        },
        1,
    )
    .unwrap();
    let ws = warnings(&AnyDocument::read(&doc).unwrap(), &BudgetContext::default());
    assert_eq!(codes(&ws), vec![WarningCode::SignatureNotVoter]);
    assert_eq!(ws[0].path, "signatures.intruso");

    let mut obs = NewObservation {
        district: Ubigeo::COMAS,
        process_year: 2027,
        target: DocumentId::random(),
        kind: "irregularity".into(),
        description: String::new(),
        evidence: vec![],
        created_by: user("elena"),
    }
    .create(None, 1);
    let ok = Observation::read(&obs).unwrap();
    assert!(observation_warnings(&ok).is_empty());
    apply_edit(
        &mut obs,
        &Edit::SetScalar {
            field: "target".into(),
            value: "automerge:xyz".into(),
        },
        2,
    )
    .unwrap();
    let bad = Observation::read(&obs).unwrap();
    assert_eq!(
        codes(&observation_warnings(&bad)),
        vec![WarningCode::InvalidTarget]
    );
}

#[test]
fn warnings_serialize_with_snake_case_codes() {
    let w = &proposal_warnings(&proposal(0, 0, "x"), &BudgetContext::default())[0];
    let json = serde_json::to_value(w).unwrap();
    assert_eq!(json["code"], "cost_not_positive");
    assert_eq!(json["path"], "estimatedCost");
    assert_eq!(w.code.as_str(), "cost_not_positive");
}
