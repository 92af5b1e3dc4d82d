//! Fuzzing harnesses, shared by the cargo-fuzz targets in `fuzz/` and by the regression tests
//! that replay the inputs kept in `fuzz/regressions/`, so a replayed input runs exactly the code
//! the fuzzer ran. Built only with the `fuzzing` feature; not part of the crate's API.
//!
//! [`permission_check`] reads a small program from the input with [`arbitrary`]: a valid schema
//! document (proposal, acta, observation, process, index, or nothing), some edits that become
//! part of the judged "before" state, then forks under several actors that apply raw automerge
//! operations (at schema keys and arbitrary ones) and typed [`Edit`]s and merge each other. The
//! resulting changes, some dropped and the rest shuffled, are judged for an arbitrary
//! [`Principal`]. It asserts that nothing panics and that the decision is deterministic: the
//! same batch judged twice, or in another order, gets the same [`Decision`].

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::ids::{DistrictScope, DocumentId, Role, Ubigeo, UserId};
use crate::permissions::{check_and_apply, check_changes, Decision, Principal};
use crate::schema::{
    apply_edits, ActaKind, ActaStatus, Attendee, Comment, Criterion, DocType, Edit, IndexEntry,
    NewActa, NewDocument, NewIndex, NewObservation, NewProcess, NewProposal, ObservationStatus,
    PrioritizedEntry, ProcessPhase, ProposalStatus, Signature,
};

/// The year every fuzzed document belongs to.
pub const YEAR: u16 = 2027;

/// The users the harnesses act as. The first is the creator of every base document.
pub const USERS: [&str; 5] = [
    "u-leader",
    "u-leader-2",
    "u-tecnico",
    "u-vigilancia",
    "u-admin",
];

/// Root and nested keys worth hitting: the schema's, user ids, and a few that are not.
const KEYS: [&str; 44] = [
    "type",
    "schemaVersion",
    "district",
    "processYear",
    "title",
    "description",
    "zone",
    "category",
    "beneficiaries",
    "estimatedCost",
    "cofinancing",
    "status",
    "createdBy",
    "coauthors",
    "supporters",
    "comments",
    "evaluation",
    "scores",
    "viable",
    "validatedCost",
    "notes",
    "evaluator",
    "author",
    "text",
    "at",
    "kind",
    "date",
    "place",
    "attendees",
    "agreements",
    "prioritized",
    "committeeMembers",
    "signatures",
    "device",
    "target",
    "evidence",
    "responses",
    "ceiling",
    "zones",
    "phase",
    "criteria",
    "docs",
    "u-leader",
    "x-unknown",
];

/// String values worth writing: statuses, types, districts, user ids.
const STRINGS: [&str; 24] = [
    "draft",
    "submitted",
    "in_evaluation",
    "observed",
    "eligible",
    "ineligible",
    "prioritized",
    "not_prioritized",
    "withdrawn",
    "signing",
    "sealed",
    "open",
    "sent",
    "answered",
    "closed",
    "proposal",
    "acta",
    "observation",
    "process",
    "index",
    "150110",
    "150103",
    "u-leader",
    "u-tecnico",
];

/// The actor a harness uses for user `i` of [`USERS`], fork `f`.
pub fn actor(user: usize, fork: usize) -> ActorId {
    ActorId::from(vec![0xa0 + user as u8, fork as u8, 0x5a, 0x5a])
}

/// A user id of [`USERS`].
pub fn user(i: usize) -> UserId {
    UserId::new(USERS[i % USERS.len()]).expect("harness user ids are valid")
}

/// The base documents a harness starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    Empty,
    Proposal,
    Acta,
    Observation,
    Process,
    Index,
}

impl BaseKind {
    pub const ALL: [BaseKind; 6] = [
        BaseKind::Empty,
        BaseKind::Proposal,
        BaseKind::Acta,
        BaseKind::Observation,
        BaseKind::Process,
        BaseKind::Index,
    ];
}

