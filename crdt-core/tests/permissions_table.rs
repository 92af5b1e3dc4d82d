//! DESIGN.md's "Who may change what", row by row, as tables of cases: for each right at least
//! one batch that is allowed and at least one that is denied (with the path and reason).
//!
//! Documents are built with automerge directly (scalar strings, Text prose) so the cases do not
//! depend on the schema builders; a few cases use the stock JS client's spelling (Text strings).

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, Change, ObjId, ObjType, ReadDoc, ROOT};
use crdt_core::permissions::{check_changes, may_read, Decision, Principal};
use crdt_core::{DistrictScope, Role, Ubigeo, UserId};

const COMAS: &str = "150110";
const ATE: &str = "150103";
const T0: i64 = 1_790_000_000;

// ---------- principals ----------

fn who(user: &str, roles: &[Role], district: &str) -> Principal {
    Principal::new(
        UserId::new(user).unwrap(),
        roles.iter().copied(),
        district.parse::<DistrictScope>().unwrap(),
    )
}

/// The proposal's creator.
fn author() -> Principal {
    who("u-lead", &[Role::Leader], COMAS)
}
/// Listed in `coauthors`.
fn coauthor() -> Principal {
    who("u-co", &[Role::Leader], COMAS)
}
/// A leader of the district who did not write the proposal.
fn other_leader() -> Principal {
    who("u-other", &[Role::Leader], COMAS)
}
fn tecnico() -> Principal {
    who("u-tec", &[Role::Tecnico], COMAS)
}
fn vigilancia() -> Principal {
    who("u-vig", &[Role::Vigilancia], COMAS)
}
fn admin() -> Principal {
    who("u-adm", &[Role::Admin], COMAS)
}

// ---------- documents ----------

