//! The review API under `/api/v1`. Handlers extract, authorize, load what they need from the store
//! on a blocking thread (never through the hub: reads do not pin documents or wait behind the sync
//! path), build the answer with [`crate::review`], wait until what they read is durable, and answer.
//! Every route is registered through [`routes!`], which also lists it for the OpenAPI check.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use automerge::Automerge;
use crdt_core::schema::{AnyDocument, BudgetContext, DocType, Index};
use crdt_core::{DistrictScope, DocumentId, Role, Ubigeo};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{AuthUser, Authenticated};
use crate::error::ApiError;
use crate::gate::{Gate, QuarantineEntry, QuarantineScope};
use crate::hub::{DocCmd, Hub, SealError, SealRecord, SEALS};
use crate::review::{self, ChangeView, Conflict, DiffRow, DistrictSummary, DocSummary, UserRef};
use crate::store::DocStore;
use crate::AppState;

/// Registers each route and returns the list of (method, path) it registered, so the OpenAPI
/// description can be checked against what is really routed.
macro_rules! routes {
    ($cfg:expr; $( $method:ident $path:literal => $handler:path ),* $(,)?) => {{
        if let Some(cfg) = $cfg {
            $( cfg.route($path, web::$method().to($handler)); )*
        }
        vec![ $( (stringify!($method), $path) ),* ]
    }};
}

/// Every route of the API (and the operational endpoints), registered when `cfg` is given.
pub fn register(cfg: Option<&mut web::ServiceConfig>) -> Vec<(&'static str, &'static str)> {
    routes!(cfg;
        get "/healthz" => crate::http::healthz,
        get "/metrics" => crate::http::metrics,
        get "/api/v1/openapi.json" => openapi,
        get "/api/v1/docs" => list_docs,
        get "/api/v1/docs/{id}" => get_doc,
        get "/api/v1/docs/{id}/history" => doc_history,
        get "/api/v1/docs/{id}/at" => doc_at,
        get "/api/v1/docs/{id}/diff" => doc_diff,
        get "/api/v1/docs/{id}/conflicts" => doc_conflicts,
        post "/api/v1/docs/{id}/seal" => seal,
        get "/api/v1/quarantine" => quarantine,
        get "/api/v1/districts/{ubigeo}/summary" => district_summary,
        get "/api/v1/districts/{ubigeo}/export.csv" => export_csv,
        get "/api/v1/districts/{ubigeo}/export.pb" => export_pabulib,
        get "/api/v1/events" => events,
    )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    register(Some(cfg));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Minka review API",
        description = "Read models for the oversight committees (Comités de Vigilancia) and the municipality's technical team. Every endpoint needs a token (`Authorization: Bearer <jwt>` or `?token=`) and is scoped to the token's district."
    ),
    paths(
        crate::http::healthz,
        crate::http::metrics,
        openapi,
        list_docs,
        get_doc,
        doc_history,
        doc_at,
        doc_diff,
        doc_conflicts,
        seal,
        quarantine,
        district_summary,
        export_csv,
        export_pabulib,
        events
    ),
    components(schemas(
        DocList,
        DocSummary,
        DocDetail,
        SealView,
        HistoryView,
        ChangeView,
        UserRef,
        VersionView,
        DiffView,
        DiffRow,
        ConflictsView,
        Conflict,
        QuarantineList,
        QuarantineEntry,
        DistrictSummary,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// The error body of every endpoint.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3 description, generated from the handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

fn parse_id(raw: &str) -> Result<DocumentId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid document id {raw:?}: {e}")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Runs a store read on a blocking thread, then waits until everything it read is durable (it
/// was all written before the wait began), so an answer never shows what a crash could undo.
async fn read_durable<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn DocStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    let out = web::block(move || f(store.as_ref()))
        .await
        .map_err(internal)??;
    state
        .durability
        .wait()
        .await
        .map_err(|e| ApiError::Unavailable(format!("store not durable: {e}")))?;
    Ok(out)
}

/// Who wrote with an actor, for the review pages (the server's own actor writes indexes and seals).
fn user_lookup(
    store: &dyn DocStore,
    server_actor: String,
) -> impl Fn(&str) -> Option<UserRef> + '_ {
    move |actor: &str| {
        if actor == server_actor {
            return Some(UserRef {
                id: crate::SERVER_USER.into(),
                name: Some(crate::SERVER_NAME.into()),
            });
        }
        Gate::actor_user(store, actor)
            .ok()
            .flatten()
            .map(|(u, name)| UserRef {
                id: u.to_string(),
                name,
            })
    }
}

