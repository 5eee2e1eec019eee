//! A PixelPay-compatible simulator (providers.md §4, providers-2.md §2): the
//! Direct API v2 (`POST /api/v2/transaction/{sale,auth,capture,void,status}`)
//! and QuickPay collection webhooks, on the provider listener.
//!
//! * **Auth**: `x-auth-key` (the Key ID) and `x-auth-hash` (lowercase hex
//!   MD5 of the Secret Key) must name one of two merchants: PixelPay's public
//!   sandbox merchant ([`PIXELPAY_SANDBOX_KEY_ID`]), a second one
//!   ([`PIXELPAY_OTHER_KEY_ID`]) or a white-label one that settles BRL
//!   ([`PIXELPAY_BRL_KEY_ID`]). Anything else is 401. A merchant sees only
//!   its own transactions: another merchant's `payment_uuid` is 404.
//! * **Envelope**: every answer is `{success, message, data, errors}`.
//! * **Outcomes** follow PixelPay's sandbox amount table (providers-2.md
//!   §2.5): `order_amount` 1.00 approves, 2.00 and 4.00 decline (402), 3.00
//!   is 400, 5.00 is 406, 6.00 and 9.00–14.00 are 412, 7.00 is 500, 8.00 is a
//!   408 *after approving*: the transaction exists, and the 408 body carries
//!   its `payment_uuid` so `status` can settle it. Every other amount
//!   approves. A card that fails the Luhn check or has expired is declined
//!   (402); missing or malformed fields are 422 with `errors {field: [msg]}`.
//! * **Faults** ([`PixelPayFault`]): answer a status without acting, hang,
//!   act and then lose the answer (a 500 without `payment_uuid`, or a hang),
//!   or echo the request into the error message.
//! * **Collections**: [`crate::Sandbox::pixelpay_pay_collection`] records a
//!   paid QuickPay collection (re-queryable with `status` by its `uuid`) and
//!   POSTs the success webhook; [`crate::Sandbox::pixelpay_collection_error`]
//!   POSTs the error webhook. A delivery is resent until the receiver answers
//!   exactly 200, at most [`PIXELPAY_WEBHOOK_ATTEMPTS`] times,
//!   [`crate::SandboxConfig::pixelpay_webhook_retry_delay`] apart.
//! * **Reconciliation faults** ([`crate::Sandbox::pixelpay_set_status_fault`],
//!   or `POST /sandbox/pixelpay/status-faults {"orderId", "fault", "value"?}`):
//!   `status` of the payments of one order (PixelPay's `order_id`, payhub's
//!   order id; `"*"` for every order) disagrees with what happened:
//!   `hide` (404, PixelPay knows no such payment), `unpaid` (answered as
//!   voided), `value` (another approved amount, in minor units) or
//!   `unavailable` (503 for `status` only, so a sale answered 408 stays
//!   unsettled: paid at PixelPay, not at payhub). `{"fault": "clear"}` ends them.
//!
//! Where PixelPay's public material is silent the simulator picks, and says
//! so here: `payment_uuid` is `P-` and a v4 UUID; amounts in results are JSON
//! numbers; the `status` answer is a TransactionResult plus `order_id` and
//! `order_currency`; after a capture or a void `status` reports
//! `transaction_type` `capture` or `void`; `void_signature` is not checked;
//! a sale with an `order_id` already used is a new transaction (so a blind
//! retry charges twice, as it may at PixelPay).
//!
//! Like PixelPay's dashboard, the simulator keeps the card's brand and last
//! four digits only: never the number, the CVV or the holder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use md5::{Digest, Md5};
use payhub_core::card::{CardBrand, CardExpiry, luhn_valid, mask};
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::faults::{self, FaultPlan, PixelPayFault};
use crate::state::{Inner, lock};
use crate::util;

/// PixelPay's public sandbox merchant (sdk-php, docs): Key ID.
pub const PIXELPAY_SANDBOX_KEY_ID: &str = "1234567890";
/// PixelPay's public sandbox merchant: Secret Key.
pub const PIXELPAY_SANDBOX_SECRET_KEY: &str = "@s4ndb0x-abcd-1234-n1l4-p1x3l";
/// `x-auth-hash` of the sandbox merchant: MD5 of its Secret Key.
pub const PIXELPAY_SANDBOX_AUTH_HASH: &str = "36cdf8271723276cb6f94904f8bde4b6";
/// A second merchant (the Key ID and secret of PixelPay's secure-signature
/// docs example), so tests can show one shop's account is not another's.
pub const PIXELPAY_OTHER_KEY_ID: &str = "7812290000";
pub const PIXELPAY_OTHER_SECRET_KEY: &str = "3422da00-4dc2-4602-d366-56ac7";
/// A third merchant, on a bank's white-label host that settles BRL (PixelPay
/// documents HNL, USD and NIO; such an account declares its own
/// currencies), for Wake stores paying by card.
pub const PIXELPAY_BRL_KEY_ID: &str = "5511000001";
pub const PIXELPAY_BRL_SECRET_KEY: &str = "br-wh1te-l4bel-0000-p1x3l";
/// What PixelPay documents; the BRL merchant settles BRL only.
const DOCUMENTED_CURRENCIES: &[&str] = &["HNL", "USD", "NIO"];
/// A saved-card token every merchant may charge: the Visa test card
/// `4111 1111 1111 1111`.
pub const PIXELPAY_SANDBOX_CARD_TOKEN: &str = "T-sandbox-visa-1111";
/// PixelPay's test cards (providers-2.md §2.5), with a CVV that fits.
pub const PIXELPAY_TEST_VISA: &str = "4111111111111111";
pub const PIXELPAY_TEST_MASTERCARD: &str = "5555555555554444";
/// Deliveries per collection webhook, as PixelPay documents (3 attempts).
pub const PIXELPAY_WEBHOOK_ATTEMPTS: u32 = 3;
/// PixelPay's documented delay between webhook attempts.
pub const PIXELPAY_WEBHOOK_RETRY_DELAY: Duration = Duration::from_secs(5 * 60);

/// Lowercase hex MD5, what PixelPay hashes credentials and results with.
pub fn md5_hex(text: &str) -> String {
    util::hex(&Md5::digest(text.as_bytes()))
}

