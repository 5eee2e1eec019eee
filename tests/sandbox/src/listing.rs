//! OpenPix's charge listing for daily reconciliation (providers-2.md §1.2):
//! `GET /api/v1/charge?start&end&status&skip&limit` answers the account's
//! charges created in `[start, end]` (RFC 3339), `{charges, pageInfo}`, at
//! most 100 a page.
//!
//! Reconciliation tests make the listing disagree with payhub on purpose:
//! `POST /sandbox/listing {"correlationID", "fault": "hide"|"duplicate"|"value", "value"?}`
//! (or [`crate::Sandbox::set_listing_fault`]) hides a charge from the
//! listing, lists it twice, lists it with another value (centavos), or
//! lists a paid charge as `ACTIVE` (`unpaid`).
//! `{"fault": "clear"}` ends every listing fault. A paid charge payhub never
//! heard of is made by paying while webhooks are held (`/sandbox/webhooks/hold`).

use crate::charges::charge_view;
use crate::state::{Inner, lock};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

type Shared = Arc<Inner>;

/// How the listing disagrees with the charges.
#[derive(Debug, Default)]
pub(crate) struct ListingFaults {
    hidden: HashSet<String>,
    duplicated: HashSet<String>,
    values: HashMap<String, i64>,
    unpaid: HashSet<String>,
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new().route("/sandbox/listing", post(control)).with_state(state)
}

/// A listing fault for one charge; `None` clears them all.
pub(crate) fn set(state: &Inner, fault: Option<(&str, &str, Option<i64>)>) -> Result<(), String> {
    let mut f = lock(&state.listing);
    match fault {
        None => *f = ListingFaults::default(),
        Some((cid, "hide", _)) => {
            f.hidden.insert(cid.to_string());
        }
        Some((cid, "duplicate", _)) => {
            f.duplicated.insert(cid.to_string());
        }
        Some((cid, "value", Some(v))) => {
            f.values.insert(cid.to_string(), v);
        }
        Some((cid, "unpaid", _)) => {
            f.unpaid.insert(cid.to_string());
        }
        Some((_, other, _)) => {
            return Err(format!(
                "unknown listing fault {other:?} (hide, duplicate, value, unpaid)"
            ));
        }
    }
    Ok(())
}

async fn control(State(state): State<Shared>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = v.get("fault").and_then(Value::as_str).unwrap_or_default();
    let result = if fault == "clear" {
        set(&state, None)
    } else {
        match v.get("correlationID").and_then(Value::as_str) {
            Some(cid) => set(&state, Some((cid, fault, v.get("value").and_then(Value::as_i64)))),
            None => Err("correlationID is required".into()),
        }
    };
    match result {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    start: Option<String>,
    end: Option<String>,
    status: Option<String>,
    skip: Option<usize>,
    limit: Option<usize>,
}

fn time_of(s: Option<&str>) -> Result<Option<OffsetDateTime>, String> {
    match s {
        None => Ok(None),
        Some(t) => OffsetDateTime::parse(t, &Rfc3339)
            .map(Some)
            .map_err(|_| format!("{t:?} is not an RFC 3339 date-time")),
    }
}

/// `GET /api/v1/charge`.
pub(crate) async fn list_charges(
    State(state): State<Shared>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let account = match crate::provider::authorize(&state, &headers) {
        Ok(a) => a,
        Err(denied) => return *denied,
    };
    let (start, end) = match (time_of(q.start.as_deref()), time_of(q.end.as_deref())) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    let faults = lock(&state.listing);
    let book = lock(state.book(account));
    let mut listed: Vec<Value> = Vec::new();
    for c in book.iter() {
        let created = OffsetDateTime::parse(&c.created_at, &Rfc3339).ok();
        if start.is_some_and(|s| created.is_some_and(|c| c < s)) || end.is_some_and(|e| created.is_some_and(|c| c > e))
        {
            continue;
        }
        if q.status.as_deref().is_some_and(|s| s != c.status) || faults.hidden.contains(&c.correlation_id) {
            continue;
        }
        let Ok(mut view) = serde_json::to_value(charge_view(c, true)) else {
            continue;
        };
        if let Some(v) = faults.values.get(&c.correlation_id) {
            view["value"] = json!(v);
        }
        if faults.unpaid.contains(&c.correlation_id) {
            view["status"] = json!("ACTIVE");
            view["paidAt"] = Value::Null;
        }
        if faults.duplicated.contains(&c.correlation_id) {
            listed.push(view.clone());
        }
        listed.push(view);
    }
    let skip = q.skip.unwrap_or(0);
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let page: Vec<Value> = listed.iter().skip(skip).take(limit).cloned().collect();
    Json(json!({
        "charges": page,
        "pageInfo": {
            "skip": skip,
            "limit": limit,
            "totalCount": listed.len(),
            "hasPreviousPage": skip > 0,
            "hasNextPage": skip + limit < listed.len(),
        }
    }))
    .into_response()
}
