//! Validation warnings: things a reviewer should see but that never stop a document from
//! merging (offline edits cannot be refused after the fact), plus the budget checks the server
//! enforces when it seals an acta ([`budget_violations`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::acta::Acta;
use super::header::AnyDocument;
use super::observation::Observation;
use super::process::Process;
use super::proposal::Proposal;
use crate::ids::DocumentId;

/// Machine-readable kind of a [`Warning`], serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// Proposal `estimatedCost` ≤ 0.
    CostNotPositive,
    /// Proposal `cofinancing` < 0.
    CofinancingNegative,
    /// Proposal `cofinancing` > `estimatedCost`.
    CofinancingExceedsCost,
    /// Proposal `beneficiaries` ≤ 0.
    BeneficiariesNotPositive,
    /// Proposal `evaluation.validatedCost` ≤ 0.
    ValidatedCostNotPositive,
    /// A proposal's zone (or a prioritized proposal's zone) is not one of the process's zones.
    UnknownZone,
    /// Process `ceiling` ≤ 0, or a zone ceiling ≤ 0.
    CeilingNotPositive,
    /// Process zone ceilings add up to more than the district ceiling.
    ZoneCeilingsOverCeiling,
    /// One zone's ceiling is above the district ceiling.
    ZoneCeilingOverCeiling,
    /// Process criteria weights do not add up to 100.
    CriteriaWeightsNot100,
    /// Acta `prioritized[i].proposalId` is not a document id.
    InvalidProposalId,
    /// A prioritized proposal the budget context does not know (its zone cannot be checked).
    UnknownProposal,
    /// The same proposal is prioritized more than once.
    DuplicateProposal,
    /// Two prioritized entries share a rank.
    DuplicateRank,
    /// A rank ≤ 0.
    RankNotPositive,
    /// A prioritized amount ≤ 0.
    AmountNotPositive,
    /// Prioritized amounts in a zone add up to more than the zone's ceiling.
    ZoneOverCeiling,
    /// Prioritized amounts add up to more than the district ceiling.
    TotalOverCeiling,
    /// The process document is for another district or year than the acta.
    ProcessMismatch,
    /// A signature by someone who is not a voting attendee.
    SignatureNotVoter,
    /// Observation `target` is not a document id.
    InvalidTarget,
}

impl WarningCode {
    /// The snake_case spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            WarningCode::CostNotPositive => "cost_not_positive",
            WarningCode::CofinancingNegative => "cofinancing_negative",
            WarningCode::CofinancingExceedsCost => "cofinancing_exceeds_cost",
            WarningCode::BeneficiariesNotPositive => "beneficiaries_not_positive",
            WarningCode::ValidatedCostNotPositive => "validated_cost_not_positive",
            WarningCode::UnknownZone => "unknown_zone",
            WarningCode::CeilingNotPositive => "ceiling_not_positive",
            WarningCode::ZoneCeilingsOverCeiling => "zone_ceilings_over_ceiling",
            WarningCode::ZoneCeilingOverCeiling => "zone_ceiling_over_ceiling",
            WarningCode::CriteriaWeightsNot100 => "criteria_weights_not_100",
            WarningCode::InvalidProposalId => "invalid_proposal_id",
            WarningCode::UnknownProposal => "unknown_proposal",
            WarningCode::DuplicateProposal => "duplicate_proposal",
            WarningCode::DuplicateRank => "duplicate_rank",
            WarningCode::RankNotPositive => "rank_not_positive",
            WarningCode::AmountNotPositive => "amount_not_positive",
            WarningCode::ZoneOverCeiling => "zone_over_ceiling",
            WarningCode::TotalOverCeiling => "total_over_ceiling",
            WarningCode::ProcessMismatch => "process_mismatch",
            WarningCode::SignatureNotVoter => "signature_not_voter",
            WarningCode::InvalidTarget => "invalid_target",
        }
    }
}

impl fmt::Display for WarningCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a reviewer should look at: a machine `code`, the field `path` (`zones.Collique`,
/// `prioritized[2].amount`) and an English `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    pub path: String,
    pub message: String,
}

