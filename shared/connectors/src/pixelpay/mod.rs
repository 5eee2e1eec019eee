//! PixelPay (Honduras): card payments over the Direct API v2 (providers.md
//! §4, providers-2.md §2).
//!
//! Public API:
//! * [`PixelPayAccount`] `{ endpoint, key_id, secret_key }`: one merchant's
//!   credentials (`https://pixelpay.app` or a bank's white-label host);
//! * [`PixelPayClient::new`]`(timeout)`, then
//!   [`sale`](PixelPayClient::sale) / [`auth`](PixelPayClient::auth)
//!   `(account, &SaleRequest) -> CardOutcome`,
//!   [`capture`](PixelPayClient::capture)`(account, payment_uuid, amount) -> CardOutcome`,
//!   [`void`](PixelPayClient::void)`(account, payment_uuid, reason) -> VoidOutcome`,
//!   [`status`](PixelPayClient::status)`(account, payment_uuid) -> Option<TransactionStatus>`
//!   and [`TransactionStatus::settles`]`(account, order_id, amount)`.
//!
//! Each call is `POST {endpoint}/api/v2/transaction/{sale|auth|capture|void|status}`
//! with `x-auth-key: <Key ID>` and `x-auth-hash: <lowercase hex MD5 of the
//! Secret Key>`, JSON in and out (`{success, message, data, errors}`).
//! Money goes out as two-decimal strings made exactly from payhub's minor
//! units; PixelPay documents HNL, USD and NIO, and an account may declare
//! the currencies it settles ([`PixelPayAccount::currencies`]).
//!
//! What an answer means ([`CardOutcome`]):
//! * 200 with `response_approved: true` is an approval only when its
//!   `payment_hash` equals `md5(order_id|key_id|secret_key)` (compared in
//!   constant time) **and** `transaction_approved_amount` is exactly the
//!   amount asked; otherwise the call fails [`ConnectorError::Permanent`]
//!   naming the `payment_uuid`, for a person to settle (the money may have
//!   moved). A capture's answer cannot be tied to an order (the hash needs
//!   the order id), so only its amount is checked
//!   ([`CardApproval::hash_verified`] is false).
//! * 402 is `Declined` (never retry); 202 or `transaction_type: "router"`
//!   is `ThreeDSecureRequired` (payhub does not do 3-D Secure).
//! * 408, 5xx, a timeout or a connection lost after sending is
//!   `Indeterminate`: the sale may have happened. Ask [`PixelPayClient::status`]
//!   with the `payment_uuid` when the answer carried one; never send the
//!   sale again blindly (PixelPay has no idempotency key and no lookup by
//!   order id, so a repeat can charge twice).
//! * A connection that could not be opened (nothing was sent) and 429 are
//!   [`ConnectorError::Transient`]; 400, 401, 403, 404, 405, 406, 412, 418,
//!   422 (with its `field: message` list) and other 4xx are
//!   [`ConnectorError::Permanent`].
//!
//! Card data never reaches an error, a log or `Debug` output: requests are
//! never quoted, and PixelPay's own messages go through a scrubber that
//! removes the card number, CVV, holder, Secret Key and its hash, and any
//! run of 12 or more digits, before they are used.
//!
//! Not implemented, because PixelPay's public material does not say enough
//! (providers-2.md §8): the "secure signature" (HMAC-SHA3-512; its field name
//! is unknown), `void_signature` (its layout is unknown), 3-D Secure, and
//! refunds (no such API). The SDKs' `env`/`lang`/`from` body fields are not
//! sent.

mod transformers;

use std::collections::BTreeMap;
use std::time::Duration;

use md5::{Digest, Md5};
use payhub_core::card::CardSource;
use payhub_core::{Currency, Money};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::ConnectorError;
use crate::capabilities::{Capabilities, Flow, Operation};

/// A synchronous card payment: sale, or authorise then capture; void (which
/// is also the only refund, of the whole payment); status; saved-card
/// tokens. PixelPay documents HNL, USD and NIO; a bank's white-label account
/// may settle others, declared with the account.
pub const CAPABILITIES: Capabilities = Capabilities {
    provider: payhub_core::Provider::Pixelpay,
    flow: Flow::Card,
    operations: &[
        Operation::Sale,
        Operation::Authorize,
        Operation::Capture,
        Operation::Void,
        Operation::Refund,
        Operation::Status,
        Operation::CardToken,
    ],
    currencies: &[Currency::Hnl, Currency::Usd, Currency::Nio],
    account_currencies: true,
};