/// A fixture state. The actor is fixed, so building the same fixture twice gives the same
/// document (same change hash), and a case may build its `before` and its edit separately.
fn create(write: impl FnOnce(&mut Transaction<'_>)) -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from(&b"fixture"[..]));
    let mut tx = doc.transaction();
    write(&mut tx);
    tx.commit_with(
        CommitOptions::default()
            .with_message("fixture")
            .with_time(T0),
    );
    doc
}

/// The changes one editing session on a copy of `before` produces.
fn edit(before: &Automerge, f: impl FnOnce(&mut Transaction<'_>)) -> Vec<Change> {
    let mut doc = before.fork().with_actor(ActorId::random());
    let mut tx = doc.transaction();
    f(&mut tx);
    tx.commit_with(CommitOptions::default().with_time(T0 + 60));
    doc.get_changes(&before.get_heads())
}

/// Several sessions, one after the other, each one change.
/// One editing session, boxed so a batch can hold several.
type Session = Box<dyn FnOnce(&mut Transaction<'_>)>;

fn edits(before: &Automerge, steps: Vec<Session>) -> Vec<Change> {
    let mut doc = before.fork().with_actor(ActorId::random());
    for step in steps {
        let mut tx = doc.transaction();
        step(&mut tx);
        tx.commit_with(CommitOptions::default().with_time(T0 + 60));
    }
    doc.get_changes(&before.get_heads())
}

fn text(tx: &mut Transaction<'_>, obj: &ObjId, key: &str, value: &str) -> ObjId {
    let id = tx.put_object(obj, key, ObjType::Text).unwrap();
    tx.splice_text(&id, 0, 0, value).unwrap();
    id
}

fn child(tx: &Transaction<'_>, obj: &ObjId, key: &str) -> ObjId {
    tx.get(obj, key).unwrap().expect("field exists").1
}

fn at(tx: &Transaction<'_>, key: &str) -> ObjId {
    child(tx, &ROOT, key)
}

fn header(tx: &mut Transaction<'_>, doc_type: &str, district: &str) {
    tx.put(ROOT, "type", doc_type).unwrap();
    tx.put(ROOT, "schemaVersion", 1).unwrap();
    tx.put(ROOT, "district", district).unwrap();
    tx.put(ROOT, "processYear", 2027).unwrap();
}

fn add_entry(tx: &mut Transaction<'_>, list: &str, author: &str, body: &str) -> ObjId {
    let list = at(tx, list);
    let len = tx.length(&list);
    let entry = tx.insert_object(&list, len, ObjType::Map).unwrap();
    tx.put(&entry, "author", author).unwrap();
    text(tx, &entry, "text", body);
    tx.put(&entry, "at", T0).unwrap();
    entry
}

/// A new proposal as its creator writes it, with coauthor u-co.
fn write_proposal(tx: &mut Transaction<'_>, status: &str, district: &str, created_by: &str) {
    header(tx, "proposal", district);
    text(tx, &ROOT, "title", "Veredas en la Av. Túpac Amaru");
    text(tx, &ROOT, "description", "Construir 300 m de veredas");
    tx.put(ROOT, "zone", "zona-1").unwrap();
    tx.put(ROOT, "category", "vias").unwrap();
    tx.put(ROOT, "beneficiaries", 1200).unwrap();
    tx.put(ROOT, "estimatedCost", 45_000_000).unwrap();
    tx.put(ROOT, "cofinancing", 5_000_000).unwrap();
    tx.put(ROOT, "status", status).unwrap();
    tx.put(ROOT, "createdBy", created_by).unwrap();
    let co = tx.put_object(ROOT, "coauthors", ObjType::Map).unwrap();
    tx.put(&co, "u-co", true).unwrap();
    tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
    tx.put_object(ROOT, "comments", ObjType::List).unwrap();
    tx.put_object(ROOT, "evaluation", ObjType::Map).unwrap();
    tx.put_object(ROOT, "scores", ObjType::Map).unwrap();
}

/// A proposal by u-lead (coauthor u-co) in `status`, supported by u-other, with one comment by
/// u-other.
fn proposal(status: &str) -> Automerge {
    create(|tx| {
        write_proposal(tx, status, COMAS, "u-lead");
        let sup = at(tx, "supporters");
        tx.put(&sup, "u-other", T0).unwrap();
        add_entry(tx, "comments", "u-other", "Muy necesario");
    })
}

/// An acta whose voting attendee is u-lead; u-other attends without a vote.
fn write_acta(tx: &mut Transaction<'_>, status: &str) {
    header(tx, "acta", COMAS);
    text(tx, &ROOT, "title", "Taller de priorización");
    tx.put(ROOT, "kind", "workshop").unwrap();
    tx.put(ROOT, "date", "2027-05-10").unwrap();
    tx.put(ROOT, "place", "Local comunal").unwrap();
    let att = tx.put_object(ROOT, "attendees", ObjType::Map).unwrap();
    for (user, votes) in [("u-lead", true), ("u-other", false)] {
        let a = tx.put_object(&att, user, ObjType::Map).unwrap();
        tx.put(&a, "name", user).unwrap();
        tx.put(&a, "organization", "OSB").unwrap();
        tx.put(&a, "votes", votes).unwrap();
    }
    tx.put_object(ROOT, "agreements", ObjType::List).unwrap();
    tx.put_object(ROOT, "prioritized", ObjType::List).unwrap();
    tx.put_object(ROOT, "committeeMembers", ObjType::Map)
        .unwrap();
    tx.put_object(ROOT, "signatures", ObjType::Map).unwrap();
    tx.put(ROOT, "status", status).unwrap();
}

fn acta(status: &str) -> Automerge {
    create(|tx| write_acta(tx, status))
}

fn write_observation(tx: &mut Transaction<'_>, status: &str) {
    header(tx, "observation", COMAS);
    tx.put(ROOT, "target", "2y6Z7XY4zpwKgsRbe2G2Zkr6NPbe")
        .unwrap();
    tx.put(ROOT, "kind", "cost").unwrap();
    text(
        tx,
        &ROOT,
        "description",
        "El costo por metro duplica el referencial",
    );
    tx.put_object(ROOT, "evidence", ObjType::List).unwrap();
    tx.put_object(ROOT, "responses", ObjType::List).unwrap();
    tx.put(ROOT, "status", status).unwrap();
    tx.put(ROOT, "createdBy", "u-vig").unwrap();
}

fn observation(status: &str) -> Automerge {
    create(|tx| {
        write_observation(tx, status);
        if ["answered", "closed", "escalated"].contains(&status) {
            add_entry(tx, "responses", "u-adm", "Se revisará el metrado");
        }
    })
}

fn write_process(tx: &mut Transaction<'_>) {
    header(tx, "process", COMAS);
    tx.put(ROOT, "ceiling", 500_000_000).unwrap();
    let zones = tx.put_object(ROOT, "zones", ObjType::Map).unwrap();
    tx.put(&zones, "zona-1", 200_000_000).unwrap();
    tx.put(ROOT, "phase", "registration").unwrap();
    tx.put_object(ROOT, "criteria", ObjType::List).unwrap();
}

fn process() -> Automerge {
    create(write_process)
}

fn index() -> Automerge {
    create(|tx| {
        header(tx, "index", COMAS);
        tx.put_object(ROOT, "docs", ObjType::Map).unwrap();
    })
}

fn set_status(status: &'static str) -> impl FnOnce(&mut Transaction<'_>) {
    move |tx| tx.put(ROOT, "status", status).unwrap()
}

fn step(f: impl FnOnce(&mut Transaction<'_>) + 'static) -> Session {
    Box::new(f)
}

// ---------- the table runner ----------

enum Expect {
    Allowed,
    /// Denied with a violation at this path whose reason contains this text.
    Denied(&'static str, &'static str),
    MissingDependencies,
}

struct Case {
    name: &'static str,
    principal: Principal,
    before: Automerge,
    changes: Vec<Change>,
    expect: Expect,
}

fn allow(
    name: &'static str,
    principal: Principal,
    before: Automerge,
    changes: Vec<Change>,
) -> Case {
    Case {
        name,
        principal,
        before,
        changes,
        expect: Expect::Allowed,
    }
}

fn deny(
    name: &'static str,
    principal: Principal,
    before: Automerge,
    changes: Vec<Change>,
    path: &'static str,
    reason: &'static str,
) -> Case {
    Case {
        name,
        principal,
        before,
        changes,
        expect: Expect::Denied(path, reason),
    }
}

/// Runs a row's cases, printing one line per case, and fails listing every mismatch.
fn run(row: &str, cases: Vec<Case>) {
    let mut allowed = 0;
    let mut denied = 0;
    let mut failures = Vec::new();
    for case in cases {
        let decision = check_changes(&case.principal, &case.before, &case.changes);
        let ok = match (&case.expect, &decision) {
            (Expect::Allowed, Decision::Allowed) => true,
            (Expect::Denied(path, reason), Decision::Denied(vs)) => vs
                .iter()
                .any(|v| v.path == *path && v.reason.contains(reason)),
            (Expect::MissingDependencies, Decision::MissingDependencies(_)) => true,
            _ => false,
        };
        match case.expect {
            Expect::Allowed => allowed += 1,
            _ => denied += 1,
        }
        println!(
            "{} {row}: {} -> {decision:?}",
            if ok { "ok  " } else { "FAIL" },
            case.name
        );
        if !ok {
            failures.push(format!("{}: got {decision:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{row}:\n{}", failures.join("\n"));
    assert!(
        allowed > 0 && denied > 0,
        "{row}: needs allowed and denied cases"
    );
}

// ---------- leader ----------

#[test]
fn leader_creates_proposals_in_own_district() {
    let empty = Automerge::new;
    run(
        "leader creates proposals in own district",
        vec![
            allow(
                "leader creates a draft proposal in own district",
                author(),
                empty(),
                edit(&empty(), |tx| write_proposal(tx, "draft", COMAS, "u-lead")),
            ),
            allow(
                "leader creates a proposal directly as submitted",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "submitted", COMAS, "u-lead")
                }),
            ),
            allow(
                "leader creates a proposal the way the JS client writes it (Text strings)",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    for (k, v) in [
                        ("type", "proposal"),
                        ("district", COMAS),
                        ("status", "draft"),
                        ("createdBy", "u-lead"),
                        ("title", "Parque"),
                    ] {
                        text(tx, &ROOT, k, v);
                    }
                    tx.put(ROOT, "schemaVersion", 1).unwrap();
                    tx.put(ROOT, "processYear", 2027).unwrap();
                }),
            ),
            allow(
                "an empty first change (automerge-repo create) before the content",
                author(),
                empty(),
                {
                    let mut d = Automerge::new();
                    d.empty_commit(CommitOptions::default());
                    d.get_changes(&[])
                },
            ),
            allow(
                "a province-wide (*) leader creates a proposal in any district",
                who("u-lead", &[Role::Leader], "*"),
                empty(),
                edit(&empty(), |tx| write_proposal(tx, "draft", ATE, "u-lead")),
            ),
            deny(
                "leader creates a proposal for a fiscal year Minka does not serve",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "draft", COMAS, "u-lead");
                    tx.put(ROOT, "processYear", 3027).unwrap();
                }),
                "processYear",
                "not a fiscal year",
            ),
            deny(
                "leader creates a proposal in another district",
                author(),
                empty(),
                edit(&empty(), |tx| write_proposal(tx, "draft", ATE, "u-lead")),
                "district",
                "outside your scope",
            ),
            deny(
                "leader creates a proposal in someone else's name",
                author(),
                empty(),
                edit(&empty(), |tx| write_proposal(tx, "draft", COMAS, "u-other")),
                "createdBy",
                "your own user id",
            ),
            deny(
                "leader creates a proposal already in evaluation",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "in_evaluation", COMAS, "u-lead")
                }),
                "status",
                "must start with status draft or submitted",
            ),
            deny(
                "leader creates a proposal with an evaluation filled in",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "draft", COMAS, "u-lead");
                    let ev = at(tx, "evaluation");
                    tx.put(&ev, "viable", true).unwrap();
                }),
                "evaluation/viable",
                "only tecnico may change evaluation",
            ),
            deny(
                "tecnico creates a proposal (wrong role)",
                who("u-lead", &[Role::Tecnico], COMAS),
                empty(),
                edit(&empty(), |tx| write_proposal(tx, "draft", COMAS, "u-lead")),
                "type",
                "only leader may create a proposal",
            ),
            deny(
                "a first change without `type`",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    text(tx, &ROOT, "title", "Sin tipo");
                }),
                "type",
                "must set `type`",
            ),
            deny(
                "a document of an unknown type",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    header(tx, "petition", COMAS);
                }),
                "type",
                "unknown document type",
            ),
            deny(
                "a proposal with schemaVersion 2",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "draft", COMAS, "u-lead");
                    tx.put(ROOT, "schemaVersion", 2).unwrap();
                }),
                "schemaVersion",
                "must be 1",
            ),
            deny(
                "a proposal without district",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "draft", COMAS, "u-lead");
                    tx.delete(ROOT, "district").unwrap();
                }),
                "district",
                "must set `district`",
            ),
            deny(
                "a proposal with a district outside Lima",
                author(),
                empty(),
                edit(&empty(), |tx| {
                    write_proposal(tx, "draft", "040101", "u-lead")
                }),
                "district",
                "not a district of Metropolitan Lima",
            ),
        ],
    );
}

