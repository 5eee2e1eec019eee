//! PixelPay wire types (providers.md §4.2, providers-2.md §2) and their
//! conversion to and from payhub's domain. Nothing here does I/O.

use std::collections::BTreeMap;

use payhub_core::card::CardSource;
use payhub_core::{Currency, Money};
use serde::Serialize;
use serde_json::Value;

use super::{
    CardApproval, CardOutcome, PixelPayAccount, SaleItem, SaleRequest, Scrubber, TransactionStatus, VoidOutcome,
};
use crate::ConnectorError;

// --- Money -----------------------------------------------------------------

/// PixelPay's currency code for `c`, when `account` settles it: PixelPay
/// documents HNL, USD and NIO; a bank's white-label account may declare
/// others ([`CAPABILITIES`](super::CAPABILITIES)).
pub(super) fn currency_code(c: Currency, account: &PixelPayAccount) -> Result<&'static str, ConnectorError> {
    super::CAPABILITIES
        .require_currency(c, account.currencies.as_deref(), "order_currency")
        .map(|()| c.code())
        .map_err(|e| ConnectorError::Permanent(format!("PixelPay: {e}")))
}

/// `"1.00"`: an amount as PixelPay's order fields want it, exactly from the
/// minor units (every PixelPay currency has two decimals).
pub(super) fn amount_string(m: Money) -> Result<String, ConnectorError> {
    if m.currency().exponent() != 2 {
        return Err(ConnectorError::Permanent(format!(
            "{} does not have two decimals",
            m.currency().code()
        )));
    }
    Ok(m.to_major_string())
}

/// An item amount as a JSON number (the item fields are documented as
/// doubles). It is parsed from the exact two-decimal text, so it is the
/// double nearest that decimal and prints as its shortest form (`7.5`,
/// `99.99`), which reads back to the same minor units.
fn amount_number(m: Money) -> Result<Value, ConnectorError> {
    let text = amount_string(m)?;
    serde_json::from_str::<serde_json::Number>(&text)
        .map(Value::Number)
        .map_err(|_| ConnectorError::Permanent(format!("{m} cannot be written as a JSON number")))
}

/// Reads an amount PixelPay sent (a decimal string or a JSON number) exactly.
pub(super) fn parse_amount(v: &Value, currency: Currency) -> Option<Money> {
    match v {
        Value::Null => None,
        other => Money::from_json(other, currency).ok(),
    }
}

// --- Requests --------------------------------------------------------------

/// One element of `order_content`.
#[derive(Serialize)]
struct ItemBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    price: Value,
    qty: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tax: Option<Value>,
    total: Value,
}

/// The body of `sale` and `auth`; null fields are omitted, as the SDKs do.
/// No `Debug`: it holds the card number and CVV.
#[derive(Serialize)]
pub(super) struct SaleBody<'a> {
    order_id: &'a str,
    order_currency: &'static str,
    order_amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_tax_amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_shipping_amount: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    order_content: Vec<ItemBody<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    order_extras: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_callback: Option<&'a str>,
    customer_name: &'a str,
    customer_email: &'a str,
    billing_address: &'a str,
    billing_country: &'a str,
    billing_state: &'a str,
    billing_city: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    billing_zip: Option<&'a str>,
    billing_phone: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_cvv: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_expire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_holder: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_token: Option<&'a str>,
}

fn refuse(reason: String) -> ConnectorError {
    ConnectorError::Permanent(format!("the PixelPay request is invalid: {reason}"))
}

fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ConnectorError> {
    let n = value.trim().chars().count();
    if n < min || n > max || value.chars().any(char::is_control) {
        return Err(refuse(format!(
            "{field} must have {min} to {max} characters and no control characters"
        )));
    }
    Ok(())
}

fn same_currency(field: &str, m: Money, currency: Currency) -> Result<(), ConnectorError> {
    if m.currency() != currency {
        return Err(refuse(format!(
            "{field} is in {} but the order is in {}",
            m.currency().code(),
            currency.code()
        )));
    }
    Ok(())
}

fn item_body(i: usize, item: &SaleItem, currency: Currency) -> Result<ItemBody<'_>, ConnectorError> {
    let field = |name: &str| format!("items[{i}].{name}");
    check_text(&field("title"), &item.title, 3, 60)?;
    if let Some(code) = &item.code {
        check_text(&field("code"), code, 1, 60)?;
    }
    if let Some(d) = &item.description {
        check_text(&field("description"), d, 0, 250)?;
    }
    if item.qty == 0 {
        return Err(refuse(format!("{} must be at least 1", field("qty"))));
    }
    same_currency(&field("price"), item.price, currency)?;
    same_currency(&field("total"), item.total, currency)?;
    if item.price.minor() < 0 {
        return Err(refuse(format!("{} must not be negative", field("price"))));
    }
    // "total: total without tax = price × qty" (providers.md §4.3). PixelPay's
    // own example breaks it (99.99 × 1 = 9.99); payhub never sends that.
    let expected = item.price.checked_mul(i64::from(item.qty));
    if expected != Some(item.total) {
        return Err(refuse(format!(
            "{} is {} but price × qty is {}",
            field("total"),
            item.total.to_major_string(),
            expected.map_or_else(|| "too large".to_string(), |m| m.to_major_string())
        )));
    }
    let tax = match item.tax {
        Some(t) => {
            same_currency(&field("tax"), t, currency)?;
            if t.minor() < 0 {
                return Err(refuse(format!("{} must not be negative", field("tax"))));
            }
            Some(amount_number(t)?)
        }
        None => None,
    };
    Ok(ItemBody {
        code: item.code.as_deref(),
        title: item.title.trim(),
        description: item.description.as_deref(),
        price: amount_number(item.price)?,
        qty: item.qty,
        tax,
        total: amount_number(item.total)?,
    })
}