/// PixelPay's public sandbox merchant (sdk-php and the docs publish it).
pub const SANDBOX_KEY_ID: &str = "1234567890";
/// The sandbox merchant's Secret Key, public like its Key ID.
pub const SANDBOX_SECRET_KEY: &str = "@s4ndb0x-abcd-1234-n1l4-p1x3l";

/// One merchant's PixelPay credentials. `Debug` never shows the secret.
#[derive(Clone)]
pub struct PixelPayAccount {
    /// `https://pixelpay.app`, a bank's white-label host such as
    /// `https://ficohsa.pixelpay.app`, or a sandbox; no trailing path needed.
    pub endpoint: String,
    /// The numeric Key ID (`x-auth-key`).
    pub key_id: String,
    pub secret_key: SecretString,
    /// The currencies this account settles, when it declares its own (a
    /// bank's white-label host); `None`: PixelPay's documented HNL, USD, NIO.
    pub currencies: Option<Vec<Currency>>,
}

impl std::fmt::Debug for PixelPayAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelPayAccount")
            .field("endpoint", &self.endpoint)
            .field("key_id", &self.key_id)
            .field("secret_key", &"<redacted>")
            .field("currencies", &self.currencies)
            .finish()
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn md5_hex(text: &str) -> String {
    hex(&Md5::digest(text.as_bytes()))
}

impl PixelPayAccount {
    pub fn new(endpoint: impl Into<String>, key_id: impl Into<String>, secret_key: SecretString) -> PixelPayAccount {
        PixelPayAccount {
            endpoint: endpoint.into(),
            key_id: key_id.into(),
            secret_key,
            currencies: None,
        }
    }

    /// The account, settling `currencies` instead of PixelPay's documented
    /// ones (an empty list means the documented ones).
    pub fn with_currencies(mut self, currencies: Vec<Currency>) -> PixelPayAccount {
        self.currencies = (!currencies.is_empty()).then_some(currencies);
        self
    }

    /// PixelPay's public sandbox merchant at `endpoint`.
    pub fn public_sandbox(endpoint: impl Into<String>) -> PixelPayAccount {
        PixelPayAccount::new(endpoint, SANDBOX_KEY_ID, SecretString::from(SANDBOX_SECRET_KEY))
    }

    /// The `x-auth-hash` header: lowercase hex MD5 of the Secret Key.
    fn auth_hash(&self) -> String {
        md5_hex(self.secret_key.expose_secret())
    }

    /// What an approval for `order_id` must carry as `payment_hash`.
    fn payment_hash(&self, order_id: &str) -> String {
        md5_hex(&format!(
            "{order_id}|{}|{}",
            self.key_id,
            self.secret_key.expose_secret()
        ))
    }

    /// The URL of one API operation, or why the account cannot be used.
    /// Checked on every call (the fields are public), so a bad account is a
    /// [`ConnectorError::Permanent`] before anything is sent.
    fn url(&self, operation: &str) -> Result<String, ConnectorError> {
        let bad = |why: &str| ConnectorError::Permanent(format!("the PixelPay account is unusable: {why}"));
        if self.key_id.is_empty() || !self.key_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the Key ID must be PixelPay's numeric merchant id"));
        }
        if self.secret_key.expose_secret().trim().is_empty() {
            return Err(bad("the Secret Key is empty"));
        }
        let parsed = reqwest::Url::parse(self.endpoint.trim())
            .map_err(|_| bad("the endpoint is not a URL (e.g. https://pixelpay.app)"))?;
        if !matches!(parsed.scheme(), "https" | "http")
            || parsed.host_str().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(bad(
                "the endpoint must be an http(s) host without credentials, query or fragment",
            ));
        }
        Ok(format!(
            "{}/api/v2/transaction/{operation}",
            parsed.as_str().trim_end_matches('/')
        ))
    }
}

/// An item of `order_content` (providers.md §4.3). `total` is `price × qty`
/// without tax (checked before sending); `tax` is the item's tax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleItem {
    pub code: Option<String>,
    /// 3 to 60 characters.
    pub title: String,
    pub description: Option<String>,
    pub price: Money,
    /// At least 1.
    pub qty: u32,
    pub tax: Option<Money>,
    pub total: Money,
}