#[test]
fn leader_edits_own_or_coauthored_proposals_while_draft_submitted_or_observed() {
    let splice_title = |tx: &mut Transaction<'_>| {
        let t = at(tx, "title");
        tx.splice_text(&t, 0, 7, "Pistas").unwrap();
    };
    let mut cases = Vec::new();
    for status in ["draft", "submitted", "observed"] {
        cases.push(allow(
            match status {
                "draft" => "author edits the title of a draft",
                "submitted" => "author edits the title of a submitted proposal",
                _ => "author edits the title of an observed proposal",
            },
            author(),
            proposal(status),
            edit(&proposal(status), splice_title),
        ));
    }
    let p = proposal("draft");
    cases.extend([
        allow(
            "coauthor edits the description",
            coauthor(),
            p.clone(),
            edit(&p, |tx| {
                let d = at(tx, "description");
                tx.splice_text(&d, 0, 0, "Urgente: ").unwrap();
            }),
        ),
        allow(
            "author sets zone, category, beneficiaries, estimatedCost and cofinancing",
            author(),
            p.clone(),
            edit(&p, |tx| {
                tx.put(ROOT, "zone", "zona-2").unwrap();
                tx.put(ROOT, "category", "parques").unwrap();
                tx.put(ROOT, "beneficiaries", 900).unwrap();
                tx.put(ROOT, "estimatedCost", 40_000_000).unwrap();
                tx.put(ROOT, "cofinancing", 0).unwrap();
            }),
        ),
        allow(
            "author adds a coauthor",
            author(),
            p.clone(),
            edit(&p, |tx| {
                let co = at(tx, "coauthors");
                tx.put(&co, "u-new", true).unwrap();
            }),
        ),
        allow(
            "author replaces the title with a new Text (JS assignment)",
            author(),
            p.clone(),
            edit(&p, |tx| {
                text(tx, &ROOT, "title", "Nuevo título");
            }),
        ),
        deny(
            "another leader edits the title",
            other_leader(),
            p.clone(),
            edit(&p, splice_title),
            "title",
            "only the proposal's authors",
        ),
        deny(
            "another leader makes themself coauthor",
            other_leader(),
            p.clone(),
            edit(&p, |tx| {
                let co = at(tx, "coauthors");
                tx.put(&co, "u-other", true).unwrap();
            }),
            "coauthors/u-other",
            "only the proposal's authors",
        ),
        deny(
            "author edits the title while in_evaluation",
            author(),
            proposal("in_evaluation"),
            edit(&proposal("in_evaluation"), splice_title),
            "title",
            "only while it is draft, submitted or observed",
        ),
        deny(
            "author edits estimatedCost of an eligible proposal",
            author(),
            proposal("eligible"),
            edit(&proposal("eligible"), |tx| {
                tx.put(ROOT, "estimatedCost", 1).unwrap()
            }),
            "estimatedCost",
            "the proposal is eligible",
        ),
        deny(
            "author edits a withdrawn proposal",
            author(),
            proposal("withdrawn"),
            edit(&proposal("withdrawn"), splice_title),
            "title",
            "the proposal is withdrawn",
        ),
        deny(
            "tecnico edits the title",
            tecnico(),
            p.clone(),
            edit(&p, splice_title),
            "title",
            "only the proposal's authors",
        ),
        deny(
            "admin edits estimatedCost",
            admin(),
            p.clone(),
            edit(&p, |tx| tx.put(ROOT, "estimatedCost", 1).unwrap()),
            "estimatedCost",
            "only the proposal's authors",
        ),
        deny(
            "author rewrites createdBy",
            author(),
            p.clone(),
            edit(&p, |tx| tx.put(ROOT, "createdBy", "u-co").unwrap()),
            "createdBy",
            "immutable after creation",
        ),
        deny(
            "author adds an unknown root field",
            author(),
            p.clone(),
            edit(&p, |tx| tx.put(ROOT, "budgetLine", "x").unwrap()),
            "budgetLine",
            "is not a field of a proposal",
        ),
    ]);
    run("leader edits own or co-authored proposals", cases);
}

#[test]
fn authors_move_status_draft_submitted_observed_withdrawn() {
    let draft = proposal("draft");
    let submitted = proposal("submitted");
    let observed = proposal("observed");
    // Two offline sessions on the same draft: one submits, the other withdraws.
    let submitted_by_session_a = {
        let mut d = draft.fork();
        d.apply_changes(edit(&draft, set_status("submitted")))
            .unwrap();
        d
    };
    let withdrawn_by_session_b = edit(&draft, set_status("withdrawn"));
    run(
        "author status transitions",
        vec![
            allow(
                "author: draft → submitted",
                author(),
                draft.clone(),
                edit(&draft, set_status("submitted")),
            ),
            allow(
                "coauthor: draft → submitted",
                coauthor(),
                draft.clone(),
                edit(&draft, set_status("submitted")),
            ),
            allow(
                "author: observed → submitted (resubmission)",
                author(),
                observed.clone(),
                edit(&observed, set_status("submitted")),
            ),
            allow(
                "author: draft → withdrawn",
                author(),
                draft.clone(),
                edit(&draft, set_status("withdrawn")),
            ),
            allow(
                "author: submitted → withdrawn",
                author(),
                submitted.clone(),
                edit(&submitted, set_status("withdrawn")),
            ),
            allow(
                "author: draft → submitted → withdrawn in one batch",
                author(),
                draft.clone(),
                edits(
                    &draft,
                    vec![step(set_status("submitted")), step(set_status("withdrawn"))],
                ),
            ),
            allow(
                "author submits with a Text status (JS client)",
                author(),
                draft.clone(),
                edit(&draft, |tx| {
                    text(tx, &ROOT, "status", "submitted");
                }),
            ),
            deny(
                "author: observed → withdrawn (already evaluated)",
                author(),
                observed.clone(),
                edit(&observed, set_status("withdrawn")),
                "status",
                "withdrawn only before evaluation",
            ),
            deny(
                "author: in_evaluation → withdrawn",
                author(),
                proposal("in_evaluation"),
                edit(&proposal("in_evaluation"), set_status("withdrawn")),
                "status",
                "withdrawn only before evaluation",
            ),
            deny(
                "another leader submits someone's draft",
                other_leader(),
                draft.clone(),
                edit(&draft, set_status("submitted")),
                "status",
                "only the proposal's authors may move a proposal from draft to submitted",
            ),
            deny(
                "author: submitted → in_evaluation",
                author(),
                submitted.clone(),
                edit(&submitted, set_status("in_evaluation")),
                "status",
                "only tecnico may move a proposal from submitted to in_evaluation",
            ),
            deny(
                "author: draft → eligible (no such transition)",
                author(),
                draft.clone(),
                edit(&draft, set_status("eligible")),
                "status",
                "cannot go from draft to eligible",
            ),
            deny(
                "author: withdrawn → draft (no way back)",
                author(),
                proposal("withdrawn"),
                edit(&proposal("withdrawn"), set_status("draft")),
                "status",
                "cannot go from withdrawn to draft",
            ),
            deny(
                "author sets an unknown status",
                author(),
                draft.clone(),
                edit(&draft, set_status("approved")),
                "status",
                "unknown proposal status",
            ),
            deny(
                "author deletes status",
                author(),
                draft.clone(),
                edit(&draft, |tx| tx.delete(ROOT, "status").unwrap()),
                "status",
                "cannot be deleted",
            ),
            deny(
                "author withdraws offline while the draft was submitted meanwhile (stale status)",
                author(),
                submitted_by_session_a,
                withdrawn_by_session_b,
                "status",
                "changed concurrently",
            ),
        ],
    );
}

