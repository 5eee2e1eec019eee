//! `POST /internal/v1/pixelpay/status` (issue 13 §1): PixelPay's own record
//! of one of payhub's PixelPay payments, for reporter's reconciliation.
//!
//! PixelPay has no listing and no lookup by order id (providers-2.md §2.3):
//! payhub's own orders are the list, and each payment is re-queried with
//! `status` by the `payment_uuid` payhub recorded (with the order's charge,
//! or with its card attempt when the sale's answer was not settled). The
//! call goes out under the account recorded with that charge or attempt,
//! the shop's PixelPay account otherwise (the platform's when it has none).
//! It only reads: a payment payhub missed is settled through the
//! confirmation call, which applies every proof a callback needs.

use crate::accounts::AccountError;
use crate::confirm::{ConfirmState, unavailable};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{PixelPayStatusAnswer, PixelPayStatusRequest};
use serde_json::json;
use std::sync::Arc;

#[derive(sqlx::FromRow)]
struct Recorded {
    shop_id: uuid::Uuid,
    provider: String,
    charge_uuid: Option<String>,
    charge_account: Option<String>,
    attempt_uuid: Option<String>,
    attempt_account: Option<String>,
}

fn refused(why: impl Into<String>) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": why.into()}))).into_response()
}

pub async fn status_route(
    State(st): State<Arc<ConfirmState>>,
    headers: HeaderMap,
    Json(req): Json<PixelPayStatusRequest>,
) -> Response {
    if let Some(refused) = st.refuse_without_token(&headers) {
        return refused;
    }
    let row: Option<Recorded> = match sqlx::query_as(
        "SELECT o.shop_id, o.provider, c.provider_charge_id AS charge_uuid, c.provider_account AS charge_account,
                a.payment_uuid AS attempt_uuid, a.provider_account AS attempt_account
         FROM orders o LEFT JOIN charges c ON c.order_id = o.id LEFT JOIN card_attempts a ON a.order_id = o.id
         WHERE o.id = $1",
    )
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the order failed");
            return unavailable("the database is unavailable");
        }
    };
    let Some(row) = row else {
        return refused("no such order");
    };
    if row.provider != "pixelpay" {
        return refused(format!("the order is paid through {}, not PixelPay", row.provider));
    }
    // Only the payment payhub recorded for this order is asked about.
    let account_name = if row.charge_uuid.as_deref() == Some(req.payment_uuid.as_str()) {
        row.charge_account
    } else if row.attempt_uuid.as_deref() == Some(req.payment_uuid.as_str()) {
        row.attempt_account
    } else {
        return refused("payhub recorded no such PixelPay payment for this order");
    };
    let using = match account_name {
        Some(name) => st.providers.named(&name).await,
        None => st.providers.for_shop(row.shop_id, "pixelpay").await,
    };
    let (account, name) =
        match using.and_then(|u| Ok((st.providers.pixelpay(&u, st.platform_pixelpay.as_ref())?, u.name()))) {
            Ok(a) => a,
            Err(AccountError::Unavailable(e)) => return unavailable(e),
            Err(AccountError::Unusable(e)) => return refused(e),
        };
    match st.pixelpay.status(&account, &req.payment_uuid).await {
        Ok(None) => Json(PixelPayStatusAnswer {
            known: false,
            paid: false,
            approved: false,
            voided: false,
            authorised_only: false,
            transaction_type: None,
            amount_minor: None,
            currency: None,
            pixelpay_order_id: None,
            account: name,
        })
        .into_response(),
        Ok(Some(s)) => {
            let voided = s.is_voided();
            let authorised_only = s.approved && s.is_authorisation_only();
            Json(PixelPayStatusAnswer {
                known: true,
                paid: s.approved && !voided && !s.is_authorisation_only(),
                approved: s.approved,
                voided,
                authorised_only,
                transaction_type: s.transaction_type.clone(),
                amount_minor: if s.approved {
                    s.approved_amount_minor.or(s.amount_minor)
                } else {
                    s.amount_minor
                },
                currency: s.currency.map(|c| c.code().to_string()),
                pixelpay_order_id: s.order_id.clone(),
                account: name,
            })
            .into_response()
        }
        Err(ConnectorError::Transient(e)) => unavailable(format!("PixelPay could not be asked: {e}")),
        Err(ConnectorError::Permanent(e)) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))).into_response(),
    }
}
