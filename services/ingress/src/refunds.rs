//! `POST /v1/orders/{correlationID}/refunds` (issue 10 §6): a shop gives
//! money of a paid order back to the buyer, all of it or a part.
//!
//! The request is checked field by field here, in the order's currency;
//! the refund itself is charge-creator's (`POST /internal/v1/refund`): it
//! holds the provider credentials, checks the amount against what remains
//! under a lock on the order's charge, records the refund, asks the
//! provider under the account that took the payment and answers the
//! outcome, which this door passes on. The shop's `idempotencyKey` names
//! the refund within the order: the same key again answers the first
//! outcome (`200`, `idempotent-replayed: true`) without asking the provider.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_connectors::internal::{RefundAnswer, RefundClient, RefundError, RefundRequest};
use payhub_core::identity::check_visible_text;
use payhub_core::{Currency, Money, ValidationErrors};
use payhub_service::problem::{ApiError, authenticate};
use payhub_store::Store;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The longest idempotency key.
pub const MAX_KEY_CHARS: usize = 100;
/// The longest reason (OpenPix shows at most 140 characters of a comment).
pub const MAX_REASON_CHARS: usize = 140;

#[derive(Clone)]
pub struct RefundsState {
    pub store: Store,
    /// charge-creator's internal refund call.
    pub refunds: RefundClient,
}

pub fn router(state: RefundsState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/orders/{correlation_id}/refunds", post(create_refund))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A refund request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundInput {
    /// `None`: what is left of the payment.
    pub amount: Option<Money>,
    pub idempotency_key: String,
    pub reason: Option<String>,
}

/// Reads `{"amount"?, "idempotencyKey", "reason"?}` for an order in
/// `currency`; every problem is a field error.
pub fn parse(body: &Value, currency: Currency) -> Result<RefundInput, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let Some(obj) = body.as_object() else {
        errors.push("(body)", "type", "must be a JSON object");
        return Err(errors);
    };
    let amount = match obj.get("amount") {
        None | Some(Value::Null) => None,
        Some(v) => match Money::from_json(v, currency) {
            Ok(m) if m.minor() <= 0 => {
                errors.push("amount", "positive", "must be greater than 0");
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                errors.push("amount", "amount", format!("{e} (a decimal in {})", currency.code()));
                None
            }
        },
    };
    let key = match obj.get("idempotencyKey") {
        None | Some(Value::Null) => {
            errors.push(
                "idempotencyKey",
                "required",
                "is required: the shop's own name for this refund",
            );
            None
        }
        Some(Value::String(k)) => {
            let n = k.chars().count();
            if n == 0 || n > MAX_KEY_CHARS {
                errors.push(
                    "idempotencyKey",
                    "length",
                    format!("must be 1 to {MAX_KEY_CHARS} characters long, is {n}"),
                );
                None
            } else if let Err(why) = check_visible_text(k) {
                errors.push("idempotencyKey", "characters", why);
                None
            } else {
                Some(k.clone())
            }
        }
        Some(_) => {
            errors.push("idempotencyKey", "type", "must be a string");
            None
        }
    };
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => {
            let r = r.trim();
            let n = r.chars().count();
            if n > MAX_REASON_CHARS {
                errors.push(
                    "reason",
                    "length",
                    format!("must be at most {MAX_REASON_CHARS} characters long, is {n}"),
                );
                None
            } else if let Err(why) = check_visible_text(r) {
                errors.push("reason", "characters", why);
                None
            } else {
                (!r.is_empty()).then(|| r.to_string())
            }
        }
        Some(_) => {
            errors.push("reason", "type", "must be a string");
            None
        }
    };
    match key {
        Some(idempotency_key) if errors.is_empty() => Ok(RefundInput {
            amount,
            idempotency_key,
            reason,
        }),
        _ => Err(errors),
    }
}

#[tracing::instrument(skip_all, fields(shop_id, correlation_id))]
async fn create_refund(
    State(st): State<RefundsState>,
    headers: HeaderMap,
    Path(correlation_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    tracing::Span::current().record("shop_id", tracing::field::display(shop.id));
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    let json: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let order: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, currency::text FROM orders WHERE shop_id = $1 AND correlation_id = $2")
            .bind(shop.id)
            .bind(&correlation_id)
            .fetch_optional(&st.store.pool)
            .await?;
    // Another shop's order is indistinguishable from a missing one.
    let Some((order_id, currency)) = order else {
        return Err(ApiError::NotFound(format!("no order {correlation_id} for this shop")));
    };
    let currency = Currency::parse(currency.trim())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("order {order_id} has an unknown currency")))?;
    let input = parse(&json, currency).map_err(ApiError::Validation)?;
    let req = RefundRequest {
        order_id,
        idempotency_key: input.idempotency_key,
        amount_minor: input.amount.map(Money::minor),
        reason: input.reason,
    };
    let answer = st.refunds.refund(&req).await.map_err(refund_error)?;
    let view = refund_view(&correlation_id, &answer);
    if answer.replayed {
        Ok((StatusCode::OK, [("idempotent-replayed", "true")], axum::Json(view)).into_response())
    } else {
        Ok((StatusCode::CREATED, axum::Json(view)).into_response())
    }
}

