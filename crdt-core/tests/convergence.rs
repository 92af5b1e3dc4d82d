//! Convergence: 3–5 replicas forked from one created proposal (and one acta) edit offline with
//! the schema's typed edits, then merge in random orders. Every replica ends with the same heads
//! and the same JSON, and the permission function gives the same decision for the merged batch
//! whichever replica it is read from and in whatever order its changes arrive.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge, Change, ReadDoc, ScalarValue, ROOT};
use crdt_core::permissions::{check_changes, Decision, Principal};
use crdt_core::schema::{
    apply_edit, to_json, ActaKind, ActaStatus, Attendee, Comment, Edit, NewActa, NewDocument,
    NewProposal, ProposalStatus, Signature,
};
use crdt_core::{DistrictScope, Role, Ubigeo, UserId};
use proptest::prelude::*;

const T0: i64 = 1_790_000_000;
const USERS: [&str; 4] = ["u-lead", "u-co", "u-other", "u-tec"];

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn principal(u: &str, roles: &[Role]) -> Principal {
    Principal::new(
        user(u),
        roles.iter().copied(),
        DistrictScope::One(Ubigeo::COMAS),
    )
}

/// Principals whose decisions over the merged batch must not depend on the merge order.
fn judges() -> Vec<Principal> {
    vec![
        principal("u-lead", &[Role::Leader]),
        principal("u-tec", &[Role::Tecnico]),
    ]
}

fn base_proposal() -> Automerge {
    NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Veredas en la Av. Túpac Amaru".into(),
        description: "300 m de veredas".into(),
        zone: "zona-1".into(),
        category: "vias".into(),
        beneficiaries: 1200,
        estimated_cost: 45_000_000,
        cofinancing: 5_000_000,
        created_by: user("u-lead"),
        coauthors: vec![user("u-co")],
    }
    .create(Some(ActorId::from(&b"creator"[..])), T0)
}

fn base_acta() -> Automerge {
    let attendees: BTreeMap<UserId, Attendee> = [("u-lead", true), ("u-other", false)]
        .into_iter()
        .map(|(u, votes)| {
            (
                user(u),
                Attendee {
                    name: u.into(),
                    organization: "OSB".into(),
                    votes,
                },
            )
        })
        .collect();
    NewActa {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Taller de priorización".into(),
        kind: ActaKind::Workshop,
        date: "2027-05-10".into(),
        place: "Local comunal".into(),
        created_by: user("u-tec"),
        committee_members: vec![],
        attendees,
        agreements: vec![],
        prioritized: vec![],
    }
    .create(Some(ActorId::from(&b"creator"[..])), T0)
}

/// One offline edit, with small random parameters.
#[derive(Debug, Clone)]
enum Step {
    Title(String),
    Splice {
        pos: usize,
        delete: usize,
        insert: String,
    },
    Zone(u8),
    Support {
        user: usize,
        add: bool,
    },
    Comment {
        user: usize,
        text: String,
    },
    ProposalStatus(usize),
    Evaluate {
        viable: bool,
        cost: i64,
    },
    Score {
        criterion: u8,
        score: i64,
    },
    Attendee {
        user: usize,
        votes: bool,
    },
    Agreement(String),
    Sign(usize),
    ActaStatus(bool),
}

fn words() -> impl Strategy<Value = String> {
    "[a-záéñ ]{0,8}"
}

fn proposal_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        words().prop_map(Step::Title),
        (0usize..40, 0usize..5, words()).prop_map(|(pos, delete, insert)| Step::Splice {
            pos,
            delete,
            insert
        }),
        any::<u8>().prop_map(|z| Step::Zone(z % 4)),
        (0..USERS.len(), any::<bool>()).prop_map(|(user, add)| Step::Support { user, add }),
        (0..USERS.len(), words()).prop_map(|(user, text)| Step::Comment { user, text }),
        (0..ProposalStatus::ALL.len()).prop_map(Step::ProposalStatus),
        (any::<bool>(), 0i64..100_000_000)
            .prop_map(|(viable, cost)| Step::Evaluate { viable, cost }),
        (0u8..3, 0i64..5).prop_map(|(criterion, score)| Step::Score { criterion, score }),
    ]
}

fn acta_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        words().prop_map(Step::Title),
        (0usize..40, 0usize..5, words()).prop_map(|(pos, delete, insert)| Step::Splice {
            pos,
            delete,
            insert
        }),
        (0..USERS.len(), any::<bool>()).prop_map(|(user, votes)| Step::Attendee { user, votes }),
        words().prop_map(Step::Agreement),
        (0..USERS.len()).prop_map(Step::Sign),
        any::<bool>().prop_map(Step::ActaStatus),
    ]
}