/// `payment_hash` of an approved result: `md5(order_id|key_id|secret_key)`.
pub fn pixelpay_payment_hash(order_id: &str, key_id: &str, secret_key: &str) -> String {
    md5_hex(&format!("{order_id}|{key_id}|{secret_key}"))
}

/// One transaction as the merchant's PixelPay dashboard would show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PixelPayTransaction {
    /// The merchant's Key ID.
    pub merchant_key_id: String,
    pub payment_uuid: String,
    pub order_id: String,
    /// `sale` or `auth`: how it was created (a paid collection is a `sale`).
    pub kind: String,
    /// `api` or `collection`.
    pub source: String,
    pub currency: String,
    /// `order_amount` in minor units.
    pub amount_minor: i64,
    pub approved: bool,
    /// What was approved (0 when declined); after a capture, what was captured.
    pub approved_amount_minor: i64,
    /// Set once an `auth` is captured.
    pub captured_amount_minor: Option<i64>,
    pub voided: bool,
    pub void_reason: Option<String>,
    pub response_code: String,
    pub response_reason: String,
    pub transaction_id: Option<String>,
    pub transaction_auth: Option<String>,
    /// `visa`, `mastercard`, `amex` or `unknown`.
    pub card_brand: String,
    pub card_last4: String,
    /// The HTTP status the creating call was answered with; `None` while it
    /// was never answered (a hang fault).
    pub answered: Option<u16>,
    pub created_at: String,
}

impl PixelPayTransaction {
    /// What `status` reports as `transaction_type`.
    fn current_type(&self) -> &str {
        if self.voided {
            "void"
        } else if self.captured_amount_minor.is_some() {
            "capture"
        } else {
            &self.kind
        }
    }
}

/// One collection-webhook attempt and what the receiver made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PixelPayDeliveryAttempt {
    pub at: String,
    /// The receiver's status code; `None` when it did not answer.
    pub status: Option<u16>,
    /// The receiver's body, or why there was no answer.
    pub answer: String,
}

/// One collection webhook (success or error) and all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PixelPayDelivery {
    pub id: u64,
    /// `success` or `error`.
    pub kind: String,
    pub url: String,
    /// The exact JSON body every attempt sent.
    pub body: String,
    pub attempts: Vec<PixelPayDeliveryAttempt>,
    /// True once the receiver answered 200.
    pub delivered: bool,
    /// True once no further attempt will be made.
    pub done: bool,
}

/// An item of a QuickPay collection (providers.md §4.3), amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelPayItem {
    pub code: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub tax_minor: i64,
    pub price_minor: i64,
    pub qty: u32,
    pub total_minor: i64,
}

/// A QuickPay collection to pay, amounts in minor units of `currency`.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelPayCollection {
    /// The merchant it belongs to (its Key ID).
    pub merchant_key_id: String,
    pub currency: String,
    pub amount_minor: i64,
    pub tax_amount_minor: i64,
    pub description: Option<String>,
    pub note: Option<String>,
    pub items: Vec<PixelPayItem>,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    /// Parameters given when the collection was created; they come back in
    /// the webhook's `extra`.
    pub extra: Map<String, Value>,
}

impl PixelPayCollection {
    /// The collection of PixelPay's documented success webhook (seed 003,
    /// `success-webhook.json`), for the sandbox merchant. Its item is kept as
    /// documented, inconsistent `total` (9.99 for 1 × 99.99) included:
    /// receivers must cope with what PixelPay sends.
    pub fn documented_example() -> PixelPayCollection {
        let mut extra = Map::new();
        extra.insert("codigoCliente".into(), json!("4782164"));
        extra.insert("codigoNegocio".into(), json!("ATGSH-6712"));
        PixelPayCollection {
            merchant_key_id: PIXELPAY_SANDBOX_KEY_ID.to_string(),
            currency: "USD".to_string(),
            amount_minor: 9999,
            tax_amount_minor: 999,
            description: None,
            note: None,
            items: vec![PixelPayItem {
                code: Some("0000123".into()),
                title: "Camiseta Roja".into(),
                description: Some("Talla: XS".into()),
                tax_minor: 999,
                price_minor: 9999,
                qty: 1,
                total_minor: 999,
            }],
            customer_name: "PEDRO PEREZ".into(),
            customer_email: "pedro.perez@gmail.com".into(),
            customer_phone: None,
            extra,
        }
    }
}

/// What paying a collection produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidCollection {
    /// The collection's `uuid` (also its `payment_uuid` for `status`).
    pub uuid: String,
    /// Its `ref`, `REF-0001-...`.
    pub reference: String,
    /// The success webhook's delivery ([`crate::Sandbox::pixelpay_delivery`]).
    pub delivery_id: u64,
}

/// A merchant account at the simulator.
#[derive(Debug)]
struct Merchant {
    key_id: &'static str,
    secret_key: &'static str,
    auth_hash: String,
    company_name: &'static str,
    company_slug: &'static str,
    currencies: &'static [&'static str],
}

/// The simulator's state, one field of [`Inner`].
#[derive(Debug)]
pub(crate) struct PixelPayState {
    merchants: Vec<Merchant>,
    transactions: Mutex<Vec<PixelPayTransaction>>,
    requests: AtomicUsize,
    fault: Mutex<FaultPlan<PixelPayFault>>,
    deliveries: Mutex<Vec<PixelPayDelivery>>,
    next_delivery: AtomicU64,
    /// Woken after every delivery attempt, for [`crate::Sandbox::pixelpay_wait_delivery`].
    delivery_changed: tokio::sync::Notify,
    retry_delay: Duration,
    /// How `status` disagrees, by PixelPay order id (`*`: every order).
    status_faults: Mutex<BTreeMap<String, StatusFault>>,
}

/// How `status` disagrees with what happened, for reconciliation tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFault {
    Hide,
    Unpaid,
    Value(i64),
    Unavailable,
}