fn refund_error(e: RefundError) -> ApiError {
    match e {
        RefundError::NotFound(m) => ApiError::NotFound(m),
        RefundError::Conflict(m) => ApiError::Conflict(m),
        RefundError::Invalid { field, code, message } => {
            let code = match code.as_str() {
                "partial_not_supported" => "partial_not_supported",
                "positive" => "positive",
                "format" => "format",
                _ => "refused",
            };
            let mut errs = ValidationErrors::default();
            errs.push(field, code, message);
            ApiError::Validation(errs)
        }
        RefundError::Unavailable(m) => {
            tracing::warn!(error = %m, "the refund got no outcome");
            ApiError::Unavailable(format!(
                "the refund got no outcome ({m}); send the same request, with the same idempotencyKey, again"
            ))
        }
    }
}

/// The refund as the order API shows it: amounts as decimals in the
/// order's currency, with their minor units.
fn refund_view(correlation_id: &str, a: &RefundAnswer) -> Value {
    json!({
        "id": a.refund_id,
        "correlationID": correlation_id,
        "idempotencyKey": a.idempotency_key,
        "status": a.status,
        "currency": a.amount.currency().code(),
        "amount": a.amount.to_major_string(),
        "amountMinor": a.amount.minor(),
        "paid": a.paid.to_major_string(),
        "refunded": a.refunded.to_major_string(),
        "remaining": a.remaining.to_major_string(),
        "reason": a.reason,
        "providerRefundId": a.provider_refund_id,
        "detail": a.detail,
        "requestedAt": a.requested_at.format(&Rfc3339).ok(),
        "replayed": a.replayed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_request_is_read_exactly_in_the_orders_currency() {
        let r = parse(
            &json!({"amount": "10.50", "idempotencyKey": "r-1", "reason": " defeito "}),
            Currency::Brl,
        )
        .unwrap();
        assert_eq!(r.amount, Some(Money::from_minor(1050, Currency::Brl)));
        assert_eq!(r.reason.as_deref(), Some("defeito"));
        // A JSON number converts exactly too; no amount refunds the rest.
        let r = parse(&json!({"amount": 99.99, "idempotencyKey": "r-2"}), Currency::Brl).unwrap();
        assert_eq!(r.amount.map(Money::minor), Some(9999));
        let r = parse(&json!({"idempotencyKey": "r-3"}), Currency::Hnl).unwrap();
        assert_eq!(r.amount, None);
    }

    #[test]
    fn every_field_has_its_own_error() {
        let errs = parse(
            &json!({"amount": "10.001", "idempotencyKey": "", "reason": "x".repeat(141)}),
            Currency::Brl,
        )
        .unwrap_err();
        assert!(errs.has("amount", "amount"), "{errs}");
        assert!(errs.has("idempotencyKey", "length"), "{errs}");
        assert!(errs.has("reason", "length"), "{errs}");
        for (amount, code) in [
            (json!("0"), "positive"),
            (json!(-1), "positive"),
            (json!("dez"), "amount"),
        ] {
            let errs = parse(&json!({"amount": amount, "idempotencyKey": "k"}), Currency::Brl).unwrap_err();
            assert!(errs.has("amount", code), "{amount}: {errs}");
        }
        let errs = parse(&json!({"reason": 1}), Currency::Brl).unwrap_err();
        assert!(errs.has("idempotencyKey", "required"), "{errs}");
        assert!(errs.has("reason", "type"), "{errs}");
        let errs = parse(&json!({"idempotencyKey": "a\u{202E}b"}), Currency::Brl).unwrap_err();
        assert!(errs.has("idempotencyKey", "characters"), "{errs}");
        assert!(
            parse(&json!({"idempotencyKey": "k".repeat(101)}), Currency::Brl)
                .unwrap_err()
                .has("idempotencyKey", "length")
        );
        assert!(parse(&json!(["k"]), Currency::Brl).unwrap_err().has("(body)", "type"));
    }
}
