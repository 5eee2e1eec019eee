//! The order API.

use crate::accept::{self, AcceptError, Accepted};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payhub_core::events::OrderChannel;
use payhub_core::{Money, NewOrder};
use payhub_service::problem::ApiError;
use payhub_store::Store;
use payhub_store::outbox::Outbox;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    pub stock: crate::stock::StockClient,
    /// charge-creator's internal card call.
    pub cards: payhub_connectors::internal::CardClient,
    /// `PAYHUB_PUBLIC_WEBHOOK_BASE_URL`, for PixelPay orders' callback URLs.
    pub public_webhook_base_url: Option<String>,
    /// Which provider accounts are down (charge-creator's probes).
    pub health: payhub_store::health::HealthCache,
    /// How long a Wake card call waits for the card's outcome.
    pub wake_card_budget: std::time::Duration,
    /// `PAYHUB_PUBLIC_CHECKOUT_BASE_URL`: where buyers open the hosted
    /// checkout (else the address the shop reached ingress at).
    pub checkout_base_url: Option<String>,
    /// charge-creator's Pago Seguro form call.
    pub redirects: payhub_connectors::internal::RedirectClient,
    /// Where a Pago Seguro order's signed form is posted
    /// (`PAYHUB_PAGOSEGURO_CHECKOUT_URL`).
    pub pagoseguro_checkout_url: String,
    /// Checks the buyer's "my orders" links (`PAYHUB_ORDER_LINK_KEY`).
    pub order_links: payhub_core::order_link::OrderLinks,
}

pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/orders", post(create_order))
        .route("/v1/orders/{correlation_id}", get(get_order))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

use payhub_service::problem::authenticate;

#[tracing::instrument(skip_all, fields(shop_id, correlation_id))]
async fn create_order(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    tracing::Span::current().record("shop_id", tracing::field::display(shop.id));
    let json: Value = serde_json::from_slice(&body).map_err(|e| {
        accept::count_invalid(OrderChannel::Api);
        ApiError::BadRequest(format!("the body is not JSON: {e}"))
    })?;
    // The order and its card are checked together, so that every field
    // error comes back at once.
    let order = NewOrder::from_json(&json);
    let checkout = crate::checkout::parse(&json);
    // A card order with a checkout takes the card on payhub's page.
    let card_on_page = matches!(checkout, Ok(Some(_))) && json.get("card").is_none_or(Value::is_null);
    let card = if card_on_page {
        Ok(None)
    } else {
        crate::card::parse(&json, order.as_ref().ok())
    };
    drop(json); // the card's only other copy in memory is `body`
    let (order, card, checkout) = match (order, card, checkout) {
        (Ok(o), Ok(c), Ok(k)) => (o, c, k),
        (o, c, k) => {
            let mut errors = o.err().unwrap_or_default();
            errors.0.extend(c.err().unwrap_or_default().0);
            errors.0.extend(k.err().unwrap_or_default().0);
            accept::count_invalid(OrderChannel::Api);
            return Err(ApiError::Validation(errors));
        }
    };
    // A Pago Seguro buyer pays on Pago Seguro's page, reached only from
    // payhub's checkout page.
    if order.provider == payhub_core::Provider::Pagoseguro && checkout.is_none() {
        let mut errors = payhub_core::ValidationErrors::default();
        errors.push(
            "checkout",
            "required",
            "a Pago Seguro order is paid on Pago Seguro's page, reached from payhub's checkout: \
             send checkout {returnUrl, cancelUrl}",
        );
        accept::count_invalid(OrderChannel::Api);
        return Err(ApiError::Validation(errors));
    }
    if checkout.is_some() && card.is_some() {
        let mut errors = payhub_core::ValidationErrors::default();
        errors.push(
            "checkout",
            "conflict",
            "an order paid on payhub's checkout page takes the card there, not in the request",
        );
        return Err(ApiError::Validation(errors));
    }
    drop(body);
    tracing::Span::current().record("correlation_id", order.correlation_id.as_str());
    if let Some(down) = crate::health::refuse_if_down(
        &st.health,
        &st.store,
        shop.id,
        order.provider.as_str(),
        OrderChannel::Api,
        card.is_some(),
    )
    .await?
    {
        return Ok(crate::health::unavailable(&down));
    }
    let (status, id, replayed, created) =
        match accept::accept(&st.store, &st.stock, &shop, &order, OrderChannel::Api).await {
            Ok(accepted @ Accepted::Created(..)) => (StatusCode::CREATED, accepted.id(), false, Some(accepted)),
            Ok(Accepted::Replayed(id)) => (StatusCode::OK, id, true, None),
            Err(e) => return Err(accept_error(e)),
        };
    // The buyer's page, opened with the order (a replay opens it if the
    // first request stopped between the two), before the order's event is
    // published, so that the first webhook can carry its URL. Should this
    // fail, the event stays in the outbox, which publishes it later.
    if let Some(checkout) = &checkout {
        crate::checkout::open(&st.store, id, checkout).await?;
    }
    // A card is charged now, while the shop waits; charge-creator keeps one
    // call per order, so a replayed request never charges twice.
    let card_answer = match card {
        Some(card) => Some(charge_card(&st, id, card).await),
        None => None,
    };
    // The answer shows the order as stored, before the pipeline moves it.
    // A new order not charged here has no invoice yet, and a checkout
    // session only if this request opened one: the answer reads neither (a
    // replay reads both).
    let invoiced = replayed || card_answer.is_some();
    let mut view = order_view_of(&st.store, id, st.public_webhook_base_url.as_deref(), invoiced).await?;
    attach_checkout(&st, &headers, id, &mut view, replayed || checkout.is_some()).await?;
    // Published once the answer is read, so that the answer cannot show a
    // status the pipeline already moved on (on a loaded machine the order
    // was sometimes `awaiting_payment` by the time it was read). Should
    // anything above fail, the event is in the outbox, which publishes it.
    if let Some(accepted) = &created {
        accept::publish_in_background(&st.outbox, accepted);
    }
    if let Some(answer) = card_answer {
        view["cardPayment"] = answer;
    }
    if replayed {
        Ok((status, [("idempotent-replayed", "true")], axum::Json(view)).into_response())
    } else {
        Ok((status, axum::Json(view)).into_response())
    }
}