impl PixelPayState {
    pub(crate) fn new(retry_delay: Duration) -> PixelPayState {
        let merchant = |key_id, secret_key, company_name, company_slug, currencies| Merchant {
            key_id,
            secret_key,
            auth_hash: md5_hex(secret_key),
            company_name,
            company_slug,
            currencies,
        };
        PixelPayState {
            merchants: vec![
                merchant(
                    PIXELPAY_SANDBOX_KEY_ID,
                    PIXELPAY_SANDBOX_SECRET_KEY,
                    "PixelPay Sandbox",
                    "sandbox",
                    DOCUMENTED_CURRENCIES,
                ),
                merchant(
                    PIXELPAY_OTHER_KEY_ID,
                    PIXELPAY_OTHER_SECRET_KEY,
                    "My Company",
                    "my_company",
                    DOCUMENTED_CURRENCIES,
                ),
                merchant(
                    PIXELPAY_BRL_KEY_ID,
                    PIXELPAY_BRL_SECRET_KEY,
                    "Loja Brasil",
                    "loja_brasil",
                    &["BRL"],
                ),
            ],
            transactions: Mutex::default(),
            requests: AtomicUsize::new(0),
            fault: Mutex::default(),
            deliveries: Mutex::default(),
            next_delivery: AtomicU64::new(1),
            delivery_changed: tokio::sync::Notify::new(),
            retry_delay,
            status_faults: Mutex::default(),
        }
    }

    fn merchant(&self, key_id: &str) -> Option<&Merchant> {
        self.merchants.iter().find(|m| m.key_id == key_id)
    }
}

type Shared = Arc<Inner>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v2/transaction/{operation}", post(transaction))
        .route("/sandbox/pixelpay/transactions", get(list_transactions))
        .route("/sandbox/pixelpay/deliveries", get(list_deliveries))
        .route("/sandbox/pixelpay/status-faults", post(status_fault_control))
        .with_state(state)
}

/// `{success, message, data, errors}`, PixelPay's envelope.
fn envelope(status: StatusCode, message: &str, data: Option<Value>, errors: Option<Value>) -> Response {
    let body = json!({
        "success": status.is_success(),
        "message": message,
        "data": data.unwrap_or(Value::Null),
        "errors": errors.unwrap_or(Value::Null),
    });
    (status, Json(body)).into_response()
}

fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The answer of one API call, before faults; `created` names the
/// transaction the call created, whose `answered` is filled in at the end.
struct Answer {
    status: u16,
    message: String,
    data: Option<Value>,
    errors: Option<Value>,
    created: Option<String>,
}

impl Answer {
    fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
            data: None,
            errors: None,
            created: None,
        }
    }

    fn invalid(errors: BTreeMap<String, Vec<String>>) -> Answer {
        Answer {
            status: 422,
            message: "Los datos enviados no son válidos".into(),
            data: None,
            errors: Some(json!(errors)),
            created: None,
        }
    }
}

/// `POST /api/v2/transaction/{operation}`.
async fn transaction(
    State(state): State<Shared>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pp = &state.pixelpay;
    pp.requests.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&pp.fault).take();
    match fault {
        Some(PixelPayFault::Status(status)) => {
            tracing::info!(status, operation, "PixelPay fault: answering without acting");
            return envelope(
                code(status),
                &format!("sandbox PixelPay fault: answering {status}"),
                None,
                None,
            );
        }
        Some(PixelPayFault::Hang) => {
            tracing::info!(operation, "PixelPay fault: holding a request without acting");
            faults::hold_until_shutdown(&state.shutdown).await;
            return envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox PixelPay fault: released",
                None,
                None,
            );
        }
        Some(PixelPayFault::EchoRequest(status)) => {
            let hash = headers.get("x-auth-hash").and_then(|v| v.to_str().ok()).unwrap_or("");
            let echoed = String::from_utf8_lossy(&body);
            return envelope(
                code(status),
                &format!("sandbox PixelPay fault: cannot process {echoed} (x-auth-hash {hash})"),
                None,
                Some(json!({ "request": echoed })),
            );
        }
        _ => {}
    }
    let Some(merchant) = authorize(pp, &headers) else {
        return envelope(
            StatusCode::UNAUTHORIZED,
            "Credenciales de comercio inválidas",
            None,
            None,
        );
    };
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(req)) => match operation.as_str() {
            "sale" => op_sale(pp, merchant, &req, "sale"),
            "auth" => op_sale(pp, merchant, &req, "auth"),
            "capture" => op_capture(pp, merchant, &req),
            "void" => op_void(pp, merchant, &req),
            "status" => op_status(pp, merchant, &req),
            _ => Answer::error(404, "Ruta no encontrada"),
        },
        _ => Answer::error(400, "El cuerpo de la solicitud debe ser un objeto JSON"),
    };
    let (status, response) = match fault {
        Some(PixelPayFault::ApproveButAnswer(status)) => {
            tracing::info!(status, operation, "PixelPay fault: acted, answering an error");
            (
                Some(status),
                envelope(code(status), "Error general del sistema", None, None),
            )
        }
        Some(PixelPayFault::ApproveThenHang) => (None, Response::default()),
        _ => (
            Some(answer.status),
            envelope(code(answer.status), &answer.message, answer.data, answer.errors),
        ),
    };
    if let Some(uuid) = &answer.created {
        let mut book = lock(&pp.transactions);
        if let Some(tx) = book.iter_mut().find(|t| &t.payment_uuid == uuid) {
            tx.answered = status;
        }
    }
    if status.is_none() {
        tracing::info!(operation, "PixelPay fault: acted, holding the answer");
        faults::hold_until_shutdown(&state.shutdown).await;
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox PixelPay fault: released",
            None,
            None,
        );
    }
    response
}

/// The merchant the `x-auth-key` / `x-auth-hash` headers open.
fn authorize<'a>(pp: &'a PixelPayState, headers: &HeaderMap) -> Option<&'a Merchant> {
    let key = headers.get("x-auth-key")?.to_str().ok()?.trim();
    let hash = headers.get("x-auth-hash")?.to_str().ok()?.trim();
    let merchant = pp.merchant(key)?;
    // Lowercase hex exactly, as the SDKs send it.
    (hash == merchant.auth_hash).then_some(merchant)
}

/// Collects `field: [message]` for a 422.
#[derive(Default)]
struct Errors(BTreeMap<String, Vec<String>>);

