//! `POST /internal/v1/confirm`: confirms a payment fact with the provider,
//! under the account payhub created the charge with, about the charge
//! payhub stored (see `payhub_connectors::psync`). Called by
//! webhook-verifier for every payment webhook and by reporter's sweeper.

use crate::accounts::{AccountError, Providers};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payhub_connectors::internal::{ClaimKind, ConfirmAnswer, ConfirmRequest, Verdict};
use payhub_connectors::psync::{self, Claim, ConfirmError, Confirmed, StoredCharge};
use payhub_core::events::PaymentConfirmation;
use payhub_core::{Currency, Money};
use payhub_store::Store;
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde_json::json;
use std::sync::{Arc, LazyLock};
use time::OffsetDateTime;

pub(crate) static CONFIRMATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_payment_confirmations_total",
        "Payment facts checked with the provider, by provider, claim and verdict (confirmed, pending, rejected, unavailable).",
        &["provider", "claim", "verdict"]
    )
    .expect("metric registers once")
});

pub struct ConfirmState {
    pub store: Store,
    pub providers: Arc<Providers>,
    pub token: secrecy::SecretString,
    /// PixelPay's `status`, for the payments PixelPay's callbacks name.
    pub pixelpay: payhub_connectors::pixelpay::PixelPayClient,
    /// The platform's PixelPay account, for shops without their own.
    pub platform_pixelpay: Option<payhub_connectors::pixelpay::PixelPayAccount>,
}

impl ConfirmState {
    /// The 401 for a caller without the internal token; `None` lets it in.
    pub(crate) fn refuse_without_token(&self, headers: &HeaderMap) -> Option<Response> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&self.token)) {
            return None;
        }
        Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "internal token required"})),
            )
                .into_response(),
        )
    }
}

#[derive(sqlx::FromRow)]
struct ChargeRow {
    provider: String,
    provider_reference: String,
    provider_charge_id: String,
    currency: String,
    amount_minor: i64,
    provider_account: String,
}

pub(crate) fn unavailable(why: impl Into<String>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({"error": why.into()})),
    )
        .into_response()
}

pub(crate) fn answer(a: ConfirmAnswer) -> Response {
    Json(a).into_response()
}

/// Why a claim about a charge made with `provider` cannot be confirmed by
/// OpenPix's re-queries (`None`: it is an OpenPix charge).
fn not_openpix(provider: &str) -> Option<String> {
    use payhub_core::Provider;
    match Provider::parse(provider) {
        Ok(Provider::Openpix) => None,
        Ok(Provider::Pagoseguro) => Some(
            "Pago Seguro documents no transaction-status query (providers.md §3.4): \
             check this payment in Pago Seguro's back office"
                .into(),
        ),
        Ok(Provider::Pixelpay) => Some(
            "the order's charge is a PixelPay payment: OpenPix cannot be asked about it. PixelPay's `status` \
             confirms it, with the payment uuid its callback names, and reconciliation re-queries it"
                .into(),
        ),
        Err(_) => Some(format!("the stored charge names an unknown provider {provider:?}")),
    }
}

