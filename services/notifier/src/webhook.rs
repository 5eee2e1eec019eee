//! Signed webhooks to shops (Standard Webhooks v1).

use crate::Attempt;
use crate::url_safety::{self, PublicOnlyResolver};
use payhub_core::Envelope;
use payhub_core::events::OrderStatusChanged;
use payhub_core::standard_webhooks::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSecret};
use payhub_core::url_safety::WebhookUrlPolicy;
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
    let details = change.details.as_deref();
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
            // The refund behind a `partially_refunded` or `refunded` change.
            "refund": change.refund.as_ref().map(|r| json!({
                "id": r.refund_id,
                "idempotencyKey": r.idempotency_key,
                "amount": {
                    "value": r.amount.to_major_string(),
                    "minor": r.amount.minor(),
                    "currency": r.amount.currency().code(),
                },
                "refunded": {
                    "value": r.refunded_total.to_major_string(),
                    "minor": r.refunded_total.minor(),
                    "currency": r.refunded_total.currency().code(),
                },
                "reason": r.reason,
            })),
            "items": details.map(|d| items_json(&d.items)).unwrap_or_default(),
            "tax": details.and_then(|d| d.tax).map(|t| t.to_major_string()),
            "customer": {
                "name": change.customer_name,
                "email": change.customer_email,
                "phone": details.and_then(|d| d.customer_phone.clone()),
            },
            "createdAt": change.order_created_at.format(&Rfc3339).ok(),
            "paidAt": details.and_then(|d| d.paid_at).and_then(|t| t.format(&Rfc3339).ok()),
            "transaction": details.map(|d| json!({
                "providerChargeId": d.provider_charge_id,
                "transactionId": d.transaction_id,
                "authorizationCode": d.auth_code,
            })),
            "card": details.and_then(|d| d.card_masked.as_ref().map(|masked| json!({
                "masked": masked,
                "brand": d.card_brand,
            }))),
            "paymentLinkUrl": details.and_then(|d| d.payment_link_url.clone()),
            "extra": details.map(|d| json!(d.extra)).unwrap_or_else(|| json!({})),
            // Issue 12: the shipment and the delivery promise, once paid.
            "shipment": change.shipment.as_deref().map(|s| json!({
                "carrier": s.carrier,
                "trackingCode": s.tracking_code,
                "trackingUrl": s.tracking_url,
                "promisedDeliveryOn": s.promised_delivery_on.map(|d| d.to_string()),
                "deliveredOn": s.delivered_on.map(|d| d.to_string()),
                "note": s.note,
                "by": s.actor,
            })),
        }
    })
}

fn items_json(items: &[payhub_core::order::Item]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|i| {
                json!({
                    "code": i.code,
                    "title": i.title,
                    "description": i.description,
                    "price": i.unit_price.to_major_string(),
                    "qty": i.qty,
                    "tax": i.tax.to_major_string(),
                    "total": i.total.to_major_string(),
                })
            })
            .collect(),
    )
}

/// A decimal number of major units, as PixelPay's webhooks write money.
fn pixelpay_number(m: payhub_core::Money) -> Value {
    serde_json::Number::from_f64(m.minor() as f64 / 100.0).map_or(Value::Null, Value::Number)
}