impl<'a> SaleBody<'a> {
    /// Checks what payhub can check before anything is sent (nothing is
    /// charged by a request that never leaves) and builds the body.
    pub(super) fn from_request(
        req: &'a SaleRequest,
        account: &PixelPayAccount,
    ) -> Result<SaleBody<'a>, ConnectorError> {
        let currency = req.amount.currency();
        let order_currency = currency_code(currency, account)?;
        check_text("order_id", &req.order_id, 1, 100)?;
        if req.amount.minor() <= 0 {
            return Err(refuse("the amount must be greater than 0".into()));
        }
        let optional = |field: &str, m: Option<Money>| -> Result<Option<String>, ConnectorError> {
            match m {
                None => Ok(None),
                Some(m) => {
                    same_currency(field, m, currency)?;
                    if m.minor() < 0 {
                        return Err(refuse(format!("{field} must not be negative")));
                    }
                    amount_string(m).map(Some)
                }
            }
        };
        let order_tax_amount = optional("tax_amount", req.tax_amount)?;
        let order_shipping_amount = optional("shipping_amount", req.shipping_amount)?;
        let order_content = req
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| item_body(i, item, currency))
            .collect::<Result<Vec<_>, _>>()?;
        for (k, v) in &req.order_extras {
            check_text("an order_extras key", k, 1, 100)?;
            check_text("an order_extras value", v, 0, 500)?;
        }
        if let Some(note) = &req.note {
            check_text("note", note, 0, 500)?;
        }
        if let Some(url) = &req.order_callback {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(refuse("order_callback must be an absolute http(s) URL".into()));
            }
        }
        check_text("customer_name", &req.customer_name, 3, 120)?;
        if !req
            .customer_email
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
        {
            return Err(refuse("customer_email is not an e-mail address".into()));
        }
        let b = &req.billing;
        check_text("billing.address", &b.address, 1, 250)?;
        check_text("billing.city", &b.city, 1, 120)?;
        check_text("billing.state", &b.state, 1, 10)?;
        check_text("billing.phone", &b.phone, 1, 30)?;
        if b.country.len() != 2 || !b.country.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(refuse(
                "billing.country must be an ISO 3166-1 alpha-2 code such as HN".into(),
            ));
        }
        if let Some(zip) = &b.zip {
            check_text("billing.zip", zip, 1, 20)?;
        }
        let mut body = SaleBody {
            order_id: req.order_id.trim(),
            order_currency,
            order_amount: amount_string(req.amount)?,
            order_tax_amount,
            order_shipping_amount,
            order_content,
            order_extras: &req.order_extras,
            order_note: req.note.as_deref(),
            order_callback: req.order_callback.as_deref(),
            customer_name: req.customer_name.trim(),
            customer_email: req.customer_email.trim(),
            billing_address: b.address.trim(),
            billing_country: &b.country,
            billing_state: b.state.trim(),
            billing_city: b.city.trim(),
            billing_zip: b.zip.as_deref(),
            billing_phone: b.phone.trim(),
            card_number: None,
            card_cvv: None,
            card_expire: None,
            card_holder: None,
            card_token: None,
        };
        match &req.card {
            CardSource::Card(card) => {
                body.card_number = Some(card.number.expose());
                body.card_cvv = Some(card.cvv.expose());
                body.card_expire = Some(card.expiry.yymm());
                body.card_holder = Some(card.holder.as_str());
            }
            CardSource::Token(token) => body.card_token = Some(token.as_str()),
        }
        Ok(body)
    }
}

/// `capture {payment_uuid, transaction_approved_amount}`.
#[derive(Debug, Serialize)]
pub(super) struct CaptureBody<'a> {
    pub payment_uuid: &'a str,
    pub transaction_approved_amount: String,
}

/// `void {payment_uuid, void_reason}`. `void_signature` is not sent: its
/// layout is not public (providers-2.md §2.2).
#[derive(Debug, Serialize)]
pub(super) struct VoidBody<'a> {
    pub payment_uuid: &'a str,
    pub void_reason: &'a str,
}

/// `status {payment_uuid}`.
#[derive(Debug, Serialize)]
pub(super) struct StatusBody<'a> {
    pub payment_uuid: &'a str,
}

// --- Answers ---------------------------------------------------------------

/// `{success, message, data, errors}`. Anything not JSON reads as empty.
#[derive(Debug, Default)]
pub(super) struct Envelope {
    /// Whether the body was a JSON object at all.
    pub json: bool,
    pub message: Option<String>,
    pub data: Value,
    pub errors: Value,
}