/// The buyer's billing address. `Debug` shows the country only.
#[derive(Clone, PartialEq, Eq)]
pub struct Billing {
    pub address: String,
    /// ISO 3166-1 alpha-2, e.g. `HN`.
    pub country: String,
    /// ISO 3166-2, e.g. `HN-FM`.
    pub state: String,
    pub city: String,
    pub zip: Option<String>,
    pub phone: String,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("country", &self.country)
            .finish_non_exhaustive()
    }
}

/// A `sale` or `auth`. `Debug` shows the order, the amounts and the masked
/// card; never the customer's contact data or the card's digits.
#[derive(Clone)]
pub struct SaleRequest {
    /// payhub's provider reference for the order: PixelPay's `order_id`,
    /// part of the `payment_hash` that proves an approval.
    pub order_id: String,
    /// `order_amount`: what the card is charged, tax and shipping included.
    pub amount: Money,
    pub tax_amount: Option<Money>,
    pub shipping_amount: Option<Money>,
    pub items: Vec<SaleItem>,
    /// `order_extras`: merchant-defined pairs PixelPay keeps with the sale.
    pub order_extras: BTreeMap<String, String>,
    pub note: Option<String>,
    /// 3 to 120 characters.
    pub customer_name: String,
    pub customer_email: String,
    pub billing: Billing,
    /// `order_callback`: where PixelPay may POST about this order.
    pub order_callback: Option<String>,
    /// The card (number, CVV, expiry sent as `YYMM`, holder) or a `T-...` token.
    pub card: CardSource,
}

impl std::fmt::Debug for SaleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaleRequest")
            .field("order_id", &self.order_id)
            .field("amount", &self.amount)
            .field("tax_amount", &self.tax_amount)
            .field("shipping_amount", &self.shipping_amount)
            .field("items", &self.items.len())
            .field("card", &self.card)
            .field("billing", &self.billing)
            .finish_non_exhaustive()
    }
}

/// An approval payhub checked: hash (for sale and auth) and amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardApproval {
    /// PixelPay's id of the payment: what capture, void and status take.
    pub payment_uuid: String,
    pub transaction_id: Option<String>,
    /// `transaction_auth`: the issuer's authorisation code.
    pub auth_code: Option<String>,
    /// `transaction_terminal`.
    pub terminal: Option<String>,
    /// `transaction_reference`.
    pub reference: Option<String>,
    /// Exactly what was asked (a different amount is an error, not an approval).
    pub approved_amount: Money,
    /// `sale`, `auth` or `capture`.
    pub transaction_type: String,
    /// `transaction_date transaction_time` as PixelPay wrote them (its time
    /// zone is not documented).
    pub time: Option<String>,
    pub response_code: Option<String>,
    pub response_reason: Option<String>,
    /// True when `payment_hash` was checked (sale and auth); false for a
    /// capture, whose answer does not name the order.
    pub hash_verified: bool,
}

/// What a sale, auth or capture came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardOutcome {
    Approved(CardApproval),
    /// 402, or a 200 with `response_approved: false`. Final: never retried.
    Declined {
        code: Option<String>,
        reason: String,
        payment_uuid: Option<String>,
    },
    /// 202 / `transaction_type: "router"`: the issuer wants 3-D Secure,
    /// which payhub does not do; nothing was charged.
    ThreeDSecureRequired {
        payment_uuid: Option<String>,
    },
    /// The call may or may not have charged (408, 5xx, a timeout, a lost
    /// connection). Ask `status` (with `payment_uuid` when known) before
    /// anything else; do not repeat the sale.
    Indeterminate {
        payment_uuid: Option<String>,
        detail: String,
    },
}

impl CardOutcome {
    /// `approved`, `declined`, `three_d_secure` or `indeterminate`, for logs
    /// and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CardOutcome::Approved(_) => "approved",
            CardOutcome::Declined { .. } => "declined",
            CardOutcome::ThreeDSecureRequired { .. } => "three_d_secure",
            CardOutcome::Indeterminate { .. } => "indeterminate",
        }
    }
}

/// What a void came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoidOutcome {
    Voided {
        payment_uuid: String,
    },
    /// Maybe voided (408, 5xx, timeout): ask `status`.
    Indeterminate {
        detail: String,
    },
}

