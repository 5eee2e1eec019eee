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

/// One authenticated JSON call to charge-creator's internal listener: the
/// transport every internal client shares.
#[derive(Clone)]
struct InternalClient {
    http: reqwest::Client,
    url: String,
    token: SecretString,
}

impl std::fmt::Debug for InternalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What came of an internal call that was answered: the answer, or the
/// status and body of a non-2xx reply.
type Answered<T> = Result<T, (u16, String)>;

impl InternalClient {
    fn new(
        charge_creator_url: &str,
        path: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(InternalClient {
            http,
            url: format!("{}{path}", charge_creator_url.trim_end_matches('/')),
            token,
        })
    }

    /// `Err` when no answer could be had; its text never contains the
    /// request (which may carry a card).
    async fn post<Req: Serialize, Ans: serde::de::DeserializeOwned>(&self, req: &Req) -> Result<Answered<Ans>, String> {
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
            return Ok(Err((status.as_u16(), text)));
        }
        resp.json::<Ans>()
            .await
            .map(Ok)
            .map_err(|_| "charge-creator's answer is unreadable".to_string())
    }
}

/// The first 300 characters of a refusal's body, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}

/// The client side, for webhook-verifier and reporter.
#[derive(Clone, Debug)]
pub struct ConfirmClient(InternalClient);

impl ConfirmClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<ConfirmClient, reqwest::Error> {
        InternalClient::new(charge_creator_url, CONFIRM_PATH, token, timeout).map(ConfirmClient)
    }

    /// `Err` when the answer could not be had (charge-creator or the
    /// provider unavailable): ask again later.
    pub async fn confirm(&self, req: &ConfirmRequest) -> Result<ConfirmAnswer, String> {
        self.0
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
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
#[derive(Clone, Debug)]
pub struct CardClient {
    card: InternalClient,
    capture: InternalClient,
}

/// Capture of an order's card authorisation (Wake's `/capture`):
/// `POST /internal/v1/capture`, answered with a [`CardAnswer`].
pub const CAPTURE_PATH: &str = "/internal/v1/capture";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    pub order_id: Uuid,
}

impl CardClient {
    pub fn new(charge_creator_url: &str, token: SecretString, timeout: Duration) -> Result<CardClient, reqwest::Error> {
        Ok(CardClient {
            card: InternalClient::new(charge_creator_url, CARD_PATH, token.clone(), timeout)?,
            capture: InternalClient::new(charge_creator_url, CAPTURE_PATH, token, timeout)?,
        })
    }

    /// Captures the order's authorisation, whole. `Err` when no answer could
    /// be had; asking again is safe (charge-creator asks PixelPay's own
    /// record before it sends a capture).
    pub async fn capture(&self, order_id: Uuid) -> Result<CardAnswer, String> {
        self.capture
            .post(&CaptureRequest { order_id })
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }

    /// `Err` when no answer could be had (the text never contains the card).
    /// After an `Err` the card may or may not have been charged: the order
    /// stays for charge-creator's record and the sweeper to settle, and the
    /// caller must not send the card again.
    pub async fn charge(&self, req: &CardRequest) -> Result<CardAnswer, String> {
        self.card
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }
}

