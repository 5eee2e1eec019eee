//! The OpenPix-compatible HTTP API, the sandbox control routes and a tiny
//! payment page, all on the provider listener.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::charges::{self, ChargeView, charge_view};
use crate::faults::{self, ProviderFault, ShopFault};
use crate::model::{
    REFUND_CONFIRMED, REFUND_IN_PROCESSING, STATUS_ACTIVE, STATUS_COMPLETED, SandboxCharge, SandboxRefund,
    WebhookAttempt,
};
use crate::state::{Account, Inner, OpError, lock};
use crate::util::{self, html_escape, json_error};

type Shared = Arc<Inner>;

/// A 1×1 transparent PNG, served for `qrCodeImage` URLs so they do not 404.
/// (The sandbox has no QR encoder; the BR Code text is on the payment page.)
const PLACEHOLDER_PNG: [u8; 70] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0xf8, 0x5f, 0x0f, 0x00, 0x02, 0x87, 0x01, 0x80, 0xeb, 0x47, 0xba,
    0x92, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        // OpenPix API.
        .route("/api/v1/charge", post(create_charge).get(crate::listing::list_charges))
        .route("/api/v1/charge/{id}", get(get_charge))
        .route("/api/v1/charge/{id}/refund", post(refund_charge))
        .route("/api/v1/transaction/{id}", get(get_transaction))
        .route("/api/v1/webhook/public-keys", get(public_keys))
        // What paymentLinkUrl / qrCodeImage point at.
        .route("/pay/{payment_link_id}", get(pay_page))
        .route("/openpix/charge/brcode/image/{file}", get(qr_image))
        // Sandbox control.
        .route("/sandbox/charges", get(list_charges))
        .route("/sandbox/charges/{correlation_id}", get(show_charge))
        .route("/sandbox/charges/{correlation_id}/pay", post(control_pay))
        .route("/sandbox/charges/{correlation_id}/expire", post(control_expire))
        .route("/sandbox/charges/{correlation_id}/resend", post(control_resend))
        .route("/sandbox/charges/{correlation_id}/pay-again", post(control_pay_again))
        .route("/sandbox/emails", get(list_emails))
        .route("/sandbox/shop/webhooks", get(list_shop_webhooks))
        .route("/sandbox/shop/secrets", post(add_shop_secret))
        .route(
            "/sandbox/webhook-target",
            get(get_webhook_target).put(put_webhook_target),
        )
        .route("/sandbox/faults", get(show_faults))
        .route("/sandbox/faults/shop", post(set_shop_fault))
        .route("/sandbox/faults/provider", post(set_provider_fault))
        .route("/sandbox/webhooks/held", get(show_held))
        .route("/sandbox/webhooks/hold", post(hold_webhooks))
        .route("/sandbox/webhooks/release", post(release_webhooks))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

/// `Authorization: <AppID>`, raw, as OpenPix wants it: the account the
/// AppID opens, or the 401 reply to send.
pub(crate) fn authorize(state: &Inner, headers: &HeaderMap) -> Result<Account, Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let message = match given {
        Some(app_id) if app_id == state.app_id => return Ok(Account::Payhub),
        Some(crate::OTHER_MERCHANT_APP_ID) => return Ok(Account::Other),
        Some(_) => "AppID inválido",
        None => "missing Authorization header with the AppID",
    };
    Err(Box::new(json_error(StatusCode::UNAUTHORIZED, message)))
}

/// The create reply, `{"charge": {...}, "correlationID", "brCode"}`; the
/// get reply has the charge only. A struct keeps the documented field order.
#[derive(Serialize)]
struct ChargeReply<'a> {
    charge: ChargeView<'a>,
    #[serde(rename = "correlationID", skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(rename = "brCode", skip_serializing_if = "Option::is_none")]
    br_code: Option<&'a str>,
}

fn created_reply(c: &SandboxCharge) -> Response {
    Json(ChargeReply {
        charge: charge_view(c, true),
        correlation_id: Some(&c.correlation_id),
        br_code: Some(&c.br_code),
    })
    .into_response()
}