/// A payment as `status` reports it. Amounts are in minor units (every
/// PixelPay currency has two decimals); `currency` is set when the answer
/// names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionStatus {
    pub payment_uuid: String,
    /// `sale`, `auth`, `capture`, `void`, ...
    pub transaction_type: Option<String>,
    /// `response_approved`.
    pub approved: bool,
    pub incomplete: bool,
    pub approved_amount_minor: Option<i64>,
    pub amount_minor: Option<i64>,
    pub currency: Option<Currency>,
    /// The order, when the answer names it.
    pub order_id: Option<String>,
    pub transaction_id: Option<String>,
    pub auth_code: Option<String>,
    pub terminal: Option<String>,
    pub reference: Option<String>,
    pub time: Option<String>,
    pub response_code: Option<String>,
    pub response_reason: Option<String>,
    pub payment_hash: Option<String>,
    /// True when the answer named its order and carried a `payment_hash`
    /// that matched it (a mismatch is an error, never a status).
    pub hash_verified: bool,
}

impl TransactionStatus {
    pub fn is_voided(&self) -> bool {
        self.transaction_type.as_deref() == Some("void")
    }

    /// Whether this payment charged exactly `amount` for `order_id` under
    /// `account`: `Ok(true)` when approved and not voided, with the matching
    /// `payment_hash` and amount; `Ok(false)` when not approved or voided;
    /// an error when it claims approval but does not prove it (no or another
    /// hash, another order, currency or amount), for a person to settle.
    ///
    /// An approved authorisation that was never captured (`transaction_type`
    /// `auth`) reserved the money but did not take it: it does not settle.
    pub fn settles(&self, account: &PixelPayAccount, order_id: &str, amount: Money) -> Result<bool, ConnectorError> {
        if self.is_authorisation_only() {
            return Ok(false);
        }
        self.proves(account, order_id, amount)
    }

    /// Whether this is an approved, uncaptured authorisation of exactly
    /// `amount` for `order_id` under `account` (the checks of
    /// [`TransactionStatus::settles`]).
    pub fn authorises(&self, account: &PixelPayAccount, order_id: &str, amount: Money) -> Result<bool, ConnectorError> {
        if !self.is_authorisation_only() {
            return Ok(false);
        }
        self.proves(account, order_id, amount)
    }

    /// The approval this status shows, once [`TransactionStatus::settles`]
    /// or [`TransactionStatus::authorises`] proved it for `amount`.
    pub fn into_approval(self, amount: Money) -> CardApproval {
        CardApproval {
            transaction_type: self.transaction_type.unwrap_or_else(|| "sale".into()),
            payment_uuid: self.payment_uuid,
            transaction_id: self.transaction_id,
            auth_code: self.auth_code,
            terminal: self.terminal,
            reference: self.reference,
            approved_amount: amount,
            time: self.time,
            response_code: self.response_code,
            response_reason: self.response_reason,
            hash_verified: self.hash_verified,
        }
    }

    /// An `auth` not (yet) captured or voided.
    pub fn is_authorisation_only(&self) -> bool {
        self.transaction_type.as_deref() == Some("auth")
    }

    fn proves(&self, account: &PixelPayAccount, order_id: &str, amount: Money) -> Result<bool, ConnectorError> {
        if !self.approved || self.is_voided() {
            return Ok(false);
        }
        let uuid = &self.payment_uuid;
        let refuse = |why: String| Err(ConnectorError::Permanent(format!("PixelPay payment {uuid} {why}")));
        if let Some(other) = &self.order_id
            && other != order_id
        {
            return refuse(format!("belongs to order {other}, not {order_id}"));
        }
        let hash_ok = self.payment_hash.as_deref().is_some_and(|h| {
            transformers::constant_time_eq(
                h.trim().to_ascii_lowercase().as_bytes(),
                account.payment_hash(order_id).as_bytes(),
            )
        });
        if !hash_ok {
            return refuse(format!(
                "does not carry the payment_hash of order {order_id} under this account"
            ));
        }
        if let Some(c) = self.currency
            && c != amount.currency()
        {
            return refuse(format!("is in {}, not {}", c.code(), amount.currency().code()));
        }
        if self.approved_amount_minor != Some(amount.minor()) {
            let got = self.approved_amount_minor.map_or_else(
                || "no amount".to_string(),
                |m| Money::from_minor(m, amount.currency()).to_string(),
            );
            return refuse(format!("approved {got}, not {amount}"));
        }
        Ok(true)
    }
}

