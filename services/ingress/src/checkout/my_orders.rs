//! "My orders" (issue 11 §3): the buyer's own page of one order, behind the
//! link every buyer e-mail carries (`/my/orders/{order id}/{token}`, the
//! token an HMAC of the order id, see [`payhub_core::order_link`]); no login.
//! It shows the status, the items and amounts, the payment method, the PIX
//! code and QR while unpaid, the receipt once paid, and the history. The
//! same content as JSON at `{token}.json` (or with `Accept:
//! application/json`), for a shop that embeds it; the page itself may be
//! framed by the shop's own origins only (`frame-ancestors`). Nothing of
//! the buyer's beyond what the buyer knows: no name, e-mail, tax id or
//! address; of a card only its brand and masked number.
//!
//! An unknown order and a wrong token get the same 404.

use super::i18n::{Lang, Text};
use super::{Item, LangQuery, Pix, not_found_saying, qr_response, secured, store_error};
use crate::orders::AppState;
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::OrderStatus;
use payhub_documents::Layout;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/my/orders/{order_id}/{token}", get(page))
        .route("/my/orders/{order_id}/{token}/qr.svg", get(qr))
        .route("/my/orders/{order_id}/{token}/receipt", get(receipt))
}

#[derive(sqlx::FromRow)]
struct Row {
    correlation_id: String,
    shop_name: String,
    checkout_locale: String,
    checkout_origins: Vec<String>,
    provider: String,
    status: String,
    currency: String,
    items: Value,
    freight_minor: i64,
    tax_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    br_code: Option<String>,
    charge_expires_at: Option<OffsetDateTime>,
    card_brand: Option<String>,
    card_masked: Option<String>,
}

/// The order behind a link, if the link is the order's.
async fn load(st: &AppState, order_id: &str, token: &str) -> Result<Option<(Uuid, Row)>, payhub_store::StoreError> {
    let Ok(id) = Uuid::parse_str(order_id) else {
        return Ok(None);
    };
    // The canonical form only: one link per order.
    if id.to_string() != order_id || !st.order_links.verify(id, token) {
        return Ok(None);
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT o.correlation_id, sh.name AS shop_name, sh.checkout_locale, sh.checkout_origins, o.provider,
                o.status, o.currency::text AS currency, o.items, o.freight_minor, o.tax_minor, o.discount_minor,
                o.total_minor, c.br_code, c.expires_at AS charge_expires_at, c.card_brand, c.card_masked
         FROM orders o JOIN shops sh ON sh.id = o.shop_id LEFT JOIN charges c ON c.order_id = o.id
         WHERE o.id = $1",
    )
    .bind(id)
    .fetch_optional(&st.store.pool)
    .await?;
    Ok(row.map(|r| (id, r)))
}

async fn history(st: &AppState, id: Uuid) -> Result<Vec<(String, OffsetDateTime)>, payhub_store::StoreError> {
    Ok(
        sqlx::query_as("SELECT to_status, at FROM order_history WHERE order_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&st.store.pool)
            .await?,
    )
}

/// The buyer's word for an order status (every status: a new one must be
/// given its words here).
fn status_word(t: &Text, status: &str) -> &'static str {
    match OrderStatus::parse(status) {
        Some(OrderStatus::Accepted) => t.status_received,
        Some(OrderStatus::AwaitingPayment) => t.status_waiting,
        Some(OrderStatus::Authorized | OrderStatus::Paid) => t.status_paid,
        Some(OrderStatus::Expired) => t.status_expired,
        Some(OrderStatus::Failed) => t.status_failed,
        Some(OrderStatus::UnderReview) => t.status_confirming,
        Some(OrderStatus::PartiallyRefunded) => t.status_partially_refunded,
        Some(OrderStatus::Refunded) => t.status_refunded,
        Some(OrderStatus::Fulfilling) => t.status_fulfilling,
        Some(OrderStatus::Shipped) => t.status_shipped,
        Some(OrderStatus::Delivered) => t.status_delivered,
        Some(OrderStatus::Returned) => t.status_returned,
        Some(OrderStatus::Cancelled) => t.status_cancelled,
        None => t.status_confirming,
    }
}

/// Paid, so a receipt exists (also after a refund or while shipping).
fn is_paid(status: &str) -> bool {
    matches!(
        OrderStatus::parse(status),
        Some(
            OrderStatus::Paid
                | OrderStatus::PartiallyRefunded
                | OrderStatus::Refunded
                | OrderStatus::Fulfilling
                | OrderStatus::Shipped
                | OrderStatus::Delivered
                | OrderStatus::Returned
                | OrderStatus::Cancelled
        )
    )
}