impl Warning {
    fn new(code: WarningCode, path: impl Into<String>, message: impl Into<String>) -> Self {
        Warning {
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.path, self.message)
    }
}

/// What cross-document checks need: the district's process (ceilings, zones) and the zone of
/// each proposal, both from the server's merged state. An empty context runs only the checks
/// that need nothing but the document itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetContext {
    pub process: Option<Process>,
    /// proposal id → `zone`.
    pub proposal_zones: BTreeMap<DocumentId, String>,
}

impl BudgetContext {
    /// A context from a process and the district's proposals (ids with their views).
    pub fn new<'p>(
        process: Option<Process>,
        proposals: impl IntoIterator<Item = (DocumentId, &'p Proposal)>,
    ) -> Self {
        BudgetContext {
            process,
            proposal_zones: proposals
                .into_iter()
                .map(|(id, p)| (id, p.zone.clone()))
                .collect(),
        }
    }
}

/// Formats céntimos as soles: `S/ 1,234.56`, `-S/ 0.50`.
pub fn format_soles(centimos: i64) -> String {
    let sign = if centimos < 0 { "-" } else { "" };
    let abs = centimos.unsigned_abs();
    let (soles, cents) = (abs / 100, abs % 100);
    let digits = soles.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}S/ {grouped}.{cents:02}")
}

/// Every warning for a document, using `ctx` for the cross-document checks it can make.
pub fn warnings(doc: &AnyDocument, ctx: &BudgetContext) -> Vec<Warning> {
    match doc {
        AnyDocument::Proposal(p) => proposal_warnings(p, ctx),
        AnyDocument::Acta(a) => acta_warnings(a, ctx),
        AnyDocument::Observation(o) => observation_warnings(o),
        AnyDocument::Process(p) => process_warnings(p),
        AnyDocument::Index(_) => Vec::new(),
    }
}

/// Warnings about one proposal.
pub fn proposal_warnings(p: &Proposal, ctx: &BudgetContext) -> Vec<Warning> {
    use WarningCode::*;
    let mut out = Vec::new();
    if p.estimated_cost <= 0 {
        out.push(Warning::new(
            CostNotPositive,
            "estimatedCost",
            format!(
                "estimated cost is {}; it should be positive",
                format_soles(p.estimated_cost)
            ),
        ));
    }
    if p.cofinancing < 0 {
        out.push(Warning::new(
            CofinancingNegative,
            "cofinancing",
            format!("co-financing is negative ({})", format_soles(p.cofinancing)),
        ));
    } else if p.cofinancing > p.estimated_cost {
        out.push(Warning::new(
            CofinancingExceedsCost,
            "cofinancing",
            format!(
                "co-financing {} is more than the estimated cost {}",
                format_soles(p.cofinancing),
                format_soles(p.estimated_cost)
            ),
        ));
    }
    if p.beneficiaries <= 0 {
        out.push(Warning::new(
            BeneficiariesNotPositive,
            "beneficiaries",
            format!(
                "beneficiaries is {}; it should be positive",
                p.beneficiaries
            ),
        ));
    }
    if let Some(cost) = p.evaluation.validated_cost {
        if cost <= 0 {
            out.push(Warning::new(
                ValidatedCostNotPositive,
                "evaluation.validatedCost",
                format!(
                    "validated cost is {}; it should be positive",
                    format_soles(cost)
                ),
            ));
        }
    }
    if let Some(process) = &ctx.process {
        if !process.zones.is_empty() && !process.zones.contains_key(&p.zone) {
            out.push(Warning::new(
                UnknownZone,
                "zone",
                format!(
                    "zone {:?} is not one of the process's zones ({})",
                    p.zone,
                    zone_list(process)
                ),
            ));
        }
    }
    out
}

