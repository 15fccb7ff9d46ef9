//! The HTTP side, one for all the routes of a process: `GET /metrics` (Prometheus text, a `route` label
//! on every route's series), `GET /api/links`, `GET /api/links/{id}`, `GET /api/replicas`,
//! `GET /api/routes`, `GET /healthz`, and the fault endpoints (`/api/faults`), which answer 403 unless the proxy runs with
//! `--enable-faults` and, off loopback, want `Authorization: Bearer <token>` for every change.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::fault::FaultRequest;
use crate::link::LinkId;
use crate::proxy::table::RouteTable;

/// Who may use the fault endpoints.
#[derive(Clone, Debug)]
pub struct FaultAccess {
    /// `--enable-faults`.
    pub enabled: bool,
    /// The token changes need, when `--http` is not on loopback.
    pub token: Option<String>,
}

#[derive(Clone)]
struct AppState {
    table: Arc<RouteTable>,
    access: Arc<FaultAccess>,
}

/// The router for the HTTP API of the routes in `table`.
pub fn router(table: Arc<RouteTable>, access: FaultAccess) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/links", get(links))
        .route("/api/links/{id}", get(link))
        .route("/api/replicas", get(replicas))
        .route("/api/routes", get(routes))
        .route("/api/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/api/faults/{id}", get(get_fault).delete(remove_fault).patch(patch_fault))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState { table, access: Arc::new(access) })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let text = s.table.render_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn links(State(s): State<AppState>) -> Response {
    axum::Json(s.table.links_json()).into_response()
}

async fn replicas(State(s): State<AppState>) -> Response {
    axum::Json(s.table.replicas_json()).into_response()
}

async fn routes(State(s): State<AppState>) -> Response {
    axum::Json(s.table.routes_json()).into_response()
}

fn parse_id(id: &str, what: &str) -> Result<u64, Box<Response>> {
    id.parse::<u64>()
        .map_err(|_| Box::new(error(StatusCode::BAD_REQUEST, format!("{id:?} is not a {what} id (a number)"))))
}

async fn link(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let n = match parse_id(&id, "link") {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match s.table.link_json(LinkId(n)) {
        Some(v) => axum::Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no link {n} (open, or among the last closed ones)")),
    }
}

/// Compares a presented token with the real one in time that does not depend on where they differ.
fn same_secret(given: &[u8], real: &[u8]) -> bool {
    let differ = given.iter().zip(real).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == real.len() && differ == 0
}

/// 403 when faults are off; 401 for a change without the right token (when a token is required).
fn check(access: &FaultAccess, headers: &HeaderMap, change: bool) -> Result<(), Box<Response>> {
    if !access.enabled {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "fault injection is disabled: start the proxy with --enable-faults to use /api/faults",
        )));
    }
    if change && let Some(token) = &access.token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "this change needs Authorization: Bearer <the --admin-token>",
            )));
        }
    }
    Ok(())
}

async fn list_faults(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&s.access, &headers, false) {
        return *r;
    }
    axum::Json(s.table.shared().list_faults()).into_response()
}

async fn get_fault(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = check(&s.access, &headers, false) {
        return *r;
    }
    let n = match parse_id(&id, "fault") {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match s.table.shared().list_faults().into_iter().find(|f| f.id == n) {
        Some(f) => axum::Json(f).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no fault {n}")),
    }
}

async fn add_fault(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check(&s.access, &headers, true) {
        return *r;
    }
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a fault: {e}")),
    };
    match request.into_spec() {
        Ok(spec) => {
            if let Some(route) = &spec.route
                && s.table.route(route).is_none()
            {
                let names = s.table.names().join(", ");
                return error(StatusCode::BAD_REQUEST, format!("no route {route:?} (this proxy has: {names})"));
            }
            let fault = s.table.shared().add_fault(spec, s.table.open_ids());
            (StatusCode::CREATED, axum::Json(fault)).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.0),
    }
}

async fn remove_fault(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = check(&s.access, &headers, true) {
        return *r;
    }
    let n = match parse_id(&id, "fault") {
        Ok(n) => n,
        Err(r) => return *r,
    };
    if s.table.shared().remove_fault(n) {
        axum::Json(serde_json::json!({ "removed": [n] })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no fault {n}"))
    }
}

async fn clear_faults(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = check(&s.access, &headers, true) {
        return *r;
    }
    axum::Json(serde_json::json!({ "removed": s.table.shared().clear_faults() })).into_response()
}

/// `PATCH /api/faults/{id}` with `{"rate": "8MiB/s"}`: a bandwidth fault's rate, at run time.
async fn patch_fault(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = check(&s.access, &headers, true) {
        return *r;
    }
    let n = match parse_id(&id, "fault") {
        Ok(n) => n,
        Err(r) => return *r,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        rate: crate::fault::spec::Human,
    }
    let rate = match serde_json::from_slice::<Patch>(&body) {
        Ok(Patch { rate: crate::fault::spec::Human::Number(n) }) if n >= 1.0 => Ok(n as u64),
        Ok(Patch { rate: crate::fault::spec::Human::Text(t) }) => crate::fault::spec::parse_rate(&t).map_err(|e| e.0),
        Ok(_) => Err("rate must be at least 1 byte per second".to_string()),
        Err(e) => Err(format!("expected {{\"rate\": \"8MiB/s\"}}: {e}")),
    };
    match rate {
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
        Ok(rate) => match s.table.shared().set_fault_rate(n, rate) {
            Some(f) => axum::Json(f).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no bandwidth fault {n}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"s3crex", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