impl Errors {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_string()).or_default().push(message.into());
    }
}

fn text<'a>(req: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    req.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn required<'a>(req: &'a Map<String, Value>, errors: &mut Errors, field: &str) -> Option<&'a str> {
    let value = text(req, field);
    if value.is_none() {
        errors.add(field, format!("El campo {field} es obligatorio."));
    }
    value
}

/// A two-decimal amount string (`"1.00"`), as PixelPay's SDKs send money, to
/// minor units. Numbers and other precisions are refused: the connector
/// under test must send exactly this form.
pub(crate) fn parse_amount(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.')?;
    if int.is_empty()
        || int.len() > 10
        || frac.len() != 2
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(int.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

fn amount_field(req: &Map<String, Value>, errors: &mut Errors, field: &str, required: bool) -> Option<i64> {
    match req.get(field) {
        None | Some(Value::Null) => {
            if required {
                errors.add(field, format!("El campo {field} es obligatorio."));
            }
            None
        }
        Some(Value::String(s)) => {
            let parsed = parse_amount(s.trim());
            if parsed.is_none() {
                errors.add(field, format!("El campo {field} debe ser un monto con dos decimales."));
            }
            parsed
        }
        Some(_) => {
            errors.add(field, format!("El campo {field} debe ser un texto con dos decimales."));
            None
        }
    }
}

/// Amounts in results: JSON numbers in major units (1.0, 99.99).
fn major(minor: i64) -> Value {
    serde_json::from_str(&util::centavos_to_major(minor)).unwrap_or(Value::Null)
}

fn digits(n: usize) -> String {
    let hex = util::hex32();
    hex.bytes().take(n).map(|b| char::from(b'0' + (b % 10))).collect()
}

/// The card a sale names: `(brand, last4)` or the answer refusing it.
enum CardCheck {
    Ok(CardBrand, String),
    Declined(&'static str, CardBrand, String),
}

fn check_card(req: &Map<String, Value>, errors: &mut Errors) -> Option<CardCheck> {
    if let Some(token) = text(req, "card_token") {
        if token == PIXELPAY_SANDBOX_CARD_TOKEN {
            return Some(CardCheck::Ok(CardBrand::Visa, "1111".into()));
        }
        errors.add("card_token", "El token de tarjeta no existe o ha expirado.");
        return None;
    }
    let number = required(req, errors, "card_number");
    let cvv = required(req, errors, "card_cvv");
    let expire = required(req, errors, "card_expire");
    required(req, errors, "card_holder");
    if let Some(n) = number
        && (!(12..=19).contains(&n.len()) || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        errors.add("card_number", "El campo card_number debe contener de 12 a 19 dígitos.");
    }
    if let Some(c) = cvv
        && (!(3..=4).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_digit()))
    {
        errors.add("card_cvv", "El campo card_cvv debe contener 3 o 4 dígitos.");
    }
    // YYMM only, as the API documents it.
    let expiry = expire.and_then(|e| {
        let parsed = (e.len() == 4 && !e.contains('/'))
            .then(|| CardExpiry::parse(e).ok())
            .flatten();
        if parsed.is_none() {
            errors.add("card_expire", "El campo card_expire debe tener el formato YYMM.");
        }
        parsed
    });
    if !errors.0.is_empty() {
        return None;
    }
    let (number, expiry) = (number?, expiry?);
    let brand = CardBrand::from_number(number);
    let last4 = number[number.len() - 4..].to_string();
    if !luhn_valid(number) {
        return Some(CardCheck::Declined("Número de tarjeta inválido", brand, last4));
    }
    if expiry.is_expired_at(OffsetDateTime::now_utc().date()) {
        return Some(CardCheck::Declined("Tarjeta vencida", brand, last4));
    }
    Some(CardCheck::Ok(brand, last4))
}

/// Validates the order, customer and billing fields of a sale or auth.
fn check_order<'a>(
    merchant: &Merchant,
    req: &'a Map<String, Value>,
    errors: &mut Errors,
) -> Option<(&'a str, &'a str, i64)> {
    let order_id = required(req, errors, "order_id");
    let currency = required(req, errors, "order_currency");
    if let Some(c) = currency
        && !merchant.currencies.contains(&c)
    {
        errors.add(
            "order_currency",
            format!("El campo order_currency debe ser {}.", merchant.currencies.join(", ")),
        );
    }
    let amount = amount_field(req, errors, "order_amount", true);
    if amount == Some(0) {
        errors.add("order_amount", "El campo order_amount debe ser mayor que 0.");
    }
    amount_field(req, errors, "order_tax_amount", false);
    amount_field(req, errors, "order_shipping_amount", false);
    match required(req, errors, "customer_name") {
        Some(n) if !(3..=120).contains(&n.chars().count()) => errors.add(
            "customer_name",
            "El campo customer_name debe tener de 3 a 120 caracteres.",
        ),
        _ => {}
    }
    match required(req, errors, "customer_email") {
        Some(e) if !e.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.')) => {
            errors.add("customer_email", "El campo customer_email debe ser un correo válido.")
        }
        _ => {}
    }
    for field in ["billing_address", "billing_city", "billing_state", "billing_phone"] {
        required(req, errors, field);
    }
    match required(req, errors, "billing_country") {
        Some(c) if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) => errors.add(
            "billing_country",
            "El campo billing_country debe ser un código ISO 3166-1 de dos letras.",
        ),
        _ => {}
    }
    if let Some(content) = req.get("order_content") {
        let ok = content.as_array().is_some_and(|items| {
            items.iter().all(|item| {
                item.get("title")
                    .and_then(Value::as_str)
                    .is_some_and(|t| (3..=60).contains(&t.chars().count()))
                    && item.get("qty").and_then(Value::as_u64).is_some_and(|q| q >= 1)
                    && item.get("price").is_some()
                    && item.get("total").is_some()
            })
        });
        if !ok {
            errors.add(
                "order_content",
                "Cada elemento de order_content necesita title (3 a 60), price, qty (>= 1) y total.",
            );
        }
    }
    Some((order_id?, currency?, amount?))
}

