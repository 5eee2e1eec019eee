//! RFC 9457 problem details: the one error shape of payhub's HTTP APIs.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payhub_core::ValidationErrors;
use serde_json::json;

/// An HTTP API error. Validation errors carry field-level detail;
/// internal errors are opaque to the caller and logged with their cause.
#[derive(Debug)]
pub enum ApiError {
    Validation(ValidationErrors),
    BadRequest(String),
    Unauthorized(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn internal(e: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(e.into())
    }
}

impl From<payhub_store::StoreError> for ApiError {
    fn from(e: payhub_store::StoreError) -> Self {
        if e.is_transient() {
            // The database is restarting or saturated: the caller may retry.
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable("the database is unavailable; try again shortly".into())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(payhub_store::StoreError::from(e))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: Option<&str>,
    extra: Option<serde_json::Value>,
) -> Response {
    let mut body = json!({
        "type": format!("https://payhub.dev/problems/{kind}"),
        "title": title,
        "status": status.as_u16(),
    });
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    if let Some(serde_json::Value::Object(m)) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Validation(errs) => problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "The request is invalid",
                Some(&errs.to_string()),
                Some(json!({ "errors": errs.0 })),
            ),
            ApiError::BadRequest(d) => problem(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "The request cannot be read",
                Some(&d),
                None,
            ),
            ApiError::Unauthorized(d) => {
                let mut r = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Not authenticated",
                    Some(&d),
                    None,
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ApiError::NotFound(d) => problem(StatusCode::NOT_FOUND, "not-found", "Not found", Some(&d), None),
            ApiError::Conflict(d) => problem(StatusCode::CONFLICT, "conflict", "Conflict", Some(&d), None),
            ApiError::Unavailable(d) => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                Some(&d),
                None,
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    None,
                    None,
                )
            }
        }
    }
}

/// The shop behind `Authorization: Bearer <API key>` (or `X-Api-Key`), for
/// every shop-facing HTTP API.
pub async fn authenticate(
    store: &payhub_store::Store,
    headers: &axum::http::HeaderMap,
) -> Result<payhub_store::shops::Shop, ApiError> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("send the shop's API key as `Authorization: Bearer <key>`".into()))?;
    payhub_store::shops::by_api_key(store, key)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the API key is not valid".into()))
}
