//! `POST /internal/v1/capture`: takes the money of an order's card
//! authorisation (Wake's `/capture` after `/authorize`), under the account
//! that authorised it.
//!
//! PixelPay's own record is asked first (`status`), so a capture that
//! already happened (an earlier call whose answer was lost, or another
//! replica's at the same moment) is recorded, never sent twice; a capture
//! is sent only while PixelPay shows the authorisation still open. Then:
//! - approved: `charges.captured_at` and `payment.reported` (source
//!   `card_capture`, confirmed by the provider's answer) commit together,
//!   and order-updater pays the order;
//! - declined: `charge.failed`, the order fails with PixelPay's reason;
//! - refused or unanswered: nothing changes (the authorisation stays), and
//!   the caller may ask again.

use crate::card::{CardState, Ctx, answer, paid_event, refused};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{CaptureRequest, CardAnswer, CardOperation, CardVerdict};
use payhub_connectors::pixelpay::{CardApproval, CardOutcome, PixelPayAccount};
use payhub_core::events::{CARD_DECLINED, ChargeFailed, EventPayload, PaymentSource};
use payhub_core::{Currency, Money, Provider};
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct Authorisation {
    shop_id: Uuid,
    correlation_id: String,
    currency: String,
    total_minor: i64,
    payment_uuid: Option<String>,
    provider_account: Option<String>,
    authorized_at: Option<OffsetDateTime>,
    captured_at: Option<OffsetDateTime>,
    card_masked: Option<String>,
    card_brand: Option<String>,
    auth_code: Option<String>,
    transaction_id: Option<String>,
}

/// What became of the capture.
enum Captured {
    Approved(Box<CardApproval>),
    Declined(String),
    /// Nothing was taken and nothing changes: (HTTP status, why).
    NotDone(StatusCode, String),
    /// PixelPay's answer was lost and its record does not show the capture.
    Unknown(String),
}

pub async fn capture_route(
    State(st): State<Arc<CardState>>,
    headers: HeaderMap,
    Json(req): Json<CaptureRequest>,
) -> Response {
    // Runs to its end even when the caller goes away: a capture sent must
    // be stored.
    tokio::spawn(capture_call(st, headers, req))
        .await
        .unwrap_or_else(|_| refused(StatusCode::INTERNAL_SERVER_ERROR, "the capture failed"))
}

