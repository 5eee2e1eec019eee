//! A simulated provider outage: `POST /sandbox/outage {"provider":
//! "openpix"|"pixelpay"|"focusnfe", "down": true|false}` (or [`crate::Sandbox::set_outage`]).
//! While a provider is down, every call to its API (OpenPix `/api/v1/...`,
//! PixelPay `/api/v2/...`) is answered 503 before it reaches the simulator,
//! so nothing is created, charged or changed; `GET /sandbox/outage` lists
//! the providers down.

use crate::state::{Inner, lock};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

type Shared = Arc<Inner>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/sandbox/outage", get(show).post(control))
        .with_state(state)
}

pub(crate) fn set(state: &Inner, provider: &str, down: bool) {
    let mut o = lock(&state.outages);
    if down {
        o.insert(provider.to_string());
    } else {
        o.remove(provider);
    }
    tracing::info!(provider, down, "sandbox provider outage");
}

/// The provider whose API `path` is, if any.
fn provider_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/api/v1/") {
        Some("openpix")
    } else if path.starts_with("/api/v2/") {
        Some("pixelpay")
    } else if path.starts_with("/v2/") {
        Some("focusnfe")
    } else {
        None
    }
}

pub(crate) async fn gate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(p) = provider_of(req.uri().path())
        && lock(&state.outages).contains(p)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("{p} is unavailable (sandbox outage)")})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn show(State(state): State<Shared>) -> Response {
    let down: Vec<String> = lock(&state.outages).iter().cloned().collect();
    Json(json!({ "down": down })).into_response()
}

async fn control(State(state): State<Shared>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    };
    let provider = v.get("provider").and_then(Value::as_str);
    let down = v.get("down").and_then(Value::as_bool);
    match (provider, down) {
        (Some(p @ ("openpix" | "pixelpay" | "focusnfe")), Some(d)) => {
            set(&state, p, d);
            show(State(state)).await
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected {\"provider\": \"openpix\"|\"pixelpay\", \"down\": true|false}"})),
        )
            .into_response(),
    }
}
