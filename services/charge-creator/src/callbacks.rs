//! Confirming a PixelPay payment that one of PixelPay's callbacks names (a
//! QuickPay collection's success webhook, or a card sale's `order_callback`),
//! for `POST /internal/v1/confirm` (issue 10 §3, providers.md §4.6).
//!
//! PixelPay signs nothing, so the webhook's body proves nothing: it only
//! names a payment (`uuid`) and, for a collection, PixelPay's order id of it
//! (`ref`). The order comes from the unguessable callback URL
//! (webhook-verifier looked it up); the account, the amount and the currency
//! come from payhub's own records; and PixelPay's `status`, asked under that
//! account, decides:
//!
//! - the account is the one recorded with the order's charge, or, when the
//!   order has no charge yet (a collection paid for a PixelPay order whose
//!   card was never charged), the shop's PixelPay account (the platform's
//!   when the shop has none);
//! - the payment must be approved, not voided, carry the `payment_hash` of
//!   its PixelPay order under that account's Secret Key, and have approved
//!   exactly the order's total in the order's currency
//!   ([`TransactionStatus::settles`]); its PixelPay order must be payhub's
//!   order or the collection's `ref`;
//! - a payment already recorded for another order pays nothing here, and an
//!   order already charged under another payment is not paid again by this
//!   one (money received twice is rejected, so a person sees it).
//!
//! For an order without a charge, the charge row for the payment is stored
//! (in its own transaction) before the confirmation is answered, so that
//! order-updater's rule holds unchanged: a confirmed report pays only the
//! charge payhub stored for the order.

use crate::accounts::AccountError;
use crate::confirm::{CONFIRMATIONS, ConfirmState, answer, unavailable};
use axum::response::Response;
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{ClaimKind, ConfirmAnswer, ConfirmRequest, PixelPayClaim, Verdict};
use payhub_connectors::pixelpay::TransactionStatus;
use payhub_core::events::{PaymentConfirmation, PaymentReport};
use payhub_core::{Currency, Money, Provider};
use time::OffsetDateTime;

#[derive(sqlx::FromRow)]
struct OrderRow {
    shop_id: uuid::Uuid,
    provider: String,
    currency: String,
    total_minor: i64,
    provider_charge_id: Option<String>,
    provider_account: Option<String>,
}

fn count(verdict: &str) {
    CONFIRMATIONS.with_label_values(&["pixelpay", "paid", verdict]).inc();
}

fn rejected(why: impl Into<String>) -> Response {
    count("rejected");
    answer(ConfirmAnswer::rejected(why))
}

fn db_unavailable(e: sqlx::Error) -> Response {
    tracing::warn!(error = %e, "the database could not be used");
    count("unavailable");
    unavailable("the database is unavailable")
}

/// Which PixelPay order the payment belongs to, as `settles` must check it:
/// payhub's order (a card sale) or the collection's `ref`, never another.
fn pixelpay_order<'a>(
    status: &'a TransactionStatus,
    order_id: &'a str,
    reference: Option<&'a str>,
) -> Result<&'a str, String> {
    match status.order_id.as_deref() {
        Some(o) if o == order_id || Some(o) == reference => Ok(o),
        Some(other) => Err(format!(
            "PixelPay payment {} belongs to PixelPay order {other}, neither this order nor the collection the \
             webhook names",
            status.payment_uuid
        )),
        // Without an order in the answer the hash decides which it is.
        None => Ok(reference.unwrap_or(order_id)),
    }
}