/// Removes what must never reach an error or a log from text PixelPay sent
/// back: the Secret Key and its hash, the card's number, CVV and holder,
/// and any run of 12 or more digits (a card number however it is spaced).
/// The result is at most 300 characters, without control characters.
pub(crate) struct Scrubber {
    secrets: Vec<String>,
    cvv: Option<String>,
}

impl Scrubber {
    fn for_account(account: &PixelPayAccount) -> Scrubber {
        let secret = account.secret_key.expose_secret().to_string();
        let hash = account.auth_hash();
        Scrubber {
            secrets: vec![secret, hash.to_ascii_uppercase(), hash],
            cvv: None,
        }
    }

    /// Also the sale's card and the buyer's contact data (e-mail, phone,
    /// name and address are masked in logs too).
    fn with_sale(mut self, req: &SaleRequest) -> Scrubber {
        for text in [
            &req.customer_name,
            &req.customer_email,
            &req.billing.phone,
            &req.billing.address,
        ] {
            self.secrets.push(text.trim().to_string());
        }
        self.with_card(&req.card)
    }

    fn with_card(mut self, card: &CardSource) -> Scrubber {
        if let CardSource::Card(card) = card {
            self.secrets.push(card.number.expose().to_string());
            self.secrets.push(card.holder.as_str().to_string());
            self.secrets.push(card.holder.as_str().to_uppercase());
            self.cvv = Some(card.cvv.expose().to_string());
        }
        self
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter().filter(|s| s.chars().count() >= 3) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
        out = redact_digit_runs(&out, self.cvv.as_deref());
        let cleaned: String = out
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        cleaned.trim().to_string()
    }
}

/// Replaces runs of 12+ digits (single spaces or dashes allowed between
/// them) and standalone runs equal to `cvv`.
fn redact_digit_runs(text: &str, cvv: Option<&str>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if matches!(chars[j], ' ' | '-') && chars.get(j + 1).is_some_and(char::is_ascii_digit) {
                j += 1;
            } else {
                break;
            }
        }
        let run: String = chars[start..end].iter().collect();
        if digits >= 12 {
            out.push_str("[redacted]");
        } else if let Some(cvv) = cvv {
            // Each plain digit group of the run on its own.
            let mut group = String::new();
            for c in run.chars() {
                if c.is_ascii_digit() {
                    group.push(c);
                } else {
                    out.push_str(if group == cvv { "•••" } else { &group });
                    group.clear();
                    out.push(c);
                }
            }
            out.push_str(if group == cvv { "•••" } else { &group });
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

/// The Direct API client: one HTTP client (rustls, no redirects) for every
/// merchant; the account is given per call.
#[derive(Clone)]
pub struct PixelPayClient {
    http: reqwest::Client,
}

impl std::fmt::Debug for PixelPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelPayClient").finish_non_exhaustive()
    }
}

/// Why a call got no answer.
enum Failure {
    /// Nothing reached PixelPay (the connection could not be opened).
    NotSent(ConnectorError),
    /// The request may have been processed (timeout, connection lost).
    Unknown(String),
}

/// A transport error without the URL (the endpoint is not secret, but the
/// message stays short and free of anything a URL might carry).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request error"
    };
    let mut detail = e.to_string();
    if let Some(u) = e.url() {
        detail = detail.replace(u.as_str(), "<pixelpay>");
    }
    format!("{kind} ({detail})")
}

