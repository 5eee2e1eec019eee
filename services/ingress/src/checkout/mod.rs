//! The hosted checkout (issue 11 §1): a shop that sends
//! `"checkout": {"returnUrl", "cancelUrl"}` with an order gets a URL on
//! payhub's own page, behind an unguessable token that expires with the
//! order. The page shows the shop's name, the order and its total, and the
//! order's way to pay: the PIX QR code (drawn by payhub from the BR Code)
//! with its copy-and-paste code, countdown and live status, or a card form
//! that posts to payhub, which charges through charge-creator's internal
//! card call exactly as `POST /v1/orders` does (the card lives in memory for
//! that one call). After the outcome the buyer sees a result page and is
//! sent back to `returnUrl` with the order's id and status, signed.
//!
//! Signed return: `payhub_order`, `payhub_status`, `payhub_ts` and
//! `payhub_signature` = lowercase hex HMAC-SHA256 over
//! `{payhub_order}.{payhub_status}.{payhub_ts}`, keyed with the SHA-256 of
//! the shop's API key (the shop computes it from its key; payhub keeps only
//! that hash). The shop should still read the order (`GET /v1/orders`)
//! before shipping: the redirect says what the buyer saw.

pub mod i18n;
pub mod my_orders;

use crate::orders::AppState;
use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use i18n::{Lang, Text};
use payhub_core::{OrderStatus, ValidationErrors};
use payhub_store::{Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const CSS: &str = include_str!("../../static/checkout.css");
const JS: &str = include_str!("../../static/checkout.js");

/// What the shop asked for in the order's `checkout` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub return_url: String,
    pub cancel_url: String,
}

/// A return or cancel URL: absolute, https (http only to a loopback host,
/// for development), no credentials, at most 2000 characters.
fn shop_url(v: Option<&Value>, field: &str, errors: &mut ValidationErrors) -> Option<String> {
    let Some(s) = v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()) else {
        errors.push(field, "required", "is required: where the buyer goes back to the shop");
        return None;
    };
    if s.len() > 2000 {
        errors.push(field, "format", "must be at most 2000 characters");
        return None;
    }
    let Ok(url) = reqwest::Url::parse(s) else {
        errors.push(field, "format", "must be an absolute URL");
        return None;
    };
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let ok_scheme = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !ok_scheme || url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        errors.push(
            field,
            "format",
            "must be an https URL without credentials (http only for localhost)",
        );
        return None;
    }
    Some(url.to_string())
}

/// Reads `body.checkout`: `Ok(None)` when the order has none.
pub fn parse(body: &Value) -> Result<Option<CheckoutRequest>, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let Some(block) = body.get("checkout").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = block.as_object() else {
        errors.push("checkout", "type", "must be an object with returnUrl and cancelUrl");
        return Err(errors);
    };
    let return_url = shop_url(obj.get("returnUrl"), "checkout.returnUrl", &mut errors);
    let cancel_url = shop_url(obj.get("cancelUrl"), "checkout.cancelUrl", &mut errors);
    match (return_url, cancel_url) {
        (Some(return_url), Some(cancel_url)) => Ok(Some(CheckoutRequest { return_url, cancel_url })),
        _ => Err(errors),
    }
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the order's checkout session unless it has one (a replayed request
/// keeps the first; one lost between the order's commit and this insert is
/// opened by the replay). It expires with the order.
pub async fn open(store: &Store, order_id: Uuid, req: &CheckoutRequest) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkout_sessions (order_id, token, csrf_token, return_url, cancel_url, expires_at)
         SELECT id, $2, $3, $4, $5, created_at + make_interval(secs => expires_in_secs) FROM orders WHERE id = $1
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(random_hex())
    .bind(random_hex())
    .bind(&req.return_url)
    .bind(&req.cancel_url)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Where the checkout is served: `PAYHUB_PUBLIC_CHECKOUT_BASE_URL`, else the
