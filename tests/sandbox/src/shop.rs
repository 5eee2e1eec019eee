//! The shop's webhook receiver: records what payhub's notifier sends and
//! checks its Standard Webhooks signature against the shop secrets.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_core::standard_webhooks::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, VerifyError, WebhookSecret,
};
use time::OffsetDateTime;

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
    fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), String> {
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

/// How the shop answers one delivery. Fault injection (5xx, timeouts, slow
/// answers) will add variants here and a rule in [`choose_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShopReply {
    /// 200 `{"received": true}`.
    Accept,
}

/// Picks the answer for a delivery that was just recorded.
fn choose_reply(_state: &ShopState, _webhook: &ReceivedWebhook) -> ShopReply {
    ShopReply::Accept
}

impl IntoResponse for ShopReply {
    fn into_response(self) -> Response {
        match self {
            ShopReply::Accept => (
                StatusCode::OK,
                axum::Json(serde_json::json!({ "received": true })),
            )
                .into_response(),
        }
    }
}

type Shared = Arc<Mutex<ShopState>>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/shop/webhooks", post(receive).get(list))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `POST /shop/webhooks`: record, verify, answer.
async fn receive(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let received_at = OffsetDateTime::now_utc();
    let id = header(&headers, HEADER_ID);
    let timestamp = header(&headers, HEADER_TIMESTAMP);
    let signature = header(&headers, HEADER_SIGNATURE);

    let mut shop = lock(&state);
    let outcome = shop.verify(
        &id,
        &timestamp,
        &signature,
        &body,
        received_at.unix_timestamp(),
    );
    let webhook = ReceivedWebhook {
        id,
        timestamp,
        signature,
        body: String::from_utf8_lossy(&body).into_owned(),
        verified: outcome.is_ok(),
        verify_error: outcome.err(),
        received_at,
    };
    tracing::info!(
        webhook_id = %webhook.id,
        verified = webhook.verified,
        error = webhook.verify_error.as_deref().unwrap_or(""),
        "shop received a webhook"
    );
    let reply = choose_reply(&shop, &webhook);
    shop.received.push(webhook);
    reply.into_response()
}

/// `GET /shop/webhooks`.
async fn list(State(state): State<Shared>) -> Response {
    let received = lock(&state).received();
    axum::Json(serde_json::json!({ "webhooks": received })).into_response()
}