#[test]
fn leader_adds_or_removes_own_key_in_supporters() {
    let p = proposal("in_evaluation");
    let without_supporters = create(|tx| {
        write_proposal(tx, "draft", COMAS, "u-lead");
        tx.delete(ROOT, "supporters").unwrap();
    });
    let support = |user: &'static str| {
        move |tx: &mut Transaction<'_>| {
            let s = at(tx, "supporters");
            tx.put(&s, user, T0 + 120).unwrap();
        }
    };
    run(
        "leader supporters",
        vec![
            allow(
                "a leader supports a proposal (own key)",
                author(),
                p.clone(),
                edit(&p, support("u-lead")),
            ),
            allow(
                "a leader withdraws own support",
                other_leader(),
                p.clone(),
                edit(&p, |tx| {
                    let s = at(tx, "supporters");
                    tx.delete(&s, "u-other").unwrap();
                }),
            ),
            allow(
                "a leader supports a proposal whose supporters map is missing",
                other_leader(),
                without_supporters.clone(),
                edit(&without_supporters, |tx| {
                    let s = tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
                    tx.put(&s, "u-other", T0).unwrap();
                }),
            ),
            deny(
                "a leader adds someone else's key",
                author(),
                p.clone(),
                edit(&p, support("u-co")),
                "supporters/u-co",
                "only add or remove their own key in supporters",
            ),
            deny(
                "a leader removes someone else's support",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    let s = at(tx, "supporters");
                    tx.delete(&s, "u-other").unwrap();
                }),
                "supporters/u-other",
                "only add or remove their own key in supporters",
            ),
            deny(
                "a leader replaces the whole supporters map",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    tx.put_object(ROOT, "supporters", ObjType::Map).unwrap();
                }),
                "supporters",
                "only add or remove their own key in supporters",
            ),
            deny(
                "a leader supports a withdrawn proposal",
                other_leader(),
                proposal("withdrawn"),
                edit(&proposal("withdrawn"), support("u-other")),
                "supporters/u-other",
                "support is closed",
            ),
            deny(
                "a leader supports a prioritized proposal",
                author(),
                proposal("prioritized"),
                edit(&proposal("prioritized"), support("u-lead")),
                "supporters/u-lead",
                "support is closed",
            ),
            deny(
                "a tecnico supports a proposal",
                tecnico(),
                p.clone(),
                edit(&p, support("u-tec")),
                "supporters/u-tec",
                "only leaders may support",
            ),
        ],
    );
}

#[test]
fn leader_appends_comments_as_self() {
    let p = proposal("in_evaluation");
    run(
        "leader comments",
        vec![
            allow(
                "a leader appends a comment as self",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    add_entry(tx, "comments", "u-lead", "Gracias");
                }),
            ),
            allow(
                "a leader corrects the text of their own comment",
                other_leader(),
                p.clone(),
                edit(&p, |tx| {
                    let c = tx.get(at(tx, "comments"), 0).unwrap().unwrap().1;
                    let t = child(tx, &c, "text");
                    tx.splice_text(&t, 0, 3, "Tan").unwrap();
                }),
            ),
            deny(
                "a leader appends a comment in someone else's name",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    add_entry(tx, "comments", "u-co", "Firmado por otro");
                }),
                "comments/1",
                "author must be yourself",
            ),
            deny(
                "a leader edits another's comment",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    let c = tx.get(at(tx, "comments"), 0).unwrap().unwrap().1;
                    let t = child(tx, &c, "text");
                    tx.splice_text(&t, 0, 3, "Poco").unwrap();
                }),
                "comments/0/text",
                "only a comment's author may edit it",
            ),
            deny(
                "a leader re-signs another's comment as their own",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    let c = tx.get(at(tx, "comments"), 0).unwrap().unwrap().1;
                    tx.put(&c, "author", "u-lead").unwrap();
                }),
                "comments/0/author",
                "only a comment's author may edit it",
            ),
            deny(
                "a leader deletes a comment",
                other_leader(),
                p.clone(),
                edit(&p, |tx| {
                    let list = at(tx, "comments");
                    tx.delete(&list, 0).unwrap();
                }),
                "comments/0",
                "cannot be deleted or replaced",
            ),
            deny(
                "a leader inserts a bare string as a comment",
                author(),
                p.clone(),
                edit(&p, |tx| {
                    let list = at(tx, "comments");
                    tx.insert(&list, 1, "hola").unwrap();
                }),
                "comments/1",
                "must be a map",
            ),
            deny(
                "a tecnico comments",
                tecnico(),
                p.clone(),
                edit(&p, |tx| {
                    add_entry(tx, "comments", "u-tec", "Falta el expediente");
                }),
                "comments/1",
                "only leaders may comment",
            ),
        ],
    );
}