/// address the shop reached ingress at (development).
pub fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(b) = configured {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

/// The order's `checkout` block in the order API's view, if it has one.
pub async fn view(store: &Store, order_id: Uuid, base: &str) -> Result<Option<Value>, StoreError> {
    let row: Option<(String, OffsetDateTime, String, String)> =
        sqlx::query_as("SELECT token, expires_at, return_url, cancel_url FROM checkout_sessions WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&store.pool)
            .await?;
    Ok(row.map(|(token, expires, return_url, cancel_url)| {
        json!({
            "url": format!("{base}/checkout/{token}"),
            "expiresAt": expires.format(&Rfc3339).ok(),
            "returnUrl": return_url,
            "cancelUrl": cancel_url,
        })
    }))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/checkout/assets/checkout.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/checkout/assets/checkout.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route("/checkout/{token}", get(page))
        .route("/checkout/{token}/status", get(status))
        .route("/checkout/{token}/qr.svg", get(qr))
        .route("/checkout/{token}/card", axum::routing::post(pay_card))
        .route("/checkout/{token}/done", get(done))
        .merge(my_orders::routes())
        // A card form is a few hundred bytes.
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024))
        .with_state(state)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response();
    r.headers_mut()
        .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[derive(sqlx::FromRow)]
struct Session {
    order_id: Uuid,
    token: String,
    csrf_token: String,
    return_url: String,
    cancel_url: String,
    expires_at: OffsetDateTime,
    shop_name: String,
    checkout_locale: String,
    checkout_origins: Vec<String>,
    api_key_hash: Vec<u8>,
    correlation_id: String,
    provider: String,
    status: String,
    currency: String,
    items: Value,
    freight_minor: i64,
    tax_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    customer_name: String,
    customer_phone: Option<String>,
    shipping_address: Option<Value>,
    br_code: Option<String>,
    charge_expires_at: Option<OffsetDateTime>,
}

/// A token is 64 lowercase hex characters; anything else is not looked up.
fn plausible(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

async fn load(store: &Store, token: &str) -> Result<Option<Session>, StoreError> {
    if !plausible(token) {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "SELECT s.order_id, s.token, s.csrf_token, s.return_url, s.cancel_url, s.expires_at,
                sh.name AS shop_name, sh.checkout_locale, sh.checkout_origins, sh.api_key_hash,
                o.correlation_id, o.provider, o.status, o.currency::text AS currency, o.items, o.freight_minor,
                o.tax_minor, o.discount_minor, o.total_minor, o.customer_name, o.customer_phone, o.shipping_address,
                c.br_code, c.expires_at AS charge_expires_at
         FROM checkout_sessions s
         JOIN orders o ON o.id = s.order_id
         JOIN shops sh ON sh.id = o.shop_id
         LEFT JOIN charges c ON c.order_id = o.id
         WHERE s.token = $1",
    )
    .bind(token)
    .fetch_optional(&store.pool)
    .await?)
}

/// What the buyer is shown of the order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State_ {
    Waiting,
    Paid,
    Refunded,
    Failed,
    Expired,
    Review,
}

impl State_ {
    fn of(s: &Session, now: OffsetDateTime) -> State_ {
        // By name, so that statuses added later (a card authorised for later
        // capture is, for the buyer, paid) fall on the safe side: waiting.
        match s.status.as_str() {
            "paid" | "authorized" | "captured" => State_::Paid,
            "partially_refunded" | "refunded" => State_::Refunded,
            "failed" | "voided" => State_::Failed,
            "expired" => State_::Expired,
            "under_review" => State_::Review,
            _ => {
                let charge_over = s.charge_expires_at.is_some_and(|e| e <= now);
                if s.expires_at <= now || charge_over {
                    State_::Expired
                } else {
                    State_::Waiting
                }
            }
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            State_::Waiting => "waiting",
            State_::Paid => "paid",
            State_::Refunded => "refunded",
            State_::Failed => "failed",
            State_::Expired => "expired",
            State_::Review => "review",
        }
    }

    fn is_final(self) -> bool {
        self != State_::Waiting
    }

    fn label(self, t: &Text) -> &'static str {
        match self {
            State_::Waiting => t.status_waiting,
            State_::Paid | State_::Refunded => t.status_paid,
            State_::Failed => t.status_failed,
            State_::Expired => t.status_expired,
            State_::Review => t.status_confirming,
        }
    }

    fn result(self, t: &Text) -> (&'static str, &'static str) {
        match self {
            State_::Waiting => (t.confirming_title, t.confirming_body),
            State_::Paid => (t.paid_title, t.paid_body),
            State_::Refunded => (t.refunded_title, t.refunded_body),
            State_::Failed => (t.declined_title, t.declined_body),
            State_::Expired => (t.expired_title, t.expired_body),
            State_::Review => (t.review_title, t.review_body),
        }
    }
}