impl Envelope {
    pub(super) fn parse(text: &str) -> Envelope {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(mut obj)) => Envelope {
                json: true,
                message: obj.get("message").and_then(Value::as_str).map(str::to_string),
                data: obj.remove("data").unwrap_or(Value::Null),
                errors: obj.remove("errors").unwrap_or(Value::Null),
            },
            _ => Envelope::default(),
        }
    }

    /// A string (or number) field of `data`.
    fn text(&self, field: &str) -> Option<String> {
        match self.data.get(field)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn flag(&self, field: &str) -> Option<bool> {
        self.data.get(field).and_then(Value::as_bool)
    }

    pub(super) fn payment_uuid(&self) -> Option<String> {
        self.text("payment_uuid")
    }

    /// The message, scrubbed: PixelPay's text is not ours, and a server may
    /// echo what it was sent.
    fn reason(&self, scrub: &Scrubber, fallback: &str) -> String {
        self.message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| self.data.get("response_reason").and_then(Value::as_str))
            .map_or_else(|| fallback.to_string(), |m| scrub.clean(m))
    }

    /// 422's `errors {field: [message]}` as `field: message; ...`, scrubbed.
    fn field_errors(&self, scrub: &Scrubber) -> Option<String> {
        let obj = self.errors.as_object().filter(|o| !o.is_empty())?;
        let mut parts = Vec::new();
        for (field, messages) in obj {
            let texts: Vec<String> = match messages {
                Value::Array(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            let joined = if texts.is_empty() {
                "invalid".to_string()
            } else {
                texts.join(", ")
            };
            parts.push(format!("{}: {}", scrub.clean(field), scrub.clean(&joined)));
        }
        Some(parts.join("; "))
    }
}

/// The HTTP status classes PixelPay documents (providers-2.md §2.1).
pub(super) enum Class {
    Success,
    /// 202: a 3-D Secure payload.
    Payload,
    /// 402.
    Declined,
    /// 408, 5xx (and any unexpected 2xx): the call may have been done.
    Unknown,
    /// 429: not done; try again later.
    RateLimited,
    /// 400, 401, 403, 404, 405, 406, 412, 418, 422 and any other 3xx/4xx.
    Refused,
}

pub(super) fn classify(status: u16) -> Class {
    match status {
        200 => Class::Success,
        202 => Class::Payload,
        402 => Class::Declined,
        429 => Class::RateLimited,
        408 => Class::Unknown,
        s if (200..300).contains(&s) || s >= 500 => Class::Unknown,
        _ => Class::Refused,
    }
}

/// The error for a refused call: the status, PixelPay's message and, for a
/// 422, its field errors. Never the request.
pub(super) fn refusal(status: u16, env: &Envelope, scrub: &Scrubber) -> ConnectorError {
    let what = match status {
        400 => "error",
        401 | 403 => "no access (check the Key ID and Secret Key)",
        404..=406 => "not found",
        412 | 418 => "precondition failed",
        422 => "input error",
        300..=399 => "a redirect (the endpoint is misconfigured; redirects are not followed)",
        _ => "refused",
    };
    let mut msg = format!(
        "PixelPay answered {status}, {what}: {}",
        env.reason(scrub, "no message")
    );
    if let Some(fields) = env.field_errors(scrub) {
        msg.push_str(" (");
        msg.push_str(&fields);
        msg.push(')');
    }
    ConnectorError::Permanent(msg)
}

/// Equal in constant time (for equal lengths): a hash mismatch must not
/// tell how many characters matched.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks `payment_hash` against `md5(order_id|key_id|secret_key)`.
fn hash_matches(account: &PixelPayAccount, order_id: &str, given: &str) -> bool {
    let expected = account.payment_hash(order_id);
    constant_time_eq(given.trim().to_ascii_lowercase().as_bytes(), expected.as_bytes())
}

/// What payhub asked for, to hold an approval against.
pub(super) struct Expected<'a> {
    /// The order a sale/auth was for; `None` for a capture, whose answer
    /// payhub cannot tie to an order (the hash needs the order id).
    pub order_id: Option<&'a str>,
    pub amount: Money,
}

