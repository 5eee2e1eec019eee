//! The Wake Commerce "pagamento customizado" connector (providers.md §2):
//! `POST /wake/payment`, `/wake/authorize` and `/wake/capture`.
//!
//! Wake sends the cart; payhub turns it into the same order the HTTP API
//! takes (so every validation applies) and answers `{statusId, message}`
//! well within Wake's 3-second timeout: 1 awaiting payment, 2 not
//! authorised (with the reason), 3 paid, 4 authorised. Calls are idempotent
//! on `chave`.
//!
//! - **Card** (issue 10 §4): when `pagamento.form` carries a card and the
//!   shop takes PixelPay, the card is charged through the shop's PixelPay
//!   account while Wake waits: `/payment` sells (3 approved, 2 declined with
//!   the reason), `/authorize` authorises (4) and `/capture` captures (3).
//!   An outcome slower than [`CARD_BUDGET`] is answered 1, and the postback
//!   (with TID, NSU and the authorisation code) follows. The card lives in
//!   this request's memory only: never stored, logged or put on a queue.
//! - **PIX** otherwise (a PIX `paymentMethod`, or a shop without cards):
//!   the buyer gets the PIX code by e-mail, and Wake the postback when the
//!   order is paid; a card in the form is then never read.

use crate::accept::{self, AcceptError, Accepted};
use crate::orders::AppState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_connectors::internal::{CardAnswer, CardOperation, CardRequest, CardVerdict};
use payhub_core::events::OrderChannel;
use payhub_core::{Currency, Money, NewOrder, OrderStatus};
use payhub_store::shops::{self, Shop};
use serde_json::{Map, Value, json};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/wake/payment", post(payment))
        .route("/wake/authorize", post(authorize))
        .route("/wake/capture", post(capture))
        // Wake's carts are small; refuse anything absurd before reading it.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

/// How long a card call may take before Wake is answered 1 (Wake gives up
/// after 3 s): `PAYHUB_WAKE_CARD_BUDGET_MS`.
pub const CARD_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);

/// Wake's status ids.
const AWAITING_PAYMENT: u8 = 1;
const NOT_AUTHORISED: u8 = 2;
const PAID: u8 = 3;
const AUTHORISED: u8 = 4;

fn reply(status: StatusCode, status_id: u8, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"statusId": status_id, "message": message.into()})),
    )
        .into_response()
}

/// The shop whose Wake secret the call carries (the header configured in
/// Wake's admin: `Authorization: Bearer <secret>` or `X-Payhub-Wake-Secret`).
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Shop, Response> {
    let secret = headers
        .get("x-payhub-wake-secret")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(secret) = secret else {
        return Err(reply(StatusCode::UNAUTHORIZED, NOT_AUTHORISED, "credencial ausente"));
    };
    match shops::by_wake_secret(&st.store, secret).await {
        Ok(Some(shop)) => Ok(shop),
        Ok(None) => Err(reply(StatusCode::UNAUTHORIZED, NOT_AUTHORISED, "credencial inválida")),
        Err(e) => {
            tracing::error!(error = %e, "cannot check a Wake credential");
            Err(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_AUTHORISED,
                "indisponível; tente novamente",
            ))
        }
    }
}

/// Lower-cases every object key, so PascalCase (older stores) and
/// camelCase payloads read alike.
fn lower_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_lowercase(), lower_keys(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lower_keys).collect()),
        other => other,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A CEP sent as a number loses its leading zeros; put them back.
fn cep(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => n.as_u64().map(|n| format!("{n:08}")),
        other => text(Some(other)),
    }
}

/// Negative discounts (`-22.9`) mean the same as positive ones.
fn magnitude(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) => n.as_f64().map(|f| json!(f.abs())).unwrap_or(Value::Null),
        Some(Value::String(s)) => Value::String(s.trim().trim_start_matches('-').to_string()),
        _ => json!(0),
    }
}

