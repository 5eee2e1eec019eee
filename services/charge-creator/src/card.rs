//! `POST /internal/v1/card`: charges a card for a stored order, under the
//! shop's PixelPay account, while the door that received the card waits.
//!
//! The card lives in this request's memory only. What is stored is what a
//! merchant may see (masked number, brand) and the provider's answer: an
//! attempt row is committed before the provider is called, so that a crash
//! between the provider's answer and payhub's commit leaves a record a
//! person can settle, and so that no second call ever charges the card again
//! (PixelPay has no idempotency key and no lookup by order id).
//!
//! - approved (hash and amount verified by the connector): the charge is
//!   stored with `payment.reported`, confirmed by the provider's own answer
//!   under payhub's credentials, so order-updater moves the order to paid;
//! - declined (402): `charge.failed` with the provider's reason, never retried;
//! - 3-D Secure asked, or the provider refused the request: `charge.failed`;
//! - indeterminate (timeout, 5xx): `status` decides when the answer carried
//!   a `payment_uuid`; otherwise the order is failed as "not confirmed", the
//!   shop's admin is alerted, and the card is never sent again.

use crate::accounts::{AccountError, Providers};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{CardAnswer, CardInput, CardOperation, CardRequest, CardVerdict};
use payhub_connectors::pixelpay::{Billing, CardApproval, CardOutcome, PixelPayAccount, PixelPayClient, SaleRequest};
use payhub_core::card::{Card, CardSource, CardToken};
use payhub_core::events::{
    AlertAudience, AlertRaised, CARD_DECLINED, CARD_UNCONFIRMED, ChargeFailed, EventPayload, PaymentAuthorized,
    PaymentConfirmation, PaymentReport, PaymentReported, PaymentSource,
};
use payhub_core::{Currency, Envelope, Money, Provider};
use payhub_store::{Store, outbox};
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde_json::json;
use std::sync::{Arc, LazyLock};
use time::OffsetDateTime;
use uuid::Uuid;

static CARD_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_card_payments_total",
        "Card payments by provider, operation and outcome (approved, declined, refused, indeterminate, replayed).",
        &["provider", "operation", "outcome"]
    )
    .expect("metric registers once")
});

pub struct CardState {
    pub store: Store,
    pub outbox: outbox::Outbox,
    pub providers: Arc<Providers>,
    pub pixelpay: PixelPayClient,
    /// The platform's PixelPay account, for shops without their own.
    pub platform_pixelpay: Option<PixelPayAccount>,
    pub token: secrecy::SecretString,
    /// `PAYHUB_PUBLIC_WEBHOOK_BASE_URL`: the sale tells PixelPay the order's
    /// callback URL under it (`order_callback`).
    pub public_webhook_base_url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    shop_id: Uuid,
    correlation_id: String,
    provider: String,
    status: String,
    currency: String,
    total_minor: i64,
    tax_minor: i64,
    freight_minor: i64,
    customer_name: String,
    customer_email: String,
    summary: String,
    callback_token: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    outcome: Option<String>,
    detail: Option<String>,
    card_masked: String,
    card_brand: String,
    payment_uuid: Option<String>,
}

pub(crate) fn refused(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(json!({"error": why.into()}))).into_response()
}

pub(crate) fn answer(a: CardAnswer) -> Response {
    Json(a).into_response()
}

fn verdict_of(outcome: &str) -> CardVerdict {
    match outcome {
        "approved" => CardVerdict::Approved,
        "declined" => CardVerdict::Declined,
        "indeterminate" => CardVerdict::Indeterminate,
        _ => CardVerdict::Refused,
    }
}

/// The card as the connector takes it, checked like at the door (the door
/// checked already; this is the trust boundary of the provider call).
fn card_source(input: &CardInput) -> Result<CardSource, String> {
    match input {
        CardInput::Card {
            number,
            cvv,
            expire,
            holder,
        } => Card::parse(number, cvv, expire, holder, OffsetDateTime::now_utc().date())
            .map(CardSource::Card)
            .map_err(|e| format!("the card is not valid: {e}")),
        CardInput::Token { token } => CardToken::parse(token)
            .map(CardSource::Token)
            .map_err(|e| format!("the card token is not valid: {e}")),
    }
}

