//! The permission rules of DESIGN.md's "Who may change what", as pure functions over the
//! principal, the facts of the document before and after the batch, and the batch's operations.

use crate::ids::{Role, Ubigeo, PROCESS_YEARS};
use crate::schema::{ActaStatus, DocType, ObservationStatus, ProposalStatus, SCHEMA_VERSION};

use super::facts::DocFacts;
use super::ops::{OpAction, PlacedOp, Seg, Written};
use super::{Decision, Principal, Violation};

/// Root keys fixed when a document is created.
pub const IMMUTABLE_ROOT_KEYS: [&str; 4] = ["type", "schemaVersion", "district", "processYear"];

/// Proposal fields its authors edit while draft, submitted or observed.
pub const PROPOSAL_CONTENT: [&str; 8] = [
    "title",
    "description",
    "zone",
    "category",
    "beneficiaries",
    "estimatedCost",
    "cofinancing",
    "coauthors",
];

/// Acta fields a tecnico edits before sealing (besides `status` and `signatures`).
pub const ACTA_CONTENT: [&str; 8] = [
    "title",
    "kind",
    "date",
    "place",
    "attendees",
    "agreements",
    "prioritized",
    "committeeMembers",
];

/// Observation fields vigilancia edits while the observation is open.
pub const OBSERVATION_CONTENT: [&str; 4] = ["target", "kind", "description", "evidence"];

/// Fields of the process document.
pub const PROCESS_FIELDS: [&str; 4] = ["ceiling", "zones", "phase", "criteria"];

/// Judges a batch: `before` describes the document before it (no `type` = the batch creates
/// the document), `after` the merged result, `ops` every operation of the batch, placed.
pub fn judge(
    principal: &Principal,
    before: &DocFacts,
    after: &DocFacts,
    ops: &[PlacedOp],
) -> Decision {
    let creating = before.doc_type.is_none();
    let doc_type = if creating {
        if ops.is_empty() {
            // Empty changes of a document nobody has typed yet (automerge-repo's `create()`
            // starts with one): they change nothing and claim nothing.
            return Decision::Allowed;
        }
        match check_creation(principal, after) {
            Ok(t) => t,
            Err(v) => return Decision::Denied(v),
        }
    } else {
        match check_existing(principal, before) {
            Ok(t) => t,
            Err(v) => return Decision::Denied(vec![v]),
        }
    };
    let ctx = Ctx {
        p: principal,
        sub: principal.user.as_str(),
        creating,
        doc_type,
        before,
        after,
        current: if creating { after } else { before },
    };
    let mut violations: Vec<Violation> = Vec::new();
    for op in ops {
        if let Err(reason) = ctx.judge_op(op) {
            let path = op.display_path();
            // Report each reason once per subtree: a denied new comment is one violation, not
            // one per field written into it.
            let covered = violations.iter().any(|v| {
                v.reason == reason
                    && (v.path == path
                        || v.path.is_empty()
                        || path.starts_with(&format!("{}/", v.path)))
            });
            if !covered {
                violations.push(Violation { path, reason });
            }
        }
    }
    if violations.is_empty() {
        Decision::Allowed
    } else {
        Decision::Denied(violations)
    }
}

