//! Signed webhooks to shops (Standard Webhooks v1).

use crate::Attempt;
use payhub_core::Envelope;
use payhub_core::events::OrderStatusChanged;
use payhub_core::standard_webhooks::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSecret};
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The `webhook-id` of an event's delivery: derived from the event id, so
/// every attempt (and a replay) carries the same id and shops can dedupe.
pub fn webhook_id(event_id: Uuid) -> String {
    format!("msg_{}", event_id.simple())
}

/// The JSON a shop receives.
pub fn shop_payload(env: &Envelope, change: &OrderStatusChanged) -> Value {
    json!({
        "type": "order.status_changed",
        "timestamp": env.occurred_at.format(&Rfc3339).unwrap_or_default(),
        "data": {
            "orderId": env.order_id,
            "correlationID": env.correlation_id,
            "status": change.to.as_str(),
            "previousStatus": change.from.as_str(),
            "reason": change.reason,
            "provider": change.provider.as_str(),
            "amount": {
                "value": change.amount.to_major_string(),
                "minor": change.amount.minor(),
                "currency": change.amount.currency().code(),
            },
            "charge": change.charge.as_ref().map(|c| json!({
                "brCode": c.br_code,
                "qrCodeImage": c.qr_code_image_url,
                "paymentLinkUrl": c.payment_link_url,
                "expiresAt": c.expires_at.and_then(|t| t.format(&Rfc3339).ok()),
            })),
            "endToEndId": change.end_to_end_id,
        }
    })
}

#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
}

impl WebhookSender {
    pub fn new(timeout: Duration) -> Result<WebhookSender, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect could point anywhere; shops must give the final URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payhub-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookSender { http })
    }

    /// One attempt. Only a 2xx answer counts as delivered.
    pub(crate) async fn send(&self, url: &str, secret: &WebhookSecret, webhook_id: &str, payload: &Value) -> Attempt {
        let body = serde_json::to_vec(payload).expect("JSON values serialise");
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let signature = secret.sign(webhook_id, ts, &body);
        let result = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(HEADER_ID, webhook_id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => Attempt {
                ok: true,
                status_code: Some(i32::from(resp.status().as_u16())),
                error: None,
            },
            Ok(resp) => Attempt {
                ok: false,
                status_code: Some(i32::from(resp.status().as_u16())),
                error: Some(format!("the shop answered {}", resp.status().as_u16())),
            },
            Err(e) => Attempt {
                ok: false,
                status_code: None,
                error: Some(if e.is_timeout() {
                    "no answer within the timeout".into()
                } else {
                    format!("cannot reach the shop: {}", e.without_url())
                }),
            },
        }
    }
}
