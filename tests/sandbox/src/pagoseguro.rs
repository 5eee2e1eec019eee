//! A Pago Seguro-compatible web checkout (providers.md §3): the page a
//! shop's signed form is posted to, where the buyer "pays" or "rejects",
//! and the redirect back to `url_response` with a signed return, or, on
//! request, a tampered one.
//!
//! - `POST /pagosegurocanal/public/checkoutpay`: the form of §3.2 (`key,
//!   txnid, amount, productinfo, firstname, email, hash, udf1,
//!   url_response`). The `hash` is checked as Pago Seguro would (SHA-512
//!   over the documented layout with the account's API key); a form with an
//!   unknown account or a wrong hash is refused (400), and nothing is paid.
//! - `POST /pagosegurocanal/public/checkoutpay/decide`: the buyer's choice
//!   (`decision` = `pay` or `reject`, and `tamper` = `none`, `sign`,
//!   `amount`, `reference` or `status`), answered with a 303 to
//!   `url_response?orderReference&value&product&customerFullName&customerEmail&status&sign`
//!   (§3.3: 22 authorised, 17 rejected). Tampering: `sign` breaks the sign;
//!   `amount` and `reference` change the value or the reference and sign
//!   them again (a genuinely signed return about something else); `status`
//!   turns a rejection into 22 after signing: the sign still verifies,
//!   because Pago Seguro's formula does not cover the status.
//!
//! The signing is written here again from the documentation, apart from
//! payhub's connector, so that the two check each other.

use axum::Router;
use axum::extract::Form;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use std::collections::HashMap;

/// The sandbox merchant's Account ID (`key`) and API key.
pub const PAGOSEGURO_SANDBOX_ACCOUNT_ID: &str = "508029";
pub const PAGOSEGURO_SANDBOX_API_KEY: &str = "4Vj8eK4rloUd272L48hsrarnUA";

pub const CHECKOUT_PATH: &str = "/pagosegurocanal/public/checkoutpay";
const DECIDE_PATH: &str = "/pagosegurocanal/public/checkoutpay/decide";

pub fn router() -> Router {
    Router::new()
        .route(CHECKOUT_PATH, post(checkout))
        .route(DECIDE_PATH, post(decide))
}

fn sign(parts: [&str; 6], api_key: &str) -> String {
    let text = format!("{}|/payment/process||||||||||{api_key}", parts.join("|"));
    ring::digest::digest(&ring::digest::SHA512, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const FIELDS: [&str; 6] = ["key", "txnid", "amount", "productinfo", "firstname", "email"];

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"es\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>Pago Seguro (sandbox)</title>\
         <style>body{{font-family:sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         button{{font-size:1rem;padding:.6rem 1.2rem;margin:.3rem}}dt{{font-weight:bold}}</style></head>\
         <body><h1>Pago Seguro <small>(sandbox)</small></h1>{body}</body></html>"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The form's hash, checked as Pago Seguro would; `Err` says why not.
fn check(form: &HashMap<String, String>) -> Result<(), &'static str> {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if get("key") != PAGOSEGURO_SANDBOX_ACCOUNT_ID {
        return Err("cuenta desconocida (key)");
    }
    if get("udf1") != "/payment/process" {
        return Err("udf1 debe ser /payment/process");
    }
    let url = get("url_response");
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("url_response inválida");
    }
    let parts = FIELDS.map(get);
    if sign(parts, PAGOSEGURO_SANDBOX_API_KEY) != get("hash") {
        return Err("firma inválida (hash)");
    }
    Ok(())
}