/// A small valid document of `kind` in `district`, created by user 0 of [`USERS`] (its
/// actor is [`actor`]`(0, 0)`), or an empty document.
pub fn base_document(kind: BaseKind, district: Ubigeo) -> Automerge {
    let creator = user(0);
    let a = Some(actor(0, 0));
    let at = 1_800_000_000;
    match kind {
        BaseKind::Empty => Automerge::new(),
        BaseKind::Proposal => NewProposal {
            district,
            process_year: YEAR,
            title: "Veredas".into(),
            description: "Tramo 1".into(),
            zone: "Collique".into(),
            category: "vías y veredas".into(),
            beneficiaries: 10,
            estimated_cost: 10_000,
            cofinancing: 0,
            created_by: creator,
            coauthors: vec![user(1)],
        }
        .create(a, at),
        BaseKind::Acta => {
            let mut attendees = BTreeMap::new();
            for (i, name) in USERS.iter().enumerate().take(3) {
                attendees.insert(
                    user(i),
                    Attendee {
                        name: name.to_string(),
                        organization: "org".into(),
                        votes: i != 2,
                    },
                );
            }
            NewActa {
                district,
                process_year: YEAR,
                title: "Taller".into(),
                kind: ActaKind::Workshop,
                date: "2027-05-14".into(),
                place: "Local".into(),
                created_by: creator,
                committee_members: vec![user(3)],
                attendees,
                agreements: vec!["Uno".into()],
                prioritized: vec![],
            }
            .create(a, at)
        }
        BaseKind::Observation => NewObservation {
            district,
            process_year: YEAR,
            target: DocumentId::from_bytes([7; 16]),
            kind: "irregularity".into(),
            description: "falta".into(),
            evidence: vec!["foto".into()],
            created_by: creator,
        }
        .create(a, at),
        BaseKind::Process => NewProcess {
            district,
            process_year: YEAR,
            ceiling: 1_000_000,
            zones: [("Collique".to_string(), 500_000)].into_iter().collect(),
            phase: ProcessPhase::Concertation,
            criteria: vec![Criterion::new("impacto", 3)],
        }
        .create(a, at),
        BaseKind::Index => NewIndex {
            district,
            process_year: YEAR,
            docs: BTreeMap::new(),
        }
        .create(a, at),
    }
}

fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Result<&'a T> {
    u.choose(items)
}

fn small_string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok(pick(u, &STRINGS)?.to_string())
    } else {
        let s: String = u.arbitrary()?;
        Ok(s.chars().take(24).collect())
    }
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    match u.int_in_range(0..=9)? {
        0 => Ok(USERS[u.choose_index(USERS.len())?].to_string()),
        1 => small_string(u),
        _ => Ok(pick(u, &KEYS)?.to_string()),
    }
}

/// An arbitrary scalar, biased to the types the schema uses.
pub fn scalar(u: &mut Unstructured<'_>) -> Result<ScalarValue> {
    Ok(match u.int_in_range(0..=9)? {
        0..=3 => ScalarValue::Str(small_string(u)?.into()),
        4 | 5 => ScalarValue::Int(u.arbitrary()?),
        6 => ScalarValue::Uint(u.arbitrary()?),
        7 => ScalarValue::F64(u.arbitrary()?),
        8 => ScalarValue::Boolean(u.arbitrary()?),
        _ => match u.int_in_range(0..=3)? {
            0 => ScalarValue::Null,
            1 => ScalarValue::Counter(u.arbitrary::<i64>()?.into()),
            2 => ScalarValue::Timestamp(u.arbitrary()?),
            _ => ScalarValue::Bytes(u.arbitrary::<Vec<u8>>()?),
        },
    })
}

