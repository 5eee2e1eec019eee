//! `POST /internal/v1/refund`: gives money of a paid order back to the
//! buyer, under the provider account that took the payment (issue 10 §6).
//! ingress calls it for the order API's refunds; charge-creator is the one
//! service holding provider credentials.
//!
//! The decision is made under a lock on the order's charge row, so two
//! refunds of one order are never checked against the same balance: what
//! may be refunded is the charge's amount minus every refund not refused
//! (one still in flight counts). The refund is recorded before the provider
//! is called, and the provider's answer is stored with its event
//! (`refund.completed` or `refund.failed`) in one transaction through the
//! outbox.
//!
//! The shop's idempotency key names the refund within its order; payhub's
//! id for it (a UUID v5 of the order and the key) is the refund's
//! correlationID at OpenPix, whose namespace is the whole account: the
//! shop's key alone could collide with another order's. The same key again
//! answers the first outcome without calling the provider; only a refund
//! whose answer was never had (`requested`) or that the provider has not
//! settled (`processing`) is asked about again, with the same id, which
//! OpenPix takes as the same refund and which PixelPay's `status` settles
//! before any second void.
//!
//! OpenPix refunds any part of a charge (`POST /api/v1/charge/{id}/refund`).
//! PixelPay has no refund API, only `void`, which cancels the whole sale: a
//! partial refund of a card payment is refused before anything is sent.

use crate::accounts::{AccountError, Providers};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{RefundAnswer, RefundRefusal, RefundRequest, RefundStatus};
use payhub_connectors::openpix::{self, RefundStatus as OpenPixStatus};
use payhub_connectors::pixelpay::{PixelPayAccount, PixelPayClient, VoidOutcome};
use payhub_core::events::{EventPayload, RefundCompleted, RefundFailed};
use payhub_core::{Currency, Envelope, Money, OrderStatus, Provider};
use payhub_store::{Store, outbox};
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

static REFUNDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_refunds_total",
        "Refund calls by provider and outcome (confirmed, processing, refused, unknown, replayed).",
        &["provider", "outcome"]
    )
    .expect("metric registers once")
});

pub struct RefundState {
    pub store: Store,
    pub outbox: outbox::Outbox,
    pub providers: Arc<Providers>,
    pub pixelpay: PixelPayClient,
    /// The platform's PixelPay account, for shops without their own.
    pub platform_pixelpay: Option<PixelPayAccount>,
    pub token: secrecy::SecretString,
    /// How long a provider call begun and not ended counts as in flight
    /// (past it, a crashed call is taken as over and the key may ask again).
    pub in_flight: Duration,
}

/// The longest idempotency key, as the order API documents it.
pub const MAX_KEY_CHARS: usize = 100;

#[derive(sqlx::FromRow)]
struct OrderRow {
    shop_id: Uuid,
    correlation_id: String,
    status: String,
}

#[derive(sqlx::FromRow)]
struct ChargeRow {
    provider: String,
    provider_reference: String,
    provider_charge_id: String,
    provider_account: String,
    currency: String,
    amount_minor: i64,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: Uuid,
    idempotency_key: String,
    status: String,
    amount_minor: i64,
    reason: Option<String>,
    provider_refund_id: Option<String>,
    provider_detail: Option<String>,
    requested_at: OffsetDateTime,
    /// A provider call begun and not ended, recently.
    in_flight: bool,
}

const REFUND_COLUMNS: &str = "id, idempotency_key, status, amount_minor, reason, provider_refund_id, provider_detail,
     requested_at, (finished_at IS NULL AND attempted_at > now() - make_interval(secs => $3)) AS in_flight";

/// A refusal, as ingress reads it ([`RefundRefusal`]).
fn refused(status: StatusCode, why: impl Into<String>) -> Response {
    let body = RefundRefusal {
        error: why.into(),
        code: None,
        field: None,
    };
    (status, Json(body)).into_response()
}