impl PixelPayClient {
    /// `timeout` bounds each whole call; connecting gets at most 5 s of it.
    pub fn new(timeout: Duration) -> Result<PixelPayClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payhub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(PixelPayClient { http })
    }

    /// Sends one operation and reads the whole answer; the call is timed
    /// and counted under `operation` ([`crate::metrics`]).
    async fn post<B: Serialize>(
        &self,
        operation: &'static str,
        account: &PixelPayAccount,
        url: &str,
        body: &B,
    ) -> Result<(u16, String), Failure> {
        let started = std::time::Instant::now();
        let (answer, outcome) = self.post_unmeasured(account, url, body).await;
        crate::metrics::observe("pixelpay", operation, outcome, started.elapsed());
        answer
    }

    async fn post_unmeasured<B: Serialize>(
        &self,
        account: &PixelPayAccount,
        url: &str,
        body: &B,
    ) -> (Result<(u16, String), Failure>, crate::metrics::Outcome) {
        use crate::metrics::Outcome;
        let sent = self
            .http
            .post(url)
            .header("x-auth-key", account.key_id.as_str())
            .header("x-auth-hash", account.auth_hash())
            .header("accept", "application/json")
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return (
                    Err(Failure::NotSent(ConnectorError::Permanent(format!(
                        "the PixelPay request could not be built, nothing was sent: {}",
                        describe(&e)
                    )))),
                    Outcome::Failed,
                );
            }
            Err(e) if e.is_connect() => {
                return (
                    Err(Failure::NotSent(ConnectorError::Transient(format!(
                        "calling PixelPay failed, nothing was sent: {}",
                        describe(&e)
                    )))),
                    Outcome::Unreachable,
                );
            }
            Err(e) => {
                return (
                    Err(Failure::Unknown(format!("PixelPay gave no answer: {}", describe(&e)))),
                    Outcome::of_error(&e),
                );
            }
        };
        let status = response.status().as_u16();
        match response.text().await {
            Ok(text) => (Ok((status, text)), Outcome::of_status(status)),
            Err(e) => (
                Err(Failure::Unknown(format!(
                    "reading PixelPay's {status} answer failed: {}",
                    describe(&e)
                ))),
                Outcome::of_error(&e),
            ),
        }
    }

    /// `sale`: charge the card now.
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "sale", order_id = %req.order_id))]
    pub async fn sale(&self, account: &PixelPayAccount, req: &SaleRequest) -> Result<CardOutcome, ConnectorError> {
        self.pay(account, req, "sale").await
    }

    /// `auth`: authorise now, [`PixelPayClient::capture`] later.
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "auth", order_id = %req.order_id))]
    pub async fn auth(&self, account: &PixelPayAccount, req: &SaleRequest) -> Result<CardOutcome, ConnectorError> {
        self.pay(account, req, "auth").await
    }

    async fn pay(
        &self,
        account: &PixelPayAccount,
        req: &SaleRequest,
        operation: &'static str,
    ) -> Result<CardOutcome, ConnectorError> {
        let url = account.url(operation)?;
        let body = transformers::SaleBody::from_request(req, account)?;
        let scrub = Scrubber::for_account(account).with_sale(req);
        let expected = transformers::Expected {
            order_id: Some(req.order_id.trim()),
            amount: req.amount,
        };
        let outcome = match self.post(operation, account, &url, &body).await {
            Ok((status, text)) => transformers::card_outcome(status, &text, &expected, account, &scrub),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(detail)) => Ok(CardOutcome::Indeterminate {
                payment_uuid: None,
                detail,
            }),
        };
        log_outcome(&outcome);
        outcome
    }

    /// `capture`: takes `amount` (at most what was authorised) of an `auth`.
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "capture", payment_uuid))]
    pub async fn capture(
        &self,
        account: &PixelPayAccount,
        payment_uuid: &str,
        amount: Money,
    ) -> Result<CardOutcome, ConnectorError> {
        tracing::Span::current().record("payment_uuid", payment_uuid);
        let url = account.url("capture")?;
        let payment_uuid = check_uuid(payment_uuid)?;
        if amount.minor() <= 0 {
            return Err(ConnectorError::Permanent(
                "the capture amount must be greater than 0".into(),
            ));
        }
        let body = transformers::CaptureBody {
            payment_uuid,
            transaction_approved_amount: transformers::amount_string(amount)?,
        };
        let scrub = Scrubber::for_account(account);
        let expected = transformers::Expected { order_id: None, amount };
        let outcome = match self.post("capture", account, &url, &body).await {
            Ok((status, text)) => transformers::card_outcome(status, &text, &expected, account, &scrub),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(detail)) => Ok(CardOutcome::Indeterminate {
                payment_uuid: Some(payment_uuid.to_string()),
                detail,
            }),
        };
        // A capture's answer may omit the uuid; it is the one asked about.
        let outcome = outcome.map(|o| match o {
            CardOutcome::Indeterminate {
                payment_uuid: None,
                detail,
            } => CardOutcome::Indeterminate {
                payment_uuid: Some(payment_uuid.to_string()),
                detail,
            },
            other => other,
        });
        log_outcome(&outcome);
        outcome
    }

    /// `void`: cancels a sale or an auth.
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "void", payment_uuid))]
    pub async fn void(
        &self,
        account: &PixelPayAccount,
        payment_uuid: &str,
        reason: &str,
    ) -> Result<VoidOutcome, ConnectorError> {
        tracing::Span::current().record("payment_uuid", payment_uuid);
        let url = account.url("void")?;
        let payment_uuid = check_uuid(payment_uuid)?;
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(250).collect();
        let body = transformers::VoidBody {
            payment_uuid,
            void_reason: &reason,
        };
        let scrub = Scrubber::for_account(account);
        let outcome = match self.post("void", account, &url, &body).await {
            Ok((status, text)) => transformers::void_outcome(status, &text, payment_uuid, &scrub),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(detail)) => Ok(VoidOutcome::Indeterminate { detail }),
        };
        match &outcome {
            Ok(VoidOutcome::Voided { .. }) => tracing::info!("PixelPay void done"),
            Ok(VoidOutcome::Indeterminate { detail }) => tracing::warn!(%detail, "PixelPay void indeterminate"),
            Err(e) => tracing::warn!(error = %e, "PixelPay void failed"),
        }
        outcome
    }

    /// `status`: the payment as PixelPay has it now; `None` when PixelPay
    /// knows no such payment under this account. Read-only, so every failure
    /// without an answer is [`ConnectorError::Transient`].
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "status", payment_uuid))]
    pub async fn status(
        &self,
        account: &PixelPayAccount,
        payment_uuid: &str,
    ) -> Result<Option<TransactionStatus>, ConnectorError> {
        tracing::Span::current().record("payment_uuid", payment_uuid);
        let url = account.url("status")?;
        let payment_uuid = check_uuid(payment_uuid)?;
        let scrub = Scrubber::for_account(account);
        match self
            .post("status", account, &url, &transformers::StatusBody { payment_uuid })
            .await
        {
            Ok((status, text)) => transformers::status_outcome(status, &text, payment_uuid, account, &scrub),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(detail)) => Err(ConnectorError::Transient(detail)),
        }
    }
}