/// Warnings about a process: ceilings and criteria weights.
pub fn process_warnings(p: &Process) -> Vec<Warning> {
    use WarningCode::*;
    let mut out = Vec::new();
    if p.ceiling <= 0 {
        out.push(Warning::new(
            CeilingNotPositive,
            "ceiling",
            format!(
                "district ceiling is {}; it should be positive",
                format_soles(p.ceiling)
            ),
        ));
    }
    for (zone, ceiling) in &p.zones {
        if *ceiling <= 0 {
            out.push(Warning::new(
                CeilingNotPositive,
                format!("zones.{zone}"),
                format!(
                    "ceiling of zone {zone} is {}; it should be positive",
                    format_soles(*ceiling)
                ),
            ));
        }
    }
    out.extend(zone_ceiling_checks(p));
    let sum: i64 = p.zones.values().fold(0, |s, c| s.saturating_add(*c));
    if !p.zones.is_empty() && sum > p.ceiling {
        out.push(Warning::new(
            ZoneCeilingsOverCeiling,
            "zones",
            format!(
                "zone ceilings add up to {}, over the district ceiling {} by {}",
                format_soles(sum),
                format_soles(p.ceiling),
                format_soles(sum - p.ceiling)
            ),
        ));
    }
    if !p.criteria.is_empty() {
        let weights: i64 = p.criteria.iter().fold(0, |s, c| s.saturating_add(c.weight));
        if weights != 100 {
            out.push(Warning::new(
                CriteriaWeightsNot100,
                "criteria",
                format!("criteria weights add up to {weights}, not 100"),
            ));
        }
    }
    out
}

/// Warnings about an acta; with a process in `ctx` they include [`budget_violations`].
pub fn acta_warnings(a: &Acta, ctx: &BudgetContext) -> Vec<Warning> {
    use WarningCode::*;
    let mut out = Vec::new();
    let mut first_rank: BTreeMap<i64, usize> = BTreeMap::new();
    let mut first_proposal: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in a.prioritized.iter().enumerate() {
        if e.rank <= 0 {
            out.push(Warning::new(
                RankNotPositive,
                format!("prioritized[{i}].rank"),
                format!("rank {} should be 1 or more", e.rank),
            ));
        }
        if let Some(j) = first_rank.get(&e.rank) {
            out.push(Warning::new(
                DuplicateRank,
                format!("prioritized[{i}].rank"),
                format!("rank {} is also given to prioritized[{j}]", e.rank),
            ));
        } else {
            first_rank.insert(e.rank, i);
        }
        if let Some(j) = first_proposal.get(e.proposal_id.as_str()) {
            out.push(Warning::new(
                DuplicateProposal,
                format!("prioritized[{i}].proposalId"),
                format!(
                    "proposal {} is already prioritized at prioritized[{j}]",
                    e.proposal_id
                ),
            ));
        } else {
            first_proposal.insert(&e.proposal_id, i);
        }
    }
    let voters: BTreeSet<_> = a.voters().collect();
    for user in a.signatures.keys() {
        if !voters.contains(user) {
            out.push(Warning::new(
                SignatureNotVoter,
                format!("signatures.{user}"),
                format!("{user} signed but is not listed as an attendee with a vote"),
            ));
        }
    }
    match &ctx.process {
        Some(process) => out.extend(budget_violations(process, a, &ctx.proposal_zones)),
        None => out.extend(entry_checks(a)),
    }
    out
}

/// Warnings about an observation.
pub fn observation_warnings(o: &Observation) -> Vec<Warning> {
    if o.target_id().is_some() {
        return Vec::new();
    }
    vec![Warning::new(
        WarningCode::InvalidTarget,
        "target",
        format!("target {:?} is not a document id", o.target),
    )]
}