/// Wake's cart as payhub's order JSON (the `POST /v1/orders` shape).
pub fn to_order(w: &Value) -> Value {
    let user = w.get("usuario").cloned().unwrap_or(Value::Null);
    let items: Vec<Value> = w
        .get("produtos")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let price = p.get("valor").cloned().unwrap_or(Value::Null);
                    let qty = p.get("quantidade").cloned().unwrap_or(Value::Null);
                    // Wake sends the unit price; the line total is ours to compute, exactly.
                    let total = Money::from_json(&price, Currency::Brl)
                        .ok()
                        .zip(qty.as_i64())
                        .and_then(|(m, q)| m.checked_mul(q))
                        .map(|m| Value::String(m.to_major_string()))
                        .unwrap_or_else(|| price.clone());
                    json!({
                        "code": text(p.get("codigo")).map(|c| c.chars().filter(char::is_ascii_alphanumeric).collect::<String>()),
                        // Product names longer than the 60 characters an item title allows are cut.
                        "title": text(p.get("nome")).map(|n| n.chars().take(60).collect::<String>()),
                        "price": price,
                        "qty": qty,
                        "total": total,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let address = user
        .get("endereco")
        .or_else(|| w.get("pagamento").and_then(|p| p.get("endereco")));
    let tax_id = text(user.get("cpf")).or_else(|| text(user.get("cnpj")));
    json!({
        "correlationID": text(w.get("chave")),
        "provider": "openpix",
        "items": items,
        "freight": w.get("frete").cloned().unwrap_or(json!(0)),
        "discount": magnitude(w.get("desconto")),
        "total": w.get("total").cloned().unwrap_or(Value::Null),
        "customer": {
            "name": text(user.get("nome")),
            "email": text(user.get("email")),
            "taxID": tax_id,
            "phone": text(user.get("telefone")),
            "birthDate": text(user.get("datanascimento")).map(|d| d.chars().take(10).collect::<String>()),
        },
        "shippingAddress": address.map(|a| json!({
            "street": text(a.get("logradouro")),
            "number": text(a.get("numero")).or_else(|| Some("s/n".into())),
            "complement": text(a.get("complemento")),
            "neighborhood": text(a.get("bairro")),
            "city": text(a.get("cidade")),
            "state": text(a.get("estado")),
            "zipcode": cep(a.get("cep")),
        })),
    })
}

/// The card the buyer typed into Wake's checkout (`pagamento.form`), as the
/// order API's `card` block, so that the same checks apply; `None` for a
/// PIX payment or a form without a card number.
fn card_block(cart: &Value) -> Option<Value> {
    let form = cart.get("pagamento")?.get("form")?;
    let method = text(form.get("paymentmethod")).unwrap_or_default().to_lowercase();
    if method.contains("pix") {
        return None;
    }
    let number = text(form.get("number"))?;
    // `expiry` is MM/YYYY; `month` and `year` say the same apart.
    let (month, year) = match (text(form.get("month")), text(form.get("year"))) {
        (Some(m), Some(y)) => (m, y),
        _ => {
            let e = text(form.get("expiry")).unwrap_or_default();
            let (m, y) = e.split_once('/').unwrap_or(("", ""));
            (m.to_string(), y.to_string())
        }
    };
    let yy: String = year
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Some(json!({
        "number": number,
        "cvv": text(form.get("cvc")).unwrap_or_default(),
        "expire": format!("{month:0>2}/{yy}"),
        "holder": text(form.get("name")).unwrap_or_default(),
    }))
}

/// A shop linked to a Wake store (`--wake-store`) takes calls for that store
/// only, and a call that does not say its store is refused.
fn check_store(shop: &Shop, cart: &Value) -> Result<(), &'static str> {
    let Some(expected) = shop.wake_store.as_deref() else {
        return Ok(());
    };
    match text(cart.get("loja")) {
        None => Err("loja ausente"),
        Some(loja) if loja != expected => Err("loja não corresponde a esta credencial"),
        Some(_) => Ok(()),
    }
}

/// Wake's `chave` (the order's key, and payhub's correlationID) is a GUID.
/// It is kept as Wake wrote it: the postback goes back under that key.
fn check_chave(cart: &Value) -> Result<String, &'static str> {
    let Some(chave) = text(cart.get("chave")) else {
        return Err("chave ausente");
    };
    match payhub_core::identity::parse_guid(&chave) {
        Ok(_) => Ok(chave),
        Err(_) => Err("chave inválida: deve ser um GUID"),
    }
}