/// `POST /api/v1/charge[?return_existing=true]`.
async fn create_charge(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.charge_requests.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&state.provider_fault).take();
    match fault {
        None => {}
        Some(ProviderFault::Status(code)) => {
            tracing::info!(code, "provider fault: answering a charge request with an error");
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match code {
                429 => "sandbox provider fault: too many requests".to_string(),
                503 => "sandbox provider fault: service unavailable".to_string(),
                _ => format!("sandbox provider fault: answering {code}"),
            };
            return json_error(status, message);
        }
        Some(ProviderFault::Timeout) => {
            tracing::info!("provider fault: holding a charge request without answering");
            faults::hold_until_shutdown(&state.shutdown).await;
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox provider fault: a held request was released",
            );
        }
    }
    let account = match authorize(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    let new = match charges::parse_new_charge(&body) {
        Ok(new) => new,
        Err(message) => return json_error(StatusCode::BAD_REQUEST, message),
    };
    let return_existing = query
        .get("return_existing")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");

    let mut book = lock(state.book(account));
    if let Some(existing) = book.get(&new.correlation_id) {
        if return_existing {
            tracing::info!(correlation_id = %new.correlation_id, "returning the existing charge");
            return created_reply(existing);
        }
        return json_error(StatusCode::BAD_REQUEST, "correlationID already exists");
    }
    let charge = charges::build_charge(new, &state.public_base_url, OffsetDateTime::now_utc());
    tracing::info!(correlation_id = %charge.correlation_id, value = charge.value, "sandbox charge created");
    let reply = created_reply(&charge);
    book.insert(charge);
    reply
}

/// `GET /api/v1/charge/{id}`: by correlationID or transactionID.
async fn get_charge(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let account = match authorize(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    state.queries.fetch_add(1, Ordering::SeqCst);
    if let Some(reply) = query_fault(&state).await {
        return reply;
    }
    let book = lock(state.book(account));
    let Some(c) = book.find(&id) else {
        return json_error(StatusCode::NOT_FOUND, "charge not found");
    };
    match serde_json::to_value(charge_view(c, true)) {
        Ok(charge) => Json(json!({ "charge": charge })).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the charge: {e}")),
    }
}

/// `{"refund": {...}}`, as OpenPix answers a charge refund.
fn refund_reply(r: &SandboxRefund) -> Response {
    Json(json!({
        "refund": {
            "status": r.status,
            "value": r.value,
            "correlationID": r.correlation_id,
            "endToEndId": r.end_to_end_id,
            "time": r.time,
            "comment": r.comment,
        }
    }))
    .into_response()
}

/// `POST /api/v1/charge/{id}/refund` `{"correlationID", "value"?, "comment"?}`
/// (providers-2.md §1.3 a): gives back part or all of what a paid charge
/// received, never more than what is left. The refund's correlationID is its
/// idempotency key: the same one again answers the same refund (one
/// `IN_PROCESSING` is `CONFIRMED` when asked again).
async fn refund_charge(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.refund_requests.fetch_add(1, Ordering::SeqCst);
    let fault = lock(&state.refund_fault).take();
    match fault {
        None => {}
        Some(ProviderFault::Status(code)) => {
            return json_error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("sandbox provider fault: answering {code}"),
            );
        }
        Some(ProviderFault::Timeout) => {
            faults::hold_until_shutdown(&state.shutdown).await;
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox provider fault: a held request was released",
            );
        }
    }
    let account = match authorize(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    if let Some(message) = lock(&state.refund_refusals).pop_front() {
        tracing::info!(%message, "refusing a refund on request");
        return json_error(StatusCode::BAD_REQUEST, message);
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let Some(refund_id) = req
        .get("correlationID")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
    else {
        return json_error(StatusCode::BAD_REQUEST, "correlationID is required");
    };
    let value = match req.get("value") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "value must be an integer number of centavos > 0",
                );
            }
        },
    };
    let comment = req.get("comment").and_then(Value::as_str).map(str::to_string);
    if comment.as_ref().is_some_and(|c| c.chars().count() > 140) {
        return json_error(StatusCode::BAD_REQUEST, "comment must be at most 140 characters");
    }
    let mut book = lock(state.book(account));
    let Some(c) = book.get_mut(&id) else {
        return json_error(StatusCode::NOT_FOUND, "charge not found");
    };
    if let Some(r) = c.refunds.iter_mut().find(|r| r.correlation_id == refund_id) {
        if r.status == REFUND_IN_PROCESSING {
            r.status = REFUND_CONFIRMED.to_string();
        }
        return refund_reply(r);
    }
    if c.status != STATUS_COMPLETED {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Cobrança não foi paga, não pode ser reembolsada",
        );
    }
    let left = c.paid_value.unwrap_or(c.value) - c.refunds.iter().map(|r| r.value).sum::<i64>();
    let value = value.unwrap_or(left);
    if value <= 0 || value > left {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("O valor do reembolso ({value}) é maior que o valor disponível para reembolso ({left})"),
        );
    }
    let processing = state
        .refunds_in_processing
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let now = OffsetDateTime::now_utc();
    let refund = SandboxRefund {
        correlation_id: refund_id,
        value,
        status: if processing {
            REFUND_IN_PROCESSING
        } else {
            REFUND_CONFIRMED
        }
        .to_string(),
        end_to_end_id: format!("D{}", &charges::new_end_to_end_id(now)[1..]),
        comment,
        time: util::iso_millis(now),
    };
    tracing::info!(charge = %id, refund = %refund.correlation_id, value, status = %refund.status, "sandbox refund");
    let reply = refund_reply(&refund);
    c.refunds.push(refund);
    reply
}

