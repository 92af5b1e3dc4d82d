//! Read models of the review API: document summaries and detail, history in words a reviewer
//! reads, versions and their difference, conflicts, the district summary and the exports.
//!
//! Everything here is a pure function over documents loaded from the store (never the hub's live
//! copies: reading does not pin documents in memory or wait behind the sync path). The HTTP
//! handlers in `api.rs` load, call these, and answer after the store is durable.

use std::collections::{BTreeMap, HashMap};

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, Value, ROOT};
use crdt_core::history::{self, HistoryAction};
use crdt_core::schema::{
    format_soles, object_to_json, scalar_to_json, to_json, to_json_at, warnings, Acta, AnyDocument,
    BudgetContext, DocType, Index, Process, Proposal, ProposalStatus, Warning,
};
use crdt_core::{DocumentId, Ubigeo};
use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::store::{assemble, DocStore, StoreResult};

/// A document as stored (`None` when the store has nothing for it).
pub fn load(store: &dyn DocStore, id: &DocumentId) -> StoreResult<Option<Automerge>> {
    let chunks = store.load(id)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    assemble(id, &chunks).map(Some)
}

/// A district's index for a year, if the store has a readable one.
pub fn load_index(store: &dyn DocStore, district: Ubigeo, year: u16) -> StoreResult<Option<Index>> {
    Ok(load(store, &DocumentId::index_for(district, year))?.and_then(|d| Index::read(&d).ok()))
}

/// Every document a district's index lists for a year, loaded from the store.
pub fn load_district(
    store: &dyn DocStore,
    district: Ubigeo,
    year: u16,
) -> StoreResult<Vec<(DocumentId, Automerge)>> {
    match load_index(store, district, year)? {
        Some(index) => load_listed(store, &index),
        None => Ok(Vec::new()),
    }
}

/// Every document an index lists, loaded from the store.
pub fn load_listed(
    store: &dyn DocStore,
    index: &Index,
) -> StoreResult<Vec<(DocumentId, Automerge)>> {
    let mut out = Vec::with_capacity(index.docs.len());
    for id in index.docs.keys() {
        if let Some(doc) = load(store, id)? {
            out.push((*id, doc));
        }
    }
    Ok(out)
}

/// The budget context (process and proposal zones) of a district's loaded documents.
pub fn budget_context(docs: &[(DocumentId, Automerge)]) -> BudgetContext {
    let mut process = None;
    let mut proposals = Vec::new();
    for (id, doc) in docs {
        match AnyDocument::read(doc) {
            Ok(AnyDocument::Process(p)) => process = Some(p),
            Ok(AnyDocument::Proposal(p)) => proposals.push((*id, p)),
            _ => {}
        }
    }
    BudgetContext::new(process, proposals.iter().map(|(id, p)| (*id, p)))
}

/// A user as reviewers see them.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UserRef {
    pub id: String,
    pub name: Option<String>,
}

/// One line of the document list.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocSummary {
    pub id: String,
    pub url: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub district: String,
    pub district_name: String,
    pub process_year: u16,
    pub status: Option<String>,
    pub title: Option<String>,
    pub zone: Option<String>,
    /// Céntimos: a proposal's `estimatedCost`, an acta's prioritized total.
    pub amount: Option<i64>,
    pub amount_text: Option<String>,
    pub created_at: Option<i64>,
    /// How many validation warnings the document has.
    pub warnings: usize,
}