#[test]
fn voting_attendee_signs_an_acta_as_self_while_signing() {
    let signing = acta("signing");
    let sign = |user: &'static str| {
        move |tx: &mut Transaction<'_>| {
            let s = at(tx, "signatures");
            let me = tx.put_object(&s, user, ObjType::Map).unwrap();
            tx.put(&me, "at", T0).unwrap();
            tx.put(&me, "device", "phone-1").unwrap();
        }
    };
    let signed = {
        let mut d = signing.fork();
        d.apply_changes(edit(&signing, sign("u-lead"))).unwrap();
        d
    };
    run(
        "sign an acta as self",
        vec![
            allow(
                "a voting attendee signs as self",
                author(),
                signing.clone(),
                edit(&signing, sign("u-lead")),
            ),
            allow(
                "a voting attendee who is also vigilancia signs (any role may sign)",
                who("u-lead", &[Role::Vigilancia], COMAS),
                signing.clone(),
                edit(&signing, sign("u-lead")),
            ),
            deny(
                "an attendee without a vote signs",
                other_leader(),
                signing.clone(),
                edit(&signing, sign("u-other")),
                "signatures/u-other",
                "only attendees with a vote may sign",
            ),
            deny(
                "a leader who did not attend signs",
                coauthor(),
                signing.clone(),
                edit(&signing, sign("u-co")),
                "signatures/u-co",
                "only attendees with a vote may sign",
            ),
            deny(
                "a voting attendee signs as someone else",
                author(),
                signing.clone(),
                edit(&signing, sign("u-other")),
                "signatures/u-other",
                "you may sign only as yourself",
            ),
            deny(
                "a voting attendee signs a draft acta",
                author(),
                acta("draft"),
                edit(&acta("draft"), sign("u-lead")),
                "signatures/u-lead",
                "not open for signing",
            ),
            deny(
                "a signer withdraws their signature",
                author(),
                signed.clone(),
                edit(&signed, |tx| {
                    let s = at(tx, "signatures");
                    tx.delete(&s, "u-lead").unwrap();
                }),
                "signatures/u-lead",
                "cannot be withdrawn",
            ),
            allow(
                "tecnico removes a signature",
                tecnico(),
                signed.clone(),
                edit(&signed, |tx| {
                    let s = at(tx, "signatures");
                    tx.delete(&s, "u-lead").unwrap();
                }),
            ),
            deny(
                "tecnico signs in a voting attendee's name",
                tecnico(),
                signing.clone(),
                edit(&signing, sign("u-lead")),
                "signatures/u-lead",
                "you may sign only as yourself (u-tec)",
            ),
            deny(
                "tecnico clears the signatures and refills them in others' names",
                tecnico(),
                signed.clone(),
                edit(&signed, |tx| {
                    let s = tx.put_object(ROOT, "signatures", ObjType::Map).unwrap();
                    tx.put_object(&s, "u-lead", ObjType::Map).unwrap();
                }),
                "signatures/u-lead",
                "you may sign only as yourself",
            ),
            deny(
                "a voting attendee edits the acta's agreements",
                author(),
                signing.clone(),
                edit(&signing, |tx| {
                    let a = at(tx, "agreements");
                    tx.insert(&a, 0, "otro acuerdo").unwrap();
                }),
                "agreements/0",
                "only tecnico may edit an acta",
            ),
        ],
    );
}

// ---------- tecnico ----------

#[test]
fn tecnico_changes_everything_in_evaluation_and_scores() {
    let p = proposal("in_evaluation");
    let evaluate = |tx: &mut Transaction<'_>| {
        let ev = at(tx, "evaluation");
        tx.put(&ev, "viable", true).unwrap();
        tx.put(&ev, "validatedCost", 41_000_000).unwrap();
        text(tx, &ev, "notes", "Metrado conforme");
        tx.put(&ev, "evaluator", "u-tec").unwrap();
    };
    let score = |tx: &mut Transaction<'_>| {
        let sc = at(tx, "scores");
        let mine = tx.put_object(&sc, "u-tec", ObjType::Map).unwrap();
        tx.put(&mine, "impacto", 4).unwrap();
    };
    run(
        "tecnico evaluation and scores",
        vec![
            allow(
                "tecnico fills in the evaluation",
                tecnico(),
                p.clone(),
                edit(&p, evaluate),
            ),
            allow(
                "tecnico scores a proposal",
                tecnico(),
                p.clone(),
                edit(&p, score),
            ),
            allow(
                "tecnico replaces the whole evaluation map",
                tecnico(),
                p.clone(),
                edit(&p, |tx| {
                    tx.put_object(ROOT, "evaluation", ObjType::Map).unwrap();
                }),
            ),
            allow(
                "tecnico evaluates a draft too (evaluation is theirs in any status)",
                tecnico(),
                proposal("draft"),
                edit(&proposal("draft"), evaluate),
            ),
            deny(
                "the author touches evaluation",
                author(),
                proposal("draft"),
                edit(&proposal("draft"), evaluate),
                "evaluation/viable",
                "only tecnico may change evaluation",
            ),
            deny(
                "a leader scores",
                author(),
                p.clone(),
                edit(&p, score),
                "scores/u-tec",
                "only tecnico may change scores",
            ),
            deny(
                "admin scores",
                admin(),
                p.clone(),
                edit(&p, score),
                "scores/u-tec",
                "only tecnico may change scores",
            ),
            deny(
                "vigilancia writes evaluation notes",
                vigilancia(),
                p.clone(),
                edit(&p, |tx| {
                    let ev = at(tx, "evaluation");
                    text(tx, &ev, "notes", "x");
                }),
                "evaluation/notes",
                "only tecnico may change evaluation",
            ),
        ],
    );
}

#[test]
fn tecnico_moves_proposals_into_and_through_evaluation() {
    let submitted = proposal("submitted");
    let in_eval = proposal("in_evaluation");
    run(
        "tecnico proposal status",
        vec![
            allow(
                "tecnico: submitted → in_evaluation",
                tecnico(),
                submitted.clone(),
                edit(&submitted, set_status("in_evaluation")),
            ),
            allow(
                "tecnico: in_evaluation → observed",
                tecnico(),
                in_eval.clone(),
                edit(&in_eval, set_status("observed")),
            ),
            allow(
                "tecnico: in_evaluation → eligible",
                tecnico(),
                in_eval.clone(),
                edit(&in_eval, set_status("eligible")),
            ),
            allow(
                "tecnico: in_evaluation → ineligible",
                tecnico(),
                in_eval.clone(),
                edit(&in_eval, set_status("ineligible")),
            ),
            allow(
                "tecnico: submitted → in_evaluation → eligible in one offline batch",
                tecnico(),
                submitted.clone(),
                edits(
                    &submitted,
                    vec![
                        step(set_status("in_evaluation")),
                        step(set_status("eligible")),
                    ],
                ),
            ),
            deny(
                "tecnico: draft → in_evaluation (not submitted)",
                tecnico(),
                proposal("draft"),
                edit(&proposal("draft"), set_status("in_evaluation")),
                "status",
                "cannot go from draft to in_evaluation",
            ),
            deny(
                "tecnico: observed → in_evaluation (authors resubmit first)",
                tecnico(),
                proposal("observed"),
                edit(&proposal("observed"), set_status("in_evaluation")),
                "status",
                "cannot go from observed to in_evaluation",
            ),
            deny(
                "tecnico: eligible → prioritized",
                tecnico(),
                proposal("eligible"),
                edit(&proposal("eligible"), set_status("prioritized")),
                "status",
                "only admin may move a proposal from eligible to prioritized",
            ),
            deny(
                "author: in_evaluation → eligible",
                author(),
                in_eval.clone(),
                edit(&in_eval, set_status("eligible")),
                "status",
                "only tecnico may move a proposal from in_evaluation to eligible",
            ),
            deny(
                "vigilancia: submitted → in_evaluation",
                vigilancia(),
                submitted.clone(),
                edit(&submitted, set_status("in_evaluation")),
                "status",
                "only tecnico",
            ),
        ],
    );
}