/// The schema edit a step makes on `doc` (positions clamped to the current title).
fn to_edit(doc: &Automerge, step: &Step, at: i64) -> Edit {
    match step.clone() {
        Step::Title(text) => Edit::SetText {
            field: "title".into(),
            text,
        },
        Step::Splice {
            pos,
            delete,
            insert,
        } => {
            let len = match doc.get(ROOT, "title") {
                Ok(Some((_, id))) => doc.length(&id),
                _ => 0,
            };
            let pos = pos.min(len);
            Edit::SpliceText {
                field: "title".into(),
                pos,
                delete: delete.min(len - pos),
                insert,
            }
        }
        Step::Zone(z) => Edit::SetScalar {
            field: "zone".into(),
            value: ScalarValue::Str(format!("zona-{z}").into()),
        },
        Step::Support { user: u, add: true } => Edit::AddSupporter {
            user: user(USERS[u]),
            at,
        },
        Step::Support {
            user: u,
            add: false,
        } => Edit::RemoveSupporter(user(USERS[u])),
        Step::Comment { user: u, text } => Edit::AddComment(Comment {
            author: user(USERS[u]),
            text,
            at,
        }),
        Step::ProposalStatus(i) => Edit::SetProposalStatus(ProposalStatus::ALL[i]),
        Step::Evaluate { viable, cost } => Edit::SetEvaluation {
            evaluator: user("u-tec"),
            viable: Some(viable),
            validated_cost: Some(cost),
            notes: Some(format!("costo {cost}")),
        },
        Step::Score { criterion, score } => Edit::SetScore {
            evaluator: user("u-tec"),
            criterion: format!("c{criterion}"),
            score,
        },
        Step::Attendee { user: u, votes } => Edit::AddAttendee {
            user: user(USERS[u]),
            attendee: Attendee {
                name: USERS[u].into(),
                organization: "OSB".into(),
                votes,
            },
        },
        Step::Agreement(text) => Edit::AddAgreement(text),
        Step::Sign(u) => Edit::Sign {
            user: user(USERS[u]),
            signature: Signature {
                at,
                device: format!("phone-{u}"),
            },
        },
        Step::ActaStatus(signing) => Edit::SetActaStatus(if signing {
            ActaStatus::Signing
        } else {
            ActaStatus::Draft
        }),
    }
}

/// A deterministic shuffle (xorshift), so a failing case replays from its seed.
fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    seed |= 1;
    for i in (1..out.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    out
}

/// Forks `base` into one replica per session, applies each session offline, merges every replica
/// with the others in a seeded random order, and checks they converged and are judged alike.
fn converge(base: &Automerge, sessions: &[Vec<Step>], seed: u64) -> Result<(), TestCaseError> {
    let mut replicas: Vec<Automerge> = sessions
        .iter()
        .enumerate()
        .map(|(i, steps)| {
            let mut doc = base.fork().with_actor(ActorId::from([i as u8 + 1; 16]));
            for (k, step) in steps.iter().enumerate() {
                let at = T0 + 60 * (k as i64 + 1);
                let edit = to_edit(&doc, step, at);
                apply_edit(&mut doc, &edit, at).unwrap();
            }
            doc
        })
        .collect();
    let snapshots: Vec<Automerge> = replicas.iter().map(Automerge::fork).collect();
    for (i, replica) in replicas.iter_mut().enumerate() {
        let others: Vec<usize> = (0..snapshots.len()).filter(|&j| j != i).collect();
        for j in shuffled(&others, seed.wrapping_add(i as u64 * 7919)) {
            replica.merge(&mut snapshots[j].fork()).unwrap();
        }
    }

    let heads = replicas[0].get_heads();
    let json = to_json(&replicas[0]);
    for r in &replicas[1..] {
        prop_assert_eq!(&r.get_heads(), &heads);
        prop_assert_eq!(&to_json(r), &json);
    }

    // Each replica's own order of the batch, and one shuffled order.
    let base_heads = base.get_heads();
    let mut batches: Vec<Vec<Change>> = replicas
        .iter()
        .map(|r| r.get_changes(&base_heads))
        .collect();
    batches.push(shuffled(&batches[0], seed ^ 0x9e37_79b9_7f4a_7c15));
    for judge in judges() {
        let decision: Decision = check_changes(&judge, base, &batches[0]);
        for batch in &batches[1..] {
            prop_assert_eq!(&check_changes(&judge, base, batch), &decision);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn proposal_replicas_converge_and_are_judged_alike(
        sessions in prop::collection::vec(prop::collection::vec(proposal_step(), 0..6), 3..=5),
        seed in any::<u64>(),
    ) {
        converge(&base_proposal(), &sessions, seed)?;
    }

    #[test]
    fn acta_replicas_converge_and_are_judged_alike(
        sessions in prop::collection::vec(prop::collection::vec(acta_step(), 0..6), 3..=5),
        seed in any::<u64>(),
    ) {
        converge(&base_acta(), &sessions, seed)?;
    }
}

#[test]
fn base_documents_pass_their_creators_permissions() {
    let empty = Automerge::new();
    let leader = principal("u-lead", &[Role::Leader]);
    let tecnico = principal("u-tec", &[Role::Tecnico]);
    assert_eq!(
        check_changes(&leader, &empty, &base_proposal().get_changes(&[])),
        Decision::Allowed
    );
    assert_eq!(
        check_changes(&tecnico, &empty, &base_acta().get_changes(&[])),
        Decision::Allowed
    );
}