/// The internal refund call: ingress (the order API) asks charge-creator,
/// the one service holding provider credentials, to give money of a paid
/// order back, under the account that took it. `POST /internal/v1/refund`.
pub const REFUND_PATH: &str = "/internal/v1/refund";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub order_id: Uuid,
    /// The shop's key: the same key for the same order is the same refund.
    pub idempotency_key: String,
    /// In the order's currency's minor units; `None` refunds what is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// The shop's reason, passed on to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a refund stands (`refunds.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Recorded; the provider's answer is not known yet (it was not
    /// reached, or its answer was lost). The same key again asks again.
    Requested,
    /// The provider accepted the refund and has not settled it yet.
    Processing,
    /// The provider gave the money back.
    Confirmed,
    /// The provider refused; nothing was given back. `detail` says why.
    Refused,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Requested => "requested",
            RefundStatus::Processing => "processing",
            RefundStatus::Confirmed => "confirmed",
            RefundStatus::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<RefundStatus> {
        [
            RefundStatus::Requested,
            RefundStatus::Processing,
            RefundStatus::Confirmed,
            RefundStatus::Refused,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A refund as charge-creator recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAnswer {
    pub refund_id: Uuid,
    pub idempotency_key: String,
    pub status: RefundStatus,
    pub amount: payhub_core::Money,
    /// What the buyer paid.
    pub paid: payhub_core::Money,
    /// Every confirmed refund of the order.
    pub refunded: payhub_core::Money,
    /// What may still be refunded (refunds refused do not count against it).
    pub remaining: payhub_core::Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_refund_id: Option<String>,
    /// The shop's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider's word: why it refused, or what is still open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: time::OffsetDateTime,
    /// True when this answer repeats an earlier call's outcome (the
    /// provider was not asked again).
    #[serde(default)]
    pub replayed: bool,
}

/// Why charge-creator did not record a refund. The body of its non-2xx
/// answers: `{"error", "code"?, "field"?}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// 404: no such order.
    #[error("{0}")]
    NotFound(String),
    /// 409: the order cannot be refunded so (not paid, more than what
    /// remains, the key already names another refund, one in progress).
    #[error("{0}")]
    Conflict(String),
    /// 422: one field cannot be taken for this order.
    #[error("{field}: {message}")]
    Invalid {
        field: String,
        code: String,
        message: String,
    },
    /// No outcome: charge-creator, its database or the provider could not
    /// be asked. The same request (same key) again is safe.
    #[error("{0}")]
    Unavailable(String),
}

/// The error body charge-creator answers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRefusal {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The client side, for ingress.
#[derive(Clone, Debug)]
pub struct RefundClient(InternalClient);

impl RefundClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<RefundClient, reqwest::Error> {
        InternalClient::new(charge_creator_url, REFUND_PATH, token, timeout).map(RefundClient)
    }

    pub async fn refund(&self, req: &RefundRequest) -> Result<RefundAnswer, RefundError> {
        let (status, text) = match self.0.post(req).await.map_err(RefundError::Unavailable)? {
            Ok(answer) => return Ok(answer),
            Err(refused) => refused,
        };
        let refusal: RefundRefusal = serde_json::from_str(&text).unwrap_or(RefundRefusal {
            error: excerpt(&text),
            code: None,
            field: None,
        });
        Err(match status {
            404 => RefundError::NotFound(refusal.error),
            409 => RefundError::Conflict(refusal.error),
            422 => RefundError::Invalid {
                field: refusal.field.unwrap_or_else(|| "amount".into()),
                code: refusal.code.unwrap_or_else(|| "refused".into()),
                message: refusal.error,
            },
            _ => RefundError::Unavailable(format!("charge-creator answered {status}: {}", refusal.error)),
        })
    }
}

/// charge-creator's listing call (issue 13 §1): the provider's own record
/// of an account's charges in a window, for reporter's reconciliation.
pub const LISTING_PATH: &str = "/internal/v1/listing";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRequest {
    /// The account as charges record it (`platform` or an account id).
    pub account: String,
    pub provider: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: time::OffsetDateTime,
}

/// One charge as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedCharge {
    /// The reference payhub gave (the order's id), when the provider says.
    pub reference: Option<String>,
    pub charge_id: String,
    /// ACTIVE, COMPLETED, EXPIRED, ...
    pub status: String,
    pub value_minor: i64,
    pub currency: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub paid_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingAnswer {
    pub charges: Vec<ListedCharge>,
}

/// The client side, for reporter.
#[derive(Clone, Debug)]
pub struct ListingClient(InternalClient);

impl ListingClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<ListingClient, reqwest::Error> {
        InternalClient::new(charge_creator_url, LISTING_PATH, token, timeout).map(ListingClient)
    }

    /// `Err` when no listing could be had (charge-creator or the provider
    /// unavailable, or the provider refused).
    pub async fn list(&self, req: &ListingRequest) -> Result<ListingAnswer, String> {
        self.0
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }
}

/// Pago Seguro's signed checkout form for one order (issue 11 §2): ingress
/// asks, charge-creator signs it with the shop's API key (which never
/// leaves charge-creator) and answers the fields to post.
/// `POST /internal/v1/pagoseguro/form`.
pub const PAGOSEGURO_FORM_PATH: &str = "/internal/v1/pagoseguro/form";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedirectFormRequest {
    pub order_id: Uuid,
    /// Where Pago Seguro sends the buyer back (webhook-verifier's return door).
    pub url_response: String,
}

