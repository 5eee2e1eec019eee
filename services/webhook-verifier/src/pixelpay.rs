//! `POST /webhooks/pixelpay/{token}`: PixelPay's callbacks for one order
//! (QuickPay collection webhooks, seed 003, and a card sale's
//! `order_callback`), at the order's callback URL (providers.md §4.6).
//!
//! PixelPay documents no signature, so nothing in the body is believed:
//! - the order is the one whose unguessable `callback_token` is in the URL
//!   (an unknown token is 404, stored only as a capped rejected record, and
//!   the per-source rate limit applies as on `/webhooks/openpix`);
//! - a success webhook (`{"uuid", "ref", "status": "paid", ...}`) names a
//!   payment, which charge-creator confirms with PixelPay's `status` under
//!   the order's account, for the stored order's amount and currency (see
//!   charge-creator's `callbacks`). Confirmed: `payment.reported` is stored
//!   with the webhook and published, then 200. Not confirmed: `rejected`, the
//!   platform's admin alerted, 200 (PixelPay stops retrying; nothing
//!   changed). charge-creator or PixelPay unreachable: `unconfirmed`, 503,
//!   and PixelPay tries again (5 minutes later, 3 attempts in all);
//! - the same payment (`paid:{uuid}`) again is a `duplicate`, 200: a
//!   payment pays at most one order, once;
//! - an error webhook (`{"success": false, "message"}`) is stored whole for
//!   diagnosis (`provider_error`), the shop's admin is alerted once per
//!   distinct body, and it is answered 200.

use super::{AppState, REJECTIONS, Received, Verdict, reply};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use payhub_connectors::internal::{ClaimKind, ConfirmRequest, PixelPayClaim, Verdict as ConfirmVerdict};
use payhub_core::events::{AlertAudience, AlertRaised, EventPayload, PaymentReported, PaymentSource};
use payhub_core::{Envelope, Provider};
use payhub_service::problem::ApiError;
use payhub_store::outbox;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PROVIDER: &str = "pixelpay";
const SUCCESS: &str = "pixelpay.success";
const ERROR: &str = "pixelpay.error";

/// The order a callback URL belongs to.
#[derive(sqlx::FromRow)]
struct Order {
    id: Uuid,
    shop_id: Uuid,
    correlation_id: String,
}

/// Text of a field: trimmed, without control characters, at most `max`.
fn text(v: &Value, key: &str, max: usize) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| {
            s.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(max)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tracing::instrument(skip_all, fields(provider = "pixelpay", webhook_id, order_id))]
pub(crate) async fn webhook(
    State(st): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    tracing::Span::current().record("webhook_id", tracing::field::display(id));
    let received = Received {
        id,
        provider: PROVIDER,
        signature: None,
        body: &body,
    };
    let order: Option<Order> = if payhub_service::callbacks::is_callback_token(&token) {
        sqlx::query_as(
            "SELECT id, shop_id, correlation_id FROM orders WHERE callback_token = $1 AND provider = 'pixelpay'",
        )
        .bind(&token)
        .fetch_optional(&st.store.pool)
        .await?
    } else {
        None
    };
    let Some(order) = order else {
        REJECTIONS.with_label_values(&[PROVIDER, "unknown_url"]).inc();
        tracing::warn!("a PixelPay callback to an unknown URL");
        received
            .record(
                &st.store.pool,
                Verdict::plain("rejected", Some("no order has this callback URL")),
            )
            .await?;
        return Err(ApiError::NotFound("no such callback URL".into()));
    };
    tracing::Span::current().record("order_id", tracing::field::display(order.id));
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            let why = "the body is not a JSON object";
            let reference = order.id.to_string();
            let v = Verdict {
                reference: Some(&reference),
                ..Verdict::plain("unreadable", Some(why))
            };
            received.record(&st.store.pool, v).await?;
            return Err(ApiError::BadRequest(why.into()));
        }
    };
    if parsed.get("success").and_then(Value::as_bool) == Some(false) {
        return provider_error(&st, &received, &order, &parsed).await;
    }
    success(&st, &received, &order, &parsed).await
}

