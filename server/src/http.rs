//! Operational HTTP endpoints: health and metrics (routed in `api::register`).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::AppState;
use crdt_core::Role;

/// `GET /healthz`: 200 once the store is open and while the server is not shutting down.
/// Open without a token so probes can use it; it reveals nothing.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "serving"), (status = 503, description = "stopping")))]
pub(crate) async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.ready.load(Ordering::Acquire) {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "stopping" }))
    }
}

/// `GET /metrics`: Prometheus text exposition, for the `admin` role only: the counters reveal
/// activity across districts (connections, changes, rejections), which a leader's or a district
/// reviewer's token must not see. Prometheus scrapes it with an admin token
/// (`authorization: { credentials_file: ... }`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain"), (status = 401, description = "no or bad token"), (status = 403, description = "not an admin")))]
pub(crate) async fn metrics(
    Authenticated(user): Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !user.has_role(Role::Admin) {
        return Err(ApiError::Forbidden("metrics need the admin role".into()));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