/// The shop's URL with the order's signed outcome.
fn signed(url: &str, s: &Session, now: OffsetDateTime) -> String {
    let ts = now.unix_timestamp().to_string();
    let msg = format!("{}.{}.{}", s.correlation_id, s.status, ts);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s.api_key_hash);
    let sig: String = ring::hmac::sign(&key, msg.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    u.query_pairs_mut()
        .append_pair("payhub_order", &s.correlation_id)
        .append_pair("payhub_status", &s.status)
        .append_pair("payhub_ts", &ts)
        .append_pair("payhub_signature", &sig);
    u.to_string()
}

/// The origin of a URL as CSP writes it (`https://shop.example:8443`).
fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let o = u.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// The headers every checkout page carries: a strict CSP (own scripts and
/// styles only, no inline code, frames only from the shop's own origins),
/// no referrer (the token is in the URL), no caching, no sniffing.
fn secured(r: Response, frame_origins: &[String], https: bool) -> Response {
    secured_posting_to(r, frame_origins, https, None)
}

/// [`secured`], and the page's forms may also post to `form_to`'s origin
/// (Pago Seguro's checkout, for a Pago Seguro order's signed form).
fn secured_posting_to(mut r: Response, frame_origins: &[String], https: bool, form_to: Option<&str>) -> Response {
    let form_action = match form_to.and_then(origin_of) {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    let ancestors: Vec<&str> = frame_origins
        .iter()
        .map(String::as_str)
        .filter(|o| origin_of(o).as_deref() == Some(*o))
        .collect();
    let ancestors = if ancestors.is_empty() {
        "'none'".to_string()
    } else {
        ancestors.join(" ")
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action {form_action}; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if https {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    r
}

struct Item {
    title: String,
    qty: i64,
    total: String,
}

struct Pix {
    qr_url: String,
    br_code: String,
    expires_at: String,
    minutes_left: Option<i64>,
}

/// A Pago Seguro order's way to pay: the signed form, posted to Pago
/// Seguro by checkout.js at once (`auto`) or by the buyer's button.
struct PagoSeguro {
    action: String,
    form: Option<Vec<(String, String)>>,
    auto: bool,
    body: &'static str,
    button: &'static str,
}

/// What a Pago Seguro order brings to its page: the signed form (when the
/// buyer may pay), and what the last return said.
#[derive(Default)]
struct Redirected {
    form: Option<Vec<(String, String)>>,
    /// (verdict, status) of the order's last return, if any.
    last_return: Option<(String, Option<String>)>,
}

impl Redirected {
    fn declined(&self) -> bool {
        matches!(&self.last_return, Some((v, Some(s))) if v == "verified" && s == "rejected")
    }
}

#[derive(Default)]
struct Billing {
    address: String,
    city: String,
    state: String,
    country: String,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct Page<'a> {
    lang: &'static str,
    t: &'static Text,
    title: &'a str,
    shop_name: &'a str,
    reference: &'a str,
    state: &'static str,
    status_text: &'static str,
    message: &'a str,
    live: bool,
    has_charge: bool,
    status_url: String,
    done_url: String,
    page_url: String,
    show_summary: bool,
    items: Vec<Item>,
    freight: Option<String>,
    tax: Option<String>,
    discount: Option<String>,
    total: String,
    show_pix: bool,
    pix: Option<Pix>,
    show_card: bool,
    pagoseguro: Option<PagoSeguro>,
    card_action: String,
    csrf: &'a str,
    errors: Vec<&'static str>,
    holder: &'a str,
    billing: Billing,
    back_url: Option<String>,
    redirect_url: Option<String>,
    cancel_url: Option<String>,
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

fn lang_for(s: &Session, query: Option<&str>, headers: &HeaderMap) -> Lang {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    Lang::choose(query, accept, &s.checkout_locale)
}

fn default_country(currency: &str) -> &'static str {
    match currency {
        "HNL" => "HN",
        "NIO" => "NI",
        "BRL" => "BR",
        _ => "",
    }
}

/// The page for `s`: the way to pay while the order waits, else its result.
fn render(
    st: &AppState,
    s: &Session,
    lang: Lang,
    result_page: bool,
    errors: Vec<&'static str>,
    message: &str,
) -> Response {
    render_with(st, s, lang, result_page, errors, message, &Redirected::default())
}

fn render_with(
    st: &AppState,
    s: &Session,
    lang: Lang,
    result_page: bool,
    errors: Vec<&'static str>,
    message: &str,
    redirected: &Redirected,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let t = lang.text();
    let state = State_::of(s, now);
    let money = |m: i64| lang.money(m, &s.currency);
    let nonzero = |m: i64| (m != 0).then(|| money(m));
    let items = s
        .items
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| Item {
                    title: i["title"].as_str().unwrap_or_default().to_string(),
                    qty: i["qty"].as_i64().unwrap_or(1),
                    total: money(i["total"]["minor"].as_i64().unwrap_or(0)),
                })
                .collect()
        })
        .unwrap_or_default();
    let base = format!("/checkout/{}", s.token);
    let is_pix = s.provider == payhub_core::Provider::Openpix.as_str();
    let is_ps = s.provider == payhub_core::Provider::Pagoseguro.as_str();
    let waiting = state == State_::Waiting;
    let showing_result = state.is_final() || result_page;
    // A verified 17 from Pago Seguro: the buyer is told it was declined and
    // what to do, though the order stays open (a return proves no status).
    let ps_declined = is_ps && waiting && result_page && redirected.declined();
    let (title, _) = if ps_declined {
        (t.declined_title, "")
    } else if showing_result {
        state.result(t)
    } else {
        (t.pay_title, "")
    };
    let body_text = if ps_declined {
        t.pagoseguro_declined_body
    } else if showing_result {
        state.result(t).1
    } else {
        message
    };
    let pagoseguro = (is_ps && waiting && (!result_page || ps_declined)).then(|| PagoSeguro {
        action: st.pagoseguro_checkout_url.clone(),
        form: redirected.form.clone(),
        auto: !result_page,
        body: t.pagoseguro_body,
        button: if result_page {
            t.pagoseguro_retry
        } else {
            t.pagoseguro_button
        },
    });
    let pix = match (&s.br_code, is_pix && waiting && !result_page) {
        (Some(br), true) => Some(Pix {
            qr_url: format!("{base}/qr.svg"),
            br_code: br.clone(),
            expires_at: s
                .charge_expires_at
                .unwrap_or(s.expires_at)
                .format(&Rfc3339)
                .unwrap_or_default(),
            minutes_left: Some(((s.charge_expires_at.unwrap_or(s.expires_at) - now).whole_minutes()).max(0)),
        }),
        _ => None,
    };
    let address = s.shipping_address.as_ref();
    let field = |k: &str| address.and_then(|a| a[k].as_str()).unwrap_or_default().to_string();
    let street = match (field("street"), field("number")) {
        (s, n) if s.is_empty() => n,
        (s, n) if n.is_empty() => s,
        (s, n) => format!("{s} {n}"),
    };
    // After Pago Seguro's return the buyer goes back to the shop too, with
    // the order's status as it stands (awaiting payment: see the module).
    let back = (state.is_final() || (is_ps && result_page && redirected.last_return.is_some()))
        .then(|| signed(&s.return_url, s, now));
    let page = Page {
        lang: lang.tag(),
        t,
        title,
        shop_name: &s.shop_name,
        reference: &s.correlation_id,
        state: state.as_str(),
        status_text: if ps_declined {
            t.status_failed
        } else if result_page && !state.is_final() {
            t.status_confirming
        } else {
            state.label(t)
        },
        message: body_text,
        live: waiting,
        has_charge: s.br_code.is_some(),
        status_url: format!("{base}/status"),
        done_url: format!("{base}/done?lang={}", lang.tag()),
        page_url: if result_page {
            format!("{base}/done")
        } else {
            base.clone()
        },
        show_summary: true,
        items,
        freight: nonzero(s.freight_minor),
        tax: nonzero(s.tax_minor),
        discount: nonzero(s.discount_minor),
        total: money(s.total_minor),
        show_pix: is_pix && waiting && !result_page,
        pix,
        show_card: !is_pix && !is_ps && waiting && !result_page,
        pagoseguro,
        card_action: format!("{base}/card"),
        csrf: &s.csrf_token,
        errors,
        holder: &s.customer_name,
        billing: Billing {
            address: street,
            city: field("city"),
            state: field("state"),
            country: default_country(&s.currency).to_string(),
        },
        // A declined buyer chooses: try again, or back to the shop.
        redirect_url: if ps_declined { None } else { back.clone() },
        back_url: back,
        // After a Pago Seguro return the buyer may have paid: no "cancel".
        cancel_url: (waiting && !(is_ps && result_page)).then(|| signed(&s.cancel_url, s, now)),
    };
    match page.render() {
        Ok(html) => secured_posting_to(
            (
                if errors_status(&page) {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::OK
                },
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            &s.checkout_origins,
            st.checkout_base_url
                .as_deref()
                .is_some_and(|b| b.starts_with("https://")),
            is_ps.then_some(st.pagoseguro_checkout_url.as_str()),
        ),
        Err(e) => {
            tracing::error!(error = %e, "the checkout page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn errors_status(p: &Page<'_>) -> bool {
    !p.errors.is_empty()
}

fn not_found(lang: Lang) -> Response {
    let t = lang.text();
    not_found_saying(lang, t.not_found_title, t.not_found_body)
}

/// The 404 page, with its title and text.
fn not_found_saying(lang: Lang, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{}</title>\
         <link rel=\"stylesheet\" href=\"/checkout/assets/checkout.css\"></head><body><main>\
         <h1>{}</h1><p>{}</p></main></body></html>",
        lang.tag(),
        title,
        title,
        body
    );
    secured(
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        &[],
        false,
    )
}

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "checkout: the store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "try again in a moment",
    )
        .into_response()
}

fn guess_lang(q: &LangQuery, headers: &HeaderMap) -> Lang {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    Lang::choose(q.lang.as_deref(), accept, "pt-BR")
}

async fn page(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    match load(&st.store, &token).await {
        Ok(Some(s)) => {
            let lang = lang_for(&s, q.lang.as_deref(), &headers);
            let redirected = match redirected(&st, &s, true).await {
                Ok(r) => r,
                Err(e) => return store_error(e),
            };
            render_with(&st, &s, lang, false, Vec::new(), "", &redirected)
        }
        Ok(None) => not_found(guess_lang(&q, &headers)),
        Err(e) => store_error(e),
    }
}

async fn done(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    match load(&st.store, &token).await {
        Ok(Some(s)) => {
            let lang = lang_for(&s, q.lang.as_deref(), &headers);
            let mut redirected = match redirected(&st, &s, false).await {
                Ok(r) => r,
                Err(e) => return store_error(e),
            };
            // After a declined try the buyer may post the form again.
            if redirected.declined() {
                redirected.form = pagoseguro_form(&st, &s).await;
            }
            render_with(
                &st,
                &s,
                lang,
                true,
                Vec::new(),
                lang.text().confirming_body,
                &redirected,
            )
        }
        Ok(None) => not_found(guess_lang(&q, &headers)),
        Err(e) => store_error(e),
    }
}

/// The signed Pago Seguro form for the order, from charge-creator (which
/// alone holds the shop's API key); `None` when it cannot be had now (the
/// charge not recorded yet, charge-creator unreachable, no public return URL).
async fn pagoseguro_form(st: &AppState, s: &Session) -> Option<Vec<(String, String)>> {
    s.br_code.as_ref()?;
    let base = st.public_webhook_base_url.as_deref()?;
    let req = payhub_connectors::internal::RedirectFormRequest {
        order_id: s.order_id,
        url_response: format!("{}/returns/pagoseguro/{}", base.trim_end_matches('/'), s.token),
    };
    match st.redirects.form(&req).await {
        Ok(form) => Some(form.fields),
        Err(e) => {
            tracing::warn!(order_id = %s.order_id, error = %e, "checkout: no Pago Seguro form");
            None
        }
    }
}

/// What a Pago Seguro order brings to its page; nothing for other orders.
async fn redirected(st: &AppState, s: &Session, with_form: bool) -> Result<Redirected, StoreError> {
    if s.provider != payhub_core::Provider::Pagoseguro.as_str() {
        return Ok(Redirected::default());
    }
    let last_return: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT verdict, status FROM pagoseguro_returns WHERE order_id = $1 ORDER BY received_at DESC, id DESC LIMIT 1",
    )
    .bind(s.order_id)
    .fetch_optional(&st.store.pool)
    .await?;
    let waiting = State_::of(s, OffsetDateTime::now_utc()) == State_::Waiting;
    let form = if with_form && waiting {
        pagoseguro_form(st, s).await
    } else {
        None
    };
    Ok(Redirected { form, last_return })
}