pub async fn confirm_route(
    State(st): State<Arc<ConfirmState>>,
    headers: HeaderMap,
    Json(req): Json<ConfirmRequest>,
) -> Response {
    if let Some(refused) = st.refuse_without_token(&headers) {
        return refused;
    }
    // A PixelPay callback: PixelPay's `status` decides, under the order's account.
    if let Some(claim) = &req.pixelpay {
        return crate::callbacks::confirm(&st, &req, claim).await;
    }
    let claim_label = match req.claim {
        ClaimKind::Paid => "paid",
        ClaimKind::Expired => "expired",
        ClaimKind::Status => "status",
    };
    let row: Option<ChargeRow> = match sqlx::query_as(
        "SELECT provider, provider_reference, provider_charge_id, currency::text AS currency, amount_minor,
                provider_account
         FROM charges WHERE order_id = $1",
    )
    .bind(req.order_id)
    .fetch_optional(&st.store.pool)
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the charge failed");
            return unavailable("the database is unavailable");
        }
    };
    let count =
        |provider: &str, verdict: &str| CONFIRMATIONS.with_label_values(&[provider, claim_label, verdict]).inc();
    let Some(row) = row else {
        count("unknown", "rejected");
        return answer(ConfirmAnswer::rejected(
            "payhub created no charge for this order, so no webhook can pay it",
        ));
    };
    let provider = row.provider.as_str();
    // What follows re-queries OpenPix. Any other provider's charge is
    // refused here, never sent to an OpenPix client: under the platform
    // account `Providers::openpix` would hand out the platform's OpenPix
    // credentials for a PixelPay payment.
    if let Some(refusal) = not_openpix(provider) {
        count(provider, "rejected");
        tracing::warn!(order_id = %req.order_id, provider, claim = claim_label, "a claim about a charge OpenPix did not make");
        return answer(ConfirmAnswer::rejected(refusal));
    }
    if let Some(named) = &req.provider_charge_id
        && named != &row.provider_charge_id
    {
        count(provider, "rejected");
        return answer(ConfirmAnswer::rejected(format!(
            "the webhook names charge {named}, payhub created charge {} for this order",
            row.provider_charge_id
        )));
    }
    let Some(currency) = Currency::parse(row.currency.trim()) else {
        count(provider, "rejected");
        return answer(ConfirmAnswer::rejected(format!(
            "the stored charge has currency {:?}",
            row.currency
        )));
    };
    let stored = StoredCharge {
        provider_reference: row.provider_reference.clone(),
        provider_charge_id: row.provider_charge_id.clone(),
        amount: Money::from_minor(row.amount_minor, currency),
    };
    let claim = match req.claim {
        ClaimKind::Paid => Claim::Paid {
            end_to_end_id: req.end_to_end_id.clone(),
        },
        ClaimKind::Expired => Claim::Expired,
        ClaimKind::Status => Claim::Status,
    };
    // The same account the charge was created under, never the webhook's word.
    let query = match st
        .providers
        .named(&row.provider_account)
        .await
        .and_then(|using| st.providers.openpix(&using))
    {
        Ok(client) => client,
        Err(AccountError::Unavailable(e)) => {
            count(provider, "unavailable");
            return unavailable(e);
        }
        Err(AccountError::Unusable(e)) => {
            count(provider, "rejected");
            tracing::warn!(order_id = %req.order_id, reason = %e, "the charge's account cannot be used");
            return answer(ConfirmAnswer::rejected(e));
        }
    };
    match psync::confirm(&query, &stored, &claim).await {
        Ok(Confirmed::Report(report)) => {
            count(provider, "confirmed");
            answer(ConfirmAnswer {
                verdict: Verdict::Confirmed,
                reason: None,
                report: Some(report),
                confirmation: Some(PaymentConfirmation {
                    provider_charge_id: row.provider_charge_id,
                    account: row.provider_account.clone(),
                    confirmed_at: OffsetDateTime::now_utc(),
                }),
            })
        }
        Ok(Confirmed::StillActive) => {
            count(provider, "pending");
            answer(ConfirmAnswer {
                verdict: Verdict::Pending,
                reason: Some("the provider says the charge is still waiting for payment".into()),
                report: None,
                confirmation: None,
            })
        }
        Err(ConfirmError::Rejected(why)) => {
            count(provider, "rejected");
            tracing::warn!(order_id = %req.order_id, reason = %why, "the provider does not confirm the claim");
            answer(ConfirmAnswer::rejected(why))
        }
        Err(ConfirmError::Unavailable(why)) => {
            count(provider, "unavailable");
            tracing::warn!(order_id = %req.order_id, reason = %why, "the provider could not be asked");
            unavailable(format!("the provider could not be asked: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::not_openpix;

    #[test]
    fn only_openpix_charges_are_re_queried_with_openpix() {
        assert_eq!(not_openpix("openpix"), None);
        let pixelpay = not_openpix("pixelpay").expect("a PixelPay charge is refused");
        assert!(
            pixelpay.contains("PixelPay") && pixelpay.contains("status"),
            "{pixelpay}"
        );
        assert!(not_openpix("pagoseguro").is_some_and(|r| r.contains("Pago Seguro")));
        assert!(not_openpix("bitcoin").is_some_and(|r| r.contains("unknown provider")));
    }
}