#[test]
fn tecnico_creates_and_edits_actas_before_sealing() {
    let empty = Automerge::new();
    let draft = acta("draft");
    let signing = acta("signing");
    let add_agreement = |tx: &mut Transaction<'_>| {
        let a = at(tx, "agreements");
        let t = tx.insert_object(&a, 0, ObjType::Text).unwrap();
        tx.splice_text(&t, 0, 0, "Priorizar veredas").unwrap();
    };
    run(
        "tecnico actas",
        vec![
            allow(
                "tecnico creates an acta",
                tecnico(),
                empty.clone(),
                edit(&empty, |tx| write_acta(tx, "draft")),
            ),
            allow(
                "tecnico edits title, attendees and agreements of a draft",
                tecnico(),
                draft.clone(),
                edit(&draft, |tx| {
                    let t = at(tx, "title");
                    tx.splice_text(&t, 0, 0, "Acta: ").unwrap();
                    let att = at(tx, "attendees");
                    let a = tx.put_object(&att, "u-co", ObjType::Map).unwrap();
                    tx.put(&a, "votes", true).unwrap();
                    add_agreement(tx);
                }),
            ),
            allow(
                "tecnico edits agreements while signing",
                tecnico(),
                signing.clone(),
                edit(&signing, add_agreement),
            ),
            allow(
                "tecnico: draft → signing",
                tecnico(),
                draft.clone(),
                edit(&draft, set_status("signing")),
            ),
            allow(
                "tecnico: signing → draft",
                tecnico(),
                signing.clone(),
                edit(&signing, set_status("draft")),
            ),
            allow(
                "tecnico clears signatures",
                tecnico(),
                signing.clone(),
                edit(&signing, |tx| {
                    tx.put_object(ROOT, "signatures", ObjType::Map).unwrap();
                }),
            ),
            deny(
                "a leader creates an acta",
                author(),
                empty.clone(),
                edit(&empty, |tx| write_acta(tx, "draft")),
                "type",
                "only tecnico may create an acta",
            ),
            deny(
                "tecnico creates an acta already signing",
                tecnico(),
                empty.clone(),
                edit(&empty, |tx| write_acta(tx, "signing")),
                "status",
                "must start with status draft",
            ),
            deny(
                "tecnico seals an acta through a change",
                tecnico(),
                signing.clone(),
                edit(&signing, set_status("sealed")),
                "status",
                "sealed only through the seal endpoint",
            ),
            deny(
                "admin seals an acta through a change",
                admin(),
                signing.clone(),
                edit(&signing, set_status("sealed")),
                "status",
                "sealed only through the seal endpoint",
            ),
            deny(
                "a leader edits an acta's title",
                author(),
                draft.clone(),
                edit(&draft, |tx| {
                    let t = at(tx, "title");
                    tx.splice_text(&t, 0, 0, "x").unwrap();
                }),
                "title",
                "only tecnico may edit an acta",
            ),
            deny(
                "vigilancia adds an attendee",
                vigilancia(),
                draft.clone(),
                edit(&draft, |tx| {
                    let att = at(tx, "attendees");
                    tx.put_object(&att, "u-vig", ObjType::Map).unwrap();
                }),
                "attendees/u-vig",
                "only tecnico may edit an acta",
            ),
            deny(
                "a leader opens the acta for signing",
                author(),
                draft.clone(),
                edit(&draft, set_status("signing")),
                "status",
                "only tecnico may move an acta from draft to signing",
            ),
            deny(
                "tecnico adds an unknown root field",
                tecnico(),
                draft.clone(),
                edit(&draft, |tx| tx.put(ROOT, "mayor", "x").unwrap()),
                "mayor",
                "is not a field of an acta",
            ),
        ],
    );
}

#[test]
fn a_sealed_acta_accepts_no_change_from_anyone() {
    let sealed = acta("sealed");
    let retitle = |tx: &mut Transaction<'_>| {
        let t = at(tx, "title");
        tx.splice_text(&t, 0, 0, "x").unwrap();
    };
    let mut cases = vec![allow(
        "(contrast) tecnico edits the title before sealing",
        tecnico(),
        acta("signing"),
        edit(&acta("signing"), retitle),
    )];
    for (name, p) in [
        ("tecnico edits a sealed acta", tecnico()),
        ("admin edits a sealed acta", admin()),
        ("vigilancia edits a sealed acta", vigilancia()),
        ("a leader edits a sealed acta", author()),
        (
            "a user with every role edits a sealed acta",
            who("u-all", &Role::ALL, "*"),
        ),
    ] {
        cases.push(deny(
            name,
            p,
            sealed.clone(),
            edit(&sealed, retitle),
            "",
            "the acta is sealed",
        ));
    }
    cases.extend([
        deny(
            "a voting attendee signs a sealed acta",
            author(),
            sealed.clone(),
            edit(&sealed, |tx| {
                let s = at(tx, "signatures");
                tx.put_object(&s, "u-lead", ObjType::Map).unwrap();
            }),
            "",
            "the acta is sealed",
        ),
        deny(
            "tecnico returns a sealed acta to draft",
            tecnico(),
            sealed.clone(),
            edit(&sealed, set_status("draft")),
            "",
            "the acta is sealed",
        ),
        deny(
            "an empty change on a sealed acta",
            tecnico(),
            sealed.clone(),
            {
                let mut d = sealed.fork().with_actor(ActorId::random());
                d.empty_commit(CommitOptions::default().with_time(T0 + 60));
                d.get_changes(&sealed.get_heads())
            },
            "",
            "the acta is sealed",
        ),
    ]);
    run("sealed acta", cases);
}

// ---------- vigilancia ----------

#[test]
fn vigilancia_creates_and_edits_observations() {
    let empty = Automerge::new();
    let open = observation("open");
    let answered = observation("answered");
    run(
        "vigilancia observations",
        vec![
            allow(
                "vigilancia creates an observation",
                vigilancia(),
                empty.clone(),
                edit(&empty, |tx| write_observation(tx, "open")),
            ),
            allow(
                "vigilancia edits description, kind, target and evidence while open",
                vigilancia(),
                open.clone(),
                edit(&open, |tx| {
                    let d = at(tx, "description");
                    tx.splice_text(&d, 0, 0, "Grave: ").unwrap();
                    tx.put(ROOT, "kind", "quality").unwrap();
                    tx.put(ROOT, "target", "3Qx").unwrap();
                    let ev = at(tx, "evidence");
                    tx.insert(&ev, 0, "foto-1.jpg").unwrap();
                }),
            ),
            allow(
                "vigilancia: open → sent",
                vigilancia(),
                open.clone(),
                edit(&open, set_status("sent")),
            ),
            allow(
                "vigilancia: answered → closed",
                vigilancia(),
                answered.clone(),
                edit(&answered, set_status("closed")),
            ),
            allow(
                "vigilancia: answered → escalated",
                vigilancia(),
                answered.clone(),
                edit(&answered, set_status("escalated")),
            ),
            deny(
                "a leader creates an observation",
                author(),
                empty.clone(),
                edit(&empty, |tx| write_observation(tx, "open")),
                "type",
                "only vigilancia may create an observation",
            ),
            deny(
                "vigilancia creates an observation already sent",
                vigilancia(),
                empty.clone(),
                edit(&empty, |tx| write_observation(tx, "sent")),
                "status",
                "must start with status open",
            ),
            deny(
                "vigilancia edits the description after sending",
                vigilancia(),
                observation("sent"),
                edit(&observation("sent"), |tx| {
                    let d = at(tx, "description");
                    tx.splice_text(&d, 0, 0, "x").unwrap();
                }),
                "description",
                "can change only while it is open",
            ),
            deny(
                "a leader edits an observation",
                author(),
                open.clone(),
                edit(&open, |tx| tx.put(ROOT, "kind", "none").unwrap()),
                "kind",
                "only vigilancia may edit an observation",
            ),
            deny(
                "vigilancia: open → answered (skips sent)",
                vigilancia(),
                open.clone(),
                edit(&open, set_status("answered")),
                "status",
                "cannot go from open to answered",
            ),
            deny(
                "vigilancia: sent → answered (the municipality answers)",
                vigilancia(),
                observation("sent"),
                edit(&observation("sent"), set_status("answered")),
                "status",
                "only admin may move an observation from sent to answered",
            ),
            deny(
                "tecnico: answered → closed",
                tecnico(),
                answered.clone(),
                edit(&answered, set_status("closed")),
                "status",
                "only vigilancia",
            ),
        ],
    );
}

