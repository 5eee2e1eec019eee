//! `GET /v1/orders/{correlationID}/receipt?layout=a4|80mm` (issue 12 §2):
//! the paid order's receipt as a PDF, the same bytes on every fetch: the
//! one notifier stored with its hash when it e-mailed the buyer, or until
//! then the same rendered from the same stored order (payhub-documents
//! renders deterministically). Its SHA-256 is in `x-payhub-receipt-sha256`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::ValidationErrors;
use payhub_documents::Layout;
use payhub_service::problem::{ApiError, authenticate};
use payhub_store::Store;
use serde::Deserialize;
use uuid::Uuid;

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/v1/orders/{correlation_id}/receipt", get(receipt))
        .with_state(store)
}

#[derive(Debug, Deserialize)]
struct ReceiptQuery {
    layout: Option<String>,
}

async fn receipt(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(correlation_id): Path<String>,
    Query(q): Query<ReceiptQuery>,
) -> Result<Response, ApiError> {
    let shop = authenticate(&store, &headers).await?;
    let layout = match q.layout.as_deref() {
        None => Layout::A4,
        Some(l) => Layout::parse(l).ok_or_else(|| {
            let mut errs = ValidationErrors::default();
            errs.push("layout", "enum", "must be a4 or 80mm");
            ApiError::Validation(errs)
        })?,
    };
    let id: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM orders WHERE shop_id = $1 AND correlation_id = $2")
        .bind(shop.id)
        .bind(&correlation_id)
        .fetch_optional(&store.pool)
        .await?;
    let Some((id,)) = id else {
        return Err(ApiError::NotFound(format!("no order {correlation_id} for this shop")));
    };
    let Some(rendered) = payhub_store::receipts::get(&store, id, layout).await? else {
        return Err(ApiError::Conflict(format!(
            "order {correlation_id} is not paid: a receipt exists once it is"
        )));
    };
    Ok(pdf(&rendered, &correlation_id, layout))
}

/// The receipt as the PDF response both doors serve (the shop's API and
/// the buyer's "my orders" page): inline, named after the order, with its
/// SHA-256 in `x-payhub-receipt-sha256`.
pub(crate) fn pdf(rendered: &payhub_documents::Rendered, correlation_id: &str, layout: Layout) -> Response {
    let safe: String = correlation_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = if layout == Layout::Roll80 { "-80mm" } else { "" };
    let mut resp = rendered.bytes.clone().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"comprovante-{safe}{suffix}.pdf\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&rendered.sha256_hex()) {
        h.insert("x-payhub-receipt-sha256", v);
    }
    resp
}
