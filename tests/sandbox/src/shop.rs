//! The shop's webhook receiver: records what payhub's notifier sends and
//! checks its Standard Webhooks signature against the shop secrets.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use payhub_core::standard_webhooks::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, VerifyError, WebhookSecret};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::faults::{self, FaultPlan, ShopFault};
use crate::model::ReceivedWebhook;
use crate::state::lock;
use crate::util::json_error;

/// Timestamp tolerance for verification, as Standard Webhooks recommends.
pub(crate) const TOLERANCE_SECS: i64 = 300;

/// The shop's secrets and everything it received.
#[derive(Debug, Default)]
pub(crate) struct ShopState {
    secrets: Vec<WebhookSecret>,
    received: Vec<ReceivedWebhook>,
    /// Wake Commerce postbacks (`POST /api/Custom/{chave}`), in order.
    pub(crate) wake_postbacks: Vec<crate::model::WakePostback>,
    /// The active fault of `POST /shop/webhooks`.
    pub fault: FaultPlan<ShopFault>,
}

impl ShopState {
    /// Adds a `whsec_...` secret; several may be active (rotation).
    pub(crate) fn add_secret(&mut self, text: &str) -> Result<(), String> {
        let secret = WebhookSecret::parse(text.trim()).map_err(|e| format!("the secret {e}"))?;
        self.secrets.push(secret);
        Ok(())
    }

    pub(crate) fn received(&self) -> Vec<ReceivedWebhook> {
        self.received.clone()
    }

    /// `Ok` when any secret verifies; otherwise the most telling failure.
    fn verify(&self, id: &str, timestamp: &str, signature: &str, body: &[u8], now: i64) -> Result<(), String> {
        if id.is_empty() || timestamp.is_empty() || signature.is_empty() {
            return Err(VerifyError::MissingHeader.to_string());
        }
        if self.secrets.is_empty() {
            return Err("no shop secret is configured".into());
        }
        let mut last = VerifyError::NoMatchingSignature;
        for secret in &self.secrets {
            match secret.verify(id, timestamp, signature, body, now, TOLERANCE_SECS) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last.to_string())
    }
}

/// How the shop answers one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShopReply {
    /// 200 `{"received": true}`.
    Accept,
    /// An injected status code.
    Status(u16),
    /// Never answer (until the sandbox stops).
    Hang,
}

impl ShopReply {
    /// What the record says was answered.
    fn answered(self) -> Option<u16> {
        match self {
            ShopReply::Accept => Some(200),
            ShopReply::Status(code) => Some(code),
            ShopReply::Hang => None,
        }
    }
}

/// Picks the answer for the delivery that just arrived, using up one
/// request of the active fault.
fn choose_reply(state: &mut ShopState) -> ShopReply {
    match state.fault.take() {
        None => ShopReply::Accept,
        Some(ShopFault::Status(code)) => ShopReply::Status(code),
        Some(ShopFault::Hang) => ShopReply::Hang,
    }
}

/// Where 3xx fault answers point.
const REDIRECT_PATH: &str = "/shop/webhooks/redirected";

fn status_reply(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if matches!(code, 204 | 304) {
        return status.into_response();
    }
    let mut response = if status.is_success() {
        (status, axum::Json(serde_json::json!({ "received": true }))).into_response()
    } else {
        json_error(status, format!("sandbox shop fault: answering {code}"))
    };
    if status.is_redirection()
        && let Ok(location) = HeaderValue::from_str(REDIRECT_PATH)
    {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The shop server's state: the records and the shutdown signal that ends
/// held requests.
#[derive(Clone)]
struct App {
    shop: Shared,
    shutdown: CancellationToken,
}

type Shared = Arc<Mutex<ShopState>>;

pub(crate) fn router(state: Shared, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/shop/webhooks", post(receive).get(list))
        .route(REDIRECT_PATH, any(redirected))
        // Where a hosted checkout sends the buyer back (issue 11): the test
        // reads the signed query from the browser's address.
        .route("/shop/checkout/return", get(checkout_landing))
        .route("/shop/checkout/cancel", get(checkout_landing))
        // Wake Commerce's postback endpoint (gateway-postback.fbits.net).
        .route("/api/Custom/{chave}", post(wake_postback))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .with_state(App { shop: state, shutdown })
}

/// The shop's "thank you" page after payhub's checkout.
async fn checkout_landing() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html lang=\"pt-BR\"><head><meta charset=\"utf-8\"><title>Loja Sandbox</title></head>\
         <body><h1 id=\"shop-landing\">Loja Sandbox</h1></body></html>",
    )
        .into_response()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `POST /shop/webhooks`: record, verify, answer (or misbehave).
async fn receive(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let received_at = OffsetDateTime::now_utc();
    let id = header(&headers, HEADER_ID);
    let timestamp = header(&headers, HEADER_TIMESTAMP);
    let signature = header(&headers, HEADER_SIGNATURE);

    let reply = {
        // One lock for verifying, choosing the answer and recording, so the
        // records keep arrival order and match the fault budget.
        let mut shop = lock(&app.shop);
        let outcome = shop.verify(&id, &timestamp, &signature, &body, received_at.unix_timestamp());
        let reply = choose_reply(&mut shop);
        let webhook = ReceivedWebhook {
            id,
            timestamp,
            signature,
            body: String::from_utf8_lossy(&body).into_owned(),
            verified: outcome.is_ok(),
            verify_error: outcome.err(),
            received_at,
            answered: reply.answered(),
        };
        tracing::info!(
            webhook_id = %webhook.id,
            verified = webhook.verified,
            error = webhook.verify_error.as_deref().unwrap_or(""),
            answered = ?webhook.answered,
            "shop received a webhook"
        );
        shop.received.push(webhook);
        reply
    };
    match reply {
        ShopReply::Accept => (StatusCode::OK, axum::Json(serde_json::json!({ "received": true }))).into_response(),
        ShopReply::Status(code) => status_reply(code),
        ShopReply::Hang => {
            faults::hold_until_shutdown(&app.shutdown).await;
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox shop fault: a held request was released",
            )
        }
    }
}

/// `POST /api/Custom/{chave}`: what a Wake store receives when a payment
/// changes; recorded and answered 200.
async fn wake_postback(
    State(app): State<App>,
    axum::extract::Path(chave): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    tracing::info!(chave = %chave, "wake postback received");
    lock(&app.shop).wake_postbacks.push(crate::model::WakePostback {
        chave,
        body,
        received_at: OffsetDateTime::now_utc(),
    });
    (StatusCode::OK, axum::Json(serde_json::json!({ "sucesso": true }))).into_response()
}

/// Where 3xx fault answers point: answers 200 without recording anything.
async fn redirected() -> Response {
    tracing::warn!("a client followed the sandbox shop's redirect (webhook senders should not)");
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "received": true, "redirected": true })),
    )
        .into_response()
}

/// `GET /shop/webhooks`.
async fn list(State(app): State<App>) -> Response {
    let received = lock(&app.shop).received();
    axum::Json(serde_json::json!({ "webhooks": received })).into_response()
}