/// The live status the page's script polls: the state, its label in the
/// page's language, whether it is final, and whether the PIX code exists.
async fn status(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    match load(&st.store, &token).await {
        Ok(Some(s)) => {
            let lang = lang_for(&s, q.lang.as_deref(), &headers);
            let state = State_::of(&s, OffsetDateTime::now_utc());
            let body = json!({
                "state": state.as_str(),
                "status": s.status,
                "label": state.label(lang.text()),
                "final": state.is_final(),
                "hasCharge": s.br_code.is_some(),
            });
            let mut r = axum::Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut()
                .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            r
        }
        Ok(None) => (StatusCode::NOT_FOUND, axum::Json(json!({"state": "unknown"}))).into_response(),
        Err(e) => store_error(e),
    }
}

/// The QR code of the order's BR Code, drawn by payhub (byte for byte: its
/// CRC covers it), as SVG.
pub fn qr_svg(br_code: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(br_code.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(264, 264)
        .quiet_zone(true)
        .build();
    // Served as its own document: the XML declaration is fine, but strip it
    // so the same string can be inlined elsewhere.
    Some(match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    })
}

async fn qr(State(st): State<AppState>, Path(token): Path<String>) -> Response {
    match load(&st.store, &token).await {
        Ok(Some(s)) => qr_response(s.br_code.as_deref()),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => store_error(e),
    }
}