/// The re-query fault, if one is set: the reply to send instead.
async fn query_fault(state: &Inner) -> Option<Response> {
    let fault = lock(&state.query_fault).take()?;
    match fault {
        ProviderFault::Status(code) => Some(json_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("sandbox provider fault: answering {code}"),
        )),
        ProviderFault::Timeout => {
            faults::hold_until_shutdown(&state.shutdown).await;
            Some(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox provider fault: released",
            ))
        }
    }
}

/// `GET /api/v1/transaction/{id}`: a payment the account received, by endToEndId.
async fn get_transaction(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let account = match authorize(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    state.queries.fetch_add(1, Ordering::SeqCst);
    if let Some(reply) = query_fault(&state).await {
        return reply;
    }
    let book = lock(state.book(account));
    let Some((c, value, time)) = book.find_payment(&id) else {
        return json_error(StatusCode::NOT_FOUND, "transaction not found");
    };
    Json(json!({ "transaction": charges::transaction_view(c, value, &time, &id) })).into_response()
}

/// `GET /api/v1/webhook/public-keys` (no auth).
async fn public_keys(State(state): State<Shared>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        Json(json!({
            "public_keys": [{
                "key_identifier": state.signer.key_identifier(),
                "is_current": true,
                "key": state.signer.public_pem(),
            }]
        })),
    )
        .into_response()
}