fn invalid(field: &str, code: &str, why: impl Into<String>) -> Response {
    let body = RefundRefusal {
        error: why.into(),
        code: Some(code.into()),
        field: Some(field.into()),
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn unavailable(why: impl Into<String>) -> Response {
    let mut r = refused(StatusCode::SERVICE_UNAVAILABLE, why);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

fn db_down(e: sqlx::Error) -> Response {
    tracing::warn!(error = %e, "the refund could not be read or stored");
    unavailable("the database is unavailable; send the same request again")
}

/// An idempotency key: 1 to 100 characters, none of them control or
/// invisible formatting characters.
pub fn check_key(key: &str) -> Result<(), String> {
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY_CHARS {
        return Err(format!("must be 1 to {MAX_KEY_CHARS} characters long"));
    }
    payhub_core::identity::check_visible_text(key)
}

/// What was paid and what the order's refunds have taken of it.
#[derive(Debug, Clone, Copy)]
struct Balance {
    paid: Money,
    /// Refunds not refused: confirmed, in flight or unsettled.
    committed: Money,
    confirmed: Money,
}

impl Balance {
    fn remaining(self) -> Money {
        Money::from_minor(
            (self.paid.minor() - self.committed.minor()).max(0),
            self.paid.currency(),
        )
    }
}

async fn balance(conn: &mut sqlx::PgConnection, order_id: Uuid, paid: Money) -> Result<Balance, sqlx::Error> {
    let (committed, confirmed): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(amount_minor) FILTER (WHERE status <> 'refused'), 0)::bigint,
                COALESCE(sum(amount_minor) FILTER (WHERE status = 'confirmed'), 0)::bigint
         FROM refunds WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await?;
    let currency = paid.currency();
    Ok(Balance {
        paid,
        committed: Money::from_minor(committed, currency),
        confirmed: Money::from_minor(confirmed, currency),
    })
}

fn answer_of(row: &RefundRow, balance: Balance, replayed: bool) -> RefundAnswer {
    let currency = balance.paid.currency();
    RefundAnswer {
        refund_id: row.id,
        idempotency_key: row.idempotency_key.clone(),
        status: RefundStatus::parse(&row.status).unwrap_or(RefundStatus::Requested),
        amount: Money::from_minor(row.amount_minor, currency),
        paid: balance.paid,
        refunded: balance.confirmed,
        remaining: balance.remaining(),
        provider_refund_id: row.provider_refund_id.clone(),
        reason: row.reason.clone(),
        detail: row.provider_detail.clone(),
        requested_at: row.requested_at,
        replayed,
    }
}

/// Everything the provider call and its record need.
struct Call {
    order_id: Uuid,
    shop_id: Uuid,
    correlation_id: String,
    provider: Provider,
    charge: ChargeRow,
    paid: Money,
    refund_id: Uuid,
    idempotency_key: String,
    amount: Money,
    reason: Option<String>,
    /// The provider may have been called about this refund before.
    again: bool,
}

/// What the first step came to.
enum Begun {
    /// Settled before: the stored outcome.
    Settled(Box<RefundAnswer>),
    /// Recorded (or claimed again): call the provider.
    Call(Box<Call>),
}

pub async fn refund_route(
    State(st): State<Arc<RefundState>>,
    headers: HeaderMap,
    Json(req): Json<RefundRequest>,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&st.token)) {
        return refused(StatusCode::UNAUTHORIZED, "internal token required");
    }
    // The door checked these already; this is the trust boundary.
    if let Err(e) = check_key(&req.idempotency_key) {
        return invalid("idempotencyKey", "format", e);
    }
    if req.amount_minor.is_some_and(|m| m <= 0) {
        return invalid("amount", "positive", "must be greater than 0");
    }
    let call = match begin(&st, &req).await {
        Ok(Begun::Settled(answer)) => {
            REFUNDS.with_label_values(&["any", "replayed"]).inc();
            return Json(*answer).into_response();
        }
        Ok(Begun::Call(call)) => call,
        Err(refusal) => return refusal,
    };
    let outcome = call_provider(&st, &call).await;
    let provider = call.provider.as_str();
    REFUNDS.with_label_values(&[provider, outcome.label()]).inc();
    match record(&st, &call, &outcome).await {
        Ok(Some(answer)) => {
            tracing::info!(order_id = %call.order_id, refund_id = %call.refund_id, amount = %call.amount,
                outcome = outcome.label(), "refund");
            Json(answer).into_response()
        }
        Ok(None) => {
            let ProviderOutcome::Unknown { detail } = &outcome else {
                return unavailable("the refund's outcome could not be read back; send the same request again");
            };
            tracing::warn!(order_id = %call.order_id, refund_id = %call.refund_id, %detail, "the refund's outcome is not known");
            unavailable(format!(
                "the provider's answer is not known ({detail}); send the same request (same idempotencyKey) again"
            ))
        }
        Err(e) => {
            // The provider answered but payhub could not store it: the row
            // stays open and the same key asks the provider again.
            tracing::error!(order_id = %call.order_id, refund_id = %call.refund_id, outcome = outcome.label(),
                error = %e, "the refund's outcome could not be stored");
            unavailable("the refund's outcome could not be stored; send the same request again")
        }
    }
}