/// The outcome PixelPay's sandbox forces for an amount (providers-2.md §2.5).
enum Forced {
    Approve,
    Decline(&'static str),
    Refuse(u16, &'static str),
    /// Approved, then answered 408 with the `payment_uuid`.
    ApproveThenTimeout,
}

fn forced(amount_minor: i64) -> Forced {
    match amount_minor {
        200 => Forced::Decline("Transacción denegada"),
        300 => Forced::Refuse(400, "Configuración de comercio inválida"),
        400 => Forced::Decline("Tarjeta con reporte de robo o extravío"),
        500 => Forced::Refuse(406, "Error al encontrar el cobro"),
        600 => Forced::Refuse(412, "El límite de intentos para esta tarjeta ha sido superado"),
        700 => Forced::Refuse(500, "Error general del sistema"),
        800 => Forced::ApproveThenTimeout,
        900 => Forced::Refuse(412, "Este valor excede el máximo permitido al comercio"),
        1000 => Forced::Refuse(412, "Este comercio ha llegado a su límite de transacciones"),
        1100 => Forced::Refuse(412, "Este comercio ha llegado a su límite de ventas"),
        1200 => Forced::Refuse(412, "El comercio no acepta tarjetas de este emisor."),
        1300 => Forced::Refuse(412, "El comercio no acepta tarjetas de este tipo."),
        1400 => Forced::Refuse(412, "El comercio no permite transacciones de este país o región."),
        _ => Forced::Approve,
    }
}

/// A TransactionResult (providers.md §4.2) for `tx`, as `transaction_type`.
fn result_view(tx: &PixelPayTransaction, merchant: &Merchant, transaction_type: &str) -> Value {
    let now = OffsetDateTime::now_utc();
    let hash = tx
        .approved
        .then(|| pixelpay_payment_hash(&tx.order_id, merchant.key_id, merchant.secret_key));
    json!({
        "transaction_type": transaction_type,
        "transaction_approved_amount": major(tx.approved_amount_minor),
        "transaction_amount": major(tx.amount_minor),
        "transaction_auth": tx.transaction_auth,
        "transaction_terminal": "00000001",
        "transaction_merchant": merchant.key_id,
        "response_cvn": "M",
        "response_avs": "N",
        "response_cavv": null,
        "transaction_id": tx.transaction_id,
        "transaction_reference": tx.transaction_id.as_ref().map(|id| format!("R{id}")),
        "transaction_time": format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second()),
        "transaction_date": format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day()),
        "response_approved": tx.approved,
        "response_incomplete": false,
        "response_code": tx.response_code,
        "response_time": "0.120",
        "response_reason": tx.response_reason,
        "payment_uuid": tx.payment_uuid,
        "payment_hash": hash,
    })
}

fn new_payment_uuid() -> String {
    format!("P-{}", uuid::Uuid::new_v4())
}

/// `sale` and `auth`.
fn op_sale(pp: &PixelPayState, merchant: &Merchant, req: &Map<String, Value>, kind: &str) -> Answer {
    let mut errors = Errors::default();
    let order = check_order(merchant, req, &mut errors);
    let card = check_card(req, &mut errors);
    let (Some((order_id, currency, amount)), Some(card), true) = (order, card, errors.0.is_empty()) else {
        return Answer::invalid(errors.0);
    };
    let (approve, reason, brand, last4, timeout) = match card {
        CardCheck::Declined(reason, brand, last4) => (false, reason, brand, last4, false),
        CardCheck::Ok(brand, last4) => match forced(amount) {
            Forced::Approve => (true, "Aprobado", brand, last4, false),
            Forced::ApproveThenTimeout => (true, "Aprobado", brand, last4, true),
            Forced::Decline(reason) => (false, reason, brand, last4, false),
            Forced::Refuse(status, message) => return Answer::error(status, message),
        },
    };
    let tx = PixelPayTransaction {
        merchant_key_id: merchant.key_id.to_string(),
        payment_uuid: new_payment_uuid(),
        order_id: order_id.to_string(),
        kind: kind.to_string(),
        source: "api".into(),
        currency: currency.to_string(),
        amount_minor: amount,
        approved: approve,
        approved_amount_minor: if approve { amount } else { 0 },
        captured_amount_minor: None,
        voided: false,
        void_reason: None,
        response_code: if approve { "00" } else { "05" }.into(),
        response_reason: reason.to_string(),
        transaction_id: approve.then(|| digits(10)),
        transaction_auth: approve.then(|| digits(6)),
        card_brand: brand.as_str().to_string(),
        card_last4: last4,
        answered: None,
        created_at: util::iso_millis(OffsetDateTime::now_utc()),
    };
    tracing::info!(
        merchant = merchant.key_id,
        payment_uuid = %tx.payment_uuid,
        kind,
        approved = approve,
        amount,
        "PixelPay transaction"
    );
    let view = result_view(&tx, merchant, kind);
    let uuid = tx.payment_uuid.clone();
    lock(&pp.transactions).push(tx);
    let (status, message, data) = if timeout {
        // The transaction stands; only its payment_uuid comes back.
        (408, "Tiempo de espera excedido", json!({ "payment_uuid": uuid }))
    } else if approve {
        (200, "Transacción completada exitosamente", view)
    } else {
        (402, reason, view)
    };
    Answer {
        status,
        message: message.to_string(),
        data: Some(data),
        errors: None,
        created: Some(uuid),
    }
}

/// Runs `f` on the merchant's transaction `payment_uuid`, or answers 422 / 404.
fn with_transaction(
    pp: &PixelPayState,
    merchant: &Merchant,
    req: &Map<String, Value>,
    errors: &mut Errors,
    f: impl FnOnce(&mut PixelPayTransaction, &mut Errors) -> Result<Value, Answer>,
) -> Answer {
    let uuid = required(req, errors, "payment_uuid");
    let Some(uuid) = uuid.filter(|_| errors.0.is_empty()) else {
        return Answer::invalid(std::mem::take(&mut errors.0));
    };
    let mut book = lock(&pp.transactions);
    let Some(tx) = book
        .iter_mut()
        .find(|t| t.payment_uuid == uuid && t.merchant_key_id == merchant.key_id)
    else {
        return Answer::error(404, "Transacción no encontrada");
    };
    match f(tx, errors) {
        Ok(data) if errors.0.is_empty() => Answer {
            status: 200,
            message: "Transacción completada exitosamente".into(),
            data: Some(data),
            errors: None,
            created: None,
        },
        Ok(_) => Answer::invalid(std::mem::take(&mut errors.0)),
        Err(answer) => answer,
    }
}