/// What keeps an acta from being sealed: its prioritized list checked against the process's
/// ceilings (each zone's total ≤ zone ceiling ≤ district ceiling, grand total ≤ district
/// ceiling), plus entries that cannot be checked (invalid or unknown proposal, a zone the process
/// does not have, an amount ≤ 0) and a process of another district or year. Empty means the
/// budget invariants hold. Amounts in messages are in soles (`S/ 1,234.56`).
pub fn budget_violations(
    process: &Process,
    acta: &Acta,
    proposal_zones: &BTreeMap<DocumentId, String>,
) -> Vec<Warning> {
    use WarningCode::*;
    let mut out = Vec::new();
    if process.header.district != acta.header.district
        || process.header.process_year != acta.header.process_year
    {
        out.push(Warning::new(
            ProcessMismatch,
            "district",
            format!(
                "the process is for district {} year {}, the acta for district {} year {}",
                process.header.district,
                process.header.process_year,
                acta.header.district,
                acta.header.process_year
            ),
        ));
    }
    out.extend(entry_checks(acta));
    let mut per_zone: BTreeMap<&str, i64> = BTreeMap::new();
    let mut total: i64 = 0;
    for (i, e) in acta.prioritized.iter().enumerate() {
        total = total.saturating_add(e.amount);
        let Some(id) = e.document_id() else { continue };
        let Some(zone) = proposal_zones.get(&id) else {
            out.push(Warning::new(
                UnknownProposal,
                format!("prioritized[{i}].proposalId"),
                format!("proposal {id} is not a known proposal of this district; its zone cannot be checked"),
            ));
            continue;
        };
        if !process.zones.is_empty() && !process.zones.contains_key(zone) {
            out.push(Warning::new(
                UnknownZone,
                format!("prioritized[{i}].proposalId"),
                format!(
                    "proposal {id} is in zone {zone:?}, which is not one of the process's zones ({})",
                    zone_list(process)
                ),
            ));
        }
        let sum = per_zone.entry(zone.as_str()).or_insert(0);
        *sum = sum.saturating_add(e.amount);
    }
    for (zone, sum) in &per_zone {
        if let Some(ceiling) = process.zone_ceiling(zone) {
            if *sum > ceiling {
                out.push(Warning::new(
                    ZoneOverCeiling,
                    "prioritized",
                    format!(
                        "zone {zone}: prioritized {} is over the zone ceiling {} by {}",
                        format_soles(*sum),
                        format_soles(ceiling),
                        format_soles(sum - ceiling)
                    ),
                ));
            }
        }
    }
    out.extend(zone_ceiling_checks(process));
    if total > process.ceiling {
        out.push(Warning::new(
            TotalOverCeiling,
            "prioritized",
            format!(
                "prioritized total {} is over the district ceiling {} by {}",
                format_soles(total),
                format_soles(process.ceiling),
                format_soles(total - process.ceiling)
            ),
        ));
    }
    out
}

/// Invalid proposal ids and amounts ≤ 0 in `prioritized`.
fn entry_checks(a: &Acta) -> Vec<Warning> {
    use WarningCode::*;
    let mut out = Vec::new();
    for (i, e) in a.prioritized.iter().enumerate() {
        if e.document_id().is_none() {
            out.push(Warning::new(
                InvalidProposalId,
                format!("prioritized[{i}].proposalId"),
                format!("{:?} is not a document id", e.proposal_id),
            ));
        }
        if e.amount <= 0 {
            out.push(Warning::new(
                AmountNotPositive,
                format!("prioritized[{i}].amount"),
                format!(
                    "amount is {}; it should be positive",
                    format_soles(e.amount)
                ),
            ));
        }
    }
    out
}

/// Zones whose ceiling is above the district ceiling.
fn zone_ceiling_checks(p: &Process) -> Vec<Warning> {
    p.zones
        .iter()
        .filter(|(_, c)| **c > p.ceiling)
        .map(|(zone, c)| {
            Warning::new(
                WarningCode::ZoneCeilingOverCeiling,
                format!("zones.{zone}"),
                format!(
                    "ceiling of zone {zone} {} is over the district ceiling {}",
                    format_soles(*c),
                    format_soles(p.ceiling)
                ),
            )
        })
        .collect()
}

fn zone_list(p: &Process) -> String {
    p.zones.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soles_are_grouped_with_two_decimals() {
        assert_eq!(format_soles(0), "S/ 0.00");
        assert_eq!(format_soles(5), "S/ 0.05");
        assert_eq!(format_soles(123_456), "S/ 1,234.56");
        assert_eq!(format_soles(100_000_000), "S/ 1,000,000.00");
        assert_eq!(format_soles(-50), "-S/ 0.50");
        assert_eq!(format_soles(12_345_678_901), "S/ 123,456,789.01");
        assert!(format_soles(i64::MIN).starts_with("-S/ 92,233,720,368,547,758.08"));
    }
}