/// Checks the refund against the order under the charge's lock and records
/// it, or finds the one the key already names.
async fn begin(st: &RefundState, req: &RefundRequest) -> Result<Begun, Response> {
    let in_flight_secs = st.in_flight.as_secs_f64();
    let mut tx = st.store.pool.begin().await.map_err(db_down)?;
    let order: Option<OrderRow> = sqlx::query_as("SELECT shop_id, correlation_id, status FROM orders WHERE id = $1")
        .bind(req.order_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_down)?;
    let Some(order) = order else {
        return Err(refused(StatusCode::NOT_FOUND, "no such order"));
    };
    // One refund decision at a time per order: the charge row is the lock.
    let charge: Option<ChargeRow> = sqlx::query_as(
        "SELECT provider, provider_reference, provider_charge_id, provider_account, currency::text AS currency,
                amount_minor
         FROM charges WHERE order_id = $1 FOR UPDATE",
    )
    .bind(req.order_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_down)?;
    let Some(charge) = charge else {
        return Err(refused(
            StatusCode::CONFLICT,
            format!(
                "the order is {}: nothing was paid, so nothing can be refunded",
                order.status
            ),
        ));
    };
    let Some(currency) = Currency::parse(charge.currency.trim()) else {
        return Err(refused(StatusCode::CONFLICT, "the charge's currency is unknown"));
    };
    let provider = Provider::parse(&charge.provider)
        .map_err(|e| refused(StatusCode::CONFLICT, format!("the charge's provider {e}")))?;
    let paid = Money::from_minor(charge.amount_minor, currency);
    let balance = balance(&mut tx, req.order_id, paid).await.map_err(db_down)?;
    let existing: Option<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 AND idempotency_key = $2"
    )))
    .bind(req.order_id)
    .bind(&req.idempotency_key)
    .bind(in_flight_secs)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_down)?;
    if let Some(row) = existing {
        if let Some(asked) = req.amount_minor
            && asked != row.amount_minor
        {
            return Err(refused(
                StatusCode::CONFLICT,
                format!(
                    "idempotencyKey {:?} already names a refund of {} of this order",
                    row.idempotency_key,
                    Money::from_minor(row.amount_minor, currency)
                ),
            ));
        }
        let status = RefundStatus::parse(&row.status).unwrap_or(RefundStatus::Requested);
        if matches!(status, RefundStatus::Confirmed | RefundStatus::Refused) {
            return Ok(Begun::Settled(Box::new(answer_of(&row, balance, true))));
        }
        if row.in_flight {
            return Err(refused(
                StatusCode::CONFLICT,
                "a refund with this idempotencyKey is in progress; ask again shortly",
            ));
        }
        sqlx::query("UPDATE refunds SET attempted_at = now(), finished_at = NULL WHERE id = $1")
            .bind(row.id)
            .execute(&mut *tx)
            .await
            .map_err(db_down)?;
        tx.commit().await.map_err(db_down)?;
        return Ok(Begun::Call(Box::new(Call {
            order_id: req.order_id,
            shop_id: order.shop_id,
            correlation_id: order.correlation_id,
            provider,
            charge,
            paid,
            refund_id: row.id,
            idempotency_key: row.idempotency_key,
            amount: Money::from_minor(row.amount_minor, currency),
            reason: row.reason,
            again: true,
        })));
    }
    let status = OrderStatus::parse(&order.status);
    if !matches!(status, Some(OrderStatus::Paid | OrderStatus::PartiallyRefunded)) {
        return Err(refused(
            StatusCode::CONFLICT,
            format!("the order is {}; only a paid order can be refunded", order.status),
        ));
    }
    let remaining = balance.remaining();
    if remaining.minor() == 0 {
        return Err(refused(
            StatusCode::CONFLICT,
            format!(
                "nothing is left to refund: {} of {paid} refunded or being refunded",
                balance.committed
            ),
        ));
    }
    let amount = Money::from_minor(req.amount_minor.unwrap_or(remaining.minor()), currency);
    if amount.minor() > remaining.minor() {
        return Err(refused(
            StatusCode::CONFLICT,
            format!(
                "a refund of {amount} is more than what remains to be refunded: {remaining} of {paid} paid \
                 ({} refunded or being refunded)",
                balance.committed
            ),
        ));
    }
    let caps = payhub_connectors::capabilities::of(provider);
    if !caps.supports(payhub_connectors::capabilities::Operation::Refund) {
        return Err(invalid(
            "amount",
            "refund_not_supported",
            format!("{} gives no money back through its API", provider.as_str()),
        ));
    }
    if amount != paid && !caps.supports(payhub_connectors::capabilities::Operation::PartialRefund) {
        return Err(invalid(
            "amount",
            "partial_not_supported",
            format!(
                "PixelPay can only give a card payment back whole (a void of the sale): refund {paid}, \
                 or leave amount out"
            ),
        ));
    }
    let refund_id = Uuid::new_v5(&req.order_id, req.idempotency_key.as_bytes());
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    sqlx::query(
        "INSERT INTO refunds (id, order_id, idempotency_key, provider, provider_account, currency, amount_minor,
             status, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested', $8)",
    )
    .bind(refund_id)
    .bind(req.order_id)
    .bind(&req.idempotency_key)
    .bind(provider.as_str())
    .bind(&charge.provider_account)
    .bind(currency.code())
    .bind(amount.minor())
    .bind(&reason)
    .execute(&mut *tx)
    .await
    .map_err(db_down)?;
    tx.commit().await.map_err(db_down)?;
    Ok(Begun::Call(Box::new(Call {
        order_id: req.order_id,
        shop_id: order.shop_id,
        correlation_id: order.correlation_id,
        provider,
        charge,
        paid,
        refund_id,
        idempotency_key: req.idempotency_key.clone(),
        amount,
        reason,
        again: false,
    })))
}