/// A document's summary line, if it is a readable schema-v1 document.
pub fn summarize(
    id: DocumentId,
    doc: &Automerge,
    ctx: &BudgetContext,
    created_at: Option<i64>,
) -> Option<DocSummary> {
    let any = AnyDocument::read(doc).ok()?;
    let header = any.header().clone();
    let (title, zone, amount) = match &any {
        AnyDocument::Proposal(p) => (
            Some(p.title.clone()),
            Some(p.zone.clone()),
            Some(p.estimated_cost),
        ),
        AnyDocument::Acta(a) => (Some(a.title.clone()), None, Some(a.prioritized_total())),
        AnyDocument::Observation(o) => (Some(first_line(&o.description, 80)), None, None),
        AnyDocument::Process(p) => (
            Some(format!("Proceso {}", header.process_year)),
            None,
            Some(p.ceiling),
        ),
        AnyDocument::Index(_) => return None,
    };
    Some(DocSummary {
        id: id.to_string(),
        url: id.url(),
        doc_type: header.doc_type.to_string(),
        district: header.district.to_string(),
        district_name: header.district.name().to_string(),
        process_year: header.process_year,
        status: any.status().map(str::to_string),
        title,
        zone,
        amount,
        amount_text: amount.map(format_soles),
        created_at,
        warnings: warnings(&any, ctx).len(),
    })
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    truncate(line, max)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Case- and accent-insensitive form for text search.
pub fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'ä' | 'â' => 'a',
            'é' | 'è' | 'ë' | 'ê' => 'e',
            'í' | 'ì' | 'ï' | 'î' => 'i',
            'ó' | 'ò' | 'ö' | 'ô' => 'o',
            'ú' | 'ù' | 'ü' | 'û' => 'u',
            'ñ' => 'n',
            other => other,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// History in words

/// One change as reviewers read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeView {
    pub hash: String,
    pub actor: String,
    pub user: Option<UserRef>,
    /// Unix seconds as the author's device recorded it (0: unknown).
    pub time: i64,
    pub message: Option<String>,
    pub deps: Vec<String>,
    /// What it changed, in Spanish sentences.
    pub descriptions: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub changed: Vec<history::PathChange>,
}

/// Every change of a document, oldest first, with its author (from the actor binding) and what it
/// changed in words.
pub fn history_view(doc: &Automerge, user_of: &dyn Fn(&str) -> Option<UserRef>) -> Vec<ChangeView> {
    history::history(doc)
        .into_iter()
        .map(|e| {
            let descriptions = describe(doc, &e);
            ChangeView {
                user: user_of(&e.actor),
                hash: e.hash,
                actor: e.actor,
                time: e.time,
                message: e.message,
                deps: e.deps,
                descriptions,
                changed: e.changed,
            }
        })
        .collect()
}

/// The Spanish name of a field, by its path in the document.
fn label(segs: &[&str]) -> String {
    let key = segs.first().copied().unwrap_or_default();
    let sub = segs.get(1).copied();
    match (key, sub) {
        ("title", _) => "el título".into(),
        ("description", _) => "la descripción".into(),
        ("zone", _) => "la zona".into(),
        ("category", _) => "la categoría".into(),
        ("beneficiaries", _) => "el número de beneficiarios".into(),
        ("estimatedCost", _) => "el costo estimado".into(),
        ("cofinancing", _) => "el cofinanciamiento".into(),
        ("status", _) => "el estado".into(),
        ("evaluation", Some("viable")) => "la viabilidad".into(),
        ("evaluation", Some("validatedCost")) => "el costo validado".into(),
        ("evaluation", Some("notes")) => "las notas de evaluación".into(),
        ("evaluation", Some("evaluator")) => "el evaluador".into(),
        ("evaluation", _) => "la evaluación técnica".into(),
        ("scores", Some(u)) => match segs.get(2) {
            Some(c) => format!("el puntaje «{c}» de {u}"),
            None => format!("los puntajes de {u}"),
        },
        ("scores", None) => "los puntajes".into(),
        ("coauthors", Some(u)) => format!("la coautoría de {u}"),
        ("supporters", Some(u)) => format!("el apoyo de {u}"),
        ("comments", _) => "un comentario".into(),
        ("kind", _) => "el tipo de acta".into(),
        ("date", _) => "la fecha".into(),
        ("place", _) => "el lugar".into(),
        ("attendees", Some(u)) => format!("la asistencia de {u}"),
        ("agreements", _) => "un acuerdo".into(),
        ("prioritized", _) => "la lista priorizada".into(),
        ("committeeMembers", Some(u)) => format!("el miembro del comité {u}"),
        ("signatures", Some(u)) => format!("la firma de {u}"),
        ("ceiling", _) => "el tope presupuestal".into(),
        ("zones", Some(z)) => format!("el tope de la zona {z}"),
        ("phase", _) => "la fase".into(),
        ("criteria", _) => "los criterios de priorización".into(),
        ("target", _) => "el documento observado".into(),
        ("evidence", _) => "la evidencia".into(),
        ("responses", _) => "una respuesta".into(),
        ("docs", Some(d)) => format!("el documento {d} del índice"),
        _ => format!("el campo {}", segs.join("/")),
    }
}

