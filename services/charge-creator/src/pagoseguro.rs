//! Pago Seguro's web checkout (issue 11 §2), the two internal calls that
//! need the shop's API key, which never leaves charge-creator:
//!
//! - `POST /internal/v1/pagoseguro/form`: the signed form of providers.md
//!   §3.2 for one order, under the shop's own Account ID, for ingress's
//!   checkout page to post from the buyer's browser;
//! - `POST /internal/v1/pagoseguro/return`: a return webhook-verifier's door
//!   received; the `sign` is recomputed in constant time, the reference and
//!   the amount checked against the order, the status mapped (22, 17,
//!   other), and every return stored with its verdict. A verified return
//!   also adds `pagoseguro.returned` to the outbox in the same transaction
//!   (once per distinct return: the buyer reloading the page repeats one),
//!   for notifier's confirmation e-mail to the buyer and the shop's admin,
//!   which says what the return claims, not that the order is paid.
//!
//! A return never pays an order. Its `sign` covers the reference, amount,
//! product and buyer but not `status` (§3.3), so a buyer holding a signed 17
//! can turn it into a 22; and Pago Seguro documents no transaction-status
//! query (§3.4) that payhub could confirm a 22 with under its own
//! credentials. The order stays awaiting payment; the buyer is told the
//! payment is being confirmed.

use crate::accounts::Providers;
use crate::card::refused;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use payhub_connectors::internal::{RedirectForm, RedirectFormRequest, ReturnAnswer, ReturnRequest};
use payhub_connectors::pagoseguro::transformers::{ReturnCheck, ReturnVerdict, checkout_form, verify_return};
use payhub_store::Store;
use prometheus::{IntCounterVec, register_int_counter_vec};
use secrecy::ExposeSecret;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

static RETURNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_pagoseguro_returns_total",
        "Pago Seguro returns by verdict (verified, rejected) and status (authorised, rejected, pending, none).",
        &["verdict", "status"]
    )
    .expect("metric registers once")
});

pub struct RedirectState {
    pub store: Store,
    pub outbox: payhub_store::outbox::Outbox,
    pub providers: Arc<Providers>,
    pub token: secrecy::SecretString,
}

pub fn router(state: Arc<RedirectState>) -> Router {
    Router::new()
        .route(
            payhub_connectors::internal::PAGOSEGURO_FORM_PATH,
            axum::routing::post(form_route),
        )
        .route(
            payhub_connectors::internal::PAGOSEGURO_RETURN_PATH,
            axum::routing::post(return_route),
        )
        .with_state(state)
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    shop_id: Uuid,
    correlation_id: String,
    provider: String,
    status: String,
    currency: String,
    total_minor: i64,
    customer_name: String,
    customer_email: String,
    summary: String,
    reference: String,
    provider_account: String,
}

const BY_ID: &str = "SELECT o.id, o.shop_id, o.correlation_id, o.provider, o.status, o.currency::text AS currency, o.total_minor, o.customer_name,
        o.customer_email, o.summary, c.provider_charge_id AS reference, c.provider_account
     FROM orders o JOIN charges c ON c.order_id = o.id WHERE o.id = ($1::text)::uuid";
const BY_TOKEN: &str =
    "SELECT o.id, o.shop_id, o.correlation_id, o.provider, o.status, o.currency::text AS currency, o.total_minor, o.customer_name,
        o.customer_email, o.summary, c.provider_charge_id AS reference, c.provider_account
     FROM orders o JOIN charges c ON c.order_id = o.id JOIN checkout_sessions s ON s.order_id = o.id
     WHERE s.token = $1";

/// The order `query` finds with `key`; `Err` is the answer to give.
async fn order_by(st: &RedirectState, query: &'static str, key: impl ToString) -> Result<Option<OrderRow>, Response> {
    sqlx::query_as(query)
        .bind(key.to_string())
        .fetch_optional(&st.store.pool)
        .await
        .map_err(|e| {
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the order could not be read: {e}"),
            )
        })
}

fn authorised(st: &RedirectState, headers: &HeaderMap) -> bool {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    payhub_service::internal::bearer_matches(auth, st.token.expose_secret())
}

