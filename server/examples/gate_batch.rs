//! Cost of judging one large batch of changes: wholly allowed, and the same batch with one
//! denied change in it (a change the user may not make, concurrent with the rest, so every other
//! change is still allowed and must land).
//!
//! `cargo run --release -p minka-server --example gate_batch -- [changes] [runs]`
//! (defaults 10000 and 5). Prints min / median / max milliseconds of each case and the ratio of
//! the medians.

use std::collections::HashMap;
use std::time::Instant;

use automerge::{ActorId, Automerge, Change};
use crdt_core::schema::{apply_edits, Edit, NewDocument, NewProposal, ProposalStatus};
use crdt_core::{DistrictScope, DocumentId, Role, Ubigeo, UserId};
use minka_server::auth::AuthUser;
use minka_server::gate::Gate;
use minka_server::store::MemoryStore;

fn leader() -> AuthUser {
    AuthUser {
        user: UserId::new("ana").unwrap(),
        name: "Ana".into(),
        roles: [Role::Leader].into_iter().collect(),
        district: DistrictScope::One(Ubigeo::COMAS),
        exp: u64::MAX,
    }
}

/// A draft proposal by Ana, and `n` later edits of its description by her, one change each.
fn workload(n: usize) -> (Automerge, Vec<Change>, Change) {
    let actor = ActorId::random();
    let base = NewProposal {
        district: Ubigeo::COMAS,
        process_year: 2027,
        title: "Veredas".into(),
        description: "Tramo 1".into(),
        zone: "Collique".into(),
        category: "vías y veredas".into(),
        beneficiaries: 10,
        estimated_cost: 100,
        cofinancing: 0,
        created_by: UserId::new("ana").unwrap(),
        coauthors: vec![],
    }
    .create(Some(actor.clone()), 1);
    let mut doc = base.fork().with_actor(actor);
    for i in 0..n {
        let edit = Edit::SetScalar {
            field: "beneficiaries".into(),
            value: automerge::ScalarValue::Int(11 + i as i64),
        };
        apply_edits(&mut doc, &[edit], "edit", 2 + i as i64).unwrap();
    }
    let edits = doc.get_changes(&base.get_heads());
    // A leader may not prioritize a proposal: denied, from another of Ana's actors.
    let mut other = base.fork().with_actor(ActorId::random());
    apply_edits(
        &mut other,
        &[Edit::SetProposalStatus(ProposalStatus::Prioritized)],
        "prioritize",
        3,
    )
    .unwrap();
    let denied = other.get_changes(&base.get_heads()).remove(0);
    (base, edits, denied)
}

/// Milliseconds to admit `changes` into `base` on a fresh store; the accepted and rejected counts.
fn admit(base: &Automerge, changes: Vec<Change>) -> (f64, usize, usize) {
    let store = MemoryStore::new();
    let gate = Gate::new();
    let user = leader();
    let id = DocumentId::random();
    let mut rejected = HashMap::new();
    let started = Instant::now();
    let out = gate
        .admit(&store, &id, None, base, &user, changes, &mut rejected, true)
        .unwrap();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    (ms, out.accepted, out.rejected.len())
}

fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(10_000, |a| a.parse().expect("changes"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("runs"));
    let (base, edits, denied) = workload(n);
    let mut allowed = Vec::new();
    let mut one_denied = Vec::new();
    for _ in 0..runs {
        let (ms, acc, rej) = admit(&base, edits.clone());
        assert_eq!((acc, rej), (n, 0));
        allowed.push(ms);
        let mut batch = edits.clone();
        batch.insert(n / 2, denied.clone());
        let (ms, acc, rej) = admit(&base, batch);
        assert_eq!(
            (acc, rej),
            (n, 1),
            "every allowed change lands, the denied one does not"
        );
        one_denied.push(ms);
    }
    let (a_min, a_med, a_max) = summary(allowed);
    let (d_min, d_med, d_max) = summary(one_denied);
    println!("batch of {n} changes, {runs} runs (ms, min / median / max)");
    println!("  all allowed:       {a_min:.1} / {a_med:.1} / {a_max:.1}");
    println!("  one denied inside: {d_min:.1} / {d_med:.1} / {d_max:.1}");
    println!("  ratio of medians:  {:.2}", d_med / a_med);
}