/// The card's outcome as the order API shows it.
async fn charge_card(st: &AppState, order_id: Uuid, card: crate::card::CardPayment) -> Value {
    let req = payhub_connectors::internal::CardRequest {
        order_id,
        card: card.card,
        billing: card.billing,
        operation: payhub_connectors::internal::CardOperation::Sale,
    };
    let answer = st.cards.charge(&req).await;
    drop(req);
    match answer {
        Ok(a) => json!({
            "outcome": a.verdict,
            "reason": a.reason,
            "card": a.card_masked,
            "brand": a.card_brand,
            "authorizationCode": a.auth_code,
            "transactionId": a.transaction_id,
            "paymentUuid": a.payment_uuid,
            "replayed": a.replayed,
        }),
        Err(e) => {
            tracing::warn!(order_id = %order_id, error = %e, "the card payment got no answer");
            json!({
                "outcome": "indeterminate",
                "reason": "the card payment got no answer in time; payhub will not charge the card again, \
                           and the order's webhook tells its outcome",
            })
        }
    }
}

pub fn accept_error(e: AcceptError) -> ApiError {
    match e {
        AcceptError::Conflict(_) => ApiError::Conflict(e.to_string()),
        AcceptError::ProviderNotAllowed(p) => {
            let mut errs = payhub_core::ValidationErrors::default();
            errs.push("provider", "not_allowed", format!("{p} is not enabled for this shop"));
            ApiError::Validation(errs)
        }
        AcceptError::Rules(errs) | AcceptError::Unsupported(errs) => ApiError::Validation(errs),
        AcceptError::StockUnavailable(why) => ApiError::Unavailable(format!(
            "the shop's stock service could not confirm the items ({why}); try again"
        )),
        AcceptError::Store(e) => e.into(),
    }
}

async fn get_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(correlation_id): Path<String>,
) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    let id: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM orders WHERE shop_id = $1 AND correlation_id = $2")
        .bind(shop.id)
        .bind(&correlation_id)
        .fetch_optional(&st.store.pool)
        .await?;
    // Another shop's order is indistinguishable from a missing one.
    let Some((id,)) = id else {
        return Err(ApiError::NotFound(format!("no order {correlation_id} for this shop")));
    };
    let mut view = order_view(&st.store, id, st.public_webhook_base_url.as_deref()).await?;
    attach_checkout(&st, &headers, id, &mut view, true).await?;
    Ok(axum::Json(view).into_response())
}