fn violation(path: &str, reason: impl Into<String>) -> Violation {
    Violation {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// The role that creates each type of document (`None`: nobody, the server writes it).
pub fn creator_role(doc_type: DocType) -> Option<Role> {
    match doc_type {
        DocType::Proposal => Some(Role::Leader),
        DocType::Acta => Some(Role::Tecnico),
        DocType::Observation => Some(Role::Vigilancia),
        DocType::Process => Some(Role::Admin),
        DocType::Index => None,
    }
}

fn initial_statuses(doc_type: DocType) -> &'static [&'static str] {
    match doc_type {
        DocType::Proposal => &["draft", "submitted"],
        DocType::Acta => &["draft"],
        DocType::Observation => &["open"],
        DocType::Process | DocType::Index => &[],
    }
}

fn check_creation(p: &Principal, after: &DocFacts) -> Result<DocType, Vec<Violation>> {
    let Some(raw_type) = after.doc_type.as_deref() else {
        return Err(vec![violation(
            "type",
            "a new document must set `type` (proposal, acta, observation or process) \
             with `schemaVersion`, `district` and `processYear` in its first change",
        )]);
    };
    let doc_type: DocType = raw_type.parse().map_err(|_| {
        vec![violation(
            "type",
            format!("unknown document type {raw_type:?}"),
        )]
    })?;
    let Some(role) = creator_role(doc_type) else {
        return Err(vec![violation(
            "type",
            "the index document is written by the server only",
        )]);
    };
    let mut v = Vec::new();
    if !p.has(role) {
        v.push(violation(
            "type",
            format!("only {role} may create {}", a(doc_type)),
        ));
    }
    match after.district.as_deref().map(str::parse::<Ubigeo>) {
        None => v.push(violation(
            "district",
            "a new document must set `district` (a 6-digit ubigeo)",
        )),
        Some(Err(e)) => v.push(violation("district", e.to_string())),
        Some(Ok(d)) if !p.district.covers(d) => v.push(violation(
            "district",
            format!("district {d} is outside your scope ({})", p.district),
        )),
        Some(Ok(_)) => {}
    }
    if after.schema_version != Some(SCHEMA_VERSION) {
        v.push(violation(
            "schemaVersion",
            format!("schemaVersion must be {SCHEMA_VERSION}"),
        ));
    }
    match after.process_year {
        None => v.push(violation(
            "processYear",
            "a new document must set `processYear`",
        )),
        Some(y) if !u16::try_from(y).is_ok_and(|y| PROCESS_YEARS.contains(&y)) => {
            v.push(violation(
                "processYear",
                format!(
                    "{y} is not a fiscal year Minka serves ({}..={})",
                    PROCESS_YEARS.start(),
                    PROCESS_YEARS.end()
                ),
            ))
        }
        Some(_) => {}
    }
    // `createdBy` is required of a proposal; the builders write it on every type.
    let created_by_ok = match after.created_by.as_deref() {
        Some(by) => by == p.user.as_str(),
        None => doc_type != DocType::Proposal,
    };
    if !created_by_ok {
        v.push(violation(
            "createdBy",
            format!("createdBy must be your own user id ({})", p.user),
        ));
    }
    let initial = initial_statuses(doc_type);
    if !initial.is_empty()
        && !after
            .status
            .as_deref()
            .is_some_and(|s| initial.contains(&s))
    {
        v.push(violation(
            "status",
            format!(
                "a new {doc_type} must start with status {}",
                initial.join(" or ")
            ),
        ));
    }
    if v.is_empty() {
        Ok(doc_type)
    } else {
        Err(v)
    }
}

fn check_existing(p: &Principal, before: &DocFacts) -> Result<DocType, Violation> {
    let raw_type = before.doc_type.as_deref().unwrap_or_default();
    let doc_type: DocType = raw_type
        .parse()
        .map_err(|_| violation("", format!("the document has an unknown type {raw_type:?}")))?;
    if doc_type == DocType::Index {
        return Err(violation(
            "",
            "the index document is written by the server only",
        ));
    }
    let district = before.district.as_deref().unwrap_or_default();
    match district.parse::<Ubigeo>() {
        Ok(d) if p.district.covers(d) => {}
        Ok(d) => {
            return Err(violation(
                "",
                format!(
                    "the document belongs to district {d}, outside your scope ({})",
                    p.district
                ),
            ))
        }
        Err(_) => {
            return Err(violation(
                "",
                format!("the document has an invalid district {district:?}"),
            ))
        }
    }
    if doc_type == DocType::Acta && before.status.as_deref() == Some(ActaStatus::Sealed.as_str()) {
        return Err(violation(
            "",
            "the acta is sealed: it accepts no changes from anyone",
        ));
    }
    Ok(doc_type)
}

/// Who a status transition belongs to.
enum Who {
    Authors,
    Role(Role),
}

struct Ctx<'a> {
    p: &'a Principal,
    sub: &'a str,
    creating: bool,
    doc_type: DocType,
    before: &'a DocFacts,
    after: &'a DocFacts,
    /// The state edit windows are judged on: `before`, or `after` for a new document.
    current: &'a DocFacts,
}

type Verdict = Result<(), String>;