/// The PIX code, while the order can still be paid with it.
fn open_pix(r: &Row, now: OffsetDateTime) -> Option<(&str, Option<OffsetDateTime>)> {
    let waiting = matches!(
        OrderStatus::parse(&r.status),
        Some(OrderStatus::Accepted | OrderStatus::AwaitingPayment)
    );
    let br = r.br_code.as_deref()?;
    (waiting && r.charge_expires_at.is_none_or(|e| e > now)).then_some((br, r.charge_expires_at))
}

fn method(t: &Text, r: &Row) -> String {
    match payhub_core::Provider::parse(&r.provider).map(|p| p.method()) {
        Ok(payhub_core::PaymentMethod::Pix) => t.method_pix.to_string(),
        Ok(payhub_core::PaymentMethod::Card) => match (&r.card_brand, &r.card_masked) {
            (Some(b), Some(m)) => format!("{} {b} {m}", t.method_card),
            (None, Some(m)) => format!("{} {m}", t.method_card),
            _ => t.method_card.to_string(),
        },
        _ => t.method_redirect.to_string(),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

struct Receipt {
    a4: String,
    roll80: String,
}

struct Step {
    at: String,
    at_text: String,
    status_text: &'static str,
}

#[derive(Template)]
#[template(path = "my_order.html")]
struct Page<'a> {
    lang: &'static str,
    t: &'static Text,
    shop_name: &'a str,
    reference: &'a str,
    state: &'static str,
    status: &'a str,
    status_text: &'static str,
    method: String,
    items: Vec<Item>,
    freight: Option<String>,
    tax: Option<String>,
    discount: Option<String>,
    total: String,
    pix: Option<Pix>,
    receipt: Option<Receipt>,
    history: Vec<Step>,
    page_url: String,
}

fn wants_json(token: &str, headers: &HeaderMap) -> bool {
    token.ends_with(".json")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                a.split(',')
                    .next()
                    .is_some_and(|m| m.trim().starts_with("application/json"))
            })
}

fn lang_of(q: &LangQuery, headers: &HeaderMap, shop_default: &str) -> Lang {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    Lang::choose(q.lang.as_deref(), accept, shop_default)
}

/// The one answer for an unknown order and a wrong token.
fn not_found(json: bool, lang: Lang) -> Response {
    if json {
        let mut r = (StatusCode::NOT_FOUND, axum::Json(json!({"error": "not_found"}))).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        return r;
    }
    let t = lang.text();
    not_found_saying(lang, t.order_not_found_title, t.order_not_found_body)
}