/// A success webhook: confirmed with PixelPay, then reported.
async fn success(st: &AppState, received: &Received<'_>, order: &Order, v: &Value) -> Result<Response, ApiError> {
    let reference = order.id.to_string();
    let verdict = |verdict: &'static str| Verdict {
        event_type: Some(SUCCESS),
        reference: Some(&reference),
        ..Verdict::plain(verdict, None)
    };
    let Some(uuid) = text(v, "uuid", 100) else {
        let why = "the webhook names no payment (uuid)";
        received
            .record(&st.store.pool, verdict("unreadable").with_reason(Some(why)))
            .await?;
        return Err(ApiError::BadRequest(why.into()));
    };
    let collection_ref = text(v, "ref", 100);
    if let Some(status) = text(v, "status", 40)
        && status != "paid"
    {
        let why = format!("status {status:?} needs no action");
        received
            .record(&st.store.pool, verdict("ignored").with_reason(Some(&why)))
            .await?;
        return Ok(reply(StatusCode::OK, json!({"status": "ignored"})));
    }
    let key = format!("paid:{uuid}");
    let seen: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM webhook_events WHERE provider = 'pixelpay' AND dedupe_key = $1 AND verdict = 'accepted'",
    )
    .bind(&key)
    .fetch_optional(&st.store.pool)
    .await?;
    if let Some((first,)) = seen {
        received
            .record(
                &st.store.pool,
                verdict("duplicate").with_reason(Some("the same PixelPay payment was accepted before")),
            )
            .await?;
        tracing::info!(first = %first, payment_uuid = %uuid, "the same PixelPay payment again; nothing changes");
        return Ok(reply(StatusCode::OK, json!({"status": "duplicate", "id": first})));
    }
    let req = ConfirmRequest {
        order_id: order.id,
        claim: ClaimKind::Paid,
        provider_charge_id: Some(uuid.clone()),
        end_to_end_id: None,
        pixelpay: Some(PixelPayClaim {
            payment_uuid: uuid.clone(),
            reference: collection_ref,
        }),
    };
    let answer = match st.confirm.confirm(&req).await {
        Ok(a) => a,
        Err(why) => {
            received
                .record(&st.store.pool, verdict("unconfirmed").with_reason(Some(&why)))
                .await?;
            tracing::warn!(reason = %why, "the PixelPay payment could not be confirmed now; PixelPay will retry");
            return Err(ApiError::Unavailable(
                "the payment could not be confirmed with PixelPay yet; retry later".into(),
            ));
        }
    };
    let (ConfirmVerdict::Confirmed, Some(confirmed), Some(confirmation)) =
        (answer.verdict, answer.report, answer.confirmation)
    else {
        let why = answer
            .reason
            .unwrap_or_else(|| "PixelPay did not confirm the payment".into());
        return reject(st, received, order, &uuid, &why).await;
    };
    let mut env = Envelope::for_order(
        EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Pixelpay,
            webhook_event_id: received.id,
            provider_reference: reference.clone(),
            report: confirmed,
            confirmation: Some(confirmation),
            source: PaymentSource::Webhook,
        }),
        order.id,
        order.shop_id,
        &order.correlation_id,
    );
    env.trace = payhub_telemetry::trace::current_context();
    let fact = (SUCCESS, reference.as_str(), key.as_str());
    if !super::accept_reported(
        st,
        received,
        fact,
        &env,
        "the same PixelPay payment was accepted before",
    )
    .await?
    {
        return Ok(reply(StatusCode::OK, json!({"status": "duplicate"})));
    }
    tracing::info!(payment_uuid = %uuid, "PixelPay payment confirmed and reported");
    Ok(reply(StatusCode::OK, json!({"status": "accepted", "id": received.id})))
}

