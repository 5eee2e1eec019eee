//! OpenPix's webhook registration API (providers.md §1.3), on the provider
//! listener, one list per AppID account (payhub's [`crate::SandboxConfig::app_id`]
//! and [`crate::OTHER_MERCHANT_APP_ID`]):
//!
//! * `GET /api/v1/webhook[?skip&limit]`: `{"webhooks": [...], "pageInfo":
//!   {skip, limit, totalCount, hasNextPage}}`, the account's own only;
//! * `POST /api/v1/webhook` `{"webhook": {name, event, url, authorization?,
//!   isActive}}`: as OpenPix does, a signed test call
//!   (`{"data_criacao", "event"}`) goes to the URL first, and the webhook is
//!   created only when it was answered 2xx; otherwise `400 {"error"}`.
//!   Answers `{"webhook": {...}}`. A repeat of an existing (event, url) is a
//!   second webhook, as at OpenPix: the caller must list first.
//! * Faults ([`crate::Sandbox::openpix_webhook_fail_next`]) apply to `POST`:
//!   a status answered without creating anything, or a hang.
//! * `GET /sandbox/openpix/webhooks`: every account's webhooks.
//!
//! The `authorization` value is kept only as "given or not".

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::faults::{self, FaultPlan, ProviderFault};
use crate::state::{Inner, lock};
use crate::util::{self, json_error};

/// One registered webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredWebhook {
    /// The AppID of the account it belongs to.
    pub app_id: String,
    pub id: String,
    pub name: String,
    pub event: String,
    pub url: String,
    pub is_active: bool,
    /// Whether an `authorization` value was given.
    pub has_authorization: bool,
    pub created_at: String,
}

/// The registration API's state, one field of [`Inner`].
#[derive(Debug, Default)]
pub(crate) struct WebhookApiState {
    hooks: Mutex<Vec<RegisteredWebhook>>,
    fault: Mutex<FaultPlan<ProviderFault>>,
    /// `GET` and `POST /api/v1/webhook` calls, whatever their outcome.
    requests: AtomicUsize,
}

type Shared = Arc<Inner>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/webhook", get(list).post(create))
        .route("/sandbox/openpix/webhooks", get(list_all))
        .with_state(state)
}

/// The AppID in `Authorization` (raw, no `Bearer`), when it opens an account.
fn account(state: &Inner, headers: &HeaderMap) -> Result<String, Box<Response>> {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(app_id) if app_id == state.app_id || app_id == crate::OTHER_MERCHANT_APP_ID => Ok(app_id.to_string()),
        Some(_) => Err(Box::new(json_error(StatusCode::UNAUTHORIZED, "AppID inválido"))),
        None => Err(Box::new(json_error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization header with the AppID",
        ))),
    }
}

fn view(w: &RegisteredWebhook) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "event": w.event,
        "url": w.url,
        "isActive": w.is_active,
        "createdAt": w.created_at,
        "updatedAt": w.created_at,
    })
}

