//! The review API under `/api/v1`: sealing actas and the quarantine. Handlers extract, authorize,
//! call the hub or the store, and map errors; nothing else.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use crdt_core::schema::{AnyDocument, BudgetContext, DocType, Index, Process, Proposal};
use crdt_core::{DocumentId, Role, Ubigeo};
use tokio::sync::oneshot;

use crate::auth::{AuthUser, Authenticated};
use crate::error::ApiError;
use crate::gate::Gate;
use crate::hub::{DocCmd, Hub, SealError};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/docs/{id}/seal", web::post().to(seal))
            .route("/quarantine", web::get().to(quarantine)),
    );
}

fn parse_id(raw: &str) -> Result<DocumentId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid document id {raw:?}: {e}")))
}

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
    let mut process = None;
    let mut proposals = Vec::new();
    for (id, entry) in &index.docs {
        match entry.doc_type {
            DocType::Process => {
                let doc = hub.snapshot(*id).await.map_err(stopped)?;
                process = Process::read(&doc).ok().or(process);
            }
            DocType::Proposal => {
                let doc = hub.snapshot(*id).await.map_err(stopped)?;
                if let Ok(p) = Proposal::read(&doc) {
                    proposals.push((*id, p));
                }
            }
            _ => {}
        }
    }
    Ok(BudgetContext::new(
        process,
        proposals.iter().map(|(id, p)| (*id, p)),
    ))
}

/// `POST /api/v1/docs/{id}/seal`: seals an acta in `signing` with a majority of voting attendees
/// signed and every budget invariant met (409 listing what is over which ceiling otherwise).
async fn seal(
    Authenticated(user): Authenticated,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !(user.has_role(Role::Tecnico) || user.has_role(Role::Admin)) {
        return Err(ApiError::Forbidden(
            "sealing needs the tecnico or admin role".into(),
        ));
    }
    let id = parse_id(&path)?;
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

fn may_see_quarantine(user: &AuthUser, entry: &crate::gate::QuarantineEntry) -> bool {
    // Everyone sees their own rejected changes, wherever they were aimed.
    if entry.user == user.user.as_str() {
        return true;
    }
    let in_scope = match entry.district.as_deref().map(str::parse::<Ubigeo>) {
        Some(Ok(d)) => user.district.covers(d),
        _ => user.district == crdt_core::DistrictScope::All || entry.user == user.user.as_str(),
    };
    let reviewer = [Role::Vigilancia, Role::Tecnico, Role::Admin]
        .iter()
        .any(|r| user.has_role(*r));
    in_scope && (reviewer || entry.user == user.user.as_str())
}

/// `GET /api/v1/quarantine`: rejected changes of the caller's district (reviewers see all of them,
/// a leader sees their own), with user, time, reason and the change bytes.
async fn quarantine(
    Authenticated(user): Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let entries = web::block(move || Gate::quarantine(store.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Show only what is durable: everything read was written before this wait began.
    state
        .durability
        .wait()
        .await
        .map_err(|e| ApiError::Unavailable(format!("store not durable: {e}")))?;
    let visible: Vec<_> = entries
        .into_iter()
        .filter(|e| may_see_quarantine(&user, e))
        .collect();
    Ok(HttpResponse::Ok().json(visible))
}