fn is_money(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["estimatedCost"]
            | ["cofinancing"]
            | ["ceiling"]
            | ["evaluation", "validatedCost"]
            | ["zones", _]
            | ["prioritized", _, "amount"]
    )
}

/// Spanish label of a status value.
pub fn status_label(s: &str) -> &str {
    match s {
        "draft" => "borrador",
        "submitted" => "presentada",
        "in_evaluation" => "en evaluación",
        "observed" => "observada",
        "eligible" => "viable",
        "ineligible" => "no viable",
        "prioritized" => "priorizada",
        "not_prioritized" => "no priorizada",
        "withdrawn" => "retirada",
        "signing" => "en firma",
        "sealed" => "sellada",
        "open" => "abierta",
        "sent" => "enviada",
        "answered" => "respondida",
        "closed" => "cerrada",
        "escalated" => "escalada",
        other => other,
    }
}

/// A value as a sentence shows it.
fn show(segs: &[&str], v: &Json) -> String {
    match v {
        Json::Number(n) if is_money(segs) => n.as_i64().map(format_soles).unwrap_or(n.to_string()),
        Json::String(s) if segs == ["status"] => status_label(s).to_string(),
        Json::String(s) => format!("«{}»", truncate(s, 80)),
        Json::Bool(true) => "sí".into(),
        Json::Bool(false) => "no".into(),
        Json::Null => "vacío".into(),
        Json::Number(n) => n.to_string(),
        // An attendee, a signature, a comment: what a reviewer recognises of it.
        Json::Object(o) => match (o.get("name"), o.get("text"), o.get("at")) {
            (Some(Json::String(name)), _, _) => format!("«{}»", truncate(name, 80)),
            (_, Some(Json::String(text)), _) => format!("«{}»", truncate(text, 80)),
            (_, _, Some(Json::Number(at))) => format!("la fecha {at}"),
            _ if o.len() == 1 => "1 dato".into(),
            _ => format!("{} datos", o.len()),
        },
        Json::Array(a) if segs == ["prioritized"] => format!("{} proyectos", a.len()),
        Json::Array(a) => format!("{} elementos", a.len()),
    }
}

/// The value at a path (`a/b/3`) as at `heads`, as JSON.
fn value_at(doc: &Automerge, segs: &[&str], heads: &[ChangeHash]) -> Option<Json> {
    let mut obj = ROOT;
    let mut value = None;
    for (i, seg) in segs.iter().enumerate() {
        let got = match doc.object_type(&obj).ok()? {
            ObjType::List | ObjType::Text => doc.get_at(&obj, seg.parse::<usize>().ok()?, heads),
            _ => doc.get_at(&obj, *seg, heads),
        };
        let (v, id) = got.ok()??;
        match v {
            Value::Object(_) => {
                obj = id;
                if i + 1 == segs.len() {
                    value = Some(object_to_json(doc, &obj, Some(heads)));
                }
            }
            Value::Scalar(s) => {
                if i + 1 != segs.len() {
                    return None;
                }
                value = Some(scalar_to_json(&s));
            }
        }
    }
    value
}