/// `/payment` and `/authorize`: accept the cart as a PIX order.
async fn place(st: &AppState, headers: &HeaderMap, body: &[u8], array_form: bool, ok_status: u8) -> Response {
    let shop = match authenticate(st, headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        accept::count_invalid(OrderChannel::Wake);
        return reply(StatusCode::BAD_REQUEST, NOT_AUTHORISED, "corpo não é JSON");
    };
    let cart = match (array_form, parsed) {
        (_, Value::Array(mut a)) if a.len() == 1 => a.remove(0),
        (false, v @ Value::Object(_)) => v,
        (true, v @ Value::Object(_)) => v, // tolerate the unwrapped form too
        _ => return reply(StatusCode::OK, NOT_AUTHORISED, "esperado um único pedido"),
    };
    let cart = lower_keys(cart);
    if let Err(why) = check_store(&shop, &cart).and(check_chave(&cart).map(|_| ())) {
        return reply(StatusCode::OK, NOT_AUTHORISED, why);
    }
    let mut order_json = to_order(&cart);
    // A card is charged through the shop's PixelPay account; a shop that
    // takes no cards gets the order as PIX, the card unread.
    if shop.allows_provider("pixelpay")
        && let Some(card) = card_block(&cart)
    {
        order_json["provider"] = json!("pixelpay");
        order_json["currency"] = json!("BRL");
        order_json["card"] = card;
    }
    let pedido = text(cart.get("pedido"));
    drop(cart);
    let order = match NewOrder::from_json(&order_json) {
        Ok(o) => o,
        Err(errs) => {
            accept::count_invalid(OrderChannel::Wake);
            tracing::info!(shop_id = %shop.id, errors = %errs, "Wake order refused");
            return reply(StatusCode::OK, NOT_AUTHORISED, format!("pedido inválido: {errs}"));
        }
    };
    let card = match crate::card::parse(&order_json, Some(&order)) {
        Ok(c) => c,
        // Field errors quote nothing of the card.
        Err(errs) => return reply(StatusCode::OK, NOT_AUTHORISED, format!("cartão inválido: {errs}")),
    };
    drop(order_json); // the card's other copies are `body` and `card`
    match crate::health::refuse_if_down(
        &st.health,
        &st.store,
        shop.id,
        order.provider.as_str(),
        OrderChannel::Wake,
        card.is_some(),
    )
    .await
    {
        Ok(None) => {}
        Ok(Some(down)) => {
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_AUTHORISED,
                "pagamento indisponível no momento; tente novamente",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(down.retry_after_secs()),
            );
            return r;
        }
        Err(e) => tracing::warn!(error = %e, "provider health could not be read; accepting as usual"),
    }
    match accept::accept_with(
        &st.store,
        &st.stock,
        &shop,
        &order,
        OrderChannel::Wake,
        pedido.as_deref(),
    )
    .await
    {
        Ok(accepted) => {
            if let Accepted::Replayed(id) = &accepted {
                tracing::info!(order_id = %id, "the same Wake call again; the first order stands");
            }
            accept::publish_in_background(&st.outbox, &accepted);
            if let Some(card) = card {
                let operation = if ok_status == AUTHORISED {
                    CardOperation::Authorize
                } else {
                    CardOperation::Sale
                };
                let req = CardRequest {
                    order_id: accepted.id(),
                    card: card.card,
                    billing: card.billing,
                    operation,
                };
                let called = tokio::time::timeout(st.wake_card_budget, st.cards.charge(&req)).await;
                drop(req); // the card leaves memory here
                return card_reply(accepted.id(), operation, called);
            }
            let message = if ok_status == AUTHORISED {
                "Autorizado: aguardando o pagamento PIX (código enviado ao e-mail do comprador)"
            } else {
                "Aguardando pagamento: código PIX enviado ao e-mail do comprador"
            };
            reply(StatusCode::OK, ok_status, message)
        }
        Err(AcceptError::Store(e)) => {
            tracing::error!(error = %e, "cannot store a Wake order");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_AUTHORISED,
                "indisponível; tente novamente",
            )
        }
        Err(e) => reply(StatusCode::OK, NOT_AUTHORISED, e.to_string()),
    }
}