fn display_of(source: &CardSource) -> (String, String) {
    match source {
        CardSource::Card(c) => (c.number.masked().to_string(), c.number.brand().as_str().to_string()),
        CardSource::Token(_) => ("saved card".to_string(), "token".to_string()),
    }
}

pub async fn card_route(
    State(st): State<Arc<CardState>>,
    headers: HeaderMap,
    Json(req): Json<CardRequest>,
) -> Response {
    // The call runs to its end even when the caller goes away (a timeout,
    // Wake's 3 seconds): once the card is sent, its outcome must be stored.
    tokio::spawn(card_call(st, headers, req))
        .await
        .unwrap_or_else(|_| refused(StatusCode::INTERNAL_SERVER_ERROR, "the card call failed"))
}

async fn card_call(st: Arc<CardState>, headers: HeaderMap, req: CardRequest) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&st.token)) {
        return refused(StatusCode::UNAUTHORIZED, "internal token required");
    }
    let operation = match req.operation {
        CardOperation::Sale => "sale",
        CardOperation::Authorize => "auth",
    };
    let order: Option<OrderRow> = match sqlx::query_as(
        "SELECT shop_id, correlation_id, provider, status, currency::text AS currency, total_minor, tax_minor,
                freight_minor, customer_name, customer_email, summary, callback_token
         FROM orders WHERE id = $1",
    )
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "reading the order failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable");
        }
    };
    let Some(order) = order else {
        return refused(StatusCode::NOT_FOUND, "no such order");
    };
    if Provider::parse(&order.provider) != Ok(Provider::Pixelpay) {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the order is paid through {}, which takes no card", order.provider),
        );
    }
    // One call per order, ever: a second request repeats the first's outcome.
    match previous_attempt(&st.store, req.order_id).await {
        Err(e) => {
            tracing::warn!(error = %e, "reading the card attempt failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable");
        }
        Ok(Some(a)) => {
            CARD_CALLS.with_label_values(&["pixelpay", operation, "replayed"]).inc();
            return answer(CardAnswer {
                verdict: a.outcome.as_deref().map_or(CardVerdict::Indeterminate, verdict_of),
                reason: a.detail.or_else(|| {
                    a.outcome
                        .is_none()
                        .then(|| "the card payment is still in progress".into())
                }),
                card_masked: Some(a.card_masked),
                card_brand: Some(a.card_brand),
                payment_uuid: a.payment_uuid,
                transaction_id: None,
                auth_code: None,
                replayed: true,
            });
        }
        Ok(None) => {}
    }
    if order.status != "accepted" {
        return refused(
            StatusCode::CONFLICT,
            format!("the order is {}, not waiting for its card", order.status),
        );
    }
    let Some(currency) = Currency::parse(order.currency.trim()) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "the order's currency is unknown");
    };
    let source = match card_source(&req.card) {
        Ok(s) => s,
        Err(e) => return refused(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let (masked, brand) = display_of(&source);
    let using = match st.providers.for_shop(order.shop_id, "pixelpay").await {
        Ok(u) => u,
        Err(AccountError::Unavailable(e)) => return refused(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(AccountError::Unusable(e)) => return refused(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let account = match st.providers.pixelpay(&using, st.platform_pixelpay.as_ref()) {
        Ok(a) => a,
        Err(e) => return refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let account_name = using.name();
    // The attempt is on record before the card reaches the provider.
    let claimed = sqlx::query(
        "INSERT INTO card_attempts (order_id, provider, provider_account, card_masked, card_brand)
         VALUES ($1, 'pixelpay', $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(req.order_id)
    .bind(&account_name)
    .bind(&masked)
    .bind(&brand)
    .execute(&st.store.pool)
    .await;
    match claimed {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => return refused(StatusCode::CONFLICT, "a card payment for this order is in progress"),
        Err(e) => {
            tracing::warn!(error = %e, "recording the card attempt failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable");
        }
    }
    let amount = Money::from_minor(order.total_minor, currency);
    let sale = SaleRequest {
        order_id: req.order_id.to_string(),
        amount,
        tax_amount: (order.tax_minor > 0).then(|| Money::from_minor(order.tax_minor, currency)),
        shipping_amount: (order.freight_minor > 0).then(|| Money::from_minor(order.freight_minor, currency)),
        items: Vec::new(),
        order_extras: [("correlation_id".to_string(), order.correlation_id.clone())].into(),
        note: Some(order.summary.chars().take(200).collect()),
        customer_name: order.customer_name.clone(),
        customer_email: order.customer_email.clone(),
        billing: Billing {
            address: req.billing.address.clone(),
            country: req.billing.country.clone(),
            state: req.billing.state.clone(),
            city: req.billing.city.clone(),
            zip: req.billing.zip.clone(),
            phone: req.billing.phone.clone(),
        },
        // Where PixelPay may tell about this sale: the order's unguessable
        // callback URL, confirmed with `status` like a collection webhook.
        order_callback: st
            .public_webhook_base_url
            .as_deref()
            .zip(order.callback_token.as_deref())
            .map(|(base, token)| payhub_service::callbacks::pixelpay_callback_url(base, token)),
        card: source,
    };
    let called = match req.operation {
        CardOperation::Sale => st.pixelpay.sale(&account, &sale).await,
        CardOperation::Authorize => st.pixelpay.auth(&account, &sale).await,
    };
    drop(sale); // the card leaves memory here
    let settled = settle(&st, &account, req.order_id, amount, req.operation, called).await;
    CARD_CALLS
        .with_label_values(&["pixelpay", operation, settled.outcome])
        .inc();
    let ctx = Ctx {
        order_id: req.order_id,
        shop_id: order.shop_id,
        correlation_id: &order.correlation_id,
        account: &account_name,
        amount,
        operation: req.operation,
    };
    if let Err(e) = record(&st, &ctx, &settled).await {
        // The provider answered but payhub could not store it: the attempt
        // row stays open for the sweeper and a person; never charge again.
        tracing::error!(order_id = %req.order_id, outcome = settled.outcome, error = %e, "the card outcome could not be stored");
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the card outcome could not be stored; payhub will not charge the card again",
        );
    }
    tracing::info!(order_id = %req.order_id, outcome = settled.outcome, card = %masked, account = %account_name, "card payment");
    answer(CardAnswer {
        verdict: verdict_of(settled.outcome),
        reason: settled.reason.clone(),
        card_masked: Some(masked),
        card_brand: Some(brand),
        payment_uuid: settled.payment_uuid.clone(),
        transaction_id: settled.approval.as_ref().and_then(|a| a.transaction_id.clone()),
        auth_code: settled.approval.as_ref().and_then(|a| a.auth_code.clone()),
        replayed: false,
    })
}

async fn previous_attempt(store: &Store, order_id: Uuid) -> Result<Option<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outcome, detail, card_masked, card_brand, payment_uuid FROM card_attempts WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&store.pool)
    .await
}

/// The provider's answer, settled: `status` decides an indeterminate one.
struct Settled {
    /// approved, declined, three_d_secure, refused, indeterminate.
    outcome: &'static str,
    reason: Option<String>,
    payment_uuid: Option<String>,
    response_code: Option<String>,
    approval: Option<CardApproval>,
}

async fn settle(
    st: &CardState,
    account: &PixelPayAccount,
    order_id: Uuid,
    amount: Money,
    operation: CardOperation,
    called: Result<CardOutcome, ConnectorError>,
) -> Settled {
    let plain = |outcome, reason: String, payment_uuid| Settled {
        outcome,
        reason: Some(reason),
        payment_uuid,
        response_code: None,
        approval: None,
    };
    match called {
        Ok(CardOutcome::Approved(a)) => Settled {
            outcome: "approved",
            reason: None,
            payment_uuid: Some(a.payment_uuid.clone()),
            response_code: a.response_code.clone(),
            approval: Some(a),
        },
        Ok(CardOutcome::Declined {
            code,
            reason,
            payment_uuid,
        }) => Settled {
            outcome: "declined",
            reason: Some(format!("{CARD_DECLINED}{reason}")),
            payment_uuid,
            response_code: code,
            approval: None,
        },
        Ok(CardOutcome::ThreeDSecureRequired { payment_uuid }) => plain(
            "three_d_secure",
            "the card issuer asks for 3-D Secure, which payhub does not support; nothing was charged".into(),
            payment_uuid,
        ),
        Err(ConnectorError::Permanent(e)) => plain("refused", e, None),
        Err(ConnectorError::Transient(e)) => {
            plain("refused", format!("the card could not be sent to PixelPay: {e}"), None)
        }
        Ok(CardOutcome::Indeterminate {
            payment_uuid: Some(uuid),
            detail,
        }) => {
            // The sale may have happened: PixelPay's own record decides.
            let order_ref = order_id.to_string();
            match st.pixelpay.status(account, &uuid).await {
                Ok(Some(status)) => match match operation {
                    CardOperation::Sale => status.settles(account, &order_ref, amount),
                    CardOperation::Authorize => status.authorises(account, &order_ref, amount),
                } {
                    Ok(true) => Settled {
                        outcome: "approved",
                        reason: None,
                        payment_uuid: Some(uuid),
                        response_code: status.response_code.clone(),
                        approval: Some(status.into_approval(amount)),
                    },
                    Ok(false) => plain(
                        "declined",
                        format!("{CARD_DECLINED}{}", status.response_reason.unwrap_or(detail)),
                        Some(uuid),
                    ),
                    Err(e) => plain("indeterminate", format!("{CARD_UNCONFIRMED}{e}"), Some(uuid)),
                },
                Ok(None) => plain(
                    "refused",
                    format!("PixelPay has no record of the payment after: {detail}"),
                    Some(uuid),
                ),
                Err(e) => plain(
                    "indeterminate",
                    format!("{CARD_UNCONFIRMED}{detail}; and its status could not be read: {e}"),
                    Some(uuid),
                ),
            }
        }
        Ok(CardOutcome::Indeterminate {
            payment_uuid: None,
            detail,
        }) => plain(
            "indeterminate",
            format!("{CARD_UNCONFIRMED}PixelPay's answer was lost ({detail}); payhub does not charge the card again"),
            None,
        ),
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) order_id: Uuid,
    pub(crate) shop_id: Uuid,
    pub(crate) correlation_id: &'a str,
    pub(crate) account: &'a str,
    pub(crate) amount: Money,
    pub(crate) operation: CardOperation,
}

impl Ctx<'_> {
    pub(crate) fn envelope(&self, payload: EventPayload, key: &str) -> Envelope {
        let mut e = Envelope::for_order(payload, self.order_id, self.shop_id, self.correlation_id);
        // One id per order and fact: a repeated store never publishes twice.
        e.id = Uuid::new_v5(&self.order_id, key.as_bytes());
        e.trace = payhub_telemetry::trace::current_context();
        e
    }
}

/// `payment.reported` for money the provider's own answer shows taken
/// (a sale, or the capture of an authorisation), under payhub's credentials.
pub(crate) fn paid_event(ctx: &Ctx<'_>, a: &CardApproval, source: PaymentSource, now: OffsetDateTime) -> Envelope {
    ctx.envelope(
        EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Pixelpay,
            webhook_event_id: Uuid::new_v5(&ctx.order_id, b"card"),
            provider_reference: ctx.order_id.to_string(),
            report: PaymentReport::Completed {
                charge_value: ctx.amount,
                paid_value: Some(a.approved_amount),
                end_to_end_id: None,
                transaction_id: a.transaction_id.clone(),
                paid_at: Some(now),
            },
            confirmation: Some(PaymentConfirmation {
                provider_charge_id: a.payment_uuid.clone(),
                account: ctx.account.to_string(),
                confirmed_at: now,
            }),
            source,
        }),
        "card.approved",
    )
}

/// Stores the outcome with its events, in one transaction.
async fn record(st: &CardState, ctx: &Ctx<'_>, s: &Settled) -> Result<(), sqlx::Error> {
    let mut tx = st.store.pool.begin().await?;
    sqlx::query(
        "UPDATE card_attempts SET finished_at = now(), outcome = $2, payment_uuid = $3, response_code = $4, detail = $5
         WHERE order_id = $1",
    )
    .bind(ctx.order_id)
    .bind(s.outcome)
    .bind(&s.payment_uuid)
    .bind(&s.response_code)
    .bind(&s.reason)
    .execute(&mut *tx)
    .await?;
    let mut events = Vec::new();
    match (&s.approval, s.outcome) {
        (Some(a), "approved") => {
            sqlx::query(
                "INSERT INTO charges (order_id, provider, provider_reference, provider_charge_id, currency, amount_minor,
                     provider_account, method, card_masked, card_brand, auth_code, transaction_id, authorized_at)
                 SELECT $1, 'pixelpay', $1::text, $2, $3, $4, $5, 'card', card_masked, card_brand, $6, $7,
                        CASE WHEN $8 THEN now() END
                 FROM card_attempts WHERE order_id = $1
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(ctx.order_id)
            .bind(&a.payment_uuid)
            .bind(ctx.amount.currency().code())
            .bind(ctx.amount.minor())
            .bind(ctx.account)
            .bind(&a.auth_code)
            .bind(&a.transaction_id)
            .bind(ctx.operation == CardOperation::Authorize)
            .execute(&mut *tx)
            .await?;
            let now = OffsetDateTime::now_utc();
            if ctx.operation == CardOperation::Authorize {
                // The money is held, not taken: the capture pays the order.
                events.push(ctx.envelope(
                    EventPayload::PaymentAuthorized(PaymentAuthorized {
                        provider: Provider::Pixelpay,
                        provider_charge_id: a.payment_uuid.clone(),
                        amount: a.approved_amount,
                        account: ctx.account.to_string(),
                        auth_code: a.auth_code.clone(),
                        transaction_id: a.transaction_id.clone(),
                    }),
                    "card.authorized",
                ));
            } else {
                events.push(paid_event(ctx, a, PaymentSource::CardSale, now));
            }
        }
        _ => {
            let reason = s.reason.clone().unwrap_or_else(|| "the card payment failed".into());
            events.push(ctx.envelope(
                EventPayload::ChargeFailed(ChargeFailed {
                    provider: Provider::Pixelpay,
                    reason: reason.clone(),
                    permanent: s.outcome != "indeterminate",
                }),
                "card.failed",
            ));
            if s.outcome == "indeterminate" {
                events.push(ctx.envelope(
                    EventPayload::AlertRaised(AlertRaised {
                        audience: AlertAudience::Shop,
                        kind: "card_unconfirmed".into(),
                        subject: format!("Pagamento com cartão não confirmado: pedido {}", ctx.correlation_id),
                        detail: format!(
                            "{reason}. Check the payment at PixelPay (order {}) before anything else; \
                             payhub will not charge the card again.",
                            ctx.order_id
                        ),
                    }),
                    "card.alert",
                ));
            }
        }
    }
    for e in &events {
        outbox::add(&mut tx, e)
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    }
    tx.commit().await?;
    let _ = st.outbox.publish_now(&events).await;
    Ok(())
}
