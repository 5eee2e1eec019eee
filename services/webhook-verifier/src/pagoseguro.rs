//! Pago Seguro's return door (issue 11 §2): `GET|POST /returns/pagoseguro/{token}`,
//! the `url_response` the buyer's browser comes back to from Pago Seguro's
//! page. Public and untrusted: the parameters (query and form) are handed
//! to charge-creator, which alone holds the shop's API key, checks the
//! `sign`, the reference and the amount, and stores the return with its
//! verdict. Nothing here decides the order's state, and a return never pays
//! an order (its `sign` does not cover `status`; see charge-creator's
//! `pagoseguro` module). The buyer is then sent to their checkout page's
//! result (`/checkout/{token}/done` on ingress), which reads the verdict.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use payhub_connectors::internal::{RedirectClient, ReturnRequest};

#[derive(Clone)]
pub struct ReturnState {
    pub client: RedirectClient,
    /// Where the buyer's checkout pages are (`PAYHUB_PUBLIC_CHECKOUT_BASE_URL`).
    pub checkout_base_url: String,
}

/// A return's parameters: the query's, then a form body's.
fn params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        out.extend(form_urlencoded::parse(body).into_owned());
    }
    // A bounded set: Pago Seguro sends seven parameters.
    out.truncate(64);
    out
}

/// The page shown when the return names no order payhub knows, or
/// charge-creator cannot be reached: the payment is being confirmed.
fn confirming(status: StatusCode) -> Response {
    let html = "<!doctype html><html lang=\"es\"><head><meta charset=\"utf-8\">\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>payhub</title></head>\
        <body><main><h1>Estamos confirmando el pago</h1><p>Te avisaremos por correo electrónico. \
        Estamos confirmando o pagamento; avisaremos você por e-mail.</p></main></body></html>";
    let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub async fn door(
    State(st): State<ReturnState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = ReturnRequest {
        token,
        params: params(query.as_deref(), &headers, &body),
    };
    match st.client.report_return(&req).await {
        Ok(answer) => {
            crate::count_return(&answer.verdict);
            match answer.token {
                Some(t) => Redirect::to(&format!("{}/checkout/{t}/done", st.checkout_base_url)).into_response(),
                None => confirming(StatusCode::OK),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a Pago Seguro return could not be handed to charge-creator");
            confirming(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_parameters_are_both_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let p = params(Some("status=22&sign=ab"), &h, b"orderReference=X%7C1&value=75000");
        assert_eq!(p[0], ("status".into(), "22".into()));
        assert_eq!(p[2], ("orderReference".into(), "X|1".into()));
        let p = params(None, &HeaderMap::new(), b"status=22");
        assert!(p.is_empty(), "a body that is not a form is not read");
    }
}