/// `capture {payment_uuid, transaction_approved_amount}` of an approved auth.
fn op_capture(pp: &PixelPayState, merchant: &Merchant, req: &Map<String, Value>) -> Answer {
    let mut errors = Errors::default();
    let amount = amount_field(req, &mut errors, "transaction_approved_amount", true);
    with_transaction(pp, merchant, req, &mut errors, |tx, errors| {
        if tx.kind != "auth" || !tx.approved || tx.voided || tx.captured_amount_minor.is_some() {
            return Err(Answer::error(400, "La transacción no puede ser capturada"));
        }
        let Some(amount) = amount else {
            return Ok(Value::Null);
        };
        if amount == 0 || amount > tx.approved_amount_minor {
            errors.add(
                "transaction_approved_amount",
                "El monto debe ser mayor que 0 y no exceder el monto autorizado.",
            );
            return Ok(Value::Null);
        }
        tx.captured_amount_minor = Some(amount);
        tx.approved_amount_minor = amount;
        tracing::info!(payment_uuid = %tx.payment_uuid, amount, "PixelPay auth captured");
        Ok(result_view(tx, merchant, "capture"))
    })
}

/// `void {payment_uuid, void_reason}`.
fn op_void(pp: &PixelPayState, merchant: &Merchant, req: &Map<String, Value>) -> Answer {
    let mut errors = Errors::default();
    let reason = text(req, "void_reason").map(str::to_string);
    with_transaction(pp, merchant, req, &mut errors, |tx, _| {
        if tx.voided {
            return Err(Answer::error(400, "La transacción ya fue anulada"));
        }
        if !tx.approved {
            return Err(Answer::error(400, "La transacción no puede ser anulada"));
        }
        tx.voided = true;
        tx.void_reason = reason;
        tracing::info!(payment_uuid = %tx.payment_uuid, "PixelPay transaction voided");
        Ok(result_view(tx, merchant, "void"))
    })
}

/// `status {payment_uuid}`: the transaction as it stands, plus `order_id`
/// and `order_currency`.
fn op_status(pp: &PixelPayState, merchant: &Merchant, req: &Map<String, Value>) -> Answer {
    let mut errors = Errors::default();
    let faults = lock(&pp.status_faults).clone();
    with_transaction(pp, merchant, req, &mut errors, |tx, _| {
        let fault = faults.get(&tx.order_id).or_else(|| faults.get("*")).copied();
        let mut view = result_view(tx, merchant, tx.current_type());
        match fault {
            Some(StatusFault::Hide) => return Err(Answer::error(404, "Transacción no encontrada")),
            Some(StatusFault::Unavailable) => return Err(Answer::error(503, "Servicio no disponible")),
            Some(StatusFault::Unpaid) => {
                view["transaction_type"] = json!("void");
            }
            Some(StatusFault::Value(v)) => {
                view["transaction_approved_amount"] = major(v);
                view["transaction_amount"] = major(v);
            }
            None => {}
        }
        view["order_id"] = json!(tx.order_id);
        view["order_currency"] = json!(tx.currency);
        Ok(view)
    })
}

/// A reconciliation fault for the payments of `order_id` (`*`: every
/// order); `None` clears them all.
fn set_status_fault(pp: &PixelPayState, fault: Option<(&str, &str, Option<i64>)>) -> Result<(), String> {
    let mut f = lock(&pp.status_faults);
    let (order, kind) = match fault {
        None => {
            f.clear();
            return Ok(());
        }
        Some((order, "hide", _)) => (order, StatusFault::Hide),
        Some((order, "unpaid", _)) => (order, StatusFault::Unpaid),
        Some((order, "value", Some(v))) => (order, StatusFault::Value(v)),
        Some((order, "unavailable", _)) => (order, StatusFault::Unavailable),
        Some((_, other, _)) => {
            return Err(format!(
                "unknown status fault {other:?} (hide, unpaid, value with a value, unavailable)"
            ));
        }
    };
    f.insert(order.to_string(), kind);
    Ok(())
}