// ---------- admin ----------

#[test]
fn admin_owns_the_process_document() {
    let empty = Automerge::new();
    let p = process();
    run(
        "admin process",
        vec![
            allow(
                "admin creates the process",
                admin(),
                empty.clone(),
                edit(&empty, write_process),
            ),
            allow(
                "admin sets the ceiling, a zone ceiling, the phase and criteria",
                admin(),
                p.clone(),
                edit(&p, |tx| {
                    tx.put(ROOT, "ceiling", 600_000_000).unwrap();
                    let z = at(tx, "zones");
                    tx.put(&z, "zona-2", 100_000_000).unwrap();
                    tx.put(ROOT, "phase", "evaluation").unwrap();
                    let c = at(tx, "criteria");
                    let crit = tx.insert_object(&c, 0, ObjType::Map).unwrap();
                    tx.put(&crit, "name", "impacto").unwrap();
                    tx.put(&crit, "weight", 3).unwrap();
                }),
            ),
            deny(
                "tecnico sets the ceiling",
                tecnico(),
                p.clone(),
                edit(&p, |tx| tx.put(ROOT, "ceiling", 1).unwrap()),
                "ceiling",
                "only admin may change the process document",
            ),
            deny(
                "a leader creates a process",
                author(),
                empty.clone(),
                edit(&empty, write_process),
                "type",
                "only admin may create a process",
            ),
            deny(
                "admin adds an unknown field",
                admin(),
                p.clone(),
                edit(&p, |tx| tx.put(ROOT, "notes", "x").unwrap()),
                "notes",
                "is not a field of a process",
            ),
            deny(
                "admin changes the process year",
                admin(),
                p.clone(),
                edit(&p, |tx| tx.put(ROOT, "processYear", 2028).unwrap()),
                "processYear",
                "immutable after creation",
            ),
        ],
    );
}

#[test]
fn admin_decides_prioritized_or_not_prioritized() {
    let eligible = proposal("eligible");
    run(
        "admin prioritization",
        vec![
            allow(
                "admin: eligible → prioritized",
                admin(),
                eligible.clone(),
                edit(&eligible, set_status("prioritized")),
            ),
            allow(
                "admin: eligible → not_prioritized",
                admin(),
                eligible.clone(),
                edit(&eligible, set_status("not_prioritized")),
            ),
            deny(
                "admin: in_evaluation → eligible",
                admin(),
                proposal("in_evaluation"),
                edit(&proposal("in_evaluation"), set_status("eligible")),
                "status",
                "only tecnico may move a proposal from in_evaluation to eligible",
            ),
            deny(
                "admin: ineligible → prioritized",
                admin(),
                proposal("ineligible"),
                edit(&proposal("ineligible"), set_status("prioritized")),
                "status",
                "cannot go from ineligible to prioritized",
            ),
            deny(
                "admin: prioritized → not_prioritized",
                admin(),
                proposal("prioritized"),
                edit(&proposal("prioritized"), set_status("not_prioritized")),
                "status",
                "cannot go from prioritized to not_prioritized",
            ),
            deny(
                "author: eligible → prioritized",
                author(),
                eligible.clone(),
                edit(&eligible, set_status("prioritized")),
                "status",
                "only admin",
            ),
        ],
    );
}

#[test]
fn admin_responds_to_observations() {
    let sent = observation("sent");
    run(
        "admin responses",
        vec![
            allow(
                "admin appends a response as self and marks it answered",
                admin(),
                sent.clone(),
                edit(&sent, |tx| {
                    add_entry(tx, "responses", "u-adm", "Se corrigió el metrado");
                    tx.put(ROOT, "status", "answered").unwrap();
                }),
            ),
            allow(
                "admin adds a follow-up response when already answered",
                admin(),
                observation("answered"),
                edit(&observation("answered"), |tx| {
                    add_entry(tx, "responses", "u-adm", "Adjuntamos el informe");
                }),
            ),
            deny(
                "admin responds in someone else's name",
                admin(),
                sent.clone(),
                edit(&sent, |tx| {
                    add_entry(tx, "responses", "u-tec", "x");
                }),
                "responses/0",
                "author must be yourself",
            ),
            deny(
                "admin responds before the observation is sent",
                admin(),
                observation("open"),
                edit(&observation("open"), |tx| {
                    add_entry(tx, "responses", "u-adm", "x");
                }),
                "responses/0",
                "accepted only while it is sent or answered",
            ),
            deny(
                "vigilancia writes a response",
                vigilancia(),
                sent.clone(),
                edit(&sent, |tx| {
                    add_entry(tx, "responses", "u-vig", "x");
                }),
                "responses/0",
                "only admin may respond",
            ),
            deny(
                "admin edits the observation's description",
                admin(),
                sent.clone(),
                edit(&sent, |tx| {
                    let d = at(tx, "description");
                    tx.splice_text(&d, 0, 0, "x").unwrap();
                }),
                "description",
                "only vigilancia may edit an observation",
            ),
            deny(
                "admin closes an observation",
                admin(),
                observation("answered"),
                edit(&observation("answered"), set_status("closed")),
                "status",
                "only vigilancia may move an observation from answered to closed",
            ),
        ],
    );
}

// ---------- everyone ----------

#[test]
fn everyone_reads_own_district_and_star_reads_all() {
    let comas: Ubigeo = COMAS.parse().unwrap();
    let ate: Ubigeo = ATE.parse().unwrap();
    for p in [author(), tecnico(), vigilancia(), admin()] {
        assert!(may_read(&p, comas), "{:?} reads own district", p.roles);
        assert!(
            !may_read(&p, ate),
            "{:?} does not read another district",
            p.roles
        );
    }
    let star = who("u-vig", &[Role::Vigilancia], "*");
    assert!(
        Ubigeo::all().all(|d| may_read(&star, d)),
        "* reads every district"
    );
}