/// Every object of `doc` up to depth 3, with its type (the root first).
pub fn objects(doc: &Automerge) -> Vec<(ObjId, ObjType)> {
    let mut out = vec![(ROOT, ObjType::Map)];
    let mut i = 0;
    while i < out.len() && out.len() < 64 {
        let (obj, _) = out[i].clone();
        let depth_ok = i < 40;
        i += 1;
        if !depth_ok {
            continue;
        }
        let children: Vec<(ObjId, ObjType)> = match doc.object_type(&obj) {
            Ok(ObjType::Map) | Ok(ObjType::Table) => doc
                .keys(&obj)
                .filter_map(|k| match doc.get(&obj, k.as_str()) {
                    Ok(Some((Value::Object(t), id))) => Some((id, t)),
                    _ => None,
                })
                .collect(),
            Ok(ObjType::List) => (0..doc.length(&obj))
                .filter_map(|i| match doc.get(&obj, i) {
                    Ok(Some((Value::Object(t), id))) => Some((id, t)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        out.extend(children);
    }
    out
}

/// Applies 1..=4 raw operations to `doc` as one change (errors from automerge are ignored: a
/// rejected operation is simply not part of the change).
pub fn raw_ops(u: &mut Unstructured<'_>, doc: &mut Automerge) -> Result<()> {
    let objs = objects(doc);
    let n = u.int_in_range(1..=4)?;
    let mut tx = doc.transaction();
    for _ in 0..n {
        let (obj, obj_type) = pick(u, &objs)?.clone();
        match obj_type {
            ObjType::Map | ObjType::Table => {
                let k = key(u)?;
                let _ = match u.int_in_range(0..=5)? {
                    0..=2 => tx.put(&obj, k.as_str(), scalar(u)?).map(|_| ()),
                    3 => {
                        let t = *pick(u, &[ObjType::Map, ObjType::List, ObjType::Text])?;
                        tx.put_object(&obj, k.as_str(), t).map(|_| ())
                    }
                    4 => tx.delete(&obj, k.as_str()),
                    _ => tx.increment(&obj, k.as_str(), u.arbitrary()?),
                };
            }
            ObjType::List => {
                let len = tx.length(&obj);
                let pos = u.int_in_range(0..=len)?;
                let _ = match u.int_in_range(0..=4)? {
                    0 => tx.insert(&obj, pos, scalar(u)?).map(|_| ()),
                    1 => {
                        let t = *pick(u, &[ObjType::Map, ObjType::List, ObjType::Text])?;
                        tx.insert_object(&obj, pos, t).map(|_| ())
                    }
                    2 => tx.put(&obj, pos, scalar(u)?).map(|_| ()),
                    3 => tx.delete(&obj, pos),
                    _ => tx.increment(&obj, pos, u.arbitrary()?),
                };
            }
            ObjType::Text => {
                let len = tx.length(&obj);
                let pos = u.int_in_range(0..=len)?;
                let del = u.int_in_range(0..=(len - pos).min(4))? as isize;
                let text = small_string(u)?;
                let _ = tx.splice_text(&obj, pos, del, &text);
            }
        }
    }
    tx.commit();
    Ok(())
}

/// An arbitrary typed edit.
pub fn edit(u: &mut Unstructured<'_>) -> Result<Edit> {
    let who = user(u.choose_index(USERS.len())?);
    let at = u.int_in_range(0..=2_000_000_000)?;
    Ok(match u.int_in_range(0..=22)? {
        0 => Edit::SetText {
            field: key(u)?,
            text: small_string(u)?,
        },
        1 => Edit::SpliceText {
            field: key(u)?,
            pos: u.int_in_range(0..=8)?,
            delete: u.int_in_range(0..=8)?,
            insert: small_string(u)?,
        },
        2 => Edit::SetScalar {
            field: key(u)?,
            value: scalar(u)?,
        },
        3 => Edit::SetProposalStatus(*pick(u, ProposalStatus::ALL)?),
        4 => Edit::AddCoauthor(who),
        5 => Edit::RemoveCoauthor(who),
        6 => Edit::AddSupporter { user: who, at },
        7 => Edit::RemoveSupporter(who),
        8 => Edit::AddComment(Comment {
            author: who,
            text: small_string(u)?,
            at,
        }),
        9 => Edit::SetEvaluation {
            evaluator: who,
            viable: u.arbitrary()?,
            validated_cost: u.arbitrary()?,
            notes: if u.arbitrary()? {
                Some(small_string(u)?)
            } else {
                None
            },
        },
        10 => Edit::SetScore {
            evaluator: who,
            criterion: small_string(u)?,
            score: u.arbitrary()?,
        },
        11 => Edit::AddAttendee {
            user: who,
            attendee: Attendee {
                name: small_string(u)?,
                organization: small_string(u)?,
                votes: u.arbitrary()?,
            },
        },
        12 => Edit::AddAgreement(small_string(u)?),
        13 => Edit::AddPrioritized(PrioritizedEntry::new(
            DocumentId::from_bytes([u.arbitrary()?; 16]),
            u.arbitrary()?,
            u.arbitrary()?,
        )),
        14 => Edit::RemovePrioritized {
            proposal_id: DocumentId::from_bytes([u.arbitrary()?; 16]).to_string(),
        },
        15 => Edit::AddCommitteeMember(who),
        16 => Edit::Sign {
            user: who,
            signature: Signature {
                at,
                device: small_string(u)?,
            },
        },
        17 => Edit::SetActaStatus(*pick(u, ActaStatus::ALL)?),
        18 => Edit::AddResponse(Comment {
            author: who,
            text: small_string(u)?,
            at,
        }),
        19 => Edit::AddEvidence(small_string(u)?),
        20 => Edit::SetObservationStatus(*pick(u, ObservationStatus::ALL)?),
        21 => Edit::SetZoneCeiling {
            zone: small_string(u)?,
            ceiling: u.arbitrary()?,
        },
        _ => match u.int_in_range(0..=1)? {
            0 => Edit::SetPhase(*pick(u, ProcessPhase::ALL)?),
            _ => Edit::AddToIndex {
                id: DocumentId::from_bytes([u.arbitrary()?; 16]),
                entry: IndexEntry {
                    doc_type: *pick(u, DocType::ALL)?,
                    created_at: at,
                },
            },
        },
    })
}

/// Applies 1..=3 arbitrary typed edits to `doc` as one change; edits that do not apply
/// (wrong container type, ...) leave nothing behind.
pub fn typed_edits(u: &mut Unstructured<'_>, doc: &mut Automerge) -> Result<()> {
    let n = u.int_in_range(1..=3)?;
    let mut edits = Vec::with_capacity(n);
    for _ in 0..n {
        edits.push(edit(u)?);
    }
    let _ = apply_edits(doc, &edits, "fuzz", 1_800_000_000);
    Ok(())
}

/// An arbitrary principal: one of [`USERS`] (or another id), any set of roles, and a district
/// scope that matches the documents', another district, or all.
pub fn principal(u: &mut Unstructured<'_>, district: Ubigeo) -> Result<Principal> {
    let who = if u.ratio(7, 8)? {
        user(u.choose_index(USERS.len())?)
    } else {
        UserId::new("u-stranger").expect("valid")
    };
    let bits: u8 = u.arbitrary()?;
    let roles = Role::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, r)| r);
    let scope = match u.int_in_range(0..=3)? {
        0 => DistrictScope::All,
        1 => DistrictScope::One(Ubigeo::ATE),
        _ => DistrictScope::One(district),
    };
    Ok(Principal::new(who, roles, scope))
}

/// The `permission_check` fuzz target: see the module documentation. Returns the decision, or
/// `None` when the input ended before a base document was chosen.
pub fn permission_check(data: &[u8]) -> Option<Decision> {
    let mut u = Unstructured::new(data);
    run_permission_check(&mut u).ok()
}

fn run_permission_check(u: &mut Unstructured<'_>) -> Result<Decision> {
    let kind = *pick(u, &BaseKind::ALL)?;
    let district = if u.ratio(7, 8)? {
        Ubigeo::COMAS
    } else {
        Ubigeo::ATE
    };
    let mut before = base_document(kind, district);

    // Edits made before the batch (by any user): the judged document's state varies. Running
    // out of input from here on ends the writing early; what was written is still judged.
    let _ = edit_before(u, &mut before);

    // Forks under several actors write the batch.
    let n_forks = u.int_in_range(1..=3).unwrap_or(1);
    let mut forks: Vec<Automerge> = (0..n_forks)
        .map(|f| {
            let mut d = before.fork();
            d.set_actor(actor(f % USERS.len(), f));
            d
        })
        .collect();
    // Running out of input stops the writing; what was written is still judged.
    let _ = write_forks(u, &mut forks);

    // The batch: every new change of every fork, some dropped, shuffled.
    let mut batch: Vec<Change> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let heads = before.get_heads();
    for fork in &mut forks {
        for c in fork.get_changes(&heads) {
            if seen.insert(c.hash()) {
                batch.push(c.clone());
            }
        }
    }
    // Sometimes a change the document already has comes along too.
    if u.ratio(1, 4).unwrap_or(false) {
        if let Some(c) = before.get_changes(&[]).last() {
            batch.push((*c).clone());
        }
    }
    let mut kept = Vec::with_capacity(batch.len());
    for c in batch {
        if !u.ratio(1, 8).unwrap_or(false) {
            kept.push(c);
        }
    }
    for i in (1..kept.len()).rev() {
        let j = u.int_in_range(0..=i).unwrap_or(i);
        kept.swap(i, j);
    }
    let principal =
        principal(u, district).unwrap_or_else(|_| Principal::new(user(0), [], DistrictScope::All));

    Ok(judge_and_check(&principal, &before, &kept))
}

fn edit_before(u: &mut Unstructured<'_>, before: &mut Automerge) -> Result<()> {
    for _ in 0..u.int_in_range(0..=3)? {
        before.set_actor(actor(u.choose_index(USERS.len())?, 9));
        if u.arbitrary()? {
            typed_edits(u, before)?;
        } else {
            raw_ops(u, before)?;
        }
    }
    Ok(())
}

fn write_forks(u: &mut Unstructured<'_>, forks: &mut [Automerge]) -> Result<()> {
    for _ in 0..u.int_in_range(0..=10)? {
        let f = u.choose_index(forks.len())?;
        match u.int_in_range(0..=5)? {
            0..=2 => raw_ops(u, &mut forks[f])?,
            3 | 4 => typed_edits(u, &mut forks[f])?,
            _ => {
                let g = u.choose_index(forks.len())?;
                if g != f {
                    let mut other = forks[g].clone();
                    let _ = forks[f].merge(&mut other);
                }
            }
        }
    }
    Ok(())
}

/// Judges `batch` and asserts the properties of the `permission_check` target.
pub fn judge_and_check(principal: &Principal, before: &Automerge, batch: &[Change]) -> Decision {
    let first = check_changes(principal, before, batch);
    let again = check_changes(principal, before, batch);
    assert_eq!(first, again, "judging the same batch twice differs");

    let mut reversed = batch.to_vec();
    reversed.reverse();
    assert_eq!(
        first,
        check_changes(principal, before, &reversed),
        "judging the batch in reverse order differs"
    );
    let mut by_hash = batch.to_vec();
    by_hash.sort_by_key(Change::hash);
    assert_eq!(
        first,
        check_changes(principal, before, &by_hash),
        "judging the batch sorted by hash differs"
    );

    let (decision, after) = check_and_apply(principal, before, batch);
    assert_eq!(first, decision, "check_and_apply decides otherwise");
    if decision.is_allowed() {
        for c in batch {
            assert!(
                after.get_change_by_hash(&c.hash()).is_some(),
                "an allowed batch is not wholly applied"
            );
        }
        // Judging it again on top of itself changes nothing.
        assert_eq!(check_changes(principal, &after, batch), Decision::Allowed);
    }
    first
}