async fn checkout(Form(form): Form<HashMap<String, String>>) -> Response {
    if let Err(why) = check(&form) {
        return page(
            StatusCode::BAD_REQUEST,
            &format!("<p id=\"refused\">Transacción no permitida: {why}.</p>"),
        );
    }
    let get = |k: &str| escape(form.get(k).map(String::as_str).unwrap_or_default());
    let hidden: String = FIELDS
        .iter()
        .chain(["hash", "udf1", "url_response"].iter())
        .map(|k| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", get(k)))
        .collect();
    page(
        StatusCode::OK,
        &format!(
            "<dl><dt>Referencia</dt><dd id=\"reference\">{}</dd><dt>Valor</dt><dd id=\"amount\">COP {}</dd>\
             <dt>Descripción</dt><dd>{}</dd><dt>Comprador</dt><dd>{} &lt;{}&gt;</dd></dl>\
             <form method=\"post\" action=\"{DECIDE_PATH}\">{hidden}\
             <label for=\"tamper\">Respuesta (pruebas)</label> <select id=\"tamper\" name=\"tamper\">\
             <option value=\"none\">firmada</option><option value=\"sign\">firma alterada</option>\
             <option value=\"amount\">otro valor</option><option value=\"reference\">otra referencia</option>\
             <option value=\"status\">estado cambiado a 22</option></select><br>\
             <button type=\"submit\" name=\"decision\" value=\"pay\" id=\"ps-pay\">Pagar</button>\
             <button type=\"submit\" name=\"decision\" value=\"reject\" id=\"ps-reject\">Rechazar</button></form>",
            get("txnid"),
            get("amount"),
            get("productinfo"),
            get("firstname"),
            get("email"),
        ),
    )
}

/// The return's parameters for the buyer's decision, tampered as asked.
pub fn return_params(form: &HashMap<String, String>, approve: bool, tamper: &str) -> Vec<(String, String)> {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut reference = get("txnid");
    let mut value = get("amount");
    match tamper {
        "amount" => value = format!("{}1", value),
        "reference" => reference = format!("X{}", reference.chars().skip(1).collect::<String>()),
        _ => {}
    }
    let (product, name, email) = (get("productinfo"), get("firstname"), get("email"));
    // A wrong sign: the same text under another key.
    let key = if tamper == "sign" {
        "not-the-key"
    } else {
        PAGOSEGURO_SANDBOX_API_KEY
    };
    let signature = sign(
        [
            PAGOSEGURO_SANDBOX_ACCOUNT_ID,
            &reference,
            &value,
            &product,
            &name,
            &email,
        ],
        key,
    );
    let status = if approve || tamper == "status" { "22" } else { "17" };
    vec![
        ("orderReference".into(), reference),
        ("value".into(), value),
        ("product".into(), product),
        ("customerFullName".into(), name),
        ("customerEmail".into(), email),
        ("status".into(), status.into()),
        ("sign".into(), signature),
    ]
}

async fn decide(Form(form): Form<HashMap<String, String>>) -> Response {
    if let Err(why) = check(&form) {
        return page(
            StatusCode::BAD_REQUEST,
            &format!("<p id=\"refused\">Transacción no permitida: {why}.</p>"),
        );
    }
    let approve = form.get("decision").map(String::as_str) == Some("pay");
    let tamper = form.get("tamper").map(String::as_str).unwrap_or("none");
    let Ok(mut url) = reqwest::Url::parse(form.get("url_response").map(String::as_str).unwrap_or_default()) else {
        return page(StatusCode::BAD_REQUEST, "<p id=\"refused\">url_response inválida.</p>");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in return_params(&form, approve, tamper) {
            q.append_pair(&k, &v);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_matches_the_documented_layout() {
        // The same vector as payhub's connector test, computed with Python's hashlib.
        assert_eq!(
            sign(
                [
                    "508029",
                    "PH-0001",
                    "75000",
                    "Camiseta  Roja",
                    "Pedro Pérez",
                    "pedro@example.com"
                ],
                PAGOSEGURO_SANDBOX_API_KEY
            ),
            "8b564ac0efd2b114010b18454bf691b43e3ff0891a3a83edb336f532becb18bce05e5afd049d966848644be069ed0da3c965f4e7cda10f6294eefdea7962e859"
        );
    }

    #[test]
    fn a_tampered_status_keeps_its_sign() {
        let form: HashMap<String, String> = [
            ("txnid", "abc"),
            ("amount", "75000"),
            ("productinfo", "p"),
            ("firstname", "n"),
            ("email", "e@x.co"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rejected = return_params(&form, false, "none");
        let flipped = return_params(&form, false, "status");
        assert_eq!(rejected[5].1, "17");
        assert_eq!(flipped[5].1, "22");
        assert_eq!(rejected[6], flipped[6], "the status is not signed");
        assert_ne!(
            return_params(&form, true, "sign")[6],
            return_params(&form, true, "none")[6]
        );
        assert_eq!(return_params(&form, true, "amount")[1].1, "750001");
    }
}
