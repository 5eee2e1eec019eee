//! The door for a paid order's life after payment (issue 12 §1):
//! `POST /v1/orders/{correlationID}/fulfilment` and the AMQP fulfilment
//! messages (`order.fulfilling`, `order.shipped`, `order.delivered`,
//! `order.returned`, `order.cancelled`; contract in docs/contracts/).
//!
//! ingress does not move the order: it checks the report (fields, and
//! whether the move is legal from where the order stands now, so the shop
//! hears at once), stores `fulfilment.reported` in the outbox and publishes
//! it. order-updater, the one writer of the status, checks the move again
//! under the order's lock; a report that lost a race is refused there and
//! the shop gets an `order.rejected` webhook with the reason.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_core::events::{EventPayload, FulfilmentReported, OrderChannel};
use payhub_core::fulfilment::{FulfilmentUpdate, check_move};
use payhub_core::{Envelope, OrderStatus};
use payhub_service::problem::{ApiError, authenticate};
use payhub_store::outbox::{self, Outbox};
use payhub_store::{Store, StoreError};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone)]
pub struct FulfilmentState {
    pub store: Store,
    pub outbox: Outbox,
}

pub fn router(state: FulfilmentState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/orders/{correlation_id}/fulfilment", post(report))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// What became of a report.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and published; order-updater applies it.
    Reported {
        order_id: Uuid,
        from: OrderStatus,
        event_id: Uuid,
    },
    /// The order already stands there with the same shipment: nothing to do.
    AlreadyThere { order_id: Uuid },
    /// No such order for this shop.
    NoOrder,
    /// The move is illegal from where the order stands.
    Illegal { reason: String },
}

#[derive(sqlx::FromRow)]
struct Current {
    id: Uuid,
    status: String,
    tracking_code: Option<String>,
}

/// Checks `update` against the order and, if it may apply, stores its
/// event (under `event_id`: the same report always has the same id) and
/// publishes it.
pub async fn submit(
    store: &Store,
    outbox: &Outbox,
    shop_id: Uuid,
    correlation_id: &str,
    update: FulfilmentUpdate,
    channel: OrderChannel,
    event_id: Uuid,
) -> Result<Outcome, StoreError> {
    let current: Option<Current> =
        sqlx::query_as("SELECT id, status, tracking_code FROM orders WHERE shop_id = $1 AND correlation_id = $2")
            .bind(shop_id)
            .bind(correlation_id)
            .fetch_optional(&store.pool)
            .await?;
    let Some(current) = current else {
        return Ok(Outcome::NoOrder);
    };
    let Some(from) = OrderStatus::parse(&current.status) else {
        return Err(StoreError::Db(sqlx::Error::Protocol(format!(
            "order {} has an unknown status {:?}",
            current.id, current.status
        ))));
    };
    if from == update.to && (update.to != OrderStatus::Shipped || current.tracking_code == update.tracking_code) {
        return Ok(Outcome::AlreadyThere { order_id: current.id });
    }
    if let Err(reason) = check_move(from, update.to) {
        return Ok(Outcome::Illegal { reason });
    }
    let mut env = Envelope::for_order(
        EventPayload::FulfilmentReported(FulfilmentReported { channel, update }),
        current.id,
        shop_id,
        correlation_id,
    );
    env.id = event_id;
    env.trace = payhub_telemetry::trace::current_context();
    let mut tx = store.pool.begin().await?;
    let stored: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM outbox WHERE id = $1")
        .bind(env.id)
        .fetch_optional(&mut *tx)
        .await?;
    if stored.is_none() {
        outbox::add(&mut tx, &env).await?;
    }
    tx.commit().await?;
    if let Err(e) = outbox.publish_now(std::slice::from_ref(&env)).await {
        tracing::warn!(error = %e, "publish after commit failed; the outbox relay will publish it");
    }
    Ok(Outcome::Reported {
        order_id: current.id,
        from,
        event_id: env.id,
    })
}

#[tracing::instrument(skip_all, fields(shop_id, correlation_id))]
async fn report(
    State(st): State<FulfilmentState>,
    headers: HeaderMap,
    Path(correlation_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shop = authenticate(&st.store, &headers).await?;
    tracing::Span::current().record("shop_id", tracing::field::display(shop.id));
    tracing::Span::current().record("correlation_id", correlation_id.as_str());
    let json: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let update = FulfilmentUpdate::from_json(&json).map_err(ApiError::Validation)?;
    let to = update.to;
    match submit(
        &st.store,
        &st.outbox,
        shop.id,
        &correlation_id,
        update,
        OrderChannel::Api,
        Uuid::now_v7(),
    )
    .await?
    {
        Outcome::Reported {
            order_id,
            from,
            event_id,
        } => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "orderId": order_id,
                "correlationID": correlation_id,
                "from": from.as_str(),
                "status": to.as_str(),
                "eventId": event_id,
            })),
        )
            .into_response()),
        Outcome::AlreadyThere { order_id } => Ok((
            StatusCode::OK,
            [("idempotent-replayed", "true")],
            axum::Json(json!({
                "orderId": order_id,
                "correlationID": correlation_id,
                "from": to.as_str(),
                "status": to.as_str(),
            })),
        )
            .into_response()),
        Outcome::NoOrder => Err(ApiError::NotFound(format!("no order {correlation_id} for this shop"))),
        Outcome::Illegal { reason, .. } => Err(ApiError::Conflict(reason)),
    }
}
