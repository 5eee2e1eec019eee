//! order-updater: the only writer of an order's status.
//!
//! Each event is applied in one transaction that locks the order row,
//! records the event as processed, moves the status, appends to the
//! append-only history and stores `order.status_changed` in the outbox. A
//! duplicate event, or a second payment notice for a paid order, changes
//! nothing: an order is paid exactly once.

mod transitions;

use payhub_core::Envelope;
use payhub_core::events::{EventPayload, OrderStatusChanged};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::{Store, outbox};
use payhub_telemetry::{ConfigError, Env};
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::net::SocketAddr;
use std::sync::LazyLock;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use transitions::{Decision, OrderFacts};
use uuid::Uuid;

pub use transitions::decide;

pub const SERVICE: &str = "order-updater";

static TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_order_transitions_total",
        "Order status changes applied, by provider and new status.",
        &["provider", "to"]
    )
    .expect("metric registers once")
});

static NO_CHANGE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_order_events_without_effect_total",
        "Events that changed no order (duplicates, late notices), by event type.",
        &["type"]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:9102")?,
        })
    }
}

pub struct UpdateHandler {
    pub store: Store,
    pub broker: payhub_queue::Broker,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    shop_id: Uuid,
    correlation_id: String,
    provider: String,
    status: String,
    currency: String,
    total_minor: i64,
    customer_name: String,
    customer_email: String,
    summary: String,
    channel: String,
    created_at: OffsetDateTime,
}

/// The order an event concerns: `order_id`, or for a provider notice the
/// reference payhub gave the provider (the order's id).
fn target_order(env: &Envelope) -> Result<Uuid, Failure> {
    if let Some(id) = env.order_id {
        return Ok(id);
    }
    if let EventPayload::PaymentReported(p) = &env.payload {
        return Uuid::parse_str(&p.provider_reference)
            .map_err(|_| Failure::Permanent(format!("unknown order reference {:?}", p.provider_reference)));
    }
    Err(Failure::Permanent(format!("{} names no order", env.kind())))
}

impl Handler for UpdateHandler {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let env = &msg.envelope;
        let order_id = target_order(env)?;
        let mut tx = self.store.begin().await.map_err(db)?;
        let row: Option<OrderRow> = sqlx::query_as(
            "SELECT id, shop_id, correlation_id, provider, status, currency::text AS currency, total_minor, customer_name,
                    customer_email, summary, channel, created_at
             FROM orders WHERE id = $1 FOR UPDATE",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(order) = row else {
            return Err(Failure::Permanent(format!("no order {order_id} for {}", env.kind())));
        };
        if !payhub_store::mark_processed(&mut tx, SERVICE, env.id)
            .await
            .map_err(db)?
        {
            tracing::info!("event already applied; acking the duplicate");
            return Ok(());
        }
        let facts = OrderFacts::from_row(&order.status, &order.currency, order.total_minor, &order.provider)
            .map_err(Failure::Permanent)?;
        let decision = decide(&facts, &env.payload);
        let Decision::Move {
            to,
            reason,
            details,
            paid,
        } = decision
        else {
            if let Decision::Ignore(why) = decision {
                tracing::info!(status = %order.status, why, "event changes nothing");
            }
            NO_CHANGE.with_label_values(&[env.kind()]).inc();
            tx.commit().await.map_err(db)?;
            return Ok(());
        };
        let end_to_end = paid.as_ref().and_then(|p| p.end_to_end_id.clone());
        sqlx::query(
            "UPDATE orders SET status = $2, status_reason = $3, updated_at = now(),
                    paid_at = COALESCE($4, paid_at), end_to_end_id = COALESCE($5, end_to_end_id)
             WHERE id = $1",
        )
        .bind(order.id)
        .bind(to.as_str())
        .bind(reason.as_deref())
        .bind(paid.as_ref().map(|p| p.paid_at.unwrap_or_else(OffsetDateTime::now_utc)))
        .bind(end_to_end.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO order_history (order_id, from_status, to_status, reason, event_id, actor, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(order.id)
        .bind(facts.status.as_str())
        .bind(to.as_str())
        .bind(reason.as_deref())
        .bind(env.id)
        .bind(SERVICE)
        .bind(&details)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let charge = match &env.payload {
            EventPayload::ChargeCreated(c) => Some(c.charge.clone()),
            _ => None,
        };
        let mut out = Envelope::for_order(
            EventPayload::OrderStatusChanged(OrderStatusChanged {
                channel: payhub_core::events::OrderChannel::parse(&order.channel),
                provider: facts.provider,
                from: facts.status,
                to,
                amount: facts.total,
                reason: reason.clone(),
                customer_name: order.customer_name.clone(),
                customer_email: order.customer_email.clone(),
                summary: order.summary.clone(),
                charge,
                end_to_end_id: end_to_end,
                order_created_at: order.created_at,
            }),
            order.id,
            order.shop_id,
            &order.correlation_id,
        );
        out.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut tx, &out).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        TRANSITIONS
            .with_label_values(&[facts.provider.as_str(), to.as_str()])
            .inc();
        tracing::info!(
            from = facts.status.as_str(),
            to = to.as_str(),
            reason = reason.as_deref().unwrap_or(""),
            "order moved"
        );
        let _ = outbox::publish_now(&self.store, &self.broker, &[out]).await;
        Ok(())
    }
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        infra.spawn_outbox_relay();
        let handler = UpdateHandler {
            store: infra.store.clone(),
            broker: infra.broker.clone(),
        };
        let mut app = payhub_service::App::start(infra, config.common.http_addr, axum::Router::new()).await?;
        app.consume(QueueSpec::ORDER_UPDATER, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