/// PixelPay's `YYYY-MM-DD HH:MM:SS` (UTC).
fn pixelpay_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What a shop that chose PixelPay's format receives (seed 003): the
/// success webhook when paid, the error webhook when failed; other
/// statuses have no PixelPay counterpart and are not sent (`None`).
pub fn pixelpay_payload(env: &Envelope, change: &OrderStatusChanged, shop_name: &str) -> Option<Value> {
    let slug: String = shop_name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let details = change.details.as_deref();
    match change.to {
        payhub_core::OrderStatus::Paid => Some(json!({
            "ref": env.correlation_id,
            "uuid": details
                .and_then(|d| d.provider_charge_id.clone())
                .or_else(|| env.order_id.map(|id| id.to_string())),
            "status": "paid",
            "description": change.summary,
            "note": null,
            "currency": change.amount.currency().code(),
            "tax_amount": details.and_then(|d| d.tax).map(pixelpay_number),
            "amount": pixelpay_number(change.amount),
            "items": details.map(|d| d.items.iter().map(|i| json!({
                "code": i.code,
                "title": i.title,
                "description": i.description,
                "tax": pixelpay_number(i.tax),
                "price": pixelpay_number(i.unit_price),
                "qty": i.qty,
                "total": pixelpay_number(i.total),
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "customer_name": change.customer_name,
            "customer_email": change.customer_email,
            "customer_phone": details.and_then(|d| d.customer_phone.clone()),
            "client_ip": null,
            "client_device": null,
            "created_at": pixelpay_time(change.order_created_at),
            "paid_at": details.and_then(|d| d.paid_at).map(pixelpay_time),
            "transaction_id": details.and_then(|d| d.transaction_id.clone()),
            "card_account": details.and_then(|d| d.card_masked.clone()),
            "card_brand": details.and_then(|d| d.card_brand.clone()),
            // PixelPay's answers to payhub do not say credit or debit.
            "card_type": null,
            "company_name": shop_name,
            "company_slug": slug,
            // The merchant's PixelPay Key ID is charge-creator's to know, not the notifier's.
            "company_key": null,
            "is_overdue": false,
            "payment_url": details.and_then(|d| d.payment_link_url.clone()),
            "attach_url": null,
            "extra": details.map(|d| json!(d.extra)).unwrap_or_else(|| json!({})),
        })),
        payhub_core::OrderStatus::Failed => Some(json!({
            "success": false,
            "message": change.reason.clone().unwrap_or_else(|| "the payment failed".into()),
        })),
        _ => None,
    }
}

/// The JSON a shop receives when a buyer answered the satisfaction survey.
pub fn survey_payload(env: &Envelope, answer: &payhub_core::events::SurveyAnswered) -> Value {
    json!({
        "type": "survey.answered",
        "timestamp": env.occurred_at.format(&Rfc3339).unwrap_or_default(),
        "data": {
            "orderId": env.order_id,
            "correlationID": env.correlation_id,
            "score": answer.score,
            // NPS: 9-10 promoter, 7-8 passive, 0-6 detractor.
            "category": match answer.score {
                9..=10 => "promoter",
                7..=8 => "passive",
                _ => "detractor",
            },
            "comment": answer.comment,
            "language": answer.language,
        }
    })
}

/// The JSON a shop receives when one of its order messages was refused.
pub fn rejected_payload(env: &Envelope, rejected: &payhub_core::events::OrderRejected) -> Value {
    json!({
        "type": "order.rejected",
        "timestamp": env.occurred_at.format(&Rfc3339).unwrap_or_default(),
        "data": {
            "correlationID": rejected.correlation_id,
            "channel": rejected.channel.as_str(),
            "reason": rejected.reason,
            "errors": rejected.errors,
        }
    })
}

/// Sends shop webhooks. Only URLs the [`WebhookUrlPolicy`] allows are
/// called (see [`crate::url_safety`]); a refusal is recorded as an error
/// starting with `unsafe webhook URL:` and is permanent ([`refused`]).
#[derive(Clone)]
pub struct WebhookSender {
    /// For shop-given URLs: the policy's address filter is in its resolver.
    http: reqwest::Client,
    /// For URLs the operator configured (Wake's postback gateway).
    trusted: reqwest::Client,
    policy: WebhookUrlPolicy,
}

fn client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A redirect could point anywhere; shops must give the final URL.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("payhub-webhooks/", env!("CARGO_PKG_VERSION")))
}

impl WebhookSender {
    pub fn new(timeout: Duration, policy: WebhookUrlPolicy) -> Result<WebhookSender, reqwest::Error> {
        let mut shops = client(timeout);
        if !policy.allow_private {
            // Resolved addresses are filtered where the connection is made.
            // A proxy would resolve the shop's host itself, out of reach of
            // that filter, so none is used.
            shops = shops.dns_resolver(PublicOnlyResolver { policy }).no_proxy();
        }
        Ok(WebhookSender {
            http: shops.build()?,
            trusted: client(timeout).build()?,
            policy,
        })
    }

    /// One attempt, signed with each of `secrets` (the current one first; the
    /// previous one too during a rotation's overlap, see
    /// `Shop::signing_secrets`), all in one `webhook-signature` header. Only
    /// a 2xx answer counts as delivered.
    pub(crate) async fn send(
        &self,
        url: &str,
        secrets: &[&WebhookSecret],
        webhook_id: &str,
        payload: &Value,
    ) -> Attempt {
        if let Err(reason) = url_safety::check_url(&self.policy, url) {
            return refusal(reason);
        }
        let body = serde_json::to_vec(payload).expect("JSON values serialise");
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let signature = signature_header(secrets, webhook_id, ts, &body);
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
        if let Err(e) = &result
            && let Some(unsafe_url) = url_safety::refusal(e)
        {
            return refusal(format!("{}: {unsafe_url}", url_safety::REFUSED));
        }
        outcome(result)
    }

    /// An unsigned JSON POST to a URL the operator configured (not a shop's),
    /// e.g. Wake Commerce's postback gateway. Only a 2xx answer counts.
    pub(crate) async fn post_json(&self, url: &str, body: &Value) -> Attempt {
        outcome(self.trusted.post(url).json(body).send().await)
    }
}

/// True when the attempt was refused because the URL is unsafe to call:
/// retrying cannot help, the delivery has failed.
pub(crate) fn refused(attempt: &Attempt) -> bool {
    !attempt.ok
        && attempt
            .error
            .as_deref()
            .and_then(|e| e.strip_prefix(url_safety::REFUSED))
            .is_some_and(|rest| rest.starts_with(": "))
}

fn refusal(reason: String) -> Attempt {
    tracing::warn!(reason = %reason, "shop webhook refused: the URL is not safe to call");
    Attempt {
        ok: false,
        status_code: None,
        error: Some(reason),
    }
}

fn outcome(result: Result<reqwest::Response, reqwest::Error>) -> Attempt {
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

/// `v1,<sig>` for each secret, space-separated (Standard Webhooks).
pub(crate) fn signature_header(secrets: &[&WebhookSecret], webhook_id: &str, ts: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(webhook_id, ts, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_signs_and_each_alone_verifies() {
        let (current, previous) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&current, &previous], "msg_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        for secret in [&current, &previous] {
            assert_eq!(
                secret.verify("msg_1", "1700000000", &header, b"{}", 1_700_000_000, 300),
                Ok(())
            );
        }
        let single = signature_header(&[&current], "msg_1", 1_700_000_000, b"{}");
        assert!(!single.contains(' '));
        assert!(
            previous
                .verify("msg_1", "1700000000", &single, b"{}", 1_700_000_000, 300)
                .is_err()
        );
    }

    #[tokio::test]
    async fn unsafe_urls_are_refused_permanently_without_a_request() {
        payhub_telemetry::install_crypto();
        let strict = WebhookUrlPolicy {
            require_https: false,
            allow_private: false,
        };
        let sender = WebhookSender::new(Duration::from_secs(2), strict).unwrap();
        let secret = WebhookSecret::generate();
        for url in [
            "http://127.0.0.1:9/hooks",
            "http://localhost:9/hooks",
            "http://[::1]:9/",
        ] {
            let attempt = sender.send(url, &[&secret], "msg_1", &json!({})).await;
            assert!(refused(&attempt), "{url}");
            let error = attempt.error.unwrap();
            assert!(error.starts_with("unsafe webhook URL: "), "{url}: {error}");
        }
        // Allowed, the same URL is an ordinary (retryable) connection failure.
        let lenient = WebhookSender::new(Duration::from_secs(2), WebhookUrlPolicy::default()).unwrap();
        let attempt = lenient
            .send("http://127.0.0.1:9/hooks", &[&secret], "msg_1", &json!({}))
            .await;
        assert!(!attempt.ok && !refused(&attempt), "{:?}", attempt.error);
    }
}