/// `GET /openpix/charge/brcode/image/{paymentLinkID}.png`.
async fn qr_image(State(state): State<Shared>, Path(file): Path<String>) -> Response {
    let id = file.strip_suffix(".png").unwrap_or(&file);
    if lock(&state.charges).find_by_payment_link(id).is_none() {
        return json_error(StatusCode::NOT_FOUND, "charge not found");
    }
    ([(header::CONTENT_TYPE, "image/png")], PLACEHOLDER_PNG).into_response()
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /pay/{paymentLinkID}`: a minimal checkout page with "pay" and
/// "expire" buttons that call the control routes, for demos by hand.
async fn pay_page(State(state): State<Shared>, Path(payment_link_id): Path<String>) -> Response {
    let charge = lock(&state.charges).find_by_payment_link(&payment_link_id).cloned();
    let Some(c) = charge else {
        return (StatusCode::NOT_FOUND, Html("<h1>Charge not found</h1>".to_string())).into_response();
    };
    let base = format!("/sandbox/charges/{}", encode_segment(&c.correlation_id));
    let actions = if c.status == STATUS_ACTIVE {
        format!(
            r#"<p><button data-url="{pay}">Pay R$ {amount}</button> <button data-url="{expire}">Expire</button></p>"#,
            pay = html_escape(&format!("{base}/pay")),
            expire = html_escape(&format!("{base}/expire")),
            amount = util::centavos_to_major(c.value),
        )
    } else {
        String::new()
    };
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>payhub sandbox checkout</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>PIX payment (sandbox)</h1>
<p>Charge <code>{cid}</code>: <strong>R$ {amount}</strong>, status <strong>{status}</strong>, expires {expires}.</p>
<p>PIX copia e cola:</p>
<textarea readonly rows="4" cols="60">{br_code}</textarea>
{actions}
<pre id="result"></pre>
<script>
for (const b of document.querySelectorAll("button[data-url]")) {{
  b.addEventListener("click", async () => {{
    const r = await fetch(b.dataset.url, {{ method: "POST" }});
    document.getElementById("result").textContent = r.status + " " + await r.text();
    setTimeout(() => location.reload(), 1500);
  }});
}}
</script>
</body></html>
"#,
        cid = html_escape(&c.correlation_id),
        amount = util::centavos_to_major(c.value),
        status = html_escape(&c.status),
        expires = html_escape(&c.expires_date),
        br_code = html_escape(&c.br_code),
    );
    Html(page).into_response()
}

/// `GET /sandbox/charges`.
async fn list_charges(State(state): State<Shared>) -> Response {
    let all = lock(&state.charges).all();
    Json(json!({ "charges": all })).into_response()
}

/// `GET /sandbox/charges/{correlationID}`.
async fn show_charge(State(state): State<Shared>, Path(correlation_id): Path<String>) -> Response {
    match lock(&state.charges).get(&correlation_id) {
        Some(c) => Json(json!({ "charge": c })).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "charge not found"),
    }
}

/// The reply of pay/expire/resend: the charge now, and what the webhook
/// target answered or why it could not be reached.
#[derive(Serialize)]
struct ControlReply {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    charge: Option<SandboxCharge>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookAttempt>,
    /// Every answer, when one operation sent several webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhooks: Option<Vec<WebhookAttempt>>,
}

fn control_reply(state: &Inner, correlation_id: &str, result: Result<WebhookAttempt, OpError>) -> Response {
    control_reply_many(state, correlation_id, result.map(|a| vec![a]), false)
}

/// `webhook` is the first answer; `list` adds `webhooks` with all of them.
fn control_reply_many(
    state: &Inner,
    correlation_id: &str,
    result: Result<Vec<WebhookAttempt>, OpError>,
    list: bool,
) -> Response {
    let charge = lock(&state.charges).get(correlation_id).cloned();
    let (status, error, webhooks) = match result {
        Ok(attempts) => (StatusCode::OK, None, Some(attempts)),
        Err(e) => (e.http_status(), Some(e.to_string()), None),
    };
    (
        status,
        Json(ControlReply {
            error,
            charge,
            webhook: webhooks.as_ref().and_then(|w| w.first().cloned()),
            webhooks: webhooks.filter(|_| list),
        }),
    )
        .into_response()
}

/// `POST /sandbox/charges/{correlationID}/pay`, optional body
/// `{"value": centavos, "transactionReceived": true}` (the latter also sends
/// `OPENPIX:TRANSACTION_RECEIVED`; the reply then lists both in `webhooks`).
async fn control_pay(State(state): State<Shared>, Path(correlation_id): Path<String>, body: Bytes) -> Response {
    let (paid_value, transaction_received) = if body.iter().all(u8::is_ascii_whitespace) {
        (None, false)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(obj)) => {
                let paid_value = match obj.get("value") {
                    None | Some(Value::Null) => None,
                    Some(v) => match v.as_i64() {
                        Some(n) if n > 0 => Some(n),
                        _ => {
                            return json_error(
                                StatusCode::BAD_REQUEST,
                                "value must be an integer number of centavos > 0",
                            );
                        }
                    },
                };
                let transaction_received = match obj.get("transactionReceived") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return json_error(StatusCode::BAD_REQUEST, "transactionReceived must be a boolean");
                    }
                };
                (paid_value, transaction_received)
            }
            _ => {
                return json_error(StatusCode::BAD_REQUEST, "the body must be empty or a JSON object");
            }
        }
    };
    let result = state
        .pay_events(Account::Payhub, &correlation_id, paid_value, transaction_received)
        .await;
    control_reply_many(&state, &correlation_id, result, transaction_received)
}

/// `POST /sandbox/charges/{correlationID}/expire`.
async fn control_expire(State(state): State<Shared>, Path(correlation_id): Path<String>) -> Response {
    let result = state.expire(&correlation_id).await;
    control_reply(&state, &correlation_id, result)
}

/// `POST /sandbox/charges/{correlationID}/pay-again`: a second payment.
async fn control_pay_again(State(state): State<Shared>, Path(correlation_id): Path<String>) -> Response {
    let result = state.pay_again(&correlation_id).await;
    control_reply(&state, &correlation_id, result)
}

/// `POST /sandbox/charges/{correlationID}/resend`: the last webhook again, byte for byte.
async fn control_resend(State(state): State<Shared>, Path(correlation_id): Path<String>) -> Response {
    let result = state.resend_last(&correlation_id).await;
    control_reply(&state, &correlation_id, result)
}

/// `GET /sandbox/emails`.
async fn list_emails(State(state): State<Shared>) -> Response {
    let emails = lock(&state.emails).clone();
    Json(json!({ "emails": emails })).into_response()
}

/// `GET /sandbox/shop/webhooks`.
async fn list_shop_webhooks(State(state): State<Shared>) -> Response {
    let webhooks = lock(&state.shop).received();
    Json(json!({ "webhooks": webhooks })).into_response()
}

/// `POST /sandbox/shop/secrets` `{"secret": "whsec_..."}`.
async fn add_shop_secret(State(state): State<Shared>, body: Bytes) -> Response {
    let secret = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("secret").and_then(Value::as_str).map(str::to_string));
    let Some(secret) = secret else {
        return json_error(StatusCode::BAD_REQUEST, "expected {\"secret\": \"whsec_...\"}");
    };
    match lock(&state.shop).add_secret(&secret) {
        Ok(()) => {
            tracing::info!("shop secret added");
            Json(json!({ "added": true })).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /sandbox/webhook-target`.
async fn get_webhook_target(State(state): State<Shared>) -> Response {
    Json(json!({ "url": state.webhook_target() })).into_response()
}

/// `PUT /sandbox/webhook-target` `{"url": "http://..."}` (or `null` to unset).
async fn put_webhook_target(State(state): State<Shared>, body: Bytes) -> Response {
    let url = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("url") {
            Some(Value::String(u)) => Some(u.clone()),
            Some(Value::Null) => None,
            _ => {
                return json_error(StatusCode::BAD_REQUEST, "expected {\"url\": \"http://...\"}");
            }
        },
        Err(_) => {
            return json_error(StatusCode::BAD_REQUEST, "expected {\"url\": \"http://...\"}");
        }
    };
    if let Some(u) = &url
        && let Err(e) = crate::check_url(u)
    {
        return json_error(StatusCode::BAD_REQUEST, e.to_string());
    }
    state.set_webhook_target(url.clone());
    Json(json!({ "url": url })).into_response()
}