/// What one change did, in sentences.
fn describe(doc: &Automerge, e: &history::HistoryEntry) -> Vec<String> {
    let hash: Option<ChangeHash> = e.hash.parse().ok();
    let deps: Vec<ChangeHash> = e.deps.iter().filter_map(|d| d.parse().ok()).collect();
    let after_heads: Vec<ChangeHash> = hash.into_iter().collect();
    if e.changed.iter().any(|c| c.path == "type") {
        let after = to_json_at(doc, &after_heads);
        let kind = match after.get("type").and_then(Json::as_str) {
            Some("proposal") => "la propuesta",
            Some("acta") => "el acta",
            Some("observation") => "la observación",
            Some("process") => "el proceso",
            Some("index") => "el índice",
            _ => "el documento",
        };
        return vec![match after.get("title").and_then(Json::as_str) {
            Some(t) => format!("creó {kind} «{}»", truncate(t, 80)),
            None => format!("creó {kind}"),
        }];
    }
    if e.changed.is_empty() {
        return Vec::new();
    }
    // One sentence per field: the first two path segments of every touched path, in order.
    let mut fields: Vec<(Vec<String>, HistoryAction)> = Vec::new();
    for c in &e.changed {
        let segs: Vec<&str> = c.path.split('/').collect();
        let depth = match segs[0] {
            "scores" => 3,
            "evaluation" | "coauthors" | "supporters" | "attendees" | "committeeMembers"
            | "signatures" | "zones" | "docs" => 2,
            _ => 1,
        };
        let field: Vec<String> = segs.iter().take(depth).map(|s| s.to_string()).collect();
        if !fields.iter().any(|(f, _)| *f == field) {
            fields.push((field, c.action));
        }
    }
    fields
        .into_iter()
        .map(|(field, action)| {
            let segs: Vec<&str> = field.iter().map(String::as_str).collect();
            let before = value_at(doc, &segs, &deps);
            let after = value_at(doc, &segs, &after_heads);
            let what = label(&segs);
            match (segs[0], action, &before, &after) {
                ("comments" | "responses", _, _, _) if action == HistoryAction::Insert => {
                    // The inserted entry: the first touched path below the list.
                    let text = e
                        .changed
                        .iter()
                        .find_map(|c| {
                            let s: Vec<&str> = c.path.split('/').collect();
                            (s.len() >= 2 && s[0] == segs[0]).then(|| [s[0], s[1]])
                        })
                        .and_then(|entry| value_at(doc, &entry, &after_heads))
                        .and_then(|v| v.get("text").cloned());
                    let noun = if segs[0] == "comments" {
                        "un comentario"
                    } else {
                        "una respuesta"
                    };
                    match text {
                        Some(Json::String(t)) => format!("agregó {noun}: «{}»", truncate(&t, 80)),
                        _ => format!("agregó {noun}"),
                    }
                }
                ("agreements", HistoryAction::Insert, _, _) => "agregó un acuerdo".into(),
                ("supporters", _, None, Some(_)) => "dio su apoyo".into(),
                ("supporters", _, Some(_), None) => "retiró su apoyo".into(),
                ("signatures", _, None, Some(_)) => format!("firmó el acta ({what})"),
                (_, HistoryAction::SpliceText, Some(b), Some(a)) => {
                    format!("editó {what}: {} → {}", show(&segs, b), show(&segs, a))
                }
                (_, _, None, Some(a)) => format!("fijó {what} en {}", show(&segs, a)),
                (_, _, Some(_), None) => format!("eliminó {what}"),
                (_, _, Some(b), Some(a)) if b != a => {
                    format!("cambió {what} de {} a {}", show(&segs, b), show(&segs, a))
                }
                _ => format!("modificó {what}"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Versions, differences, conflicts

/// Parses a comma-separated list of change hashes, each of which the document must have.
pub fn parse_heads(doc: &Automerge, raw: &str) -> Result<Vec<ChangeHash>, String> {
    let mut out = Vec::new();
    for h in raw.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let hash: ChangeHash = h
            .parse()
            .map_err(|_| format!("{h:?} is not a change hash"))?;
        if doc.get_change_by_hash(&hash).is_none() {
            return Err(format!("the document has no change {h}"));
        }
        out.push(hash);
    }
    if out.is_empty() {
        return Err("no heads given".into());
    }
    Ok(out)
}

/// One field that differs between two versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiffRow {
    pub path: String,
    #[schema(value_type = Object)]
    pub before: Json,
    #[schema(value_type = Object)]
    pub after: Json,
    pub description: String,
}

/// The fields that differ between the document at `from` and at `to`.
pub fn diff(doc: &Automerge, from: &[ChangeHash], to: &[ChangeHash]) -> Vec<DiffRow> {
    let (a, b) = (to_json_at(doc, from), to_json_at(doc, to));
    let mut out = Vec::new();
    diff_json(&mut Vec::new(), &a, &b, &mut out);
    out
}

fn diff_json(path: &mut Vec<String>, a: &Json, b: &Json, out: &mut Vec<DiffRow>) {
    if a == b {
        return;
    }
    // Maps are compared key by key, below the first level too (supporters/u, zones/z…).
    if let (Json::Object(x), Json::Object(y)) = (a, b) {
        let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            path.push(k.clone());
            diff_json(
                path,
                x.get(k).unwrap_or(&Json::Null),
                y.get(k).unwrap_or(&Json::Null),
                out,
            );
            path.pop();
        }
        return;
    }
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let what = label(&segs);
    let description = match (a, b) {
        (Json::Null, v) => format!("fijó {what} en {}", show(&segs, v)),
        (_, Json::Null) => format!("eliminó {what}"),
        (x, y) => format!("cambió {what} de {} a {}", show(&segs, x), show(&segs, y)),
    };
    out.push(DiffRow {
        path: path.join("/"),
        before: a.clone(),
        after: b.clone(),
        description,
    });
}

/// One value among concurrent ones.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConflictValue {
    #[schema(value_type = Object)]
    pub value: Json,
    pub actor: String,
    pub user: Option<UserRef>,
}

/// A field with concurrent values (automerge shows one of them; the others are kept).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conflict {
    pub path: String,
    pub values: Vec<ConflictValue>,
}