/// The order's hosted checkout (URL and expiry), when it has one, and the
/// buyer's "my orders" page (`myOrdersUrl`, issue 11 §3).
/// The buyer's links: "my orders", and the checkout page when `lookup`
/// (the order may have a checkout session).
async fn attach_checkout(
    st: &AppState,
    headers: &HeaderMap,
    id: Uuid,
    view: &mut Value,
    lookup: bool,
) -> Result<(), ApiError> {
    let base = crate::checkout::base_url(st.checkout_base_url.as_deref(), headers);
    view["myOrdersUrl"] = st.order_links.url(&base, id).into();
    if lookup && let Some(checkout) = crate::checkout::view(&st.store, id, &base).await? {
        view["checkout"] = checkout;
    }
    Ok(())
}

/// The stored items as the API shows them: like the request, amounts as
/// decimals in the order's currency.
fn items_view(stored: &Value, currency: &str) -> Value {
    let money = |v: &Value| v["minor"].as_i64().map(|m| amount(m, currency)).unwrap_or(Value::Null);
    Value::Array(
        stored
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        json!({
                            "code": i["code"],
                            "title": i["title"],
                            "description": i["description"],
                            "price": money(&i["unit_price"]),
                            "qty": i["qty"],
                            "tax": money(&i["tax"]),
                            "total": money(&i["total"]),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn ts(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn amount(minor: i64, currency: &str) -> Value {
    let major = payhub_core::Currency::parse(currency)
        .map(|c| Money::from_minor(minor, c).to_major_string())
        .unwrap_or_else(|| minor.to_string());
    Value::String(major)
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    correlation_id: String,
    provider: String,
    status: String,
    currency: String,
    items_minor: i64,
    tax_minor: i64,
    freight_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    status_reason: Option<String>,
    summary: String,
    items: Value,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    paid_at: Option<OffsetDateTime>,
    end_to_end_id: Option<String>,
    provider_fee_minor: i64,
    br_code: Option<String>,
    qr_code_image_url: Option<String>,
    payment_link_url: Option<String>,
    expires_at: Option<OffsetDateTime>,
    provider_charge_id: Option<String>,
    method: Option<String>,
    provider_account: Option<String>,
    callback_token: Option<String>,
    customer_name: String,
    customer_email: String,
    customer_phone: Option<String>,
    customer_tax_id: String,
    customer_birth_date: Option<time::Date>,
    h_from: Vec<Option<String>>,
    h_to: Vec<String>,
    h_reason: Vec<Option<String>>,
    h_at: Vec<OffsetDateTime>,
    h_by: Vec<String>,
    carrier: Option<String>,
    tracking_code: Option<String>,
    tracking_url: Option<String>,
    promised_delivery_on: Option<time::Date>,
    shipped_at: Option<OffsetDateTime>,
    delivered_at: Option<OffsetDateTime>,
}

/// Which provider account and method take the money: for a PIX order once
/// its charge exists; for a PixelPay order always, with the order's callback
/// URL, which the shop gives PixelPay as a QuickPay collection's success
/// and error webhook URL (payhub gives it with a card sale itself). The URL
/// is the order's secret: only this view shows it.
fn payment_view(o: &OrderRow, callback_base: Option<&str>) -> Value {
    if o.provider == payhub_core::Provider::Pixelpay.as_str() {
        let callback = callback_base
            .zip(o.callback_token.as_deref())
            .map(|(base, token)| payhub_service::callbacks::pixelpay_callback_url(base, token));
        return json!({
            "provider": o.provider,
            "method": o.method.as_deref().unwrap_or(payhub_core::PaymentMethod::Card.as_str()),
            "account": o.provider_account,
            "callbackUrl": callback,
        });
    }
    match &o.method {
        Some(method) => json!({
            "provider": o.provider,
            "method": method,
            "account": o.provider_account,
        }),
        None => Value::Null,
    }
}

/// The order as the shop's back office and the buyer's "my orders" see it.
/// One statement: the order, its charge and its history together.
/// `callback_base` is `PAYHUB_PUBLIC_WEBHOOK_BASE_URL`, under which a PixelPay
/// order's callback URL is shown.
pub async fn order_view(store: &Store, id: Uuid, callback_base: Option<&str>) -> Result<Value, ApiError> {
    order_view_of(store, id, callback_base, true).await
}

/// [`order_view`]; `invoiced: false` for an order just created, which has
/// no invoice yet (its `invoice` is null without a read).
async fn order_view_of(
    store: &Store,
    id: Uuid,
    callback_base: Option<&str>,
    invoiced: bool,
) -> Result<Value, ApiError> {
    let o: OrderRow = sqlx::query_as(
        "SELECT o.id, o.correlation_id, o.provider, o.status, o.currency::text AS currency, o.items_minor, o.tax_minor,
                o.freight_minor, o.discount_minor, o.total_minor, o.status_reason, o.summary, o.items, o.created_at,
                o.updated_at, o.paid_at, o.end_to_end_id, o.provider_fee_minor,
                c.br_code, c.qr_code_image_url, c.payment_link_url, c.expires_at, c.provider_charge_id,
                c.method, c.provider_account, o.callback_token,
                o.customer_name, o.customer_email, o.customer_phone, o.customer_tax_id, o.customer_birth_date,
                h.h_from, h.h_to, h.h_reason, h.h_at, h.h_by,
                o.carrier, o.tracking_code, o.tracking_url, o.promised_delivery_on, o.shipped_at, o.delivered_at
         FROM orders o
         LEFT JOIN charges c ON c.order_id = o.id
         CROSS JOIN LATERAL (
             SELECT COALESCE(array_agg(from_status ORDER BY id), '{}') AS h_from,
                    COALESCE(array_agg(to_status ORDER BY id), '{}') AS h_to,
                    COALESCE(array_agg(reason ORDER BY id), '{}') AS h_reason,
                    COALESCE(array_agg(at ORDER BY id), '{}') AS h_at,
                    COALESCE(array_agg(actor ORDER BY id), '{}') AS h_by
             FROM order_history WHERE order_id = o.id) h
         WHERE o.id = $1",
    )
    .bind(id)
    .fetch_one(&store.pool)
    .await?;
    // Issue 12 §3: the invoice, once the shop's invoicing service was asked.
    let invoice = if invoiced {
        payhub_store::invoicing::for_order(store, id).await?
    } else {
        None
    };
    let cur = o.currency.clone();
    let charge = match (
        &o.br_code,
        &o.qr_code_image_url,
        &o.payment_link_url,
        &o.provider_charge_id,
    ) {
        (Some(br), Some(qr), Some(link), Some(charge_id)) => Some((br, qr, link, o.expires_at, charge_id)),
        _ => None,
    };
    let history = o
        .h_from
        .iter()
        .zip(&o.h_to)
        .zip(&o.h_reason)
        .zip(&o.h_at)
        .zip(&o.h_by)
        .map(|((((from, to), reason), at), by)| (from, to, reason, *at, by));
    Ok(json!({
        "id": o.id,
        // The unique payment code of the order: what the provider knows it by.
        "paymentCode": o.id,
        "correlationID": o.correlation_id,
        "provider": o.provider,
        "status": o.status,
        "statusReason": o.status_reason,
        "currency": cur,
        "items": items_view(&o.items, &cur),
        "summary": o.summary,
        "amounts": {
            "items": amount(o.items_minor, &cur),
            "tax": amount(o.tax_minor, &cur),
            "freight": amount(o.freight_minor, &cur),
            "discount": amount(o.discount_minor, &cur),
            "total": amount(o.total_minor, &cur),
            "totalMinor": o.total_minor,
            "providerFee": amount(o.provider_fee_minor, &cur),
            "net": amount(o.total_minor - o.provider_fee_minor, &cur),
        },
        "charge": charge.map(|c| json!({
            "brCode": c.0,
            "qrCodeImage": c.1,
            "paymentLinkUrl": c.2,
            "expiresAt": ts(c.3),
            "providerChargeId": c.4,
        })),
        // Which of the provider's accounts and which method took (or will
        // take) the money: `platform` or the shop's own account.
        "payment": payment_view(&o, callback_base),
        "customer": {
            "name": o.customer_name,
            "email": o.customer_email,
            "phone": o.customer_phone,
            "taxID": (!o.customer_tax_id.is_empty()).then_some(&o.customer_tax_id),
            "birthDate": o.customer_birth_date.map(|d| d.to_string()),
        },
        "paidAt": ts(o.paid_at),
        "endToEndId": o.end_to_end_id,
        "createdAt": ts(Some(o.created_at)),
        "updatedAt": ts(Some(o.updated_at)),
        "history": history.into_iter().map(|h| json!({
            "from": h.0, "to": h.1, "reason": h.2, "at": ts(Some(h.3)), "by": h.4,
        })).collect::<Vec<_>>(),
        // Issue 12: the shipment and the delivery promise.
        "shipment": {
            "carrier": o.carrier,
            "trackingCode": o.tracking_code,
            "trackingUrl": o.tracking_url,
            "promisedDeliveryOn": o.promised_delivery_on.map(|d| d.to_string()),
            "shippedAt": ts(o.shipped_at),
            "deliveredAt": ts(o.delivered_at),
        },
        // Issue 12 §3: requested, issued (number, DANFE and XML links) or
        // failed (the reason); null when the shop does not invoice here.
        "invoice": invoice,
    }))
}