/// The shop's Account ID and API key for the order's charge.
async fn credentials(st: &RedirectState, o: &OrderRow) -> Result<(String, secrecy::SecretString), Response> {
    let using = st
        .providers
        .named(&o.provider_account)
        .await
        .map_err(|e| refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    st.providers
        .pagoseguro(&using)
        .map_err(|e| refused(StatusCode::CONFLICT, e.to_string()))
}

async fn form_route(
    State(st): State<Arc<RedirectState>>,
    headers: HeaderMap,
    Json(req): Json<RedirectFormRequest>,
) -> Response {
    if !authorised(&st, &headers) {
        return refused(StatusCode::UNAUTHORIZED, "internal token required");
    }
    let order = match order_by(&st, BY_ID, req.order_id).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(o) = order else {
        return refused(StatusCode::NOT_FOUND, "no Pago Seguro charge for this order yet");
    };
    if o.provider != payhub_core::Provider::Pagoseguro.as_str() || o.currency.trim() != "COP" {
        return refused(StatusCode::CONFLICT, "the order is not a Pago Seguro order in COP");
    }
    if !matches!(o.status.as_str(), "accepted" | "awaiting_payment") {
        return refused(
            StatusCode::CONFLICT,
            format!("the order is {}, not waiting for payment", o.status),
        );
    }
    let (account_id, api_key) = match credentials(&st, &o).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let input = payhub_connectors::pagoseguro::FormInput {
        account_id: &account_id,
        reference: &o.reference,
        amount_minor: o.total_minor,
        description: &o.summary,
        buyer_name: &o.customer_name,
        buyer_email: &o.customer_email,
        url_response: &req.url_response,
    };
    match checkout_form(&input, api_key.expose_secret()) {
        Ok(form) => Json(RedirectForm {
            fields: form.fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
        .into_response(),
        Err(e) => refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// A token is 64 lowercase hex characters; anything else names no order.
fn plausible(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn return_route(
    State(st): State<Arc<RedirectState>>,
    headers: HeaderMap,
    Json(req): Json<ReturnRequest>,
) -> Response {
    if !authorised(&st, &headers) {
        return refused(StatusCode::UNAUTHORIZED, "internal token required");
    }
    let order = if plausible(&req.token) {
        match order_by(&st, BY_TOKEN, &req.token).await {
            Ok(o) => o,
            Err(r) => return r,
        }
    } else {
        None
    };
    let verdict = match &order {
        None => ReturnVerdict::Rejected("unknown_order"),
        Some(o) if o.provider != payhub_core::Provider::Pagoseguro.as_str() => ReturnVerdict::Rejected("unknown_order"),
        Some(o) => {
            let (account_id, api_key) = match credentials(&st, o).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let check = ReturnCheck {
                account_id: &account_id,
                reference: &o.reference,
                amount_minor: o.total_minor,
            };
            verify_return(&req.params, &check, api_key.expose_secret())
        }
    };
    let (verdict_s, status, reason) = match verdict {
        ReturnVerdict::Verified(s) => ("verified", Some(s.as_str()), None),
        ReturnVerdict::Rejected(why) => ("rejected", None, Some(why)),
    };
    let return_id = Uuid::now_v7();
    let stored = store_return(&st, &req, order.as_ref(), return_id, verdict_s, status, reason).await;
    let event = match stored {
        Ok(e) => e,
        Err(e) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the return could not be stored: {e}"),
            );
        }
    };
    if let Some(event) = event {
        // Left to the relay if the broker is away.
        let _ = st.outbox.publish_now(std::slice::from_ref(&event)).await;
    }
    RETURNS.with_label_values(&[verdict_s, status.unwrap_or("none")]).inc();
    tracing::info!(
        order_id = ?order.as_ref().map(|o| o.id),
        verdict = verdict_s,
        status = status.unwrap_or("none"),
        reason = reason.unwrap_or(""),
        "Pago Seguro return stored; a return never pays an order"
    );
    Json(ReturnAnswer {
        verdict: verdict_s.to_string(),
        status: status.map(str::to_string),
        reason: reason.map(str::to_string),
        token: order.map(|_| req.token.clone()),
    })
    .into_response()
}

/// Stores the return and, for a verified one about a known order that no
/// earlier return said the same of (same status code and approval number),
/// its `pagoseguro.returned` event, in one transaction. The event, if any,
/// is returned for publishing after the commit.
async fn store_return(
    st: &RedirectState,
    req: &ReturnRequest,
    order: Option<&OrderRow>,
    return_id: Uuid,
    verdict: &str,
    status: Option<&str>,
    reason: Option<&str>,
) -> Result<Option<payhub_core::Envelope>, String> {
    let db = |e: sqlx::Error| e.to_string();
    let get = |k: &str| req.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let params: serde_json::Value = req
        .params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let (status_code, approval) = (get("status"), get("approvalNumber"));
    let mut tx = st.store.pool.begin().await.map_err(db)?;
    // A reload of the return page brings the same return again: told once.
    let repeated = match (order, status) {
        (Some(o), Some(_)) => sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pagoseguro_returns WHERE order_id = $1 AND verdict = 'verified'
                 AND status_code IS NOT DISTINCT FROM $2 AND approval IS NOT DISTINCT FROM $3)",
        )
        .bind(o.id)
        .bind(&status_code)
        .bind(&approval)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?,
        _ => true,
    };
    sqlx::query(
        "INSERT INTO pagoseguro_returns (id, order_id, verdict, reason, status, status_code, reference, value, approval, params)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(return_id)
    .bind(order.map(|o| o.id))
    .bind(verdict)
    .bind(reason)
    .bind(status)
    .bind(&status_code)
    .bind(get("orderReference"))
    .bind(get("value"))
    .bind(&approval)
    .bind(&params)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let event = match (order, status) {
        (Some(o), Some(status)) if !repeated => {
            let currency = payhub_core::Currency::parse(o.currency.trim())
                .ok_or_else(|| format!("the order's currency {} is unknown", o.currency))?;
            let mut env = payhub_core::Envelope::for_order(
                payhub_core::events::EventPayload::PagoseguroReturned(payhub_core::events::PagoseguroReturned {
                    return_id,
                    status: status.to_string(),
                    status_code,
                    reference: o.reference.clone(),
                    approval,
                    amount: payhub_core::Money::from_minor(o.total_minor, currency),
                    customer_name: o.customer_name.clone(),
                    customer_email: o.customer_email.clone(),
                    summary: o.summary.clone(),
                }),
                o.id,
                o.shop_id,
                &o.correlation_id,
            );
            env.trace = payhub_telemetry::trace::current_context();
            payhub_store::outbox::add(&mut tx, &env)
                .await
                .map_err(|e| e.to_string())?;
            Some(env)
        }
        _ => None,
    };
    tx.commit().await.map_err(db)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_checkout_tokens_are_looked_up() {
        assert!(super::plausible(&"ab12".repeat(16)));
        assert!(!super::plausible(&"AB12".repeat(16)));
        assert!(!super::plausible("' OR 1=1 --"));
    }
}