/// The BR Code's QR image as its own strictly locked-down SVG document.
fn qr_response(br_code: Option<&str>) -> Response {
    match br_code.and_then(qr_svg) {
        Some(svg) => {
            let mut r = ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            r.headers_mut().insert(
                "content-security-policy",
                HeaderValue::from_static("default-src 'none'"),
            );
            r.headers_mut()
                .insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A form post is taken only from payhub's own page: the form's token must
/// match the session's, and the browser must not call it cross-site.
fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some(s) if s != "same-origin" && s != "none") {
        return false;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => true,
        // The page's `Referrer-Policy: no-referrer` makes the browser send
        // `Origin: null` with its own form; the fetch metadata then decides.
        (Some("null"), _) => fetch_site == Some("same-origin"),
        (Some(o), Some(h)) => reqwest::Url::parse(o).ok().is_some_and(|u| {
            let authority = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_string(),
            };
            authority.eq_ignore_ascii_case(h)
        }),
        (Some(_), None) => false,
    }
}

/// `MM/AA` (or `MMAA`, `MM/AAAA`) as the card's `YYMM`.
fn expiry_yymm(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let (mm, yy) = match digits.len() {
        4 => (&digits[..2], &digits[2..]),
        6 => (&digits[..2], &digits[4..]),
        _ => return None,
    };
    Some(format!("{yy}{mm}"))
}