/// `GET /sandbox/faults`: the active shop and provider faults (`null` when none).
async fn show_faults(State(state): State<Shared>) -> Response {
    let shop = lock(&state.shop).fault.describe();
    let provider = lock(&state.provider_fault).describe();
    Json(json!({ "shop": shop, "provider": provider })).into_response()
}

/// `POST /sandbox/faults/shop` `{"mode": "status"|"hang"|"recover", "status", "count"|"always"}`.
async fn set_shop_fault(State(state): State<Shared>, body: Bytes) -> Response {
    match faults::parse_command(&body, "hang", ShopFault::Hang, ShopFault::Status) {
        Ok(command) => {
            let mut shop = lock(&state.shop);
            shop.fault.apply(command);
            let fault = shop.fault.describe();
            tracing::info!(%fault, "shop fault set");
            Json(json!({ "fault": fault })).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e),
    }
}

/// `POST /sandbox/faults/provider` `{"mode": "status"|"timeout"|"recover", "status", "count"|"always"}`.
async fn set_provider_fault(State(state): State<Shared>, body: Bytes) -> Response {
    match faults::parse_command(&body, "timeout", ProviderFault::Timeout, ProviderFault::Status) {
        Ok(command) => {
            let mut plan = lock(&state.provider_fault);
            plan.apply(command);
            let fault = plan.describe();
            tracing::info!(%fault, "provider fault set");
            Json(json!({ "fault": fault })).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e),
    }
}

fn held_reply(state: &Inner) -> Value {
    let (hold, queued) = state.held_summary();
    json!({ "hold": hold, "queued": queued })
}

/// `GET /sandbox/webhooks/held`: `{"hold", "queued": [{"correlationID", "event"}]}`.
async fn show_held(State(state): State<Shared>) -> Response {
    Json(held_reply(&state)).into_response()
}

/// `POST /sandbox/webhooks/hold` `{"hold": true|false}`.
async fn hold_webhooks(State(state): State<Shared>, body: Bytes) -> Response {
    let hold = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("hold").and_then(Value::as_bool));
    let Some(hold) = hold else {
        return json_error(StatusCode::BAD_REQUEST, "expected {\"hold\": true|false}");
    };
    let queued = state.set_hold(hold);
    tracing::info!(hold, queued, "webhook hold changed");
    Json(held_reply(&state)).into_response()
}

/// `POST /sandbox/webhooks/release`, optional body `{"reverse": true}`.
async fn release_webhooks(State(state): State<Shared>, body: Bytes) -> Response {
    let reverse = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(obj)) => match obj.get("reverse") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return json_error(StatusCode::BAD_REQUEST, "reverse must be a boolean");
                }
            },
            _ => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "the body must be empty or {\"reverse\": true|false}",
                );
            }
        }
    };
    match state.release_held(reverse).await {
        Ok(webhooks) => {
            let mut reply = held_reply(&state);
            reply["webhooks"] = json!(webhooks);
            Json(reply).into_response()
        }
        Err(e) => {
            let mut reply = held_reply(&state);
            reply["error"] = json!(e.to_string());
            (e.http_status(), Json(reply)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode_segment("order-1_a.b~"), "order-1_a.b~");
        assert_eq!(encode_segment("a/b c\"<"), "a%2Fb%20c%22%3C");
    }
}