/// The form's fields in the order they are posted (`hash` included).
#[derive(Clone, Serialize, Deserialize)]
pub struct RedirectForm {
    pub fields: Vec<(String, String)>,
}

impl std::fmt::Debug for RedirectForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buyer's name and e-mail are personal data: names only.
        f.debug_struct("RedirectForm")
            .field(
                "fields",
                &self.fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A Pago Seguro return as webhook-verifier's door received it, for
/// charge-creator to check and store. `POST /internal/v1/pagoseguro/return`.
pub const PAGOSEGURO_RETURN_PATH: &str = "/internal/v1/pagoseguro/return";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnRequest {
    /// The checkout token in the return URL: which order the buyer came from.
    pub token: String,
    /// Every parameter of the return, as received (query and form).
    pub params: Vec<(String, String)>,
}

/// What charge-creator made of a return. A return never pays an order (its
/// `sign` does not cover `status`, and Pago Seguro documents no status
/// query): `shown` is what the buyer is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnAnswer {
    /// `verified` or `rejected` (unverifiable: bad sign, another order or amount).
    pub verdict: String,
    /// For a verified return: `authorised` (22), `rejected` (17) or `pending`.
    pub status: Option<String>,
    /// Why a return was rejected (`bad_signature`, `other_order`, ...).
    pub reason: Option<String>,
    /// The checkout token of the order the return is about, when known.
    pub token: Option<String>,
}

/// The client side, for ingress (the form) and webhook-verifier (the return).
#[derive(Clone, Debug)]
pub struct RedirectClient {
    form: InternalClient,
    ret: InternalClient,
}

impl RedirectClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<RedirectClient, reqwest::Error> {
        Ok(RedirectClient {
            form: InternalClient::new(charge_creator_url, PAGOSEGURO_FORM_PATH, token.clone(), timeout)?,
            ret: InternalClient::new(charge_creator_url, PAGOSEGURO_RETURN_PATH, token, timeout)?,
        })
    }

    pub async fn form(&self, req: &RedirectFormRequest) -> Result<RedirectForm, String> {
        self.form
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }

    pub async fn report_return(&self, req: &ReturnRequest) -> Result<ReturnAnswer, String> {
        self.ret
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }
}

/// charge-creator's PixelPay status call (issue 13 §1): PixelPay's own
/// record of one payment (`POST /api/v2/transaction/status` by its
/// `payment_uuid`, the only lookup PixelPay has), asked under the account
/// payhub recorded with the order's charge or card attempt (the shop's
/// otherwise), for reporter's reconciliation. It only reads: nothing is
/// paid by it (a payment payhub missed is settled through [`CONFIRM_PATH`]).
pub const PIXELPAY_STATUS_PATH: &str = "/internal/v1/pixelpay/status";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelPayStatusRequest {
    pub order_id: Uuid,
    /// Must be the payment payhub recorded for the order.
    pub payment_uuid: String,
}

/// PixelPay's record of the payment, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelPayStatusAnswer {
    /// False when PixelPay knows no such payment under the account.
    pub known: bool,
    /// Approved, not voided, and not an uncaptured authorisation: money taken.
    pub paid: bool,
    pub approved: bool,
    pub voided: bool,
    /// An approved authorisation not (yet) captured.
    pub authorised_only: bool,
    /// `transaction_type` (sale, auth, capture, void, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_type: Option<String>,
    /// The approved amount when approved, else the transaction's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// PixelPay's order id of the payment, when the answer names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixelpay_order_id: Option<String>,
    /// The account asked (`platform` or an account id).
    pub account: String,
}

/// The client side, for reporter.
#[derive(Clone, Debug)]
pub struct PixelPayStatusClient(InternalClient);

impl PixelPayStatusClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<PixelPayStatusClient, reqwest::Error> {
        InternalClient::new(charge_creator_url, PIXELPAY_STATUS_PATH, token, timeout).map(PixelPayStatusClient)
    }

    /// `Err` when PixelPay's record could not be had (charge-creator or
    /// PixelPay unavailable, or the request refused).
    pub async fn status(&self, req: &PixelPayStatusRequest) -> Result<PixelPayStatusAnswer, String> {
        self.0
            .post(req)
            .await?
            .map_err(|(status, text)| format!("charge-creator answered {status}: {}", excerpt(&text)))
    }
}