#[tracing::instrument(skip_all, fields(provider = "pixelpay", order_id = %req.order_id, payment_uuid = %claim.payment_uuid))]
pub async fn confirm(st: &ConfirmState, req: &ConfirmRequest, claim: &PixelPayClaim) -> Response {
    if req.claim != ClaimKind::Paid {
        return rejected("a PixelPay callback can only claim a payment");
    }
    let uuid = claim.payment_uuid.trim();
    if uuid.is_empty() || uuid.len() > 100 || uuid.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return rejected("the PixelPay payment uuid is empty or malformed");
    }
    let row: Option<OrderRow> = match sqlx::query_as(
        "SELECT o.shop_id, o.provider, o.currency::text AS currency, o.total_minor, c.provider_charge_id,
                c.provider_account
         FROM orders o LEFT JOIN charges c ON c.order_id = o.id WHERE o.id = $1",
    )
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => return db_unavailable(e),
    };
    let Some(order) = row else {
        return rejected("no such order");
    };
    if Provider::parse(&order.provider) != Ok(Provider::Pixelpay) {
        return rejected(format!("the order is paid through {}, not PixelPay", order.provider));
    }
    let Some(currency) = Currency::parse(order.currency.trim()) else {
        return rejected(format!("the order has currency {:?}", order.currency));
    };
    let amount = Money::from_minor(order.total_minor, currency);
    // The account the order's charge was made under, else the shop's.
    let using = match (&order.provider_charge_id, &order.provider_account) {
        (Some(charged), _) if charged != uuid => {
            return rejected(format!(
                "the order was paid by PixelPay payment {charged}; payment {uuid} is another one (money received \
                 twice needs a person)"
            ));
        }
        (Some(_), Some(account)) => st.providers.named(account).await,
        _ => st.providers.for_shop(order.shop_id, "pixelpay").await,
    };
    let account = match using.and_then(|u| Ok((st.providers.pixelpay(&u, st.platform_pixelpay.as_ref())?, u))) {
        Ok(a) => a,
        Err(AccountError::Unavailable(e)) => {
            count("unavailable");
            return unavailable(e);
        }
        Err(AccountError::Unusable(e)) => return rejected(e),
    };
    let (account, using) = account;
    let account_name = using.name();
    // One payment pays one order.
    let elsewhere: Option<(uuid::Uuid,)> = match sqlx::query_as(
        "SELECT order_id FROM charges WHERE provider = 'pixelpay' AND provider_charge_id = $1 AND order_id <> $2
         LIMIT 1",
    )
    .bind(uuid)
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => return db_unavailable(e),
    };
    if let Some((other,)) = elsewhere {
        return rejected(format!("PixelPay payment {uuid} already pays order {other}"));
    }
    let status = match st.pixelpay.status(&account, uuid).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return rejected(format!(
                "PixelPay knows no payment {uuid} under the order's account {account_name}"
            ));
        }
        Err(ConnectorError::Transient(e)) => {
            count("unavailable");
            tracing::warn!(reason = %e, "PixelPay's status could not be read");
            return unavailable(format!("PixelPay could not be asked: {e}"));
        }
        Err(ConnectorError::Permanent(e)) => return rejected(e),
    };
    let order_ref = req.order_id.to_string();
    let pp_order = match pixelpay_order(&status, &order_ref, claim.reference.as_deref()) {
        Ok(o) => o,
        Err(why) => return rejected(why),
    };
    match status.settles(&account, pp_order, amount) {
        Ok(true) => {}
        Ok(false) => {
            return rejected(format!(
                "PixelPay says payment {uuid} is not approved or was voided ({})",
                status.response_reason.as_deref().unwrap_or("no reason given")
            ));
        }
        Err(e) => return rejected(e.to_string()),
    }
    if order.provider_charge_id.is_none() {
        // The charge first, so the report pays payhub's own stored charge.
        match record_charge(st, req.order_id, uuid, amount, &account_name, &status).await {
            Ok(true) => {}
            Ok(false) => {
                return rejected(format!(
                    "another PixelPay payment was recorded for the order meanwhile; payment {uuid} is not it"
                ));
            }
            Err(e) => return db_unavailable(e),
        }
        tracing::info!(account = %account_name, "a PixelPay payment without a charge: recorded as the order's charge");
    }
    count("confirmed");
    answer(ConfirmAnswer {
        verdict: Verdict::Confirmed,
        reason: None,
        report: Some(PaymentReport::Completed {
            charge_value: amount,
            paid_value: Some(amount),
            end_to_end_id: None,
            transaction_id: status.transaction_id.clone(),
            paid_at: None,
        }),
        confirmation: Some(PaymentConfirmation {
            provider_charge_id: uuid.to_string(),
            account: account_name,
            confirmed_at: OffsetDateTime::now_utc(),
        }),
    })
}

/// Stores the payment as the order's charge; `false` when another payment
/// is the order's charge already.
async fn record_charge(
    st: &ConfirmState,
    order_id: uuid::Uuid,
    uuid: &str,
    amount: Money,
    account: &str,
    status: &TransactionStatus,
) -> Result<bool, sqlx::Error> {
    let mut tx = st.store.pool.begin().await?;
    sqlx::query(
        "INSERT INTO charges (order_id, provider, provider_reference, provider_charge_id, currency, amount_minor,
             provider_account, method, auth_code, transaction_id)
         VALUES ($1, 'pixelpay', $1::text, $2, $3, $4, $5, 'card', $6, $7)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(uuid)
    .bind(amount.currency().code())
    .bind(amount.minor())
    .bind(account)
    .bind(&status.auth_code)
    .bind(&status.transaction_id)
    .execute(&mut *tx)
    .await?;
    let (stored,): (String,) = sqlx::query_as("SELECT provider_charge_id FROM charges WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(stored == uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(order: Option<&str>) -> TransactionStatus {
        TransactionStatus {
            payment_uuid: "1dab5ed0".into(),
            transaction_type: Some("sale".into()),
            approved: true,
            incomplete: false,
            approved_amount_minor: Some(100),
            amount_minor: Some(100),
            currency: Some(Currency::Usd),
            order_id: order.map(str::to_string),
            transaction_id: None,
            auth_code: None,
            terminal: None,
            reference: None,
            time: None,
            response_code: None,
            response_reason: None,
            payment_hash: None,
            hash_verified: false,
        }
    }

    #[test]
    fn the_payment_must_be_this_orders_or_the_collections() {
        let ours = "0190-order";
        assert_eq!(pixelpay_order(&status(Some(ours)), ours, None), Ok(ours));
        assert_eq!(pixelpay_order(&status(Some("REF-1")), ours, Some("REF-1")), Ok("REF-1"));
        let other = pixelpay_order(&status(Some("REF-2")), ours, Some("REF-1")).unwrap_err();
        assert!(other.contains("REF-2"), "{other}");
        assert!(pixelpay_order(&status(Some("REF-2")), ours, None).is_err());
        // No order in the answer: the hash check decides, against the ref when given.
        assert_eq!(pixelpay_order(&status(None), ours, Some("REF-1")), Ok("REF-1"));
        assert_eq!(pixelpay_order(&status(None), ours, None), Ok(ours));
    }
}