/// A payment PixelPay does not confirm for this order: stored, the
/// platform's admin alerted, answered 200. Nothing else changes.
async fn reject(
    st: &AppState,
    received: &Received<'_>,
    order: &Order,
    uuid: &str,
    why: &str,
) -> Result<Response, ApiError> {
    REJECTIONS.with_label_values(&[PROVIDER, "not_ours"]).inc();
    tracing::warn!(reason = why, payment_uuid = uuid, "a PixelPay callback was rejected");
    let reference = order.id.to_string();
    let v = Verdict {
        event_type: Some(SUCCESS),
        reference: Some(&reference),
        ..Verdict::plain("rejected", Some(why))
    };
    let alert = Envelope::for_order(
        EventPayload::AlertRaised(AlertRaised {
            audience: AlertAudience::Platform,
            kind: "webhook_rejected".into(),
            subject: "A PixelPay callback was rejected".into(),
            detail: format!(
                "PixelPay callback {} for order {} ({}) names payment {uuid}, which PixelPay's status does not \
                 confirm for this order: {why}. No order changed. Whoever holds the order's callback URL may be \
                 trying to pay it with another payment.",
                received.id, order.correlation_id, order.id
            ),
        }),
        order.id,
        order.shop_id,
        &order.correlation_id,
    );
    let mut tx = st.store.begin().await?;
    received.record(&mut *tx, v).await?;
    outbox::add(&mut tx, &alert).await?;
    tx.commit().await?;
    let _ = st.outbox.publish_now(std::slice::from_ref(&alert)).await;
    Ok(reply(StatusCode::OK, json!({"status": "rejected", "reason": why})))
}

/// An error webhook: stored whole for diagnosis, the shop's admin alerted
/// (once per distinct body), answered 200.
async fn provider_error(
    st: &AppState,
    received: &Received<'_>,
    order: &Order,
    v: &Value,
) -> Result<Response, ApiError> {
    let reference = order.id.to_string();
    let message = text(v, "message", 500).unwrap_or_else(|| "(no message)".into());
    let key = format!("error:{}", hex(&Sha256::digest(received.body)));
    let verdict = |verdict: &'static str, reason: &'static str| Verdict {
        event_type: Some(ERROR),
        reference: Some(&reference),
        ..Verdict::plain(verdict, Some(reason))
    };
    let seen: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM webhook_events
         WHERE provider = 'pixelpay' AND dedupe_key = $1 AND provider_reference = $2 AND verdict = 'provider_error'",
    )
    .bind(&key)
    .bind(&reference)
    .fetch_optional(&st.store.pool)
    .await?;
    if let Some((first,)) = seen {
        received
            .record(
                &st.store.pool,
                verdict("duplicate", "the same PixelPay error was stored before"),
            )
            .await?;
        return Ok(reply(StatusCode::OK, json!({"status": "duplicate", "id": first})));
    }
    let mut alert = Envelope::for_order(
        EventPayload::AlertRaised(AlertRaised {
            audience: AlertAudience::Shop,
            kind: "pixelpay_error".into(),
            subject: format!("Erro na cobrança PixelPay: pedido {}", order.correlation_id),
            detail: format!(
                "PixelPay reported an error for order {} ({}): {message}. The webhook is kept as {} for \
                 PixelPay's support; the order did not change.",
                order.correlation_id, order.id, received.id
            ),
        }),
        order.id,
        order.shop_id,
        &order.correlation_id,
    );
    // One alert per distinct error of the order, however often it arrives.
    alert.id = Uuid::new_v5(&order.id, key.as_bytes());
    alert.trace = payhub_telemetry::trace::current_context();
    let stored = Verdict {
        event_type: Some(ERROR),
        reference: Some(&reference),
        dedupe_key: Some(&key),
        ..Verdict::plain("provider_error", Some(&message))
    };
    let mut tx = st.store.begin().await?;
    received.record(&mut *tx, stored).await?;
    outbox::add(&mut tx, &alert).await?;
    tx.commit().await?;
    let _ = st.outbox.publish_now(std::slice::from_ref(&alert)).await;
    tracing::warn!(message = %message, "PixelPay reported an error; stored and the shop's admin alerted");
    Ok(reply(StatusCode::OK, json!({"status": "stored", "id": received.id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_trimmed_bounded_and_without_control_characters() {
        let v = json!({"uuid": " 1dab5ed0 ", "message": "a\nb\u{0}c", "ref": "", "n": 1});
        assert_eq!(text(&v, "uuid", 100).as_deref(), Some("1dab5ed0"));
        assert_eq!(text(&v, "message", 100).as_deref(), Some("abc"));
        assert_eq!(text(&v, "uuid", 3).as_deref(), Some("1da"));
        assert_eq!(text(&v, "ref", 100), None);
        assert_eq!(text(&v, "n", 100), None);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