/// Wake's answer to a card call: 3 paid (or 4 authorised), 2 declined or
/// refused with the reason, 1 while the outcome is not known (a slow
/// provider; charge-creator stores it when it comes, and the postback
/// tells Wake; the card is never sent again).
fn card_reply(
    order_id: uuid::Uuid,
    operation: CardOperation,
    called: Result<Result<CardAnswer, String>, tokio::time::error::Elapsed>,
) -> Response {
    let pending = "Pagamento com cartão em processamento; a confirmação chega por postback";
    let answer = match called {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(%order_id, error = %e, "the Wake card payment got no answer");
            return reply(StatusCode::OK, AWAITING_PAYMENT, pending);
        }
        Err(_) => {
            tracing::info!(%order_id, "the Wake card payment is slower than Wake waits; postback follows");
            return reply(StatusCode::OK, AWAITING_PAYMENT, pending);
        }
    };
    let proof = [
        answer.transaction_id.as_deref().map(|t| format!("TID {t}")),
        answer.payment_uuid.as_deref().map(|n| format!("NSU {n}")),
        answer.auth_code.as_deref().map(|a| format!("autorização {a}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    match (answer.verdict, operation) {
        (CardVerdict::Approved, CardOperation::Sale) => {
            reply(StatusCode::OK, PAID, format!("Pago com cartão ({proof})"))
        }
        (CardVerdict::Approved, CardOperation::Authorize) => reply(
            StatusCode::OK,
            AUTHORISED,
            format!("Autorizado ({proof}); aguardando a captura"),
        ),
        (CardVerdict::Declined | CardVerdict::Refused, _) => reply(
            StatusCode::OK,
            NOT_AUTHORISED,
            format!(
                "Não autorizado: {}",
                answer
                    .reason
                    .as_deref()
                    .unwrap_or("o pagamento com cartão foi recusado")
            ),
        ),
        (CardVerdict::Indeterminate, _) => reply(StatusCode::OK, AWAITING_PAYMENT, pending),
    }
}

#[tracing::instrument(skip_all, fields(wake = "payment"))]
async fn payment(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    place(&st, &headers, &body, false, AWAITING_PAYMENT).await
}

#[tracing::instrument(skip_all, fields(wake = "authorize"))]
async fn authorize(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    place(&st, &headers, &body, true, AUTHORISED).await
}

/// `/capture`: Wake approved the order; answer with where the payment is.
#[tracing::instrument(skip_all, fields(wake = "capture"))]
async fn capture(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match authenticate(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, NOT_AUTHORISED, "corpo não é JSON");
    };
    let v = lower_keys(v);
    let chave = match check_store(&shop, &v).and(check_chave(&v)) {
        Ok(c) => c,
        Err(why) => return reply(StatusCode::OK, NOT_AUTHORISED, why),
    };
    // An open card authorisation is read from the charge itself, so that a
    // capture right after `/authorize` does not wait for the order's status.
    let status: Result<Option<(uuid::Uuid, String, bool)>, _> = sqlx::query_as(
        "SELECT o.id, o.status, coalesce(c.authorized_at IS NOT NULL AND c.captured_at IS NULL, false)
         FROM orders o LEFT JOIN charges c ON c.order_id = o.id
         WHERE o.shop_id = $1 AND o.correlation_id = $2",
    )
    .bind(shop.id)
    .bind(&chave)
    .fetch_optional(&st.store.pool)
    .await;
    match status {
        Ok(Some((order_id, status, open_authorisation))) => match OrderStatus::parse(&status) {
            Some(OrderStatus::Paid) => reply(StatusCode::OK, PAID, "Pago"),
            // A card authorisation: take the money now.
            Some(OrderStatus::Authorized | OrderStatus::Accepted) if open_authorisation => {
                let called = tokio::time::timeout(st.wake_card_budget, st.cards.capture(order_id)).await;
                card_reply(order_id, CardOperation::Sale, called)
            }
            Some(OrderStatus::Accepted | OrderStatus::AwaitingPayment) => reply(
                StatusCode::OK,
                AWAITING_PAYMENT,
                "Aguardando pagamento PIX; a confirmação chega por postback",
            ),
            _ => reply(
                StatusCode::OK,
                NOT_AUTHORISED,
                format!("pagamento não realizado ({status})"),
            ),
        },
        Ok(None) => reply(StatusCode::OK, NOT_AUTHORISED, "pedido desconhecido"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a Wake order");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_AUTHORISED,
                "indisponível; tente novamente",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_payment_becomes_a_valid_order() {
        let cart = lower_keys(serde_json::from_str(include_str!("../../../tests/fixtures/wake/payment.json")).unwrap());
        let order = NewOrder::from_json(&to_order(&cart)).unwrap();
        assert_eq!(order.total.minor(), 30000);
        assert_eq!(order.correlation_id.as_str(), "fe31c0e6-b625-4772-8890-dd7a89053d05");
        assert_eq!(order.shipping_address.unwrap().zipcode, "85920970");
        assert_eq!(order.items[0].total.minor(), 30000);
    }

    #[test]
    fn the_authorize_array_with_a_negative_discount_adds_up() {
        let v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/wake/authorize.json")).unwrap();
        let cart = lower_keys(v.as_array().unwrap()[0].clone());
        let order = NewOrder::from_json(&to_order(&cart)).unwrap();
        assert_eq!(order.discount.minor(), 2290);
        assert_eq!(order.total.minor(), 27710);
    }

    #[test]
    fn chave_is_a_guid_kept_as_wake_wrote_it() {
        assert_eq!(
            check_chave(&json!({"chave": "FE31C0E6-B625-4772-8890-DD7A89053D05"})).unwrap(),
            "FE31C0E6-B625-4772-8890-DD7A89053D05"
        );
        assert_eq!(
            check_chave(&json!({"chave": "pedido-1"})),
            Err("chave inválida: deve ser um GUID")
        );
        assert_eq!(check_chave(&json!({})), Err("chave ausente"));
    }

    #[test]
    fn pascal_case_and_string_cep_read_alike() {
        let v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/wake/payment.json")).unwrap();
        let pascal = pascalise(v.clone());
        let mut cart = lower_keys(pascal);
        cart["usuario"]["endereco"]["cep"] = json!("01310-100");
        let order = NewOrder::from_json(&to_order(&cart)).unwrap();
        assert_eq!(order.shipping_address.unwrap().zipcode, "01310100");
        assert_eq!(cep(Some(&json!(1310100))).unwrap(), "01310100");
    }

    fn pascalise(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let mut c = k.chars();
                        let k = c
                            .next()
                            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default();
                        (k, pascalise(v))
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(pascalise).collect()),
            other => other,
        }
    }
}