/// A 200 (or 202) of sale, auth or capture.
pub(super) fn card_success(
    status: u16,
    env: &Envelope,
    expected: &Expected<'_>,
    account: &PixelPayAccount,
    scrub: &Scrubber,
) -> Result<CardOutcome, ConnectorError> {
    let uuid = env.payment_uuid();
    let transaction_type = env.text("transaction_type");
    if status == 202 || transaction_type.as_deref() == Some("router") {
        return Ok(CardOutcome::ThreeDSecureRequired { payment_uuid: uuid });
    }
    match env.flag("response_approved") {
        Some(true) => {}
        Some(false) => {
            return Ok(CardOutcome::Declined {
                code: env.text("response_code"),
                reason: env
                    .data
                    .get("response_reason")
                    .and_then(Value::as_str)
                    .map_or_else(|| "declined".to_string(), |r| scrub.clean(r)),
                payment_uuid: uuid,
            });
        }
        None => {
            return Ok(CardOutcome::Indeterminate {
                payment_uuid: uuid,
                detail: format!("PixelPay answered {status} without response_approved"),
            });
        }
    }
    let Some(payment_uuid) = uuid else {
        return Err(ConnectorError::Permanent(
            "PixelPay approved without a payment_uuid: the charge cannot be checked or voided; \
             settle it in the PixelPay dashboard"
                .into(),
        ));
    };
    let hash_verified = match expected.order_id {
        Some(order_id) => {
            let given = env.text("payment_hash").unwrap_or_default();
            if !hash_matches(account, order_id, &given) {
                return Err(ConnectorError::Permanent(format!(
                    "PixelPay's approval of payment {payment_uuid} does not carry the payment_hash of order \
                     {order_id} under this account's Secret Key: not trusted (check the account, then the \
                     payment in the PixelPay dashboard)"
                )));
            }
            true
        }
        None => false,
    };
    let currency = expected.amount.currency();
    let approved_amount = env
        .data
        .get("transaction_approved_amount")
        .and_then(|v| parse_amount(v, currency));
    let Some(approved_amount) = approved_amount else {
        return Err(ConnectorError::Permanent(format!(
            "PixelPay approved payment {payment_uuid} without a readable transaction_approved_amount"
        )));
    };
    if approved_amount != expected.amount {
        return Err(ConnectorError::Permanent(format!(
            "PixelPay approved {approved_amount} for payment {payment_uuid} but {} was asked: \
             void it or settle it by hand",
            expected.amount
        )));
    }
    Ok(CardOutcome::Approved(CardApproval {
        payment_uuid,
        transaction_id: env.text("transaction_id"),
        auth_code: env.text("transaction_auth"),
        terminal: env.text("transaction_terminal"),
        reference: env.text("transaction_reference"),
        approved_amount,
        transaction_type: transaction_type.unwrap_or_default(),
        time: time_of(env),
        response_code: env.text("response_code"),
        response_reason: env.text("response_reason").map(|r| scrub.clean(&r)),
        hash_verified,
    }))
}

/// `transaction_date transaction_time`, as PixelPay wrote them.
fn time_of(env: &Envelope) -> Option<String> {
    match (env.text("transaction_date"), env.text("transaction_time")) {
        (Some(d), Some(t)) => Some(format!("{d} {t}")),
        (d, t) => d.or(t),
    }
}

/// Maps any answer of sale, auth or capture.
pub(super) fn card_outcome(
    status: u16,
    text: &str,
    expected: &Expected<'_>,
    account: &PixelPayAccount,
    scrub: &Scrubber,
) -> Result<CardOutcome, ConnectorError> {
    let env = Envelope::parse(text);
    match classify(status) {
        Class::Success | Class::Payload => card_success(status, &env, expected, account, scrub),
        Class::Declined => Ok(CardOutcome::Declined {
            code: env.text("response_code"),
            reason: env.reason(scrub, "declined"),
            payment_uuid: env.payment_uuid(),
        }),
        Class::Unknown => Ok(CardOutcome::Indeterminate {
            payment_uuid: env.payment_uuid(),
            detail: format!("PixelPay answered {status}: {}", env.reason(scrub, "no message")),
        }),
        Class::RateLimited => Err(ConnectorError::Transient(format!(
            "PixelPay answered 429: {}",
            env.reason(scrub, "too many requests")
        ))),
        Class::Refused => Err(refusal(status, &env, scrub)),
    }
}

/// Maps any answer of void.
pub(super) fn void_outcome(
    status: u16,
    text: &str,
    payment_uuid: &str,
    scrub: &Scrubber,
) -> Result<VoidOutcome, ConnectorError> {
    let env = Envelope::parse(text);
    match classify(status) {
        Class::Success if env.flag("response_approved") != Some(false) => Ok(VoidOutcome::Voided {
            payment_uuid: env.payment_uuid().unwrap_or_else(|| payment_uuid.to_string()),
        }),
        Class::Success | Class::Declined | Class::Payload => Err(ConnectorError::Permanent(format!(
            "PixelPay did not void payment {payment_uuid} ({status}): {}",
            env.reason(scrub, "no message")
        ))),
        Class::Unknown => Ok(VoidOutcome::Indeterminate {
            detail: format!("PixelPay answered {status}: {}", env.reason(scrub, "no message")),
        }),
        Class::RateLimited => Err(ConnectorError::Transient(format!(
            "PixelPay answered 429: {}",
            env.reason(scrub, "too many requests")
        ))),
        Class::Refused => Err(refusal(status, &env, scrub)),
    }
}

/// Maps any answer of status: `None` for PixelPay's own 404 (no such
/// payment under this account).
pub(super) fn status_outcome(
    status: u16,
    text: &str,
    payment_uuid: &str,
    account: &PixelPayAccount,
    scrub: &Scrubber,
) -> Result<Option<TransactionStatus>, ConnectorError> {
    let env = Envelope::parse(text);
    match classify(status) {
        Class::Success => parse_status(&env, payment_uuid, account, scrub).map(Some),
        // Only PixelPay's envelope means "no such payment"; a bare 404 from a
        // proxy or a wrong path must not read as "never charged".
        _ if status == 404 && env.json => Ok(None),
        Class::Unknown | Class::RateLimited => Err(ConnectorError::Transient(format!(
            "PixelPay answered {status} to status: {}",
            env.reason(scrub, "no message")
        ))),
        Class::Payload | Class::Declined | Class::Refused => Err(refusal(status, &env, scrub)),
    }
}

