//! Who may change what: the permission function the server runs on every batch of a peer's
//! changes before it applies them (DESIGN.md, "Who may change what").
//!
//! [`check_changes`] is pure: it forks the document, applies the batch to the fork, places every
//! operation of the batch at its path as a [`PlacedOp`] ([`ops`]), reads the few [`DocFacts`] the
//! rules depend on from the states before and after, and hands them to [`judge`] ([`rules`]), which
//! is a plain function over (principal, facts, placed operations) and is tested with tables.
//!
//! Decisions where DESIGN.md is silent (each also noted at the rule that makes it):
//! - Operations are judged, not the visible diff: a write that loses a conflict is still judged.
//! - A batch whose changes depend on changes the server does not have is neither allowed nor
//!   denied: [`Decision::MissingDependencies`] (the server holds it until they arrive).
//! - A batch of empty changes (no operations) is allowed, except on a sealed acta, the index, or a
//!   document of another district; a document without `type` is treated as not yet created, so
//!   automerge-repo's initial empty change passes and the first change with content is the
//!   creation, which must set `type`, `schemaVersion` (1), `district`, `processYear` (and
//!   `createdBy` = self for a proposal, the initial `status` for proposal, acta and observation).
//! - Root keys outside schema v1 are denied ("`x` is not a field of a proposal").
//! - `status` must be changed from its current value: a status write made concurrently with
//!   another status change is denied ("sync and try again"), so statuses never conflict.
//! - A proposal is withdrawn only from draft or submitted (observed has been in evaluation).
//! - Support (`supporters/<self>`) is open until the proposal is withdrawn, ineligible,
//!   prioritized or not_prioritized.
//! - Comments and responses are append-only: an author may edit their own entry but nobody
//!   deletes or replaces entries. Only leaders comment; admin responds while the observation is
//!   sent or answered.
//! - Any voting attendee may sign as themself, whatever their role; nobody (not even a tecnico)
//!   writes a signature for someone else. A signer does not withdraw their signature; a tecnico
//!   may remove signatures (e.g. when returning the acta to draft).
//! - Nobody sets an acta to `sealed` through changes; the seal endpoint does it.
//! - Observation content (target, kind, description, evidence) changes only while `open`.

pub mod facts;
pub mod ops;
pub(crate) mod place;
pub mod rules;

use std::collections::BTreeSet;
use std::fmt;

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use serde::Serialize;

use crate::ids::{DistrictScope, Role, Ubigeo, UserId};

pub use facts::DocFacts;
pub use ops::{causal_order, display_path, OpAction, PlacedOp, Seg, Written};
pub use rules::judge;

/// The authenticated user a batch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The JWT `sub`.
    pub user: UserId,
    /// The JWT `roles`; several roles grant the union of their rights.
    pub roles: BTreeSet<Role>,
    /// The JWT `district`.
    pub district: DistrictScope,
}

impl Principal {
    /// A principal from its parts.
    pub fn new(
        user: UserId,
        roles: impl IntoIterator<Item = Role>,
        district: DistrictScope,
    ) -> Self {
        Self {
            user,
            roles: roles.into_iter().collect(),
            district,
        }
    }

    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Why part of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Violation {
    /// Where, e.g. `title`, `supporters/u-2`, `comments/3/text`; empty for the whole document.
    pub path: String,
    /// Why, in English.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// The answer for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every operation of the batch is allowed.
    Allowed,
    /// At least one operation is not; each violation once, in causal order.
    Denied(Vec<Violation>),
    /// Some changes depend on changes that neither the document nor the batch has (listed):
    /// nothing was judged; hold the batch until they arrive.
    MissingDependencies(Vec<ChangeHash>),
}

impl Decision {
    /// Whether the batch may be applied.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }

    /// The violations of a denied batch (empty otherwise).
    pub fn violations(&self) -> &[Violation] {
        match self {
            Decision::Denied(v) => v,
            _ => &[],
        }
    }
}

/// Whether the principal may read documents of `district` (own district, or all with `*`).
pub fn may_read(principal: &Principal, district: Ubigeo) -> bool {
    principal.district.covers(district)
}

/// Decides whether `principal` may add `changes` to `before` (an empty document: the batch
/// creates it). Changes already in `before` are ignored.
pub fn check_changes(principal: &Principal, before: &Automerge, changes: &[Change]) -> Decision {
    check_and_apply(principal, before, changes).0
}

/// Like [`check_changes`], also returning a copy of `before` with the batch applied, so an
/// allowed batch need not be applied a second time. Use the copy only when the decision is
/// [`Decision::Allowed`]; otherwise it holds the refused (or waiting) changes.
pub fn check_and_apply(
    principal: &Principal,
    before: &Automerge,
    changes: &[Change],
) -> (Decision, Automerge) {
    let mut after = before.fork();
    let fresh: Vec<Change> = changes
        .iter()
        .filter(|c| before.get_change_by_hash(&c.hash()).is_none())
        .cloned()
        .collect();
    if fresh.is_empty() {
        return (Decision::Allowed, after);
    }
    if let Err(e) = after.apply_changes(fresh.iter().cloned()) {
        let v = Violation {
            path: String::new(),
            reason: format!("invalid change: {e}"),
        };
        return (Decision::Denied(vec![v]), after);
    }
    if fresh
        .iter()
        .any(|c| after.get_change_by_hash(&c.hash()).is_none())
    {
        let mut missing = after.get_missing_deps(&[]);
        missing.sort();
        return (Decision::MissingDependencies(missing), after);
    }
    let new_changes = ops::causal_order(after.get_changes(&before.get_heads()));
    let placed = ops::extract(before, &after, &new_changes);
    let decision = judge(
        principal,
        &DocFacts::read(before),
        &DocFacts::read(&after),
        &placed,
    );
    (decision, after)
}