/// The provider's answer.
#[derive(Debug)]
enum ProviderOutcome {
    Confirmed {
        provider_refund_id: Option<String>,
    },
    /// Accepted, not settled (or not provably settled).
    Processing {
        provider_refund_id: Option<String>,
        detail: String,
    },
    Refused {
        detail: String,
    },
    /// No answer: the refund stays `requested`; the same key asks again.
    Unknown {
        detail: String,
    },
}

impl ProviderOutcome {
    fn label(&self) -> &'static str {
        match self {
            ProviderOutcome::Confirmed { .. } => "confirmed",
            ProviderOutcome::Processing { .. } => "processing",
            ProviderOutcome::Refused { .. } => "refused",
            ProviderOutcome::Unknown { .. } => "unknown",
        }
    }
}

fn from_account_error(e: AccountError) -> ProviderOutcome {
    match e {
        AccountError::Unavailable(detail) => ProviderOutcome::Unknown { detail },
        AccountError::Unusable(e) => ProviderOutcome::Refused {
            detail: format!("the charge's provider account cannot be used: {e}"),
        },
    }
}

/// Asks the provider, under the account the charge was created with.
async fn call_provider(st: &RefundState, call: &Call) -> ProviderOutcome {
    let using = match st.providers.named(&call.charge.provider_account).await {
        Ok(u) => u,
        Err(e) => return from_account_error(e),
    };
    match call.provider {
        Provider::Openpix => {
            let client = match st.providers.openpix(&using) {
                Ok(c) => c,
                Err(e) => return from_account_error(e),
            };
            let req = openpix::RefundRequest {
                correlation_id: call.refund_id.to_string(),
                amount: call.amount,
                comment: call.reason.clone(),
            };
            match client.refund_charge(&call.charge.provider_reference, &req).await {
                // Money moved, but not the sum asked: never counted as this refund.
                Ok(r) if r.amount != call.amount => ProviderOutcome::Processing {
                    provider_refund_id: r.end_to_end_id,
                    detail: format!(
                        "OpenPix answered a refund of {} ({}) for the {} asked; a person must check it",
                        r.amount, r.raw_status, call.amount
                    ),
                },
                Ok(r) => match r.status {
                    OpenPixStatus::Confirmed => ProviderOutcome::Confirmed {
                        provider_refund_id: r.end_to_end_id,
                    },
                    OpenPixStatus::InProcessing => ProviderOutcome::Processing {
                        provider_refund_id: r.end_to_end_id,
                        detail: format!("OpenPix has not settled the refund yet ({})", r.raw_status),
                    },
                    OpenPixStatus::Rejected => ProviderOutcome::Refused {
                        detail: format!("OpenPix rejected the refund ({})", r.raw_status),
                    },
                },
                Err(ConnectorError::Permanent(detail)) => ProviderOutcome::Refused { detail },
                Err(ConnectorError::Transient(detail)) => ProviderOutcome::Unknown { detail },
            }
        }
        Provider::Pixelpay => {
            let account = match st.providers.pixelpay(&using, st.platform_pixelpay.as_ref()) {
                Ok(a) => a,
                Err(e) => return from_account_error(e),
            };
            void(st, &account, call).await
        }
        // Refused before any call by the capability check (no refund API).
        Provider::Pagoseguro => ProviderOutcome::Refused {
            detail: "Pago Seguro gives no money back through an API payhub can call".into(),
        },
    }
}