/// `POST /sandbox/pixelpay/status-faults`.
async fn status_fault_control(State(state): State<Shared>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = v.get("fault").and_then(Value::as_str).unwrap_or_default();
    let result = if fault == "clear" {
        set_status_fault(&state.pixelpay, None)
    } else {
        match v.get("orderId").and_then(Value::as_str) {
            Some(order) => set_status_fault(
                &state.pixelpay,
                Some((order, fault, v.get("value").and_then(Value::as_i64))),
            ),
            None => Err("orderId is required".into()),
        }
    };
    match result {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

/// `GET /sandbox/pixelpay/transactions`.
async fn list_transactions(State(state): State<Shared>) -> Response {
    let all = lock(&state.pixelpay.transactions).clone();
    Json(json!({ "transactions": all })).into_response()
}

/// `GET /sandbox/pixelpay/deliveries`.
async fn list_deliveries(State(state): State<Shared>) -> Response {
    let all = lock(&state.pixelpay.deliveries).clone();
    Json(json!({ "deliveries": all })).into_response()
}

// --- Collections and their webhooks -----------------------------------------

/// The success webhook, field for field as seed 003 documents it.
#[derive(Serialize)]
struct SuccessWebhook<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    uuid: &'a str,
    status: &'a str,
    description: Option<&'a str>,
    note: Option<&'a str>,
    currency: &'a str,
    tax_amount: Value,
    amount: Value,
    items: Vec<Value>,
    customer_name: &'a str,
    customer_email: &'a str,
    customer_phone: Option<&'a str>,
    client_ip: &'a str,
    client_device: &'a str,
    created_at: String,
    paid_at: String,
    transaction_id: &'a str,
    card_account: String,
    card_brand: &'a str,
    card_type: &'a str,
    company_name: &'a str,
    company_slug: &'a str,
    company_key: &'a str,
    is_overdue: bool,
    payment_url: String,
    attach_url: Option<&'a str>,
    extra: &'a Map<String, Value>,
}

/// `2017-09-25 03:09:47`, as the webhook writes dates.
fn plain_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn item_view(item: &PixelPayItem) -> Value {
    json!({
        "code": item.code,
        "title": item.title,
        "description": item.description,
        "tax": major(item.tax_minor),
        "price": major(item.price_minor),
        "qty": item.qty,
        "total": major(item.total_minor),
    })
}

impl Inner {
    /// Records a paid collection and starts its success webhook.
    fn pixelpay_pay_collection(self: &Arc<Self>, c: &PixelPayCollection, url: &str) -> anyhow::Result<PaidCollection> {
        crate::check_url(url).context("the success webhook URL")?;
        let merchant = self
            .pixelpay
            .merchant(&c.merchant_key_id)
            .with_context(|| format!("no PixelPay merchant with Key ID {:?}", c.merchant_key_id))?;
        anyhow::ensure!(
            merchant.currencies.contains(&c.currency.as_str()),
            "the currency must be one of {}",
            merchant.currencies.join(", ")
        );
        anyhow::ensure!(c.amount_minor > 0, "the amount must be greater than 0");
        let now = OffsetDateTime::now_utc();
        let uuid = util::hex_n(8);
        let reference = format!("REF-0001-{}", digits(10));
        let transaction_id = digits(10);
        let tx = PixelPayTransaction {
            merchant_key_id: merchant.key_id.to_string(),
            payment_uuid: uuid.clone(),
            order_id: reference.clone(),
            kind: "sale".into(),
            source: "collection".into(),
            currency: c.currency.clone(),
            amount_minor: c.amount_minor,
            approved: true,
            approved_amount_minor: c.amount_minor,
            captured_amount_minor: None,
            voided: false,
            void_reason: None,
            response_code: "00".into(),
            response_reason: "Aprobado".into(),
            transaction_id: Some(transaction_id.clone()),
            transaction_auth: Some(digits(6)),
            card_brand: "visa".into(),
            card_last4: PIXELPAY_TEST_VISA[12..].to_string(),
            answered: Some(200),
            created_at: util::iso_millis(now),
        };
        let body = SuccessWebhook {
            reference: &reference,
            uuid: &uuid,
            status: "paid",
            description: c.description.as_deref(),
            note: c.note.as_deref(),
            currency: &c.currency,
            tax_amount: major(c.tax_amount_minor),
            amount: major(c.amount_minor),
            items: c.items.iter().map(item_view).collect(),
            customer_name: &c.customer_name,
            customer_email: &c.customer_email,
            customer_phone: c.customer_phone.as_deref(),
            client_ip: "127.0.0.1",
            client_device: "desktop",
            created_at: plain_time(now - time::Duration::minutes(5)),
            paid_at: plain_time(now),
            transaction_id: &transaction_id,
            card_account: mask(PIXELPAY_TEST_VISA),
            card_brand: "visa",
            card_type: "credit",
            company_name: merchant.company_name,
            company_slug: merchant.company_slug,
            company_key: merchant.key_id,
            is_overdue: false,
            payment_url: format!(
                "http://{}/{}/{uuid}/checkout",
                self.provider_addr, merchant.company_slug
            ),
            attach_url: None,
            extra: &c.extra,
        };
        let body = serde_json::to_string(&body).context("rendering the success webhook")?;
        lock(&self.pixelpay.transactions).push(tx);
        tracing::info!(%uuid, %reference, "PixelPay collection paid");
        let delivery_id = self.pixelpay_deliver("success", url, body);
        Ok(PaidCollection {
            uuid,
            reference,
            delivery_id,
        })
    }

    /// Records a delivery and spawns its attempts; returns its id.
    fn pixelpay_deliver(self: &Arc<Self>, kind: &str, url: &str, body: String) -> u64 {
        let id = self.pixelpay.next_delivery.fetch_add(1, Ordering::SeqCst);
        lock(&self.pixelpay.deliveries).push(PixelPayDelivery {
            id,
            kind: kind.to_string(),
            url: url.to_string(),
            body: body.clone(),
            attempts: Vec::new(),
            delivered: false,
            done: false,
        });
        let inner = Arc::clone(self);
        let url = url.to_string();
        tokio::spawn(async move { inner.pixelpay_attempts(id, url, body).await });
        id
    }

    /// Up to [`PIXELPAY_WEBHOOK_ATTEMPTS`] POSTs, the retry delay apart,
    /// until one is answered 200. Stops early when the sandbox shuts down.
    async fn pixelpay_attempts(&self, id: u64, url: String, body: String) {
        for attempt in 1..=PIXELPAY_WEBHOOK_ATTEMPTS {
            let post = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("user-agent", "PixelPay-Webhooks")
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                () = self.shutdown.cancelled() => break,
                sent = post => sent,
            };
            let (status, answer) = match outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_else(|e| util::error_chain(&e));
                    (Some(status), text)
                }
                Err(e) => (None, util::error_chain(&e)),
            };
            let delivered = status == Some(200);
            tracing::info!(id, attempt, ?status, "PixelPay webhook attempt");
            let last = delivered || attempt == PIXELPAY_WEBHOOK_ATTEMPTS;
            self.pixelpay_record(id, status, answer, delivered, last);
            if last {
                return;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(self.pixelpay.retry_delay) => {}
            }
        }
        // Shut down before the attempts ran out.
        self.pixelpay_finish(id);
    }

    fn pixelpay_record(&self, id: u64, status: Option<u16>, answer: String, delivered: bool, done: bool) {
        {
            let mut deliveries = lock(&self.pixelpay.deliveries);
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
                d.attempts.push(PixelPayDeliveryAttempt {
                    at: util::iso_millis(OffsetDateTime::now_utc()),
                    status,
                    answer,
                });
                d.delivered = delivered;
                d.done = done;
            }
        }
        self.pixelpay.delivery_changed.notify_waiters();
    }

    fn pixelpay_finish(&self, id: u64) {
        if let Some(d) = lock(&self.pixelpay.deliveries).iter_mut().find(|d| d.id == id) {
            d.done = true;
        }
        self.pixelpay.delivery_changed.notify_waiters();
    }
}