/// A document the caller may read, loaded from the store; 404 for absent and other districts
/// alike (existence is not leaked).
fn load_readable(
    store: &dyn DocStore,
    user: &AuthUser,
    id: DocumentId,
) -> Result<(Automerge, AnyDocument), ApiError> {
    let not_found = || ApiError::NotFound(format!("document {id}"));
    let doc = review::load(store, &id)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let any = AnyDocument::read(&doc).map_err(|_| not_found())?;
    if !user.district.covers(any.header().district) {
        return Err(not_found());
    }
    Ok((doc, any))
}

/// Answers with what `f` makes of a document the caller may read (loaded from the store on a
/// blocking thread, answered once durable): the shared shape of every `/docs/{id}/…` read.
async fn read_doc<T: Serialize + Send + 'static>(
    state: &AppState,
    user: AuthUser,
    raw_id: &str,
    f: impl FnOnce(&dyn DocStore, DocumentId, Automerge, AnyDocument) -> Result<T, ApiError>
        + Send
        + 'static,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(raw_id)?;
    let out = read_durable(state, move |store| {
        let (doc, any) = load_readable(store, &user, id)?;
        f(store, id, doc, any)
    })
    .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// The districts a request covers: the token's own, or for `*` the one asked for (all if none).
fn districts_for(user: &AuthUser, asked: Option<&str>) -> Result<Vec<Ubigeo>, ApiError> {
    let asked = match asked.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<Ubigeo>()
                .map_err(|e| ApiError::BadRequest(format!("district: {e}")))?,
        ),
        None => None,
    };
    match (user.district, asked) {
        (DistrictScope::One(d), None) => Ok(vec![d]),
        (DistrictScope::One(d), Some(a)) if a == d => Ok(vec![d]),
        (DistrictScope::One(_), Some(a)) => Err(ApiError::Forbidden(format!(
            "district {a} is outside your scope"
        ))),
        (DistrictScope::All, Some(a)) => Ok(vec![a]),
        (DistrictScope::All, None) => Ok(Ubigeo::all().collect()),
    }
}

fn district_in_scope(user: &AuthUser, raw: &str) -> Result<Ubigeo, ApiError> {
    let d: Ubigeo = raw
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("district: {e}")))?;
    if user.district.covers(d) {
        Ok(d)
    } else {
        Err(ApiError::Forbidden(format!(
            "district {d} is outside your scope"
        )))
    }
}

fn page_bounds(page: Option<usize>, per_page: Option<usize>) -> Result<(usize, usize), ApiError> {
    let page = page.unwrap_or(1);
    let per_page = per_page.unwrap_or(50);
    if page == 0 || per_page == 0 || per_page > 500 || page > 1_000_000 {
        return Err(ApiError::BadRequest(
            "page is 1..=1000000 and perPage is 1..=500".into(),
        ));
    }
    Ok((page, per_page))
}

