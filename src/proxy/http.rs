//! The HTTP side: `GET /metrics` (Prometheus text), `GET /api/links`, `GET /api/links/{id}`,
//! `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::link::LinkId;
use crate::proxy::route::Route;

/// The router for one route's HTTP API.
pub fn router(route: Arc<Route>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/links", get(links))
        .route("/api/links/{id}", get(link))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(route)
}

async fn metrics(State(route): State<Arc<Route>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], route.render_metrics()).into_response()
}

async fn links(State(route): State<Arc<Route>>) -> Response {
    axum::Json(route.links_json()).into_response()
}

async fn link(State(route): State<Arc<Route>>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.parse::<u64>() else {
        let body = serde_json::json!({ "error": format!("{id:?} is not a link id (a number)") });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    match route.link_json(LinkId(n)) {
        Some(v) => axum::Json(v).into_response(),
        None => {
            let body = serde_json::json!({ "error": format!("no link {n} (open, or among the last closed ones)") });
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}