/// Every field of the document that holds concurrent values, with who wrote each.
pub fn conflicts(doc: &Automerge, user_of: &dyn Fn(&str) -> Option<UserRef>) -> Vec<Conflict> {
    let mut out = Vec::new();
    walk_conflicts(doc, &ROOT, &mut Vec::new(), user_of, &mut out);
    out
}

fn walk_conflicts(
    doc: &Automerge,
    obj: &ObjId,
    path: &mut Vec<String>,
    user_of: &dyn Fn(&str) -> Option<UserRef>,
    out: &mut Vec<Conflict>,
) {
    let props: Vec<automerge::Prop> = match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => doc.keys(obj).map(automerge::Prop::Map).collect(),
        Ok(ObjType::List) => (0..doc.length(obj)).map(automerge::Prop::Seq).collect(),
        _ => return,
    };
    for prop in props {
        let name = match &prop {
            automerge::Prop::Map(k) => k.clone(),
            automerge::Prop::Seq(i) => i.to_string(),
        };
        let Ok(all) = doc.get_all(obj, prop.clone()) else {
            continue;
        };
        path.push(name);
        if all.len() > 1 {
            let values = all
                .iter()
                .map(|(v, id)| {
                    let actor = match id {
                        automerge::ObjId::Id(_, a, _) => a.to_hex_string(),
                        automerge::ObjId::Root => String::new(),
                    };
                    ConflictValue {
                        value: match v {
                            Value::Scalar(s) => scalar_to_json(s),
                            Value::Object(_) => object_to_json(doc, id, None),
                        },
                        user: user_of(&actor),
                        actor,
                    }
                })
                .collect();
            out.push(Conflict {
                path: path.join("/"),
                values,
            });
        }
        if let Some((Value::Object(_), id)) = all.last() {
            walk_conflicts(doc, id, path, user_of, out);
        }
        path.pop();
    }
}