impl PixelPayClient {
    /// The health probe: one cheap authenticated call (`status` of a
    /// payment that cannot exist). Any answer but 5xx/408/429 is `Ok`
    /// (PixelPay is up), a refusal of the credentials (401/403) is
    /// [`ConnectorError::Permanent`], no usable answer
    /// [`ConnectorError::Transient`] (down).
    #[tracing::instrument(skip_all, fields(provider = "pixelpay", operation = "probe"))]
    pub async fn probe(&self, account: &PixelPayAccount) -> Result<(), ConnectorError> {
        let url = account.url("status")?;
        let body = transformers::StatusBody {
            payment_uuid: "00000000-0000-0000-0000-000000000000",
        };
        match self.post("probe", account, &url, &body).await {
            Ok((status, _)) if status == 401 || status == 403 => Err(ConnectorError::Permanent(format!(
                "PixelPay refused the account's credentials ({status})"
            ))),
            Ok((status, _)) if matches!(status, 408 | 429 | 500..=599) => {
                Err(ConnectorError::Transient(format!("PixelPay answered {status}")))
            }
            Ok(_) => Ok(()),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(detail)) => Err(ConnectorError::Transient(detail)),
        }
    }
}

/// A `payment_uuid` from stored data or a webhook: trimmed, printable, bounded.
fn check_uuid(payment_uuid: &str) -> Result<&str, ConnectorError> {
    let t = payment_uuid.trim();
    if t.is_empty() || t.len() > 100 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConnectorError::Permanent(
            "the payment_uuid is empty or malformed".into(),
        ));
    }
    Ok(t)
}