/// Which message a card field error gets on the form (never the input).
fn form_error(field: &str, t: &Text) -> &'static str {
    match field {
        "card.number" => t.error_number,
        "card.expire" => t.error_expiry,
        "card.cvv" => t.error_cvv,
        "card.holder" => t.error_holder,
        _ => t.error_billing,
    }
}

/// `POST /checkout/{token}/card`: the card form. The card is read into
/// memory, checked as the order API checks it, charged over charge-creator's
/// internal call under the shop's card account, and dropped; the buyer then
/// sees the outcome.
async fn pay_card(
    State(st): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match load(&st.store, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(guess_lang(&LangQuery::default(), &headers)),
        Err(e) => return store_error(e),
    };
    let lang = lang_for(&s, form.get("lang").map(String::as_str), &headers);
    let t = lang.text();
    let csrf_ok = form
        .get("csrf")
        .is_some_and(|c| constant_time_eq(c.as_bytes(), s.csrf_token.as_bytes()));
    if !csrf_ok || !same_origin(&headers) {
        tracing::warn!(order_id = %s.order_id, "checkout: a card form without the page's token or from another site was refused");
        let mut r = render(&st, &s, lang, false, vec![t.error_session], "");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let now = OffsetDateTime::now_utc();
    if s.provider != payhub_core::Provider::Pixelpay.as_str()
        || State_::of(&s, now) != State_::Waiting
        || s.status != OrderStatus::Accepted.as_str()
    {
        return render(&st, &s, lang, true, Vec::new(), t.card_unavailable);
    }
    let get = |k: &str| form.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let expire = expiry_yymm(&get("expiry")).unwrap_or_default();
    // The same checks as the order API's `card` block.
    let body = json!({"card": {
        "number": get("number"), "cvv": get("cvv"), "expire": expire, "holder": get("holder"),
        "billing": {"address": get("address"), "city": get("city"), "state": get("state"),
                    "country": get("country").to_ascii_uppercase(),
                    "phone": s.customer_phone.clone().unwrap_or_default()},
    }});
    drop(form);
    let parsed = crate::card::parse(&body, None);
    drop(body);
    let card = match parsed {
        Ok(Some(c)) => c,
        Ok(None) => return render(&st, &s, lang, false, vec![t.error_number], ""),
        Err(errors) => {
            let mut shown: Vec<&'static str> = Vec::new();
            for e in &errors.0 {
                let m = form_error(&e.field, t);
                if !shown.contains(&m) {
                    shown.push(m);
                }
            }
            return render(&st, &s, lang, false, shown, "");
        }
    };
    let req = payhub_connectors::internal::CardRequest {
        order_id: s.order_id,
        card: card.card,
        billing: card.billing,
        operation: payhub_connectors::internal::CardOperation::Sale,
    };
    let answer = st.cards.charge(&req).await;
    drop(req);
    match &answer {
        Ok(a) => tracing::info!(order_id = %s.order_id, verdict = ?a.verdict, "checkout: card answered"),
        Err(e) => tracing::warn!(order_id = %s.order_id, error = %e, "checkout: the card payment got no answer"),
    }
    // The outcome reaches the order through the pipeline; give it a moment
    // so that the result page is the final one (it polls if not).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match load(&st.store, &token).await {
            Ok(Some(now_s)) if State_::of(&now_s, OffsetDateTime::now_utc()).is_final() => break,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(150)).await,
            Err(_) => break,
        }
    }
    Redirect::to(&format!("/checkout/{}/done?lang={}", s.token, lang.tag())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_are_https_absolute_and_without_credentials() {
        let ok = json!({"checkout": {"returnUrl": "https://shop.example/ok?x=1", "cancelUrl": "http://127.0.0.1:9/c"}});
        let c = parse(&ok).unwrap().unwrap();
        assert_eq!(c.return_url, "https://shop.example/ok?x=1");
        let bad =
            json!({"checkout": {"returnUrl": "http://shop.example/ok", "cancelUrl": "https://u:p@shop.example/"}});
        let e = parse(&bad).unwrap_err();
        assert!(
            e.has("checkout.returnUrl", "format") && e.has("checkout.cancelUrl", "format"),
            "{e}"
        );
        let missing = json!({"checkout": {}});
        assert!(parse(&missing).unwrap_err().has("checkout.returnUrl", "required"));
        assert!(parse(&json!({"checkout": "x"})).unwrap_err().has("checkout", "type"));
        assert_eq!(parse(&json!({})).unwrap(), None);
    }

    #[test]
    fn expiry_is_read_as_the_card_expects_it() {
        assert_eq!(expiry_yymm("12/30").as_deref(), Some("3012"));
        assert_eq!(expiry_yymm("0731").as_deref(), Some("3107"));
        assert_eq!(expiry_yymm("07/2031").as_deref(), Some("3107"));
        assert_eq!(expiry_yymm("7/3"), None);
    }

    #[test]
    fn a_form_from_another_site_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("pay.example:8443"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://pay.example:8443"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h), "an opaque origin without fetch metadata");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn the_qr_code_is_svg_of_the_br_code() {
        let svg = qr_svg("00020101021226880014br.gov.bcb.pix").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<path") || svg.contains("<rect"));
    }

    #[test]
    fn csp_frames_only_the_shops_origins() {
        let r = secured(
            Response::new(axum::body::Body::empty()),
            &["https://shop.example".into(), "javascript:alert(1)".into()],
            false,
        );
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors https://shop.example"), "{csp}");
        assert!(!csp.contains("javascript"), "{csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let none = secured(Response::new(axum::body::Body::empty()), &[], false);
        assert!(
            none.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(none.headers()["referrer-policy"], "no-referrer");
    }
}
