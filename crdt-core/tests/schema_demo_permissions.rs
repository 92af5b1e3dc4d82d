//! Every change of the demo data is one its author's role may make: replayed change by change
//! through the permission function, as the server would judge them arriving from each user.

use std::collections::BTreeMap;

use automerge::Automerge;
use crdt_core::demo::{demo_actor, demo_documents, demo_users};
use crdt_core::permissions::{check_changes, Principal};
use crdt_core::schema::DocType;
use crdt_core::DistrictScope;

#[test]
fn demo_changes_pass_the_permission_rules() {
    let principals: BTreeMap<_, _> = demo_users()
        .into_iter()
        .map(|u| {
            let p = Principal::new(
                u.id.clone(),
                u.roles.clone(),
                DistrictScope::One(u.district),
            );
            (demo_actor(&u.id), p)
        })
        .collect();
    for d in demo_documents(2027, 1_780_000_000) {
        if d.doc_type == DocType::Index {
            continue; // written by the server itself
        }
        let mut before = Automerge::new();
        for change in d.doc.get_changes(&[]) {
            let principal = &principals[change.actor_id()];
            let decision = check_changes(principal, &before, std::slice::from_ref(&change));
            assert!(
                decision.is_allowed(),
                "{:?} {} change {:?} by {}: {decision:?}",
                d.doc_type,
                d.id,
                change.message(),
                principal.user
            );
            before.apply_changes([change]).unwrap();
        }
    }
}