// ---------------------------------------------------------------------------------------------
// Documents

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DocsQuery {
    /// proposal, acta, observation or process.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub doc_type: Option<String>,
    pub status: Option<String>,
    pub zone: Option<String>,
    /// Fiscal year (default: the server's `--process-year`).
    pub year: Option<u16>,
    /// A district (6-digit ubigeo) for a `*` token; a district token may only name its own.
    pub district: Option<String>,
    /// Text in the title (case- and accent-insensitive).
    pub q: Option<String>,
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocList {
    pub items: Vec<DocSummary>,
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
}

/// `GET /api/v1/docs`: the documents of the caller's district (through its index), filtered
/// and paginated.
#[utoipa::path(get, path = "/api/v1/docs", params(DocsQuery),
    responses((status = 200, body = DocList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_docs(
    Authenticated(user): Authenticated,
    query: web::Query<DocsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (page, per_page) = page_bounds(q.page, q.per_page)?;
    let districts = districts_for(&user, q.district.as_deref())?;
    let year = q.year.unwrap_or(state.process_year);
    if let Some(t) = &q.doc_type {
        t.parse::<DocType>()
            .map_err(|_| ApiError::BadRequest(format!("unknown type {t:?}")))?;
    }
    let out = read_durable(&state, move |store| {
        let mut items = Vec::new();
        for d in districts {
            let Some(index) = review::load_index(store, d, year).map_err(internal)? else {
                continue;
            };
            let loaded = review::load_listed(store, &index).map_err(internal)?;
            let ctx = review::budget_context(&loaded);
            let needle = q.q.as_deref().map(review::fold);
            for (id, doc) in &loaded {
                let Some(s) =
                    review::summarize(*id, doc, &ctx, index.docs.get(id).map(|e| e.created_at))
                else {
                    continue;
                };
                let keep = q.doc_type.as_deref().is_none_or(|t| s.doc_type == t)
                    && q.status
                        .as_deref()
                        .is_none_or(|st| s.status.as_deref() == Some(st))
                    && q.zone
                        .as_deref()
                        .is_none_or(|z| s.zone.as_deref() == Some(z))
                    && needle.as_deref().is_none_or(|n| {
                        s.title
                            .as_deref()
                            .is_some_and(|t| review::fold(t).contains(n))
                    });
                if keep {
                    items.push(s);
                }
            }
        }
        items.sort_by(|a, b| (&a.doc_type, &a.title, &a.id).cmp(&(&b.doc_type, &b.title, &b.id)));
        let total = items.len();
        let items = items
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        Ok(DocList {
            items,
            page,
            per_page,
            total,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealView {
    pub sealed: bool,
    pub sha256: Option<String>,
    pub heads: Option<Vec<String>>,
    pub sealed_by: Option<String>,
    pub sealed_at: Option<u64>,
    /// The stored heads and hash still match the document.
    pub verified: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocDetail {
    pub id: String,
    pub url: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub district: String,
    pub district_name: String,
    pub process_year: u16,
    pub status: Option<String>,
    pub title: Option<String>,
    pub heads: Vec<String>,
    /// The merged document as JSON.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<crdt_core::schema::Warning>,
    /// Actas only.
    pub seal: Option<SealView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// Document id (base58check, as in `automerge:<id>`).
    pub id: String,
}

/// `GET /api/v1/docs/{id}`: merged state, heads, warnings and, for actas, the seal.
#[utoipa::path(get, path = "/api/v1/docs/{id}", params(IdPath),
    responses((status = 200, body = DocDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_doc(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read_doc(&state, user, &path.id, move |store, id, doc, any| {
        let header = any.header().clone();
        // Warnings that need the district (ceilings, zones) use its documents.
        let loaded =
            review::load_district(store, header.district, header.process_year).map_err(internal)?;
        let ctx = review::budget_context(&loaded);
        let seal = match &any {
            AnyDocument::Acta(_) => Some(
                match store.meta_get(SEALS, id.as_bytes()).map_err(internal)? {
                    Some(raw) => {
                        let record: SealRecord = serde_json::from_slice(&raw).map_err(internal)?;
                        let verified = crate::tools::verify_seal(&doc, &raw).is_ok();
                        SealView {
                            sealed: true,
                            sha256: Some(record.sha256),
                            heads: Some(record.heads),
                            sealed_by: Some(record.sealed_by),
                            sealed_at: Some(record.sealed_at),
                            verified: Some(verified),
                        }
                    }
                    None => SealView {
                        sealed: false,
                        sha256: None,
                        heads: None,
                        sealed_by: None,
                        sealed_at: None,
                        verified: None,
                    },
                },
            ),
            _ => None,
        };
        let summary = review::summarize(id, &doc, &ctx, None);
        Ok(DocDetail {
            id: id.to_string(),
            url: id.url(),
            doc_type: header.doc_type.to_string(),
            district: header.district.to_string(),
            district_name: header.district.name().to_string(),
            process_year: header.process_year,
            status: any.status().map(str::to_string),
            title: summary.and_then(|s| s.title),
            heads: doc.get_heads().iter().map(|h| h.to_string()).collect(),
            state: crdt_core::schema::to_json(&doc),
            warnings: crdt_core::schema::warnings(&any, &ctx),
            seal,
        })
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct HistoryView {
    pub id: String,
    pub changes: Vec<ChangeView>,
}

/// `GET /api/v1/docs/{id}/history`: every change, oldest first: author (from the actor binding),
/// time, message and what it changed in words.
#[utoipa::path(get, path = "/api/v1/docs/{id}/history", params(IdPath),
    responses((status = 200, body = HistoryView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn doc_history(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let server_actor = state.hub.server_actor().to_hex_string();
    read_doc(&state, user, &path.id, move |store, id, doc, _| {
        let changes = review::history_view(&doc, &user_lookup(store, server_actor));
        Ok(HistoryView {
            id: id.to_string(),
            changes,
        })
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// Comma-separated change hashes (a version's heads).
    pub heads: String,
}

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    pub id: String,
    pub heads: Vec<String>,
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

/// `GET /api/v1/docs/{id}/at?heads=…`: the document as it was at a version.
#[utoipa::path(get, path = "/api/v1/docs/{id}/at", params(IdPath, AtQuery),
    responses((status = 200, body = VersionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn doc_at(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    query: web::Query<AtQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = query.into_inner().heads;
    read_doc(&state, user, &path.id, move |_, id, doc, _| {
        let heads = review::parse_heads(&doc, &raw).map_err(ApiError::BadRequest)?;
        Ok(VersionView {
            id: id.to_string(),
            heads: heads.iter().map(|h| h.to_string()).collect(),
            state: crdt_core::schema::to_json_at(&doc, &heads),
        })
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The earlier version's heads, comma-separated.
    pub from: String,
    /// The later version's heads (default: the current ones).
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DiffView {
    pub id: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub changes: Vec<DiffRow>,
}

/// `GET /api/v1/docs/{id}/diff?from=…&to=…`: the fields that differ between two versions.
#[utoipa::path(get, path = "/api/v1/docs/{id}/diff", params(IdPath, DiffQuery),
    responses((status = 200, body = DiffView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn doc_diff(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    query: web::Query<DiffQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    read_doc(&state, user, &path.id, move |_, id, doc, _| {
        let from = review::parse_heads(&doc, &q.from).map_err(ApiError::BadRequest)?;
        let to = match &q.to {
            Some(raw) => review::parse_heads(&doc, raw).map_err(ApiError::BadRequest)?,
            None => doc.get_heads(),
        };
        Ok(DiffView {
            id: id.to_string(),
            from: from.iter().map(|h| h.to_string()).collect(),
            to: to.iter().map(|h| h.to_string()).collect(),
            changes: review::diff(&doc, &from, &to),
        })
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct ConflictsView {
    pub id: String,
    pub conflicts: Vec<Conflict>,
}

/// `GET /api/v1/docs/{id}/conflicts`: fields with concurrent values and who wrote each.
#[utoipa::path(get, path = "/api/v1/docs/{id}/conflicts", params(IdPath),
    responses((status = 200, body = ConflictsView), (status = 404, body = ErrorBody)))]
async fn doc_conflicts(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let server_actor = state.hub.server_actor().to_hex_string();
    read_doc(&state, user, &path.id, move |store, id, doc, _| {
        Ok(ConflictsView {
            id: id.to_string(),
            conflicts: review::conflicts(&doc, &user_lookup(store, server_actor)),
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Quarantine

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// Only this user's rejected changes.
    pub user: Option<String>,
    /// Only this document's.
    pub document: Option<String>,
    /// For a `*` reviewer: one district.
    pub district: Option<String>,
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineList {
    pub items: Vec<QuarantineEntry>,
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
}

fn is_reviewer(user: &AuthUser) -> bool {
    [Role::Vigilancia, Role::Tecnico, Role::Admin]
        .iter()
        .any(|r| user.has_role(*r))
}

/// `GET /api/v1/quarantine`: rejected changes, newest first: reviewers see their district's,
/// everyone sees their own; read through a per-district (or per-user) index, a page at a time.
#[utoipa::path(get, path = "/api/v1/quarantine", params(QuarantineQuery),
    responses((status = 200, body = QuarantineList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn quarantine(
    Authenticated(user): Authenticated,
    query: web::Query<QuarantineQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (page, per_page) = page_bounds(q.page, q.per_page)?;
    let document = match q.document.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(parse_id(raw)?),
        None => None,
    };
    let scope = match (
        q.user.as_deref().filter(|s| !s.is_empty()),
        is_reviewer(&user),
    ) {
        (Some(u), true) => QuarantineScope::User(u.to_string()),
        (Some(u), false) if u == user.user.as_str() => QuarantineScope::User(u.to_string()),
        (Some(_), false) => {
            return Err(ApiError::Forbidden(
                "only reviewers see other users' rejected changes".into(),
            ))
        }
        (None, false) => QuarantineScope::User(user.user.to_string()),
        (None, true) => match (
            user.district,
            q.district.as_deref().filter(|s| !s.is_empty()),
        ) {
            (DistrictScope::One(d), None) => QuarantineScope::District(Some(d.to_string())),
            (_, Some(raw)) => {
                QuarantineScope::District(Some(district_in_scope(&user, raw)?.to_string()))
            }
            (DistrictScope::All, None) => QuarantineScope::District(None),
        },
    };
    let list = read_durable(&state, move |store| {
        // A district's reviewers see every entry of their district; a user-scoped read shows the
        // caller's own entries and, to a reviewer, another user's entries of the reviewer's scope.
        let me = user.user.to_string();
        let own = matches!(&scope, QuarantineScope::User(u) if *u == me);
        let visible = |district: Option<&str>| {
            own || match district.map(str::parse::<Ubigeo>) {
                Some(Ok(d)) => user.district.covers(d),
                _ => user.district == DistrictScope::All,
            }
        };
        let found = Gate::quarantine_page(
            store,
            &scope,
            document.as_ref(),
            &visible,
            (page - 1) * per_page,
            per_page,
        )
        .map_err(internal)?;
        Ok(QuarantineList {
            items: found.entries,
            page,
            per_page,
            total: found.total,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(list))
}

// ---------------------------------------------------------------------------------------------
// District summary and exports

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DistrictPath {
    /// 6-digit ubigeo.
    pub ubigeo: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct YearQuery {
    /// Fiscal year (default: the server's `--process-year`).
    pub year: Option<u16>,
}

async fn load_district(
    state: &web::Data<AppState>,
    user: &AuthUser,
    ubigeo: &str,
    year: Option<u16>,
) -> Result<(Ubigeo, u16, review::District), ApiError> {
    let district = district_in_scope(user, ubigeo)?;
    let year = year.unwrap_or(state.process_year);
    let d = read_durable(state, move |store| {
        let loaded = review::load_district(store, district, year).map_err(internal)?;
        Ok(review::District::new(&loaded))
    })
    .await?;
    Ok((district, year, d))
}

/// `GET /api/v1/districts/{ubigeo}/summary`: per zone the ceiling, requested and prioritized
/// amounts and what remains; warnings; proposals ranked by score; actas and their signatures.
#[utoipa::path(get, path = "/api/v1/districts/{ubigeo}/summary", params(DistrictPath, YearQuery),
    responses((status = 200, body = DistrictSummary), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn district_summary(
    Authenticated(user): Authenticated,
    path: web::Path<DistrictPath>,
    query: web::Query<YearQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (district, year, d) = load_district(&state, &user, &path.ubigeo, query.year).await?;
    Ok(HttpResponse::Ok().json(review::district_summary(district, year, &d)))
}

/// `GET /api/v1/districts/{ubigeo}/export.csv`: the proposals, ranked, with status and amounts.
#[utoipa::path(get, path = "/api/v1/districts/{ubigeo}/export.csv", params(DistrictPath, YearQuery),
    responses((status = 200, description = "CSV, Spanish headers", content_type = "text/csv"), (status = 403, body = ErrorBody)))]
async fn export_csv(
    Authenticated(user): Authenticated,
    path: web::Path<DistrictPath>,
    query: web::Query<YearQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (district, year, d) = load_district(&state, &user, &path.ubigeo, query.year).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"propuestas-{district}-{year}.csv\""),
        ))
        .body(review::export_csv(&d)))
}

/// `GET /api/v1/districts/{ubigeo}/export.pb`: the proposals in the Pabulib format.
#[utoipa::path(get, path = "/api/v1/districts/{ubigeo}/export.pb", params(DistrictPath, YearQuery),
    responses((status = 200, description = "Pabulib .pb file", content_type = "text/plain"), (status = 403, body = ErrorBody)))]
async fn export_pabulib(
    Authenticated(user): Authenticated,
    path: web::Path<DistrictPath>,
    query: web::Query<YearQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (district, year, d) = load_district(&state, &user, &path.ubigeo, query.year).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"peru_lima_{district}_{year}.pb\""),
        ))
        .body(review::export_pabulib(district, year, &d)))
}

/// `GET /api/v1/events`: server-sent events, `event: changed` with `{id, district, type}` each
/// time a document of the caller's scope changes durably (a comment line every 15 s keeps the
/// stream alive). Browsers pass the token as `?token=`.
#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"), (status = 401, body = ErrorBody)))]
async fn events(Authenticated(user): Authenticated, state: web::Data<AppState>) -> HttpResponse {
    use tokio::sync::broadcast::error::RecvError;
    let rx = state.hub.subscribe();
    let shutdown = state.shutdown.clone();
    // Like a sync connection, the stream ends when the token expires.
    let expiry = tokio::time::Instant::now()
        + std::time::Duration::from_secs(user.exp.saturating_sub(crate::auth::now_unix()));
    let stream = futures_util::stream::unfold(
        (rx, user, shutdown, true),
        move |(mut rx, user, shutdown, first)| async move {
            if first {
                let hello = web::Bytes::from_static(b"retry: 3000\n: minka events\n\n");
                return Some((
                    Ok::<_, actix_web::Error>(hello),
                    (rx, user, shutdown, false),
                ));
            }
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep_until(expiry) => return None,
                    r = tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv()) => r,
                };
                let chunk = match next {
                    Err(_) => web::Bytes::from_static(b": keepalive\n\n"),
                    Ok(Ok(ev)) => {
                        let Ok(d) = ev.district.parse::<Ubigeo>() else {
                            continue;
                        };
                        if !user.district.covers(d) {
                            continue;
                        }
                        let data = serde_json::to_string(&ev).expect("json");
                        web::Bytes::from(format!("event: changed\ndata: {data}\n\n"))
                    }
                    Ok(Err(RecvError::Lagged(_))) => {
                        web::Bytes::from_static(b"event: resync\ndata: {}\n\n")
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                };
                return Some((Ok(chunk), (rx, user, shutdown, false)));
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

// Sealing (through the hub: it writes)

/// The process document and the proposals' zones of a district, found through its index.
async fn budget_context(hub: &Hub, district: Ubigeo, year: u16) -> Result<BudgetContext, ApiError> {
    let stopped = |_| ApiError::Unavailable("server is shutting down".into());
    let index_doc = hub
        .snapshot(DocumentId::index_for(district, year))
        .await
        .map_err(stopped)?;
    let Ok(index) = Index::read(&index_doc) else {
        return Ok(BudgetContext::default());
    };
    // The live copies (sealing writes through the hub), classified as the read models do.
    let mut docs = Vec::new();
    for (id, entry) in &index.docs {
        if matches!(entry.doc_type, DocType::Process | DocType::Proposal) {
            docs.push((*id, hub.snapshot(*id).await.map_err(stopped)?));
        }
    }
    Ok(review::budget_context(&docs))
}

/// `POST /api/v1/docs/{id}/seal`: seals an acta in `signing` with a majority of voting attendees
/// signed and every budget invariant met (409 listing what is over which ceiling otherwise).
#[utoipa::path(post, path = "/api/v1/docs/{id}/seal", params(IdPath),
    responses((status = 200, description = "the seal record: documentId, heads, sha256, sealedBy, sealedAt"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn seal(
    Authenticated(user): Authenticated,
    path: web::Path<IdPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !(user.has_role(Role::Tecnico) || user.has_role(Role::Admin)) {
        return Err(ApiError::Forbidden(
            "sealing needs the tecnico or admin role".into(),
        ));
    }
    let id = parse_id(&path.id)?;
    let doc = state
        .hub
        .snapshot(id)
        .await
        .map_err(|_| ApiError::Unavailable("server is shutting down".into()))?;
    let header = match AnyDocument::read(&doc) {
        Ok(AnyDocument::Acta(a)) if user.district.covers(a.header.district) => a.header,
        Ok(d) if user.district.covers(d.header().district) => {
            return Err(ApiError::Conflict(format!(
                "document {id} is a {}, not an acta",
                d.doc_type()
            )))
        }
        _ => return Err(ApiError::NotFound(format!("document {id}"))),
    };
    let budget = budget_context(&state.hub, header.district, header.process_year).await?;
    let (reply, rx) = oneshot::channel();
    state
        .hub
        .send(
            id,
            DocCmd::Seal {
                user: Arc::new(user),
                budget,
                reply,
            },
        )
        .await
        .map_err(|_| ApiError::Unavailable("server is shutting down".into()))?;
    match rx.await {
        Ok(Ok(record)) => Ok(HttpResponse::Ok().json(record)),
        Ok(Err(SealError::NotSealable(why))) => Err(ApiError::Conflict(why)),
        Ok(Err(SealError::Budget(violations))) => {
            Ok(HttpResponse::Conflict().json(serde_json::json!({
                "error": "budget invariants violated: the acta cannot be sealed",
                "violations": violations,
            })))
        }
        Ok(Err(SealError::Internal(e))) => Err(ApiError::Internal(e)),
        Err(_) => Err(ApiError::Unavailable("server is shutting down".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_routed_path_is_described_in_openapi() {
        let doc = ApiDoc::openapi();
        let routed = register(None);
        for (method, path) in &routed {
            let item =
                doc.paths.paths.get(*path).unwrap_or_else(|| {
                    panic!("{path} is routed but not in the OpenAPI description")
                });
            let described = match *method {
                "get" => item.get.is_some(),
                "post" => item.post.is_some(),
                other => panic!("unexpected method {other}"),
            };
            assert!(described, "{method} {path} is routed but not described");
        }
        // And nothing is described that is not routed.
        for path in doc.paths.paths.keys() {
            assert!(
                routed.iter().any(|(_, p)| p == path),
                "{path} is described but not routed"
            );
        }
    }
}
