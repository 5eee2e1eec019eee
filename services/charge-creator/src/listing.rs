//! `POST /internal/v1/listing` (issue 13 §1): the provider's own listing of
//! an account's charges in a window, asked under that account's credentials
//! (which only charge-creator holds), for reporter's reconciliation.
//! OpenPix: `GET /api/v1/charge?start&end`. PixelPay has no listing: its
//! payments are reconciled one by one through the confirmation call.

use crate::confirm::ConfirmState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payhub_connectors::ConnectorError;
use payhub_connectors::internal::{ListedCharge, ListingAnswer, ListingRequest};
use serde_json::json;
use std::sync::Arc;

pub async fn listing_route(
    State(st): State<Arc<ConfirmState>>,
    headers: HeaderMap,
    Json(req): Json<ListingRequest>,
) -> Response {
    if let Some(refused) = st.refuse_without_token(&headers) {
        return refused;
    }
    if req.provider != "openpix" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("{} offers no listing; reconcile its payments one by one", req.provider)})),
        )
            .into_response();
    }
    if req.end <= req.start || req.end - req.start > time::Duration::days(2) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "the window must be positive and at most 2 days"})),
        )
            .into_response();
    }
    let client = match st
        .providers
        .named(&req.account)
        .await
        .and_then(|u| st.providers.openpix(&u))
    {
        Ok(c) => c,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": e.to_string()}))).into_response(),
    };
    match client.list_charges(req.start, req.end).await {
        Ok(charges) => Json(ListingAnswer {
            charges: charges
                .into_iter()
                .map(|c| ListedCharge {
                    reference: c.correlation_id,
                    charge_id: c.charge_id,
                    status: c.status.as_str().to_string(),
                    value_minor: c.value.minor(),
                    currency: c.value.currency().code().to_string(),
                    paid_at: c.paid_at,
                })
                .collect(),
        })
        .into_response(),
        Err(ConnectorError::Transient(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e}))).into_response()
        }
        Err(ConnectorError::Permanent(e)) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))).into_response(),
    }
}