/// A card payment given back whole: PixelPay's `void` of the sale. PixelPay
/// has no idempotency key, so a refund asked about again is first looked up
/// with `status`: a sale already voided is not voided twice.
async fn void(st: &RefundState, account: &PixelPayAccount, call: &Call) -> ProviderOutcome {
    let uuid = &call.charge.provider_charge_id;
    if call.again
        && let Some(settled) = voided(st, account, uuid, None).await
    {
        return settled;
    }
    let reason = call.reason.as_deref().unwrap_or("refund");
    match st.pixelpay.void(account, uuid, reason).await {
        Ok(VoidOutcome::Voided { payment_uuid }) => ProviderOutcome::Confirmed {
            provider_refund_id: Some(payment_uuid),
        },
        Ok(VoidOutcome::Indeterminate { detail }) => match voided(st, account, uuid, Some(&detail)).await {
            Some(settled) => settled,
            None => ProviderOutcome::Unknown { detail },
        },
        Err(ConnectorError::Permanent(detail)) => ProviderOutcome::Refused { detail },
        Err(ConnectorError::Transient(detail)) => ProviderOutcome::Unknown { detail },
    }
}

/// Whether PixelPay's own record shows the sale voided: `None` when it does
/// not (a void may be sent), an outcome otherwise. `after` is what made
/// payhub ask, for the message.
async fn voided(
    st: &RefundState,
    account: &PixelPayAccount,
    uuid: &str,
    after: Option<&str>,
) -> Option<ProviderOutcome> {
    match st.pixelpay.status(account, uuid).await {
        Ok(Some(s)) if s.is_voided() => Some(ProviderOutcome::Confirmed {
            provider_refund_id: Some(s.payment_uuid),
        }),
        Ok(_) => None,
        Err(e) => Some(ProviderOutcome::Unknown {
            detail: match after {
                Some(d) => format!("{d}; and PixelPay's status could not be read: {e}"),
                None => format!("PixelPay's status could not be read: {e}"),
            },
        }),
    }
}