fn log_outcome(outcome: &Result<CardOutcome, ConnectorError>) {
    match outcome {
        Ok(CardOutcome::Indeterminate { payment_uuid, detail }) => {
            tracing::warn!(payment_uuid = payment_uuid.as_deref(), %detail, "PixelPay outcome unknown: ask status")
        }
        Ok(o) => tracing::info!(outcome = o.kind(), "PixelPay answered"),
        Err(e) => tracing::warn!(error = %e, transient = e.is_transient(), "PixelPay call failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::card::Card;
    use time::macros::date;

    fn card() -> Card {
        Card::parse(
            "5555 5555 5555 4444",
            "987",
            "3012",
            "Pedro Perez",
            date!(2026 - 01 - 01),
        )
        .unwrap()
    }

    #[test]
    fn sandbox_credentials_hash_as_documented() {
        let a = PixelPayAccount::public_sandbox("https://pixelpay.dev");
        assert_eq!(a.auth_hash(), "36cdf8271723276cb6f94904f8bde4b6");
        assert_eq!(
            a.payment_hash("x"),
            md5_hex("x|1234567890|@s4ndb0x-abcd-1234-n1l4-p1x3l")
        );
    }

    #[test]
    fn urls_and_unusable_accounts() {
        let mut a = PixelPayAccount::public_sandbox("https://ficohsa.pixelpay.app/");
        assert_eq!(
            a.url("sale").unwrap(),
            "https://ficohsa.pixelpay.app/api/v2/transaction/sale"
        );
        a.endpoint = "http://127.0.0.1:8090".into();
        assert_eq!(
            a.url("status").unwrap(),
            "http://127.0.0.1:8090/api/v2/transaction/status"
        );
        for bad in [
            "pixelpay.app",
            "ftp://pixelpay.app",
            "https://u:p@pixelpay.app",
            "https://pixelpay.app?x=1",
            "",
        ] {
            a.endpoint = bad.into();
            assert!(matches!(a.url("sale"), Err(ConnectorError::Permanent(_))), "{bad}");
        }
        let a = PixelPayAccount::new("https://pixelpay.app", "12ab", SecretString::from("s"));
        assert!(a.url("sale").unwrap_err().to_string().contains("Key ID"));
        let a = PixelPayAccount::new("https://pixelpay.app", "12", SecretString::from(" "));
        assert!(a.url("sale").unwrap_err().to_string().contains("Secret Key"));
    }

    #[test]
    fn debug_never_shows_secrets_or_card_data() {
        let account = PixelPayAccount::public_sandbox("https://pixelpay.dev");
        let mut req = transformers_request();
        req.card = CardSource::Card(card());
        let outputs = [format!("{account:?}"), format!("{req:?}"), format!("{req:#?}")];
        for out in outputs {
            for secret in [
                SANDBOX_SECRET_KEY,
                "36cdf8271723276cb6f94904f8bde4b6",
                "5555555555554444",
                "987",
                "pedro@example.com",
                "Pedro",
                "+50499999999",
                "Palmira",
            ] {
                assert!(!out.contains(secret), "{secret} in {out}");
            }
        }
        assert!(format!("{req:?}").contains("5555 •••• •••• 4444"));
    }

    fn transformers_request() -> SaleRequest {
        SaleRequest {
            order_id: "ord-1".into(),
            amount: Money::from_minor(100, Currency::Hnl),
            tax_amount: None,
            shipping_amount: None,
            items: Vec::new(),
            order_extras: BTreeMap::new(),
            note: None,
            customer_name: "Pedro Perez".into(),
            customer_email: "pedro@example.com".into(),
            billing: Billing {
                address: "Col. Palmira".into(),
                country: "HN".into(),
                state: "HN-FM".into(),
                city: "Tegucigalpa".into(),
                zip: None,
                phone: "+50499999999".into(),
            },
            order_callback: None,
            card: CardSource::Card(card()),
        }
    }

    #[test]
    fn the_scrubber_removes_echoed_card_data_and_secrets() {
        let account = PixelPayAccount::public_sandbox("https://pixelpay.dev");
        let scrub = Scrubber::for_account(&account).with_card(&CardSource::Card(card()));
        let echo = format!(
            "cannot process {{\"card_number\":\"5555555555554444\",\"card_cvv\":\"987\",\"card_holder\":\"Pedro Perez\"}} \
             spaced 5555 5555 5555 4444, dashed 4111-1111-1111-1111, key {SANDBOX_SECRET_KEY}, \
             hash 36CDF8271723276CB6F94904F8BDE4B6 / 36cdf8271723276cb6f94904f8bde4b6\n order 9871 at 10:09:87"
        );
        let clean = scrub.clean(&echo);
        for leak in [
            "5555555555554444",
            "5555 5555",
            "4111",
            "\"987\"",
            "Pedro",
            SANDBOX_SECRET_KEY,
            "36cdf",
            "36CDF",
        ] {
            assert!(!clean.contains(leak), "{leak} in {clean}");
        }
        assert!(!clean.contains('\n'));
        // Other numbers survive; only the CVV's standalone group is hidden.
        assert!(clean.contains("order 9871 at 10:09:87"), "{clean}");
        assert!(scrub.clean(&"x".repeat(1000)).chars().count() <= 300);
        assert_eq!(scrub.clean("Transacción denegada"), "Transacción denegada");
        assert_eq!(redact_digit_runs("a 987-987 b", Some("987")), "a •••-••• b");
    }
}