fn parse_status(
    env: &Envelope,
    payment_uuid: &str,
    account: &PixelPayAccount,
    scrub: &Scrubber,
) -> Result<TransactionStatus, ConnectorError> {
    if !env.data.is_object() {
        return Err(ConnectorError::Transient(
            "PixelPay's status answer has no transaction".into(),
        ));
    }
    let answered_uuid = env.payment_uuid();
    if let Some(other) = &answered_uuid
        && other != payment_uuid
    {
        return Err(ConnectorError::Permanent(format!(
            "PixelPay answered status of {payment_uuid} with payment {other}"
        )));
    }
    let currency = env.text("order_currency").and_then(|c| Currency::parse(&c));
    // Every PixelPay currency has two decimals, so the minor units do not
    // depend on which one the answer omitted.
    let minor = |field: &str| {
        env.data
            .get(field)
            .and_then(|v| parse_amount(v, currency.unwrap_or(Currency::Usd)))
            .map(Money::minor)
    };
    let order_id = env.text("order_id");
    let payment_hash = env.text("payment_hash");
    let hash_verified = match (&order_id, &payment_hash) {
        (Some(order_id), Some(hash)) => {
            if !hash_matches(account, order_id, hash) {
                return Err(ConnectorError::Permanent(format!(
                    "PixelPay's status of payment {payment_uuid} carries a payment_hash that does not match \
                     its order under this account's Secret Key: not trusted"
                )));
            }
            true
        }
        _ => false,
    };
    Ok(TransactionStatus {
        payment_uuid: payment_uuid.to_string(),
        transaction_type: env.text("transaction_type"),
        approved: env.flag("response_approved").unwrap_or(false),
        incomplete: env.flag("response_incomplete").unwrap_or(false),
        approved_amount_minor: minor("transaction_approved_amount"),
        amount_minor: minor("transaction_amount"),
        currency,
        order_id,
        transaction_id: env.text("transaction_id"),
        auth_code: env.text("transaction_auth"),
        terminal: env.text("transaction_terminal"),
        reference: env.text("transaction_reference"),
        time: time_of(env),
        response_code: env.text("response_code"),
        response_reason: env.text("response_reason").map(|r| scrub.clean(&r)),
        payment_hash,
        hash_verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixelpay::Billing;
    use payhub_core::card::{Card, CardToken};
    use secrecy::SecretString;
    use serde_json::json;
    use time::macros::date;

    fn hnl(minor: i64) -> Money {
        Money::from_minor(minor, Currency::Hnl)
    }

    fn account() -> PixelPayAccount {
        PixelPayAccount {
            endpoint: "https://pixelpay.app".into(),
            key_id: "1234567890".into(),
            secret_key: SecretString::from("@s4ndb0x-abcd-1234-n1l4-p1x3l"),
            currencies: None,
        }
    }

    fn card() -> CardSource {
        CardSource::Card(Card::parse("4111111111111111", "300", "12/30", "Pedro Perez", date!(2026 - 01 - 01)).unwrap())
    }

    pub(crate) fn request() -> SaleRequest {
        SaleRequest {
            order_id: "ord-1".into(),
            amount: hnl(24998),
            tax_amount: Some(hnl(1500)),
            shipping_amount: None,
            items: vec![SaleItem {
                code: Some("0000123".into()),
                title: "Camiseta Roja".into(),
                description: Some("Talla: XS".into()),
                price: hnl(9999),
                qty: 2,
                tax: Some(hnl(750)),
                total: hnl(19998),
            }],
            order_extras: BTreeMap::from([("shop".to_string(), "s-1".to_string())]),
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
            order_callback: Some("https://payhub.example/webhooks/pixelpay/tok".into()),
            card: card(),
        }
    }

    fn scrub() -> Scrubber {
        Scrubber::for_account(&account())
    }

    #[test]
    fn money_is_two_decimal_strings_exactly() {
        assert_eq!(amount_string(hnl(100)).unwrap(), "1.00");
        assert_eq!(amount_string(hnl(5)).unwrap(), "0.05");
        assert_eq!(amount_string(hnl(123456)).unwrap(), "1234.56");
        assert_eq!(
            amount_string(Money::from_minor(999_999_999, Currency::Usd)).unwrap(),
            "9999999.99"
        );
        assert_eq!(amount_string(Money::from_minor(1, Currency::Nio)).unwrap(), "0.01");
        assert_eq!(amount_string(Money::from_minor(100, Currency::Brl)).unwrap(), "1.00");
        // Only an account that declares BRL settles it.
        assert!(
            currency_code(Currency::Brl, &account())
                .unwrap_err()
                .to_string()
                .contains("settles HNL, USD, NIO for this shop, not BRL")
        );
        let mut brazilian = account();
        brazilian.currencies = Some(vec![Currency::Brl]);
        assert_eq!(currency_code(Currency::Brl, &brazilian).unwrap(), "BRL");
        assert!(currency_code(Currency::Hnl, &brazilian).is_err());
        assert_eq!(amount_number(hnl(9999)).unwrap().to_string(), "99.99");
        assert_eq!(amount_number(hnl(100)).unwrap().to_string(), "1.0");
        for minor in [1, 10, 99, 12345, 999_999_999] {
            let v = amount_number(hnl(minor)).unwrap();
            assert_eq!(parse_amount(&v, Currency::Hnl), Some(hnl(minor)), "{minor}");
        }
    }

    #[test]
    fn amounts_read_back_exactly() {
        for (v, minor) in [
            (json!("1.00"), 100),
            (json!(1.0), 100),
            (json!(1), 100),
            (json!("99.99"), 9999),
            (json!(99.99), 9999),
            (json!("0.1"), 10),
            (json!(1234567.89), 123456789),
        ] {
            assert_eq!(parse_amount(&v, Currency::Hnl).map(Money::minor), Some(minor), "{v}");
        }
        for bad in [json!("1.001"), json!("1,00"), json!(null), json!(true), json!("")] {
            assert_eq!(parse_amount(&bad, Currency::Hnl), None, "{bad}");
        }
    }

    #[test]
    fn the_sale_body_has_pixelpays_fields() {
        let req = request();
        let body = serde_json::to_value(SaleBody::from_request(&req, &account()).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "order_id": "ord-1",
                "order_currency": "HNL",
                "order_amount": "249.98",
                "order_tax_amount": "15.00",
                "order_content": [{
                    "code": "0000123", "title": "Camiseta Roja", "description": "Talla: XS",
                    "price": 99.99, "qty": 2, "tax": 7.50, "total": 199.98
                }],
                "order_extras": {"shop": "s-1"},
                "order_callback": "https://payhub.example/webhooks/pixelpay/tok",
                "customer_name": "Pedro Perez",
                "customer_email": "pedro@example.com",
                "billing_address": "Col. Palmira",
                "billing_country": "HN",
                "billing_state": "HN-FM",
                "billing_city": "Tegucigalpa",
                "billing_phone": "+50499999999",
                "card_number": "4111111111111111",
                "card_cvv": "300",
                "card_expire": "3012",
                "card_holder": "Pedro Perez",
            })
        );
        let text = serde_json::to_string(&SaleBody::from_request(&req, &account()).unwrap()).unwrap();
        assert!(
            text.contains(r#""order_amount":"249.98""#) && text.contains(r#""tax":7.5"#),
            "{text}"
        );

        let mut req = request();
        req.card = CardSource::Token(CardToken::parse("T-abc-123").unwrap());
        req.order_extras.clear();
        req.items.clear();
        let body = serde_json::to_value(SaleBody::from_request(&req, &account()).unwrap()).unwrap();
        assert_eq!(body["card_token"], "T-abc-123");
        for absent in [
            "card_number",
            "card_cvv",
            "card_expire",
            "card_holder",
            "order_extras",
            "order_content",
        ] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn requests_payhub_can_tell_are_wrong_are_refused_before_sending() {
        type Change = Box<dyn Fn(&mut SaleRequest)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "not BRL",
                Box::new(|r| r.amount = Money::from_minor(100, Currency::Brl)),
            ),
            ("greater than 0", Box::new(|r| r.amount = hnl(0))),
            (
                "items[0].total is 9.99 but price × qty is 199.98",
                Box::new(|r| r.items[0].total = hnl(999)),
            ),
            ("items[0].qty", Box::new(|r| r.items[0].qty = 0)),
            ("items[0].title", Box::new(|r| r.items[0].title = "ab".into())),
            (
                "items[0].price is in USD",
                Box::new(|r| r.items[0].price = Money::from_minor(9999, Currency::Usd)),
            ),
            (
                "tax_amount is in USD",
                Box::new(|r| r.tax_amount = Some(Money::from_minor(1, Currency::Usd))),
            ),
            ("customer_name", Box::new(|r| r.customer_name = "P".into())),
            ("customer_email", Box::new(|r| r.customer_email = "pedro".into())),
            ("billing.country", Box::new(|r| r.billing.country = "Honduras".into())),
            (
                "order_callback",
                Box::new(|r| r.order_callback = Some("ftp://x".into())),
            ),
            ("order_id", Box::new(|r| r.order_id = "a\nb".into())),
        ];
        for (expect, change) in cases {
            let mut req = request();
            change(&mut req);
            let err = SaleBody::from_request(&req, &account()).err().expect(expect);
            assert!(!err.is_transient());
            assert!(err.to_string().contains(expect), "{expect}: {err}");
        }
    }

    #[test]
    fn the_documented_item_example_is_refused() {
        let items: Value = serde_json::from_str(include_str!(
            "../../../../tests/fixtures/pixelpay/order-content-as-documented.json"
        ))
        .unwrap();
        let first = &items[0];
        let mut req = request();
        req.items = vec![SaleItem {
            code: first["code"].as_str().map(str::to_string),
            title: first["title"].as_str().unwrap().into(),
            description: None,
            price: Money::from_json(&first["price"], Currency::Usd).unwrap(),
            qty: 1,
            tax: None,
            total: Money::from_json(&first["total"], Currency::Usd).unwrap(),
        }];
        req.amount = Money::from_minor(9999, Currency::Usd);
        req.tax_amount = None;
        let err = SaleBody::from_request(&req, &account()).err().unwrap();
        assert!(
            err.to_string()
                .contains("items[0].total is 9.99 but price × qty is 99.99"),
            "{err}"
        );
    }

    fn approved_body(order_id: &str, amount: Value) -> String {
        json!({
            "success": true,
            "message": "ok",
            "data": {
                "transaction_type": "sale",
                "transaction_approved_amount": amount,
                "transaction_auth": "123456",
                "transaction_id": 7398009601u64,
                "transaction_terminal": "00000001",
                "transaction_reference": "R1",
                "transaction_date": "2026-03-01",
                "transaction_time": "10:00:00",
                "response_approved": true,
                "response_code": "00",
                "response_reason": "Aprobado",
                "payment_uuid": "P-1",
                "payment_hash": account().payment_hash(order_id),
            }
        })
        .to_string()
    }

    fn outcome(status: u16, text: &str) -> Result<CardOutcome, ConnectorError> {
        let expected = Expected {
            order_id: Some("ord-1"),
            amount: hnl(100),
        };
        card_outcome(status, text, &expected, &account(), &scrub())
    }

    #[test]
    fn an_approval_is_checked_against_hash_and_amount() {
        match outcome(200, &approved_body("ord-1", json!("1.00"))).unwrap() {
            CardOutcome::Approved(a) => {
                assert_eq!(a.payment_uuid, "P-1");
                assert_eq!(a.transaction_id.as_deref(), Some("7398009601"));
                assert_eq!(a.auth_code.as_deref(), Some("123456"));
                assert_eq!(a.approved_amount, hnl(100));
                assert_eq!(a.time.as_deref(), Some("2026-03-01 10:00:00"));
                assert!(a.hash_verified);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome(200, &approved_body("ord-1", json!(1.0))),
            Ok(CardOutcome::Approved(_))
        ));
        let upper = approved_body("ord-1", json!("1.00")).replace(
            &account().payment_hash("ord-1"),
            &account().payment_hash("ord-1").to_uppercase(),
        );
        assert!(matches!(outcome(200, &upper), Ok(CardOutcome::Approved(_))));

        let err = outcome(200, &approved_body("ord-2", json!("1.00"))).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Permanent(m) if m.contains("payment_hash")),
            "{err}"
        );
        let err = outcome(200, &approved_body("ord-1", json!("0.99"))).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Permanent(m) if m.contains("HNL 0.99") && m.contains("HNL 1.00")),
            "{err}"
        );
        let err = outcome(200, &approved_body("ord-1", json!("1.001"))).unwrap_err();
        assert!(err.to_string().contains("transaction_approved_amount"), "{err}");
        let no_hash = approved_body("ord-1", json!("1.00")).replace("payment_hash", "other");
        assert!(matches!(outcome(200, &no_hash), Err(ConnectorError::Permanent(_))));
        let no_uuid = approved_body("ord-1", json!("1.00")).replace("payment_uuid", "other");
        assert!(matches!(outcome(200, &no_uuid), Err(ConnectorError::Permanent(m)) if m.contains("payment_uuid")));
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let env = |status: u16, data: Value, errors: Value| {
            (
                status,
                json!({"success": false, "message": "Mensaje", "data": data, "errors": errors}).to_string(),
            )
        };
        let (s, t) = env(402, json!({"response_code": "05", "payment_uuid": "P-2"}), Value::Null);
        assert_eq!(
            outcome(s, &t).unwrap(),
            CardOutcome::Declined {
                code: Some("05".into()),
                reason: "Mensaje".into(),
                payment_uuid: Some("P-2".into())
            }
        );
        let (s, t) = env(
            202,
            json!({"transaction_type": "router", "payment_uuid": "P-3"}),
            Value::Null,
        );
        assert_eq!(
            outcome(s, &t).unwrap(),
            CardOutcome::ThreeDSecureRequired {
                payment_uuid: Some("P-3".into())
            }
        );
        let (_, t) = env(200, json!({"transaction_type": "router"}), Value::Null);
        assert_eq!(
            outcome(200, &t).unwrap(),
            CardOutcome::ThreeDSecureRequired { payment_uuid: None }
        );
        let (_, t) = env(
            200,
            json!({"response_approved": false, "response_reason": "Fondos insuficientes"}),
            Value::Null,
        );
        assert!(
            matches!(outcome(200, &t).unwrap(), CardOutcome::Declined { reason, .. } if reason == "Fondos insuficientes")
        );
        let (_, t) = env(200, json!({}), Value::Null);
        assert!(matches!(outcome(200, &t).unwrap(), CardOutcome::Indeterminate { .. }));

        for status in [408, 500, 502, 503, 520, 201] {
            let (_, t) = env(status, json!({"payment_uuid": "P-4"}), Value::Null);
            assert_eq!(
                outcome(status, &t).unwrap(),
                CardOutcome::Indeterminate {
                    payment_uuid: Some("P-4".into()),
                    detail: format!("PixelPay answered {status}: Mensaje")
                },
                "{status}"
            );
        }
        assert!(matches!(
            outcome(500, "<html>bad gateway</html>").unwrap(),
            CardOutcome::Indeterminate { payment_uuid: None, .. }
        ));
        let (_, t) = env(429, Value::Null, Value::Null);
        assert!(outcome(429, &t).unwrap_err().is_transient());
        for status in [400, 401, 403, 404, 405, 406, 412, 418, 409, 301] {
            let (_, t) = env(status, Value::Null, Value::Null);
            let err = outcome(status, &t).unwrap_err();
            assert!(
                matches!(&err, ConnectorError::Permanent(m) if m.contains(&status.to_string()) && m.contains("Mensaje")),
                "{status}: {err}"
            );
        }
        let (_, t) = env(
            422,
            Value::Null,
            json!({"billing_city": ["El campo billing_city es obligatorio."], "card_cvv": ["a", "b"]}),
        );
        let err = outcome(422, &t).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider refused: PixelPay answered 422, input error: Mensaje \
             (billing_city: El campo billing_city es obligatorio.; card_cvv: a, b)"
        );
    }

    #[test]
    fn void_and_status_answers() {
        let s = scrub();
        let ok = json!({"success": true, "data": {"payment_uuid": "P-1", "transaction_type": "void", "response_approved": true}}).to_string();
        assert_eq!(
            void_outcome(200, &ok, "P-1", &s).unwrap(),
            VoidOutcome::Voided {
                payment_uuid: "P-1".into()
            }
        );
        assert!(matches!(
            void_outcome(504, "", "P-1", &s).unwrap(),
            VoidOutcome::Indeterminate { .. }
        ));
        assert!(
            matches!(void_outcome(400, r#"{"message":"ya anulada"}"#, "P-1", &s), Err(ConnectorError::Permanent(m)) if m.contains("ya anulada"))
        );
        assert!(void_outcome(429, "", "P-1", &s).unwrap_err().is_transient());

        let a = account();
        let data = json!({
            "success": true,
            "data": {
                "payment_uuid": "P-1", "transaction_type": "capture", "response_approved": true,
                "transaction_approved_amount": 40.0, "transaction_amount": "50.00",
                "order_id": "ord-1", "order_currency": "HNL", "payment_hash": a.payment_hash("ord-1"),
            }
        });
        let st = status_outcome(200, &data.to_string(), "P-1", &a, &s).unwrap().unwrap();
        assert!(st.approved && st.hash_verified && !st.is_voided());
        assert_eq!((st.approved_amount_minor, st.amount_minor), (Some(4000), Some(5000)));
        assert_eq!(st.currency, Some(Currency::Hnl));
        assert_eq!(st.settles(&a, "ord-1", hnl(4000)), Ok(true));
        assert!(st.settles(&a, "ord-1", hnl(5000)).is_err());
        assert!(st.settles(&a, "ord-2", hnl(4000)).is_err());
        assert!(st.settles(&a, "ord-1", Money::from_minor(4000, Currency::Usd)).is_err());

        let mut forged = data.clone();
        forged["data"]["payment_hash"] = json!(a.payment_hash("ord-2"));
        assert!(matches!(
            status_outcome(200, &forged.to_string(), "P-1", &a, &s),
            Err(ConnectorError::Permanent(_))
        ));
        let mut other = data.clone();
        other["data"]["payment_uuid"] = json!("P-9");
        assert!(status_outcome(200, &other.to_string(), "P-1", &a, &s).is_err());
        let mut voided = data.clone();
        voided["data"]["transaction_type"] = json!("void");
        let st = status_outcome(200, &voided.to_string(), "P-1", &a, &s)
            .unwrap()
            .unwrap();
        assert!(st.is_voided());
        assert_eq!(st.settles(&a, "ord-1", hnl(4000)), Ok(false));
        assert_eq!(st.authorises(&a, "ord-1", hnl(4000)), Ok(false));
        // An authorisation never captured reserved the money, took none.
        let mut auth = data.clone();
        auth["data"]["transaction_type"] = json!("auth");
        let st = status_outcome(200, &auth.to_string(), "P-1", &a, &s).unwrap().unwrap();
        assert_eq!(st.settles(&a, "ord-1", hnl(4000)), Ok(false));
        assert_eq!(st.authorises(&a, "ord-1", hnl(4000)), Ok(true));
        assert!(st.authorises(&a, "ord-1", hnl(5000)).is_err());

        assert_eq!(
            status_outcome(404, r#"{"success":false,"message":"no"}"#, "P-1", &a, &s),
            Ok(None)
        );
        assert!(matches!(
            status_outcome(404, "Not Found", "P-1", &a, &s),
            Err(ConnectorError::Permanent(_))
        ));
        assert!(status_outcome(503, "", "P-1", &a, &s).unwrap_err().is_transient());
        assert!(status_outcome(408, "", "P-1", &a, &s).unwrap_err().is_transient());
        assert!(matches!(
            status_outcome(401, "{}", "P-1", &a, &s),
            Err(ConnectorError::Permanent(_))
        ));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