async fn page(
    State(st): State<AppState>,
    Path((order_id, token)): Path<(String, String)>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let json = wants_json(&token, &headers);
    let token = token.strip_suffix(".json").unwrap_or(&token);
    let (id, r) = match load(&st, &order_id, token).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(json, lang_of(&q, &headers, "pt-BR")),
        Err(e) => return store_error(e),
    };
    let steps = match history(&st, id).await {
        Ok(h) => h,
        Err(e) => return store_error(e),
    };
    let now = OffsetDateTime::now_utc();
    let base = format!("/my/orders/{id}/{token}");
    let paid = is_paid(&r.status);
    let pix = open_pix(&r, now);
    let items = r.items.as_array().cloned().unwrap_or_default();
    if json {
        let body = json!({
            "orderId": id,
            "reference": r.correlation_id,
            "shop": r.shop_name,
            "status": r.status,
            "currency": r.currency.trim(),
            "items": items.iter().map(|i| json!({
                "title": i["title"],
                "qty": i["qty"],
                "totalMinor": i["total"]["minor"],
            })).collect::<Vec<_>>(),
            "freightMinor": r.freight_minor,
            "taxMinor": r.tax_minor,
            "discountMinor": r.discount_minor,
            "totalMinor": r.total_minor,
            "payment": {
                "provider": r.provider,
                "method": payhub_core::Provider::parse(&r.provider).map(|p| p.method().as_str()).ok(),
                "cardBrand": r.card_brand,
                "cardMasked": r.card_masked,
            },
            "pix": pix.map(|(br, exp)| json!({"brCode": br, "expiresAt": exp.map(rfc3339), "qrUrl": format!("{base}/qr.svg")})),
            "receipt": paid.then(|| json!({"a4": format!("{base}/receipt?layout=a4"), "80mm": format!("{base}/receipt?layout=80mm")})),
            "history": steps.iter().map(|(s, at)| json!({"status": s, "at": rfc3339(*at)})).collect::<Vec<_>>(),
        });
        return secured(axum::Json(body).into_response(), &r.checkout_origins, https(&st));
    }
    let lang = lang_of(&q, &headers, &r.checkout_locale);
    let t = lang.text();
    let money = |m: i64| lang.money(m, r.currency.trim());
    let nonzero = |m: i64| (m != 0).then(|| money(m));
    let page = Page {
        lang: lang.tag(),
        t,
        shop_name: &r.shop_name,
        reference: &r.correlation_id,
        state: if paid {
            "paid"
        } else if pix.is_some() {
            "waiting"
        } else {
            "other"
        },
        status: &r.status,
        status_text: status_word(t, &r.status),
        method: method(t, &r),
        items: items
            .iter()
            .map(|i| Item {
                title: i["title"].as_str().unwrap_or_default().to_string(),
                qty: i["qty"].as_i64().unwrap_or(1),
                total: money(i["total"]["minor"].as_i64().unwrap_or(0)),
            })
            .collect(),
        freight: nonzero(r.freight_minor),
        tax: nonzero(r.tax_minor),
        discount: nonzero(r.discount_minor),
        total: money(r.total_minor),
        pix: pix.map(|(br, exp)| Pix {
            qr_url: format!("{base}/qr.svg"),
            br_code: br.to_string(),
            expires_at: exp.map(rfc3339).unwrap_or_default(),
            minutes_left: exp.map(|e| (e - now).whole_minutes().max(0)),
        }),
        receipt: paid.then(|| Receipt {
            a4: format!("{base}/receipt?layout=a4"),
            roll80: format!("{base}/receipt?layout=80mm"),
        }),
        history: steps
            .iter()
            .map(|(s, at)| Step {
                at: rfc3339(*at),
                at_text: format!(
                    "{:02}/{:02}/{} {:02}:{:02} UTC",
                    at.day(),
                    u8::from(at.month()),
                    at.year(),
                    at.hour(),
                    at.minute()
                ),
                status_text: status_word(t, s),
            })
            .collect(),
        page_url: base.clone(),
    };
    match page.render() {
        Ok(html) => secured(
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            &r.checkout_origins,
            https(&st),
        ),
        Err(e) => {
            tracing::error!(error = %e, "the my-orders page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn https(st: &AppState) -> bool {
    st.checkout_base_url
        .as_deref()
        .is_some_and(|b| b.starts_with("https://"))
}

async fn qr(State(st): State<AppState>, Path((order_id, token)): Path<(String, String)>) -> Response {
    match load(&st, &order_id, &token).await {
        Ok(Some((_, r))) => qr_response(open_pix(&r, OffsetDateTime::now_utc()).map(|(br, _)| br)),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(serde::Deserialize)]
struct ReceiptQuery {
    layout: Option<String>,
}

/// The paid order's receipt, through `payhub_store::receipts::get` (the
/// same bytes as the e-mailed one, checked against its recorded hash).
async fn receipt(
    State(st): State<AppState>,
    Path((order_id, token)): Path<(String, String)>,
    Query(q): Query<ReceiptQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&LangQuery::default(), &headers, "pt-BR");
    let (id, r) = match load(&st, &order_id, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(false, lang),
        Err(e) => return store_error(e),
    };
    let Some(layout) = Layout::parse(q.layout.as_deref().unwrap_or("a4")) else {
        return (StatusCode::BAD_REQUEST, "layout must be a4 or 80mm").into_response();
    };
    match payhub_store::receipts::get(&st.store, id, layout).await {
        Ok(Some(rendered)) => {
            let mut resp = crate::receipt::pdf(&rendered, &r.correlation_id, layout);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("private, no-store"),
            );
            resp.headers_mut()
                .insert("referrer-policy", header::HeaderValue::from_static("no-referrer"));
            resp
        }
        // Not paid (yet): the same answer as for no order.
        Ok(None) => not_found(false, lang),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_the_buyers_word_in_both_languages() {
        for lang in [Lang::PtBr, Lang::Es] {
            let t = lang.text();
            for s in [
                "accepted",
                "awaiting_payment",
                "paid",
                "expired",
                "failed",
                "under_review",
                "refunded",
                "shipped",
                "delivered",
                "cancelled",
            ] {
                assert!(!status_word(t, s).is_empty(), "{s}");
            }
        }
        assert_eq!(status_word(Lang::PtBr.text(), "shipped"), "Enviado");
        assert!(is_paid("shipped") && is_paid("paid") && !is_paid("awaiting_payment") && !is_paid("expired"));
    }

    #[test]
    fn json_is_asked_for_by_suffix_or_accept() {
        let mut h = HeaderMap::new();
        assert!(wants_json("abc.json", &h));
        assert!(!wants_json("abc", &h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(wants_json("abc", &h));
        h.insert(header::ACCEPT, "text/html,application/json;q=0.9".parse().unwrap());
        assert!(!wants_json("abc", &h));
    }
}
