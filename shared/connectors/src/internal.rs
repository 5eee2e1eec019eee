//! The internal confirmation call: webhook-verifier and reporter's sweeper
//! ask charge-creator (the one service that holds provider credentials) to
//! confirm a payment fact with the provider. `POST /internal/v1/confirm`,
//! authenticated with the shared internal token, on charge-creator's
//! listener (not exposed outside the cluster).

use payhub_core::events::{PaymentConfirmation, PaymentReport};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

pub const CONFIRM_PATH: &str = "/internal/v1/confirm";

/// What the caller wants confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Paid,
    Expired,
    /// "What is the state of this order's charge?" (the sweeper).
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    pub order_id: Uuid,
    pub claim: ClaimKind,
    /// The provider's charge id as the webhook names it; must be payhub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_charge_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
    /// A PixelPay payment a callback named (a QuickPay collection webhook,
    /// or the card sale's `order_callback`): confirmed with PixelPay's
    /// `status` under the order's account instead of OpenPix's re-queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixelpay: Option<PixelPayClaim>,
}

/// What a PixelPay callback says was paid. Only the ids are taken from it:
/// the amount, the currency and the account come from payhub's own records,
/// and PixelPay's `status` decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelPayClaim {
    /// The payment's `uuid` (what `status` takes as `payment_uuid`).
    pub payment_uuid: String,
    /// The collection's `ref` (PixelPay's order id of a collection), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The provider confirmed: `report` is its answer.
    Confirmed,
    /// The charge is still waiting for payment (only for `status`).
    Pending,
    /// Not payhub's charge, or the provider contradicts the claim.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmAnswer {
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PaymentReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<PaymentConfirmation>,
}

impl ConfirmAnswer {
    pub fn rejected(reason: impl Into<String>) -> ConfirmAnswer {
        ConfirmAnswer {
            verdict: Verdict::Rejected,
            reason: Some(reason.into()),
            report: None,
            confirmation: None,
        }
    }
}

/// The client side, for webhook-verifier and reporter.
#[derive(Clone)]
pub struct ConfirmClient {
    http: reqwest::Client,
    url: String,
    token: SecretString,
}

impl std::fmt::Debug for ConfirmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ConfirmClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<ConfirmClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(ConfirmClient {
            http,
            url: format!("{}{CONFIRM_PATH}", charge_creator_url.trim_end_matches('/')),
            token,
        })
    }

    /// `Err` when the answer could not be had (charge-creator or the
    /// provider unavailable): ask again later.
    pub async fn confirm(&self, req: &ConfirmRequest) -> Result<ConfirmAnswer, String> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose_secret())
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "charge-creator did not answer in time".to_string()
                } else {
                    "charge-creator could not be reached".to_string()
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "charge-creator answered {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ));
        }
        resp.json::<ConfirmAnswer>()
            .await
            .map_err(|e| format!("charge-creator's answer is unreadable: {e}"))
    }
}

/// The internal card call: the door that received a card (ingress: the
/// order API, Wake's `/payment`) hands it to charge-creator, which charges
/// it under the shop's account and answers the outcome. The card lives in
/// this request's memory only: it is never stored, queued or logged, and
/// neither type's `Debug` shows it.
pub const CARD_PATH: &str = "/internal/v1/card";

/// The card as the buyer typed it, or a provider's saved-card token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CardInput {
    Card {
        number: String,
        cvv: String,
        /// `YYMM`.
        expire: String,
        holder: String,
    },
    Token {
        token: String,
    },
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardInput::Card { number, .. } => write!(f, "Card({})", payhub_core::card::mask(number)),
            CardInput::Token { .. } => f.write_str("Token(<redacted>)"),
        }
    }
}

/// The buyer's billing address, as card providers want it. `Debug` shows
/// the country only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingInput {
    pub address: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub state: String,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    pub phone: String,
}

impl std::fmt::Debug for BillingInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingInput")
            .field("country", &self.country)
            .finish_non_exhaustive()
    }
}

/// Sale (charge now) or authorise (capture later, Wake's `/authorize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardOperation {
    #[default]
    Sale,
    Authorize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardRequest {
    pub order_id: Uuid,
    pub card: CardInput,
    pub billing: BillingInput,
    #[serde(default)]
    pub operation: CardOperation,
}

/// What became of the card call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardVerdict {
    /// Charged (or authorised): the order will be paid.
    Approved,
    /// The issuer or the provider declined; the order is failed. Never retried.
    Declined,
    /// The provider could not be asked, or refused the request (configuration,
    /// 3-D Secure, input): nothing was charged; the order is failed.
    Refused,
    /// The provider's answer was lost and its status could not settle it: the
    /// card is never charged again, and a person must look.
    Indeterminate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardAnswer {
    pub verdict: CardVerdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `4111 •••• •••• 1111`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_masked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    /// True when this answer repeats an earlier call's outcome (the card was
    /// not sent to the provider again).
    #[serde(default)]
    pub replayed: bool,
}

/// The client side, for ingress.
#[derive(Clone)]
pub struct CardClient {
    http: reqwest::Client,
    url: String,
    token: SecretString,
}

impl std::fmt::Debug for CardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl CardClient {
    pub fn new(charge_creator_url: &str, token: SecretString, timeout: Duration) -> Result<CardClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(CardClient {
            http,
            url: format!("{}{CARD_PATH}", charge_creator_url.trim_end_matches('/')),
            token,
        })
    }

    /// `Err` when no answer could be had (the text never contains the card).
    /// After an `Err` the card may or may not have been charged: the order
    /// stays for charge-creator's record and the sweeper to settle, and the
    /// caller must not send the card again.
    pub async fn charge(&self, req: &CardRequest) -> Result<CardAnswer, String> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose_secret())
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "charge-creator did not answer in time".to_string()
                } else {
                    "charge-creator could not be reached".to_string()
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "charge-creator answered {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ));
        }
        resp.json::<CardAnswer>()
            .await
            .map_err(|_| "charge-creator's answer is unreadable".to_string())
    }
}