impl Ctx<'_> {
    fn judge_op(&self, e: &PlacedOp) -> Verdict {
        let key = e.root_key();
        if IMMUTABLE_ROOT_KEYS.contains(&key) {
            return if self.creating && e.path.len() == 1 {
                Ok(())
            } else {
                Err(format!("`{key}` is immutable after creation"))
            };
        }
        if key == "createdBy" {
            // Checked against the creator when the document is created, fixed afterwards.
            return if self.creating && e.path.len() == 1 {
                Ok(())
            } else {
                Err("`createdBy` is immutable after creation".into())
            };
        }
        if self.creating && e.path.len() == 1 && self.is_field(key) && is_new_container(e) {
            // The creator lays out the document's empty maps and lists.
            return Ok(());
        }
        match self.doc_type {
            DocType::Proposal => self.proposal(e),
            DocType::Acta => self.acta(e),
            DocType::Observation => self.observation(e),
            DocType::Process => self.process(e),
            DocType::Index => Err("the index document is written by the server only".into()),
        }
    }

    fn is_field(&self, key: &str) -> bool {
        match self.doc_type {
            DocType::Proposal => {
                PROPOSAL_CONTENT.contains(&key)
                    || ["status", "supporters", "comments", "evaluation", "scores"].contains(&key)
            }
            DocType::Acta => ACTA_CONTENT.contains(&key) || ["status", "signatures"].contains(&key),
            DocType::Observation => {
                OBSERVATION_CONTENT.contains(&key) || ["status", "responses"].contains(&key)
            }
            DocType::Process => PROCESS_FIELDS.contains(&key),
            DocType::Index => key == "docs",
        }
    }

    fn unknown_field(&self, key: &str) -> String {
        format!("`{key}` is not a field of {} (schema v1)", a(self.doc_type))
    }

    fn status(&self) -> &str {
        self.current.status.as_deref().unwrap_or("without status")
    }

    fn is_author(&self) -> bool {
        let facts = self.current;
        facts.created_by.as_deref() == Some(self.sub) || facts.coauthors.contains(self.sub)
    }

    // ---- proposal ----

    fn proposal(&self, e: &PlacedOp) -> Verdict {
        let key = e.root_key();
        match key {
            k if PROPOSAL_CONTENT.contains(&k) => self.proposal_content(k),
            "status" => self.status_write(e),
            "supporters" => self.supporters(e),
            "comments" => self.entries(e, Role::Leader),
            "evaluation" | "scores" => {
                if self.p.has(Role::Tecnico) {
                    Ok(())
                } else {
                    Err(format!("only tecnico may change {key}"))
                }
            }
            _ => Err(self.unknown_field(key)),
        }
    }

    fn proposal_content(&self, key: &str) -> Verdict {
        if !self.p.has(Role::Leader) || !self.is_author() {
            return Err(format!(
                "only the proposal's authors (createdBy or coauthors) may change `{key}`"
            ));
        }
        let status = self.status();
        if ["draft", "submitted", "observed"].contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "the proposal is {status}: its authors may change `{key}` only while it is draft, submitted or observed"
            ))
        }
    }

    fn supporters(&self, e: &PlacedOp) -> Verdict {
        const OWN_KEY: &str = "a leader may only add or remove their own key in supporters";
        if !self.p.has(Role::Leader) {
            return Err("only leaders may support a proposal".into());
        }
        let status = self.status();
        if ["withdrawn", "ineligible", "prioritized", "not_prioritized"].contains(&status) {
            return Err(format!("support is closed: the proposal is {status}"));
        }
        match e.path.get(1) {
            None if is_missing_container(e) => Ok(()),
            Some(Seg::Key(user)) if user == self.sub => Ok(()),
            _ => Err(OWN_KEY.into()),
        }
    }

    /// `comments` of a proposal (by leaders) or `responses` of an observation (by admin):
    /// append-only lists of `{author, text, at}` where each writes as themself.
    fn entries(&self, e: &PlacedOp, role: Role) -> Verdict {
        let (noun, list) = match self.doc_type {
            DocType::Observation => ("response", "responses"),
            _ => ("comment", "comments"),
        };
        if !self.p.has(role) {
            return Err(match role {
                Role::Admin => "only admin may respond to an observation".to_string(),
                _ => format!("only {role}s may comment on a proposal"),
            });
        }
        if self.doc_type == DocType::Observation && !self.creating {
            let status = self.status();
            if !["sent", "answered"].contains(&status) {
                return Err(format!(
                    "the observation is {status}: responses are accepted only while it is sent or answered"
                ));
            }
        }
        let own = |facts: &super::DocFacts, id: &str| {
            facts
                .entry_authors
                .get(id)
                .is_some_and(|a| a.as_deref() == Some(self.sub))
        };
        match e.path.get(1) {
            None if is_missing_container(e) => Ok(()),
            None => Err(format!("{list} cannot be replaced")),
            Some(Seg::Key(_)) => Err(format!("{list} must be a list")),
            Some(Seg::Elem { id, new, .. }) => {
                if e.path.len() == 2 {
                    match &e.action {
                        OpAction::Insert(Written::Map) if own(self.after, id) => Ok(()),
                        OpAction::Insert(Written::Map) => Err(format!(
                            "a new {noun}'s author must be yourself ({})",
                            self.sub
                        )),
                        OpAction::Insert(_) => {
                            Err(format!("a {noun} must be a map with author, text and at"))
                        }
                        _ => Err(format!("{list} cannot be deleted or replaced")),
                    }
                } else if *new {
                    if own(self.after, id) {
                        Ok(())
                    } else {
                        Err(format!(
                            "a new {noun}'s author must be yourself ({})",
                            self.sub
                        ))
                    }
                } else if own(self.before, id) && own(self.after, id) {
                    Ok(())
                } else {
                    Err(format!("only a {noun}'s author may edit it"))
                }
            }
        }
    }

    // ---- acta ----

    fn acta(&self, e: &PlacedOp) -> Verdict {
        let key = e.root_key();
        match key {
            "status" => self.status_write(e),
            "signatures" if self.p.has(Role::Tecnico) && clears_signatures(e) => Ok(()),
            "signatures" => self.signature(e),
            k if ACTA_CONTENT.contains(&k) => {
                if self.p.has(Role::Tecnico) {
                    Ok(())
                } else {
                    Err(format!("only tecnico may edit an acta (`{k}`)"))
                }
            }
            _ => Err(self.unknown_field(key)),
        }
    }

    fn signature(&self, e: &PlacedOp) -> Verdict {
        match e.path.get(1) {
            None if is_missing_container(e) => self.may_sign(),
            None => Err("only tecnico may clear signatures".into()),
            Some(Seg::Key(user)) if user != self.sub => Err(format!(
                "you may sign only as yourself ({}), not as {user}",
                self.sub
            )),
            Some(Seg::Key(_)) => {
                self.may_sign()?;
                if e.path.len() == 2 && e.action == OpAction::Delete {
                    Err(
                        "a signature cannot be withdrawn (a tecnico may return the acta to draft)"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            Some(Seg::Elem { .. }) => Err("signatures must be a map".into()),
        }
    }

    fn may_sign(&self) -> Verdict {
        let status = self.status();
        if status != ActaStatus::Signing.as_str() {
            return Err(format!("the acta is not open for signing (it is {status})"));
        }
        if !self.current.voting_attendees.contains(self.sub) {
            return Err(format!(
                "only attendees with a vote may sign ({} is not a voting attendee)",
                self.sub
            ));
        }
        Ok(())
    }

    // ---- observation ----

    fn observation(&self, e: &PlacedOp) -> Verdict {
        let key = e.root_key();
        match key {
            "status" => self.status_write(e),
            "responses" => self.entries(e, Role::Admin),
            k if OBSERVATION_CONTENT.contains(&k) => {
                if !self.p.has(Role::Vigilancia) {
                    return Err(format!("only vigilancia may edit an observation (`{k}`)"));
                }
                let status = self.status();
                if status == ObservationStatus::Open.as_str() {
                    Ok(())
                } else {
                    Err(format!(
                        "the observation is {status}: `{k}` can change only while it is open"
                    ))
                }
            }
            _ => Err(self.unknown_field(key)),
        }
    }

    // ---- process ----

    fn process(&self, e: &PlacedOp) -> Verdict {
        let key = e.root_key();
        if !self.p.has(Role::Admin) {
            Err("only admin may change the process document".into())
        } else if PROCESS_FIELDS.contains(&key) {
            Ok(())
        } else {
            Err(self.unknown_field(key))
        }
    }

    // ---- status machines ----

    fn status_write(&self, e: &PlacedOp) -> Verdict {
        if e.path.len() > 1 && e.action != OpAction::EditText {
            return Err("status must be a string".into());
        }
        let to = match &e.action {
            OpAction::Delete => return Err("status cannot be deleted".into()),
            OpAction::EditText => {
                // Characters spliced into an existing Text status: judge the net transition.
                let from = self.before.status.as_deref().unwrap_or_default();
                let to = self.after.status.as_deref().unwrap_or_default();
                return self.transition(from, to);
            }
            OpAction::Set(w) => match w.as_str() {
                Some(s) => s,
                None => return Err("status must be a string".into()),
            },
            OpAction::Insert(_) | OpAction::Increment => {
                return Err("status must be a string".into())
            }
        };
        if !e.concurrent.is_empty() {
            let others: Vec<String> = e.concurrent.iter().map(ToString::to_string).collect();
            return Err(format!(
                "status was changed concurrently (to {}); sync and try again",
                others.join(", ")
            ));
        }
        if e.replaced.is_empty() {
            let initial = initial_statuses(self.doc_type);
            return if self.creating && initial.contains(&to) {
                Ok(())
            } else if self.creating {
                Err(format!(
                    "a new {} must start with status {}",
                    self.doc_type,
                    initial.join(" or ")
                ))
            } else {
                Err("status may only change from its current value".into())
            };
        }
        for from in &e.replaced {
            self.transition(from.as_str().unwrap_or_default(), to)?;
        }
        Ok(())
    }

    fn transition(&self, from: &str, to: &str) -> Verdict {
        if from == to {
            return Ok(());
        }
        let who = match self.doc_type {
            DocType::Proposal => proposal_transition(from, to)?,
            DocType::Acta => acta_transition(from, to)?,
            DocType::Observation => observation_transition(from, to)?,
            DocType::Process | DocType::Index => return Err(self.unknown_field("status")),
        };
        let allowed = match who {
            Who::Authors => self.p.has(Role::Leader) && self.is_author(),
            Who::Role(r) => self.p.has(r),
        };
        if allowed {
            Ok(())
        } else {
            let who = match who {
                Who::Authors => "the proposal's authors".to_string(),
                Who::Role(r) => r.to_string(),
            };
            Err(format!(
                "only {who} may move {} from {from} to {to}",
                a(self.doc_type)
            ))
        }
    }
}

fn proposal_transition(from: &str, to: &str) -> Result<Who, String> {
    use ProposalStatus::*;
    let parse = |s: &str| {
        s.parse::<ProposalStatus>()
            .map_err(|_| format!("unknown proposal status {s:?}"))
    };
    Ok(match (parse(from)?, parse(to)?) {
        (Draft, Submitted)
        | (Observed, Submitted)
        | (Draft, Withdrawn)
        | (Submitted, Withdrawn) => Who::Authors,
        (Submitted, InEvaluation)
        | (InEvaluation, Observed)
        | (InEvaluation, Eligible)
        | (InEvaluation, Ineligible) => Who::Role(Role::Tecnico),
        (Eligible, Prioritized) | (Eligible, NotPrioritized) => Who::Role(Role::Admin),
        (_, Withdrawn) => {
            return Err(
                "a proposal can be withdrawn only before evaluation (from draft or submitted)"
                    .into(),
            )
        }
        _ => return Err(format!("a proposal cannot go from {from} to {to}")),
    })
}

fn acta_transition(from: &str, to: &str) -> Result<Who, String> {
    use ActaStatus::*;
    let parse = |s: &str| {
        s.parse::<ActaStatus>()
            .map_err(|_| format!("unknown acta status {s:?}"))
    };
    Ok(match (parse(from)?, parse(to)?) {
        (Draft, Signing) | (Signing, Draft) => Who::Role(Role::Tecnico),
        (_, Sealed) => {
            return Err(
                "an acta is sealed only through the seal endpoint (POST /api/v1/docs/{id}/seal)"
                    .into(),
            )
        }
        _ => return Err(format!("an acta cannot go from {from} to {to}")),
    })
}

fn observation_transition(from: &str, to: &str) -> Result<Who, String> {
    use ObservationStatus::*;
    let parse = |s: &str| {
        s.parse::<ObservationStatus>()
            .map_err(|_| format!("unknown observation status {s:?}"))
    };
    Ok(match (parse(from)?, parse(to)?) {
        (Open, Sent) | (Answered, Closed) | (Answered, Escalated) => Who::Role(Role::Vigilancia),
        (Sent, Answered) => Who::Role(Role::Admin),
        _ => return Err(format!("an observation cannot go from {from} to {to}")),
    })
}

/// "a proposal", "an acta".
fn a(doc_type: DocType) -> String {
    match doc_type {
        DocType::Acta | DocType::Observation | DocType::Index => format!("an {doc_type}"),
        DocType::Proposal | DocType::Process => format!("a {doc_type}"),
    }
}

/// Removing signatures (one, or all by replacing the map with an empty one): what a tecnico may
/// do to `signatures` besides signing as themself. Nobody writes a signature for someone else.
fn clears_signatures(e: &PlacedOp) -> bool {
    match e.path.len() {
        1 => e.action == OpAction::Delete || matches!(&e.action, OpAction::Set(Written::Map)),
        2 => e.action == OpAction::Delete,
        _ => false,
    }
}

/// A new empty map or list put at a root key.
fn is_new_container(e: &PlacedOp) -> bool {
    matches!(&e.action, OpAction::Set(w) if w.is_container())
}

/// A new map or list put at a root key that held nothing (not replacing an existing one).
fn is_missing_container(e: &PlacedOp) -> bool {
    e.path.len() == 1 && is_new_container(e) && e.replaced.is_empty() && e.concurrent.is_empty()
}

#[cfg(test)]
mod tests {
    //! The pure layer on its own: facts and placed operations written by hand.

    use automerge::ScalarValue;

    use super::*;
    use crate::ids::{DistrictScope, UserId};

    fn p(user: &str, roles: &[Role]) -> Principal {
        Principal::new(
            UserId::new(user).unwrap(),
            roles.iter().copied(),
            DistrictScope::One(Ubigeo::COMAS),
        )
    }

    fn proposal(status: &str) -> DocFacts {
        DocFacts {
            doc_type: Some("proposal".into()),
            schema_version: Some(1),
            district: Some("150110".into()),
            process_year: Some(2027),
            status: Some(status.into()),
            created_by: Some("u-lead".into()),
            ..DocFacts::default()
        }
    }

    fn key(path: &str) -> Vec<Seg> {
        path.split('/').map(|k| Seg::Key(k.to_string())).collect()
    }

    fn set_status(from: &str, to: &str) -> PlacedOp {
        let s = |v: &str| Written::Scalar(ScalarValue::Str(v.into()));
        PlacedOp {
            replaced: vec![s(from)],
            ..PlacedOp::new(key("status"), OpAction::Set(s(to)))
        }
    }

    fn set(path: &str) -> PlacedOp {
        PlacedOp::new(
            key(path),
            OpAction::Set(Written::Scalar(ScalarValue::Int(1))),
        )
    }

    #[test]
    fn judge_is_a_table_over_facts_and_placed_ops() {
        let leader = p("u-lead", &[Role::Leader]);
        let tecnico = p("u-tec", &[Role::Tecnico]);
        let admin = p("u-adm", &[Role::Admin]);
        let rows: Vec<(&str, &Principal, &str, PlacedOp, Option<&str>)> = vec![
            (
                "author submits",
                &leader,
                "draft",
                set_status("draft", "submitted"),
                None,
            ),
            (
                "tecnico evaluates",
                &tecnico,
                "submitted",
                set_status("submitted", "in_evaluation"),
                None,
            ),
            (
                "admin prioritizes",
                &admin,
                "eligible",
                set_status("eligible", "prioritized"),
                None,
            ),
            (
                "author supports",
                &leader,
                "draft",
                set("supporters/u-lead"),
                None,
            ),
            (
                "tecnico scores",
                &tecnico,
                "draft",
                set("scores/u-tec/c1"),
                None,
            ),
            (
                "author skips evaluation",
                &leader,
                "draft",
                set_status("draft", "eligible"),
                Some("cannot go"),
            ),
            (
                "admin evaluates",
                &admin,
                "submitted",
                set_status("submitted", "in_evaluation"),
                Some("only tecnico"),
            ),
            (
                "author supports for another",
                &leader,
                "draft",
                set("supporters/u-co"),
                Some("own key"),
            ),
            (
                "author edits in evaluation",
                &leader,
                "in_evaluation",
                set("zone"),
                Some("only while"),
            ),
            (
                "author moves district",
                &leader,
                "draft",
                set("district"),
                Some("immutable"),
            ),
        ];
        for (name, principal, status, op, denied) in rows {
            let before = proposal(status);
            let decision = judge(principal, &before, &before, std::slice::from_ref(&op));
            match denied {
                None => assert_eq!(decision, Decision::Allowed, "{name}"),
                Some(reason) => assert!(
                    decision
                        .violations()
                        .iter()
                        .any(|v| v.reason.contains(reason)),
                    "{name}: {decision:?}"
                ),
            }
        }
    }

    #[test]
    fn a_batch_without_operations_on_an_untyped_document_is_allowed() {
        let nobody = DocFacts::default();
        let leader = p("u-lead", &[Role::Leader]);
        assert_eq!(judge(&leader, &nobody, &nobody, &[]), Decision::Allowed);
        assert!(!judge(&leader, &nobody, &nobody, &[set("title")]).is_allowed());
    }
}