// ---------------------------------------------------------------------------------------------
// District summary and exports

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneTotals {
    pub zone: String,
    pub ceiling: Option<i64>,
    pub ceiling_text: Option<String>,
    /// Every proposal of the zone but the withdrawn ones.
    pub requested: i64,
    pub requested_text: String,
    /// Proposals with status `prioritized`.
    pub prioritized: i64,
    pub prioritized_text: String,
    pub remaining: Option<i64>,
    pub remaining_text: Option<String>,
    pub over_ceiling: bool,
    pub proposals: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RankedProposal {
    pub id: String,
    pub title: String,
    pub zone: String,
    pub status: String,
    pub amount: i64,
    pub amount_text: String,
    /// Weighted by the process criteria; `None` when nobody scored it.
    pub score: Option<f64>,
    pub rank: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActaLine {
    pub id: String,
    pub title: String,
    pub status: String,
    pub signed: usize,
    pub voters: usize,
    pub sealed: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocWarning {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub warning: Warning,
    pub document_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistrictSummary {
    pub district: String,
    pub district_name: String,
    pub process_year: u16,
    pub ceiling: Option<i64>,
    pub ceiling_text: Option<String>,
    pub zones: Vec<ZoneTotals>,
    pub warnings: Vec<DocWarning>,
    pub proposals: Vec<RankedProposal>,
    pub actas: Vec<ActaLine>,
}

/// A proposal's score: the mean over evaluators of Σ weight·score / Σ weight over the process
/// criteria (unweighted mean of its criteria when the process has none).
pub fn score(p: &Proposal, process: Option<&Process>) -> Option<f64> {
    let per_evaluator: Vec<f64> = p
        .scores
        .values()
        .filter_map(|by_criterion| {
            let criteria: Vec<(String, f64)> = match process {
                Some(pr) if !pr.criteria.is_empty() => pr
                    .criteria
                    .iter()
                    .map(|c| (c.name.clone(), c.weight as f64))
                    .collect(),
                _ => by_criterion.keys().map(|k| (k.clone(), 1.0)).collect(),
            };
            let total: f64 = criteria.iter().map(|(_, w)| w).sum();
            if total <= 0.0 {
                return None;
            }
            let sum: f64 = criteria
                .iter()
                .map(|(name, w)| w * by_criterion.get(name).copied().unwrap_or(0) as f64)
                .sum();
            Some(sum / total)
        })
        .collect();
    if per_evaluator.is_empty() {
        None
    } else {
        Some(per_evaluator.iter().sum::<f64>() / per_evaluator.len() as f64)
    }
}

/// The district's proposals ranked by score (unscored last, then by title).
pub fn ranked(
    proposals: &[(DocumentId, Proposal)],
    process: Option<&Process>,
) -> Vec<RankedProposal> {
    let mut rows: Vec<RankedProposal> = proposals
        .iter()
        .map(|(id, p)| RankedProposal {
            id: id.to_string(),
            title: p.title.clone(),
            zone: p.zone.clone(),
            status: p.status.to_string(),
            amount: p.estimated_cost,
            amount_text: format_soles(p.estimated_cost),
            score: score(p, process),
            rank: 0,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.score.unwrap_or(f64::NEG_INFINITY))
            .then_with(|| a.title.cmp(&b.title))
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    rows
}

/// Splits a district's loaded documents by type.
pub struct District {
    pub process: Option<Process>,
    pub proposals: Vec<(DocumentId, Proposal)>,
    pub actas: Vec<(DocumentId, Acta)>,
    pub ctx: BudgetContext,
    pub docs: Vec<(DocumentId, AnyDocument)>,
}

impl District {
    pub fn new(loaded: &[(DocumentId, Automerge)]) -> Self {
        let ctx = budget_context(loaded);
        let mut d = District {
            process: ctx.process.clone(),
            proposals: Vec::new(),
            actas: Vec::new(),
            ctx,
            docs: Vec::new(),
        };
        for (id, doc) in loaded {
            let Ok(any) = AnyDocument::read(doc) else {
                continue;
            };
            match &any {
                AnyDocument::Proposal(p) => d.proposals.push((*id, p.clone())),
                AnyDocument::Acta(a) => d.actas.push((*id, a.clone())),
                _ => {}
            }
            d.docs.push((*id, any));
        }
        d
    }
}

/// Totals per zone against the ceilings, warnings, ranking and actas of one district.
pub fn district_summary(district: Ubigeo, year: u16, d: &District) -> DistrictSummary {
    let mut zones: BTreeMap<String, ZoneTotals> = BTreeMap::new();
    let zone_row = |zones: &mut BTreeMap<String, ZoneTotals>, zone: &str| {
        zones.entry(zone.to_string()).or_insert_with(|| {
            let ceiling = d.process.as_ref().and_then(|p| p.zone_ceiling(zone));
            ZoneTotals {
                zone: zone.to_string(),
                ceiling,
                ceiling_text: ceiling.map(format_soles),
                requested: 0,
                requested_text: String::new(),
                prioritized: 0,
                prioritized_text: String::new(),
                remaining: None,
                remaining_text: None,
                over_ceiling: false,
                proposals: 0,
            }
        });
    };
    if let Some(p) = &d.process {
        for zone in p.zones.keys() {
            zone_row(&mut zones, zone);
        }
    }
    for (_, p) in &d.proposals {
        zone_row(&mut zones, &p.zone);
        let row = zones.get_mut(&p.zone).expect("just added");
        if p.status != ProposalStatus::Withdrawn {
            row.requested = row.requested.saturating_add(p.estimated_cost);
            row.proposals += 1;
        }
        if p.status == ProposalStatus::Prioritized {
            row.prioritized = row.prioritized.saturating_add(p.estimated_cost);
        }
    }
    for row in zones.values_mut() {
        row.requested_text = format_soles(row.requested);
        row.prioritized_text = format_soles(row.prioritized);
        row.remaining = row.ceiling.map(|c| c.saturating_sub(row.prioritized));
        row.remaining_text = row.remaining.map(format_soles);
        row.over_ceiling = row.ceiling.is_some_and(|c| row.prioritized > c);
    }
    let mut warnings_out = Vec::new();
    for (id, any) in &d.docs {
        for w in warnings(any, &d.ctx) {
            warnings_out.push(DocWarning {
                warning: w,
                document_id: id.to_string(),
            });
        }
    }
    DistrictSummary {
        district: district.to_string(),
        district_name: district.name().to_string(),
        process_year: year,
        ceiling: d.process.as_ref().map(|p| p.ceiling),
        ceiling_text: d.process.as_ref().map(|p| format_soles(p.ceiling)),
        zones: zones.into_values().collect(),
        warnings: warnings_out,
        proposals: ranked(&d.proposals, d.process.as_ref()),
        actas: d
            .actas
            .iter()
            .map(|(id, a)| {
                let (signed, voters) = a.voter_signatures();
                ActaLine {
                    id: id.to_string(),
                    title: a.title.clone(),
                    status: a.status.to_string(),
                    signed,
                    voters,
                    sealed: a.status == crdt_core::schema::ActaStatus::Sealed,
                }
            })
            .collect(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The district's proposals as CSV with Spanish headers, ranked.
pub fn export_csv(d: &District) -> String {
    let mut out = String::from(
        "puesto,id,titulo,zona,categoria,estado,costo_estimado_soles,cofinanciamiento_soles,costo_validado_soles,beneficiarios,puntaje,apoyos,autor\n",
    );
    let by_id: HashMap<String, &Proposal> = d
        .proposals
        .iter()
        .map(|(id, p)| (id.to_string(), p))
        .collect();
    for r in ranked(&d.proposals, d.process.as_ref()) {
        let p = by_id[&r.id];
        let soles = |c: i64| format!("{}.{:02}", c / 100, (c % 100).abs());
        let row = [
            r.rank.to_string(),
            r.id.clone(),
            csv_field(&p.title),
            csv_field(&p.zone),
            csv_field(&p.category),
            p.status.to_string(),
            soles(p.estimated_cost),
            soles(p.cofinancing),
            p.evaluation.validated_cost.map(soles).unwrap_or_default(),
            p.beneficiaries.to_string(),
            r.score.map(|s| format!("{s:.2}")).unwrap_or_default(),
            p.supporters.len().to_string(),
            csv_field(p.created_by.as_str()),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn pb_field(s: &str) -> String {
    s.replace([';', '\n', '\r'], " ")
}

/// The district's proposals in the Pabulib format (META / PROJECTS / VOTES; this process has no
/// ballots, so VOTES is empty). Costs in whole soles; `selected` marks prioritized proposals.
pub fn export_pabulib(district: Ubigeo, year: u16, d: &District) -> String {
    let budget = d.process.as_ref().map(|p| p.ceiling / 100).unwrap_or(0);
    let mut out = String::new();
    out.push_str("META\nkey;value\n");
    for (k, v) in [
        (
            "description",
            format!("Presupuesto participativo {year}, {}", district.name()),
        ),
        ("country", "Peru".into()),
        ("unit", format!("{} ({district})", district.name())),
        ("instance", year.to_string()),
        ("num_projects", d.proposals.len().to_string()),
        ("num_votes", "0".into()),
        ("budget", budget.to_string()),
        ("vote_type", "approval".into()),
        ("rule", "participatory-budgeting-peru".into()),
        ("currency", "PEN".into()),
        ("language", "es".into()),
    ] {
        out.push_str(&format!("{k};{}\n", pb_field(&v)));
    }
    out.push_str("PROJECTS\nproject_id;cost;name;category;target;score;selected\n");
    for r in ranked(&d.proposals, d.process.as_ref()) {
        let p = d
            .proposals
            .iter()
            .find(|(id, _)| id.to_string() == r.id)
            .map(|(_, p)| p)
            .expect("ranked from these");
        out.push_str(&format!(
            "{};{};{};{};{};{};{}\n",
            r.id,
            p.estimated_cost / 100,
            pb_field(&p.title),
            pb_field(&p.category),
            pb_field(&p.zone),
            r.score.map(|s| format!("{s:.2}")).unwrap_or_default(),
            u8::from(p.status == ProposalStatus::Prioritized),
        ));
    }
    out.push_str("VOTES\nvoter_id;vote\n");
    out
}

/// The district's documents as JSON (for `minka export --format json`).
pub fn export_json(district: Ubigeo, year: u16, loaded: &[(DocumentId, Automerge)]) -> Json {
    let docs: Vec<Json> = loaded
        .iter()
        .filter(|(_, doc)| AnyDocument::read(doc).is_ok_and(|d| d.doc_type() != DocType::Index))
        .map(|(id, doc)| serde_json::json!({ "id": id.to_string(), "state": to_json(doc) }))
        .collect();
    serde_json::json!({
        "district": district.to_string(),
        "districtName": district.name(),
        "processYear": year,
        "documents": docs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ActorId;
    use crdt_core::schema::{apply_edits, Edit, NewDocument, NewProposal};

    fn proposal() -> Automerge {
        NewProposal {
            district: Ubigeo::COMAS,
            process_year: 2027,
            title: "Veredas en Collique".into(),
            description: "Tramo 1".into(),
            zone: "Collique".into(),
            category: "vías y veredas".into(),
            beneficiaries: 10,
            estimated_cost: 42_000_000,
            cofinancing: 0,
            created_by: crdt_core::UserId::new("ana").unwrap(),
            coauthors: vec![],
        }
        .create(Some(ActorId::random()), 1_790_000_000)
    }

    fn cost(c: i64) -> Edit {
        Edit::SetScalar {
            field: "estimatedCost".into(),
            value: automerge::ScalarValue::Int(c),
        }
    }

    #[test]
    fn history_says_what_changed_in_spanish() {
        let mut doc = proposal();
        apply_edits(&mut doc, &[cost(45_000_000)], "ajuste", 1_790_000_100).unwrap();
        let none = |_: &str| None;
        let h = history_view(&doc, &none);
        assert_eq!(
            h[0].descriptions,
            vec!["creó la propuesta «Veredas en Collique»"]
        );
        assert_eq!(
            h[1].descriptions,
            vec!["cambió el costo estimado de S/ 420,000.00 a S/ 450,000.00"]
        );
        let rows = diff(&doc, &[h[0].hash.parse().unwrap()], &doc.get_heads());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].path, "estimatedCost");
        assert_eq!(rows[0].before, Json::from(42_000_000));
    }

    #[test]
    fn concurrent_writes_are_listed_as_conflicts() {
        let base = proposal();
        let mut a = base.fork().with_actor(ActorId::random());
        let mut b = base.fork().with_actor(ActorId::random());
        apply_edits(&mut a, &[cost(1)], "a", 1).unwrap();
        apply_edits(&mut b, &[cost(2)], "b", 1).unwrap();
        a.merge(&mut b).unwrap();
        let none = |_: &str| None;
        let c = conflicts(&a, &none);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "estimatedCost");
        assert_eq!(c[0].values.len(), 2);
        assert!(conflicts(&base, &none).is_empty());
    }
}