impl crate::Sandbox {
    /// Makes PixelPay's `status` of `order_id`'s payments (`*`: every
    /// order's) disagree: `hide`, `unpaid`, `value` (with `value`, minor
    /// units) or `unavailable` (see the module's reconciliation faults).
    pub fn pixelpay_set_status_fault(&self, order_id: &str, fault: &str, value: Option<i64>) -> anyhow::Result<()> {
        set_status_fault(&self.inner.pixelpay, Some((order_id, fault, value))).map_err(anyhow::Error::msg)
    }

    /// PixelPay's `status` tells the truth again.
    pub fn pixelpay_clear_status_faults(&self) {
        let _ = set_status_fault(&self.inner.pixelpay, None);
    }

    /// Every PixelPay transaction of both merchants, in creation order.
    pub fn pixelpay_transactions(&self) -> Vec<PixelPayTransaction> {
        lock(&self.inner.pixelpay.transactions).clone()
    }

    /// One PixelPay transaction by `payment_uuid`.
    pub fn pixelpay_transaction(&self, payment_uuid: &str) -> Option<PixelPayTransaction> {
        lock(&self.inner.pixelpay.transactions)
            .iter()
            .find(|t| t.payment_uuid == payment_uuid)
            .cloned()
    }

    /// How many `POST /api/v2/transaction/...` calls arrived (faulted,
    /// refused and unauthorised ones included).
    pub fn pixelpay_requests(&self) -> usize {
        self.inner.pixelpay.requests.load(Ordering::SeqCst)
    }

    /// The next `n` PixelPay API calls get `fault`; `n == 0` recovers.
    /// Replaces any earlier PixelPay fault.
    pub fn pixelpay_fail_next(&self, n: u32, fault: PixelPayFault) {
        lock(&self.inner.pixelpay.fault).fail_next(n, fault);
        tracing::info!(n, ?fault, "PixelPay fault set");
    }

    /// PixelPay answers normally again. Requests already held stay held.
    pub fn pixelpay_recover(&self) {
        lock(&self.inner.pixelpay.fault).recover();
    }

    /// A buyer pays the QuickPay collection `collection`: it is recorded
    /// (approved, re-queryable with `status` by its `uuid` under its
    /// merchant) and its success webhook is POSTed to `success_url` in the
    /// background, retried as PixelPay does. Returns at once; follow the
    /// delivery with [`crate::Sandbox::pixelpay_wait_delivery`].
    pub async fn pixelpay_pay_collection(
        &self,
        collection: &PixelPayCollection,
        success_url: &str,
    ) -> anyhow::Result<PaidCollection> {
        self.inner.pixelpay_pay_collection(collection, success_url)
    }

    /// A collection failed: `{"success": false, "message": message}` is
    /// POSTed to `error_url` in the background, retried like the success
    /// webhook. Returns the delivery's id.
    pub async fn pixelpay_collection_error(&self, error_url: &str, message: &str) -> anyhow::Result<u64> {
        crate::check_url(error_url).context("the error webhook URL")?;
        let body = serde_json::to_string(&json!({ "success": false, "message": message }))
            .context("rendering the error webhook")?;
        Ok(self.inner.pixelpay_deliver("error", error_url, body))
    }

    /// Every collection webhook delivery, in the order they were started.
    pub fn pixelpay_deliveries(&self) -> Vec<PixelPayDelivery> {
        lock(&self.inner.pixelpay.deliveries).clone()
    }

    pub fn pixelpay_delivery(&self, id: u64) -> Option<PixelPayDelivery> {
        lock(&self.inner.pixelpay.deliveries)
            .iter()
            .find(|d| d.id == id)
            .cloned()
    }

    /// Waits until delivery `id` is done (delivered, or out of attempts),
    /// at most `limit`.
    pub async fn pixelpay_wait_delivery(&self, id: u64, limit: Duration) -> anyhow::Result<PixelPayDelivery> {
        let wait = async {
            loop {
                // Registered before the check, so no attempt is missed.
                let changed = self.inner.pixelpay.delivery_changed.notified();
                match self.pixelpay_delivery(id) {
                    None => anyhow::bail!("no PixelPay delivery {id}"),
                    Some(d) if d.done => return Ok(d),
                    Some(_) => changed.await,
                }
            }
        };
        tokio::time::timeout(limit, wait)
            .await
            .with_context(|| format!("PixelPay delivery {id} was not done within {limit:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_credentials_hash_as_documented() {
        assert_eq!(md5_hex(PIXELPAY_SANDBOX_SECRET_KEY), PIXELPAY_SANDBOX_AUTH_HASH);
        assert_eq!(pixelpay_payment_hash("A|B", "k", "s"), md5_hex("A|B|k|s"));
    }

    #[test]
    fn amounts_are_two_decimal_strings() {
        assert_eq!(parse_amount("1.00"), Some(100));
        assert_eq!(parse_amount("1234.56"), Some(123456));
        assert_eq!(parse_amount("0.07"), Some(7));
        for bad in ["1", "1.0", "1.000", ".50", "-1.00", "1,00", "1e2", "", "12345678901.00"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
        assert_eq!(major(100), json!(1.0));
        assert_eq!(major(9999).to_string(), "99.99");
    }

    #[test]
    fn the_amount_table_matches_the_docs() {
        assert!(matches!(forced(100), Forced::Approve));
        assert!(matches!(forced(101), Forced::Approve));
        assert!(matches!(forced(200), Forced::Decline(_)));
        assert!(matches!(forced(400), Forced::Decline(_)));
        assert!(matches!(forced(300), Forced::Refuse(400, _)));
        assert!(matches!(forced(500), Forced::Refuse(406, _)));
        assert!(matches!(forced(700), Forced::Refuse(500, _)));
        assert!(matches!(forced(800), Forced::ApproveThenTimeout));
        for minor in [600, 900, 1000, 1100, 1200, 1300, 1400] {
            assert!(matches!(forced(minor), Forced::Refuse(412, _)), "{minor}");
        }
        assert!(matches!(forced(1500), Forced::Approve));
    }
}