#[derive(Debug, Deserialize)]
struct Page {
    skip: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/v1/webhook`.
async fn list(State(state): State<Shared>, Query(page): Query<Page>, headers: HeaderMap) -> Response {
    state.openpix_webhooks.requests.fetch_add(1, Ordering::SeqCst);
    let app_id = match account(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    let mine: Vec<RegisteredWebhook> = lock(&state.openpix_webhooks.hooks)
        .iter()
        .filter(|w| w.app_id == app_id)
        .cloned()
        .collect();
    let skip = page.skip.unwrap_or(0);
    let limit = page.limit.unwrap_or(20).clamp(1, 100);
    let shown: Vec<Value> = mine.iter().skip(skip).take(limit).map(view).collect();
    Json(json!({
        "webhooks": shown,
        "pageInfo": {
            "skip": skip,
            "limit": limit,
            "totalCount": mine.len(),
            "hasNextPage": skip + limit < mine.len(),
            "hasPreviousPage": skip > 0,
        }
    }))
    .into_response()
}

/// `POST /api/v1/webhook`.
async fn create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let api = &state.openpix_webhooks;
    api.requests.fetch_add(1, Ordering::SeqCst);
    let app_id = match account(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    let fault = lock(&api.fault).take();
    match fault {
        None => {}
        Some(ProviderFault::Status(code)) => {
            tracing::info!(code, "webhook API fault: refusing a registration");
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_error(status, format!("sandbox webhook API fault: answering {code}"));
        }
        Some(ProviderFault::Timeout) => {
            tracing::info!("webhook API fault: holding a registration without answering");
            faults::hold_until_shutdown(&state.shutdown).await;
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox webhook API fault: a held request was released",
            );
        }
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let w = &parsed["webhook"];
    let text = |k: &str| {
        w.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let (Some(name), Some(url)) = (text("name"), text("url")) else {
        return json_error(StatusCode::BAD_REQUEST, "webhook.name and webhook.url are required");
    };
    // OpenPix's default when no event is given.
    let event = text("event").unwrap_or("OPENPIX:TRANSACTION_RECEIVED");
    if crate::check_url(url).is_err() {
        return json_error(StatusCode::BAD_REQUEST, "webhook.url must be an http(s) URL");
    }
    let now = OffsetDateTime::now_utc();
    // The test call the URL must answer 200 before the webhook exists.
    let probe = json!({ "data_criacao": util::iso_millis(now), "event": event }).to_string();
    let signature = match state.signer.sign(probe.as_bytes()) {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("signing the test call: {e}")),
    };
    let answered = state
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("x-webhook-signature", signature)
        .body(probe)
        .send()
        .await;
    match answered {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the webhook URL answered the test call with {}", r.status().as_u16()),
            );
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the webhook URL could not be reached: {}", util::error_chain(&e)),
            );
        }
    }
    let hook = RegisteredWebhook {
        app_id,
        id: format!("V2ViaG9vazo{}", util::hex_n(16)),
        name: name.to_string(),
        event: event.to_string(),
        url: url.to_string(),
        is_active: w.get("isActive").and_then(Value::as_bool).unwrap_or(true),
        has_authorization: text("authorization").is_some(),
        created_at: util::iso_millis(now),
    };
    tracing::info!(event = %hook.event, url = %hook.url, "OpenPix webhook registered");
    let reply = json!({ "webhook": view(&hook) });
    lock(&api.hooks).push(hook);
    Json(reply).into_response()
}

/// `GET /sandbox/openpix/webhooks`.
async fn list_all(State(state): State<Shared>) -> Response {
    let all = lock(&state.openpix_webhooks.hooks).clone();
    Json(json!({ "webhooks": all })).into_response()
}

impl crate::Sandbox {
    /// Every webhook registered at the OpenPix API, of both accounts, in
    /// creation order.
    pub fn openpix_webhooks(&self) -> Vec<RegisteredWebhook> {
        lock(&self.inner.openpix_webhooks.hooks).clone()
    }

    /// How many `GET`/`POST /api/v1/webhook` calls arrived.
    pub fn openpix_webhook_requests(&self) -> usize {
        self.inner.openpix_webhooks.requests.load(Ordering::SeqCst)
    }

    /// The next `n` `POST /api/v1/webhook` get `fault` and create nothing;
    /// `n == 0` recovers.
    pub fn openpix_webhook_fail_next(&self, n: u32, fault: ProviderFault) {
        lock(&self.inner.openpix_webhooks.fault).fail_next(n, fault);
    }

    /// Every `POST /api/v1/webhook` gets `fault` until
    /// [`crate::Sandbox::openpix_webhook_recover`].
    pub fn openpix_webhook_fail_always(&self, fault: ProviderFault) {
        lock(&self.inner.openpix_webhooks.fault).fail_always(fault);
    }

    pub fn openpix_webhook_recover(&self) {
        lock(&self.inner.openpix_webhooks.fault).recover();
    }
}