/// Stores the provider's answer with its event, under the charge's lock (so
/// the refunded total is counted in the order the refunds settle). `None`
/// when there is no outcome to answer (the provider's answer is unknown).
async fn record(st: &RefundState, call: &Call, outcome: &ProviderOutcome) -> Result<Option<RefundAnswer>, sqlx::Error> {
    let mut tx = st.store.pool.begin().await?;
    sqlx::query("SELECT 1 FROM charges WHERE order_id = $1 FOR UPDATE")
        .bind(call.order_id)
        .execute(&mut *tx)
        .await?;
    let (status, provider_refund_id, detail): (RefundStatus, Option<&str>, Option<&str>) = match outcome {
        ProviderOutcome::Unknown { detail } => {
            sqlx::query(
                "UPDATE refunds SET finished_at = now(), provider_detail = $2 WHERE id = $1 AND status = 'requested'",
            )
            .bind(call.refund_id)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(None);
        }
        ProviderOutcome::Confirmed { provider_refund_id } => {
            (RefundStatus::Confirmed, provider_refund_id.as_deref(), None)
        }
        ProviderOutcome::Processing {
            provider_refund_id,
            detail,
        } => (
            RefundStatus::Processing,
            provider_refund_id.as_deref(),
            Some(detail.as_str()),
        ),
        ProviderOutcome::Refused { detail } => (RefundStatus::Refused, None, Some(detail.as_str())),
    };
    let moved = sqlx::query(
        "UPDATE refunds SET status = $2, provider_refund_id = COALESCE($3, provider_refund_id), provider_detail = $4,
                finished_at = now()
         WHERE id = $1 AND status IN ('requested', 'processing')",
    )
    .bind(call.refund_id)
    .bind(status.as_str())
    .bind(provider_refund_id)
    .bind(detail)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1 AND order_id = $2"
    )))
    .bind(call.refund_id)
    .bind(call.order_id)
    .bind(st.in_flight.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let balance = balance(&mut tx, call.order_id, call.paid).await?;
    // Settled by a concurrent call already: its outcome stands.
    if moved == 0 {
        tx.commit().await?;
        return Ok(Some(answer_of(&row, balance, true)));
    }
    let payload = match status {
        RefundStatus::Confirmed => Some((
            EventPayload::RefundCompleted(RefundCompleted {
                provider: call.provider,
                refund_id: call.refund_id,
                idempotency_key: call.idempotency_key.clone(),
                amount: call.amount,
                refunded_total: balance.confirmed,
                paid: call.paid,
                provider_refund_id: row.provider_refund_id.clone(),
                reason: call.reason.clone(),
            }),
            "refund.completed",
        )),
        RefundStatus::Refused => Some((
            EventPayload::RefundFailed(RefundFailed {
                provider: call.provider,
                refund_id: call.refund_id,
                idempotency_key: call.idempotency_key.clone(),
                amount: call.amount,
                reason: row.provider_detail.clone().unwrap_or_default(),
            }),
            "refund.failed",
        )),
        RefundStatus::Requested | RefundStatus::Processing => None,
    };
    let mut events = Vec::new();
    if let Some((payload, kind)) = payload {
        let mut e = Envelope::for_order(payload, call.order_id, call.shop_id, &call.correlation_id);
        // One id per refund and outcome: a repeated store never publishes twice.
        e.id = Uuid::new_v5(&call.refund_id, kind.as_bytes());
        e.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut tx, &e)
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        events.push(e);
    }
    tx.commit().await?;
    let _ = st.outbox.publish_now(&events).await;
    Ok(Some(answer_of(&row, balance, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_a_hundred_visible_characters() {
        assert!(check_key("refund-1").is_ok());
        assert!(check_key(&"k".repeat(100)).is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(101)).is_err());
        assert!(check_key("a\u{200B}b").is_err());
        assert!(check_key("a\nb").is_err());
    }

    #[test]
    fn what_remains_never_goes_below_zero() {
        let brl = |m| Money::from_minor(m, Currency::Brl);
        let b = Balance {
            paid: brl(1000),
            committed: brl(300),
            confirmed: brl(100),
        };
        assert_eq!(b.remaining(), brl(700));
        let over = Balance {
            committed: brl(1200),
            ..b
        };
        assert_eq!(over.remaining(), brl(0));
    }
}