#[test]
fn writes_to_another_district_are_denied() {
    let p = proposal("in_evaluation");
    let evaluate = |tx: &mut Transaction<'_>| {
        let ev = at(tx, "evaluation");
        tx.put(&ev, "viable", false).unwrap();
    };
    run(
        "cross-district writes",
        vec![
            allow(
                "a province-wide (*) tecnico evaluates a Comas proposal",
                who("u-tec", &[Role::Tecnico], "*"),
                p.clone(),
                edit(&p, evaluate),
            ),
            allow(
                "(contrast) the Comas tecnico evaluates it",
                tecnico(),
                p.clone(),
                edit(&p, evaluate),
            ),
            deny(
                "an Ate tecnico evaluates a Comas proposal",
                who("u-tec", &[Role::Tecnico], ATE),
                p.clone(),
                edit(&p, evaluate),
                "",
                "belongs to district 150110, outside your scope (150103)",
            ),
            deny(
                "the author, now scoped to Ate, edits their Comas proposal",
                who("u-lead", &[Role::Leader], ATE),
                proposal("draft"),
                edit(&proposal("draft"), |tx| tx.put(ROOT, "zone", "z").unwrap()),
                "",
                "outside your scope",
            ),
            deny(
                "an Ate leader supports a Comas proposal",
                who("u-x", &[Role::Leader], ATE),
                p.clone(),
                edit(&p, |tx| {
                    let s = at(tx, "supporters");
                    tx.put(&s, "u-x", T0).unwrap();
                }),
                "",
                "outside your scope",
            ),
            deny(
                "an Ate admin edits the Comas process",
                who("u-adm", &[Role::Admin], ATE),
                process(),
                edit(&process(), |tx| tx.put(ROOT, "ceiling", 1).unwrap()),
                "",
                "outside your scope",
            ),
        ],
    );
}

#[test]
fn the_index_document_is_written_by_the_server_only() {
    let idx = index();
    let add = |tx: &mut Transaction<'_>| {
        let docs = at(tx, "docs");
        let e = tx
            .put_object(&docs, "2y6Z7XY4zpwKgsRbe2G2Zkr6NPbe", ObjType::Map)
            .unwrap();
        tx.put(&e, "type", "proposal").unwrap();
    };
    let empty = Automerge::new();
    run(
        "index",
        vec![
            // Contrast: reading is fine, and the server (not a principal) writes it directly.
            allow(
                "(contrast) re-sending changes the index already has",
                admin(),
                idx.clone(),
                idx.get_changes(&[]),
            ),
            deny(
                "admin adds an entry to the index",
                admin(),
                idx.clone(),
                edit(&idx, add),
                "",
                "written by the server only",
            ),
            deny(
                "tecnico adds an entry to the index",
                tecnico(),
                idx.clone(),
                edit(&idx, add),
                "",
                "written by the server only",
            ),
            deny(
                "a province-wide user with every role edits the index",
                who("u-all", &Role::ALL, "*"),
                idx.clone(),
                edit(&idx, add),
                "",
                "written by the server only",
            ),
            deny(
                "admin creates an index document",
                admin(),
                empty.clone(),
                edit(&empty, |tx| {
                    header(tx, "index", COMAS);
                    tx.put_object(ROOT, "docs", ObjType::Map).unwrap();
                }),
                "type",
                "written by the server only",
            ),
        ],
    );
}

#[test]
fn root_keys_type_schema_version_district_process_year_are_immutable() {
    let p = proposal("draft");
    let mut cases = vec![allow(
        "(contrast) the author sets them when creating the proposal",
        author(),
        Automerge::new(),
        edit(&Automerge::new(), |tx| {
            write_proposal(tx, "draft", COMAS, "u-lead")
        }),
    )];
    for (name, key, value) in [
        ("author changes type", "type", "acta"),
        ("author changes district", "district", ATE),
        ("author changes schemaVersion", "schemaVersion", "2"),
        ("author changes processYear", "processYear", "2028"),
    ] {
        cases.push(deny(
            name,
            author(),
            p.clone(),
            edit(&p, move |tx| tx.put(ROOT, key, value).unwrap()),
            key,
            "immutable after creation",
        ));
    }
    cases.push(deny(
        "tecnico deletes an acta's district",
        tecnico(),
        acta("draft"),
        edit(&acta("draft"), |tx| tx.delete(ROOT, "district").unwrap()),
        "district",
        "immutable after creation",
    ));
    cases.push(deny(
        "vigilancia rewrites an observation's type as Text",
        vigilancia(),
        observation("open"),
        edit(&observation("open"), |tx| {
            text(tx, &ROOT, "type", "observation");
        }),
        "type",
        "immutable after creation",
    ));
    run("immutable root keys", cases);
}

#[test]
fn several_roles_get_the_union_of_their_rights() {
    let p = proposal("submitted");
    let leader_tecnico = who("u-lead", &[Role::Leader, Role::Tecnico], COMAS);
    run(
        "union of roles",
        vec![
            allow(
                "leader+tecnico edits own title and evaluates in one batch",
                leader_tecnico.clone(),
                p.clone(),
                edit(&p, |tx| {
                    let t = at(tx, "title");
                    tx.splice_text(&t, 0, 0, "x").unwrap();
                    let ev = at(tx, "evaluation");
                    tx.put(&ev, "viable", true).unwrap();
                }),
            ),
            allow(
                "leader+tecnico moves own proposal submitted → in_evaluation",
                leader_tecnico,
                p.clone(),
                edit(&p, set_status("in_evaluation")),
            ),
            deny(
                "leader+vigilancia still cannot evaluate",
                who("u-lead", &[Role::Leader, Role::Vigilancia], COMAS),
                p.clone(),
                edit(&p, |tx| {
                    let ev = at(tx, "evaluation");
                    tx.put(&ev, "viable", true).unwrap();
                }),
                "evaluation/viable",
                "only tecnico",
            ),
            deny(
                "tecnico+admin still cannot edit a leader's title",
                who("u-x", &[Role::Tecnico, Role::Admin], COMAS),
                p.clone(),
                edit(&p, |tx| tx.put(ROOT, "zone", "z").unwrap()),
                "zone",
                "only the proposal's authors",
            ),
        ],
    );
}

// ---------- batches ----------

#[test]
fn batches_missing_dependencies_hidden_writes_and_resends() {
    let p = proposal("draft");
    // Two changes by the author; only the second is sent.
    let both = edits(
        &p,
        vec![
            step(|tx| tx.put(ROOT, "zone", "a").unwrap()),
            step(|tx| tx.put(ROOT, "zone", "b").unwrap()),
        ],
    );
    // A leader writes evaluation/viable concurrently with a tecnico; whichever value wins the
    // conflict, the leader's operation is judged.
    let tecnico_evaluated = {
        let mut d = p.fork();
        d.apply_changes(edit(&p, |tx| {
            let ev = at(tx, "evaluation");
            tx.put(&ev, "viable", true).unwrap();
        }))
        .unwrap();
        d
    };
    let leader_write = edit(&p, |tx| {
        let ev = at(tx, "evaluation");
        tx.put(&ev, "viable", false).unwrap();
    });
    run(
        "batches",
        vec![
            allow(
                "both changes of a session in one batch",
                author(),
                p.clone(),
                both.clone(),
            ),
            allow(
                "changes the document already has are ignored",
                other_leader(),
                p.clone(),
                p.get_changes(&[]),
            ),
            Case {
                name: "a change whose dependency is missing is held, not judged",
                principal: author(),
                before: p.clone(),
                changes: vec![both[1].clone()],
                expect: Expect::MissingDependencies,
            },
            deny(
                "a leader's write that is concurrent with the tecnico's is judged even if hidden",
                author(),
                tecnico_evaluated,
                leader_write,
                "evaluation/viable",
                "only tecnico",
            ),
        ],
    );
}