async fn capture_call(st: Arc<CardState>, headers: HeaderMap, req: CaptureRequest) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&st.token)) {
        return refused(StatusCode::UNAUTHORIZED, "internal token required");
    }
    let row: Option<Authorisation> = match sqlx::query_as(
        "SELECT o.shop_id, o.correlation_id, o.currency::text AS currency, o.total_minor,
                c.provider_charge_id AS payment_uuid, c.provider_account, c.authorized_at, c.captured_at,
                c.card_masked, c.card_brand, c.auth_code, c.transaction_id
         FROM orders o LEFT JOIN charges c ON c.order_id = o.id
         WHERE o.id = $1",
    )
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the authorisation failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable");
        }
    };
    let Some(row) = row else {
        return refused(StatusCode::NOT_FOUND, "no such order");
    };
    let (Some(payment_uuid), Some(account_name), Some(_)) = (
        row.payment_uuid.clone(),
        row.provider_account.clone(),
        row.authorized_at,
    ) else {
        return refused(StatusCode::CONFLICT, "the order has no card authorisation to capture");
    };
    let reply = |verdict, reason: Option<String>, replayed| CardAnswer {
        verdict,
        reason,
        card_masked: row.card_masked.clone(),
        card_brand: row.card_brand.clone(),
        payment_uuid: Some(payment_uuid.clone()),
        transaction_id: row.transaction_id.clone(),
        auth_code: row.auth_code.clone(),
        replayed,
    };
    if row.captured_at.is_some() {
        return answer(reply(CardVerdict::Approved, None, true));
    }
    let Some(currency) = Currency::parse(row.currency.trim()) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "the order's currency is unknown");
    };
    let amount = Money::from_minor(row.total_minor, currency);
    let account = match st.providers.named(&account_name).await {
        Ok(using) => match st.providers.pixelpay(&using, st.platform_pixelpay.as_ref()) {
            Ok(a) => a,
            Err(e) => return refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        },
        Err(crate::accounts::AccountError::Unavailable(e)) => return refused(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(crate::accounts::AccountError::Unusable(e)) => return refused(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let order_ref = req.order_id.to_string();
    let captured = capture(&st, &account, &order_ref, &payment_uuid, amount).await;
    let ctx = Ctx {
        order_id: req.order_id,
        shop_id: row.shop_id,
        correlation_id: &row.correlation_id,
        account: &account_name,
        amount,
        operation: CardOperation::Authorize,
    };
    let (events, verdict, reason) = match &captured {
        Captured::Approved(a) => (
            vec![paid_event(
                &ctx,
                a,
                PaymentSource::CardCapture,
                OffsetDateTime::now_utc(),
            )],
            CardVerdict::Approved,
            None,
        ),
        Captured::Declined(why) => (
            vec![ctx.envelope(
                EventPayload::ChargeFailed(ChargeFailed {
                    provider: Provider::Pixelpay,
                    reason: why.clone(),
                    permanent: true,
                }),
                "card.capture_failed",
            )],
            CardVerdict::Declined,
            Some(why.clone()),
        ),
        Captured::NotDone(status, why) => return refused(*status, why.clone()),
        Captured::Unknown(why) => {
            tracing::warn!(order_id = %req.order_id, reason = %why, "capture not confirmed");
            return answer(reply(CardVerdict::Indeterminate, Some(why.clone()), false));
        }
    };
    if let Err(e) = record(&st, req.order_id, matches!(captured, Captured::Approved(_)), &events).await {
        tracing::error!(order_id = %req.order_id, error = %e, "the capture could not be stored");
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the capture could not be stored; ask again (PixelPay's record decides)",
        );
    }
    tracing::info!(order_id = %req.order_id, verdict = ?verdict, account = %account_name, "card capture");
    answer(reply(verdict, reason, false))
}

/// PixelPay's record first, then the capture only while the authorisation
/// is open, and the record again when the capture's answer is not clear.
async fn capture(
    st: &CardState,
    account: &PixelPayAccount,
    order_ref: &str,
    payment_uuid: &str,
    amount: Money,
) -> Captured {
    match recorded(st, account, order_ref, payment_uuid, amount).await {
        Recorded::Captured(a) => return Captured::Approved(a),
        Recorded::Open => {}
        Recorded::Not(status, why) => return Captured::NotDone(status, why),
    }
    let after = match st.pixelpay.capture(account, payment_uuid, amount).await {
        Ok(CardOutcome::Approved(a)) => return Captured::Approved(Box::new(a)),
        Ok(CardOutcome::Declined { reason, .. }) => return Captured::Declined(format!("{CARD_DECLINED}{reason}")),
        Ok(CardOutcome::ThreeDSecureRequired { .. }) => "PixelPay asked for 3-D Secure on a capture".to_string(),
        Ok(CardOutcome::Indeterminate { detail, .. }) => detail,
        Err(ConnectorError::Transient(e)) => return Captured::NotDone(StatusCode::SERVICE_UNAVAILABLE, e),
        // Refused: perhaps because another call captured it a moment ago.
        Err(ConnectorError::Permanent(e)) => e,
    };
    match recorded(st, account, order_ref, payment_uuid, amount).await {
        Recorded::Captured(a) => Captured::Approved(a),
        Recorded::Open => Captured::Unknown(format!("the capture is not confirmed: {after}")),
        Recorded::Not(_, why) => Captured::Unknown(format!("the capture is not confirmed: {after}; {why}")),
    }
}

enum Recorded {
    Captured(Box<CardApproval>),
    Open,
    Not(StatusCode, String),
}

/// The authorisation as PixelPay has it now.
async fn recorded(
    st: &CardState,
    account: &PixelPayAccount,
    order_ref: &str,
    payment_uuid: &str,
    amount: Money,
) -> Recorded {
    let status = match st.pixelpay.status(account, payment_uuid).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Recorded::Not(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("PixelPay has no payment {payment_uuid} under this account"),
            );
        }
        Err(e) => return Recorded::Not(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if status.is_authorisation_only() {
        return match status.authorises(account, order_ref, amount) {
            Ok(true) => Recorded::Open,
            Ok(false) => Recorded::Not(StatusCode::CONFLICT, "the authorisation is not approved".into()),
            Err(e) => Recorded::Not(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        };
    }
    // A capture's status names the order and carries its hash like the auth.
    match status.settles(account, order_ref, amount) {
        Ok(true) => Recorded::Captured(Box::new(status.into_approval(amount))),
        Ok(false) if status.is_voided() => Recorded::Not(StatusCode::CONFLICT, "the authorisation was voided".into()),
        Ok(false) => Recorded::Not(StatusCode::CONFLICT, "the authorisation is not approved".into()),
        Err(e) => Recorded::Not(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// The capture and its event, in one transaction; a capture recorded
/// already (another replica) adds nothing.
async fn record(
    st: &CardState,
    order_id: Uuid,
    approved: bool,
    events: &[payhub_core::Envelope],
) -> Result<(), sqlx::Error> {
    let mut tx = st.store.pool.begin().await?;
    if approved {
        let r = sqlx::query("UPDATE charges SET captured_at = now() WHERE order_id = $1 AND captured_at IS NULL")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return tx.rollback().await;
        }
    }
    for e in events {
        payhub_store::outbox::add(&mut tx, e)
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    }
    tx.commit().await?;
    let _ = st.outbox.publish_now(events).await;
    Ok(())
}
