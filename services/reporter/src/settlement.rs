//! The settlement export API (issue 13 §2), for a shop's finance system:
//!
//! - `POST /v1/settlement/exports` `{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}`
//!   (optional `Idempotency-Key`): exports the ledger lines settled in the
//!   range that no export carried before and marks them processed; 201 with
//!   the export's summary, 200 with the same export for the same key again,
//!   200 `{"lines": 0}` when nothing is left to export.
//! - `GET /v1/settlement/exports`: the shop's exports.
//! - `GET /v1/settlement/exports/{id}?format=csv|json`: the export as it was
//!   handed out, byte for byte (`x-content-sha256` is its stored hash).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::ValidationErrors;
use payhub_service::problem::{ApiError, authenticate};
use payhub_store::Store;
use payhub_store::settlement::{self, Exported};
use serde::Deserialize;
use serde_json::{Value, json};
use time::Date;
use uuid::Uuid;

#[derive(Clone)]
pub struct SettlementState {
    pub store: Store,
}

pub fn router(state: SettlementState) -> Router {
    Router::new()
        .route("/v1/settlement/exports", get(list).post(create))
        .route("/v1/settlement/exports/{id}", get(download))
        .with_state(state)
}

/// Longest range one export covers.
pub const MAX_DAYS: i64 = 366;

fn date(v: &Value, field: &str, errs: &mut ValidationErrors) -> Option<Date> {
    match v.get(field).and_then(Value::as_str) {
        None => {
            errs.push(field, "required", "is required, as YYYY-MM-DD");
            None
        }
        Some(s) => Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| errs.push(field, "format", "must be a date as YYYY-MM-DD"))
            .ok(),
    }
}

/// The range of a request body, checked field by field.
pub fn parse_range(v: &Value) -> Result<(Date, Date), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let from = date(v, "from", &mut errs);
    let to = date(v, "to", &mut errs);
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            errs.push("to", "range", "must not be before from");
        } else if (t - f).whole_days() >= MAX_DAYS {
            errs.push("to", "range", format!("a range covers at most {MAX_DAYS} days"));
        }
    }
    errs.into_result((from, to))
        .map(|(f, t)| (f.expect("checked"), t.expect("checked")))
}

async fn create(State(st): State<SettlementState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let (from, to) = parse_range(&v).map_err(ApiError::Validation)?;
    let key = match headers.get("idempotency-key").map(|k| k.to_str()) {
        None => None,
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 200 => Some(k.trim().to_string()),
        Some(_) => {
            let mut errs = ValidationErrors::default();
            errs.push("Idempotency-Key", "format", "must be 1 to 200 visible ASCII characters");
            return Err(ApiError::Validation(errs));
        }
    };
    match settlement::export(&st.store, shop.id, from, to, key.as_deref(), "api").await? {
        Exported::New(e) => Ok((StatusCode::CREATED, axum::Json(e.summary())).into_response()),
        Exported::Again(e) => Ok((
            StatusCode::OK,
            [("idempotent-replayed", "true")],
            axum::Json(e.summary()),
        )
            .into_response()),
        Exported::Nothing => Ok((
            StatusCode::OK,
            axum::Json(json!({"id": null, "from": from.to_string(), "to": to.to_string(), "lines": 0})),
        )
            .into_response()),
    }
}

async fn list(State(st): State<SettlementState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    let all = settlement::list(&st.store, shop.id).await?;
    Ok(axum::Json(json!({"exports": all.iter().map(|e| e.summary()).collect::<Vec<_>>()})).into_response())
}

#[derive(Debug, Deserialize)]
struct Format {
    format: Option<String>,
}

async fn download(
    State(st): State<SettlementState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Format>,
) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            let mut errs = ValidationErrors::default();
            errs.push("format", "unsupported", "must be json or csv");
            return Err(ApiError::Validation(errs));
        }
    };
    let not_found = || ApiError::NotFound(format!("no export {id} for this shop"));
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let e = settlement::get(&st.store, shop.id, id).await?.ok_or_else(not_found)?;
    let (body, hash, kind, ext) = if csv {
        (e.csv, e.csv_sha256, "text/csv; charset=utf-8", "csv")
    } else {
        (e.json, e.json_sha256, "application/json", "json")
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"settlement-{id}.{ext}\""),
            ),
            (
                header::HeaderName::from_static("x-content-sha256"),
                settlement::hex(&hash),
            ),
        ],
        body,
    )
        .into_response())
}
