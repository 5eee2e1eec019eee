//! order-updater: the only writer of an order's status.
//!
//! Each event is applied in one transaction that locks the order row,
//! records the event as processed, moves the status, appends to the
//! append-only history and stores `order.status_changed` in the outbox. A
//! duplicate event, or a second payment notice for a paid order, changes
//! nothing: an order is paid exactly once.

mod transitions;

use payhub_core::events::{
    EventPayload, InvoiceAction, InvoiceRequested, OrderDetails, OrderStatusChanged, ShipmentNotice,
};
use payhub_core::{Envelope, Money, OrderStatus};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::{Store, outbox};
use payhub_telemetry::{ConfigError, Env};
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use sqlx::Connection;
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

/// From the order's creation to its payment, by provider (how long buyers take to pay).
static TIME_TO_PAID: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_order_time_to_paid_seconds",
        "Time from an order's acceptance to its payment being applied, by provider.",
        &["provider"],
        vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0
        ]
    )
    .expect("metric registers once")
});

/// From a confirmed payment fact (webhook-verifier's `payment.reported`)
/// to the order marked paid: the SLO "verified webhooks turned into a paid
/// order within 2 s" is read from its `le="2"` bucket.
static REPORTED_TO_PAID: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_payment_reported_to_paid_seconds",
        "Time from a confirmed payment fact (payment.reported) to the order marked paid, by provider.",
        &["provider"],
        vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
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
    pub outbox: outbox::Outbox,
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
    end_to_end_id: Option<String>,
    provider_charge_id: Option<String>,
    items: serde_json::Value,
    tax_minor: i64,
    customer_phone: Option<String>,
    paid_at: Option<OffsetDateTime>,
    extra: serde_json::Value,
    payment_link_url: Option<String>,
    transaction_id: Option<String>,
    auth_code: Option<String>,
    card_masked: Option<String>,
    card_brand: Option<String>,
    shipping_address: Option<serde_json::Value>,
    order_rules: serde_json::Value,
    carrier: Option<String>,
    tracking_code: Option<String>,
    tracking_url: Option<String>,
    promised_delivery_on: Option<time::Date>,
    /// The shop invoices through payhub (`shop_invoicing.enabled`), read
    /// with the order so that deciding costs no extra query.
    invoicing: bool,
    /// Where the order's invoice stands (`invoices.status`), if one was asked for.
    invoice_status: Option<String>,
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

/// The refund a `refund.completed` reports, as the status change carries it
/// on to the shop's webhook, the buyer's e-mail and the daily figures.
fn refund_notice(payload: &EventPayload) -> Option<payhub_core::events::RefundNotice> {
    match payload {
        EventPayload::RefundCompleted(r) => Some(payhub_core::events::RefundNotice {
            refund_id: r.refund_id,
            idempotency_key: r.idempotency_key.clone(),
            amount: r.amount,
            refunded_total: r.refunded_total,
            reason: r.reason.clone(),
        }),
        _ => None,
    }
}

/// A status move to publish after commit, with when the payment fact that
/// caused it was reported (for the reported-to-paid latency).
struct Moved {
    event: Envelope,
    /// `invoice.requested`, when the move needs the shop's invoicing
    /// service (stored in the same transaction).
    invoice: Option<Envelope>,
    reported_at: Option<OffsetDateTime>,
}
/// Whether a move asks the shop's invoicing service for something: the
/// invoice of an order just paid, for a shop that invoices through payhub;
/// the cancellation of its invoice when the paid order is refunded in full
/// or cancelled, if the shop invoices here or an invoice was asked for (a
/// shop that turned invoicing off since still has its issued NF-e
/// cancelled). Every other move reaches charge-creator not at all (issue 14).
fn invoice_action(
    facts: &OrderFacts,
    to: OrderStatus,
    paid_now: bool,
    invoicing: bool,
    invoice: Option<&str>,
) -> Option<InvoiceAction> {
    if invoicing && paid_now && to == OrderStatus::Paid && facts.status != OrderStatus::Paid {
        return Some(InvoiceAction::Issue);
    }
    let undone = matches!(to, OrderStatus::Refunded | OrderStatus::Cancelled) && facts.status != to;
    let cancellable = match invoice {
        Some(s) => s == "requested" || s == "issued",
        // Not asked for yet (a request still queued): the invoicer sees the
        // cancel first, or the order's status when it settles the invoice.
        None => invoicing,
    };
    if undone && cancellable {
        return Some(InvoiceAction::Cancel);
    }
    None
}

/// The figures of the moves (report rows, ledger lines, delivery outcomes),
/// in the moves' own transaction: exact by construction, and no queue
/// delivery per status change to the reporter (issue 14).
async fn record_figures(tx: &mut sqlx::PgConnection, moved: &[Moved]) -> Result<Vec<bool>, Failure> {
    let events: Vec<&Envelope> = moved.iter().map(|m| &m.event).collect();
    payhub_store::figures::record(tx, &events).await.map_err(db)
}

/// Records `env` as processed by order-updater (in the caller's
/// transaction, under the order's lock); false for an event applied before,
/// which is then acknowledged without effect.
async fn first_time(tx: &mut sqlx::PgConnection, env: &Envelope) -> Result<bool, Failure> {
    let fresh = payhub_store::mark_processed(tx, SERVICE, env.id).await.map_err(db)?;
    if !fresh {
        tracing::info!(event_id = %env.id, "event already applied; acking the duplicate");
    }
    Ok(fresh)
}

/// Namespace of the ids of the refusals of fulfilment reports.
const REFUSAL_NAMESPACE: Uuid = Uuid::from_u128(0x2c5e_8a41_7b3f_4d19_9e06_f1a2_b3c4_d5e6);

/// Most events applied in one transaction.
pub const MAX_BATCH: usize = 128;

impl UpdateHandler {
    /// Applies one event inside `tx` (the caller commits): locks the order,
    /// records the event, moves the status. Returns the `order.status_changed`
    /// to publish after commit, if the status moved.
    async fn apply(&self, tx: &mut sqlx::PgConnection, env: &Envelope) -> Result<Option<Moved>, Failure> {
        let order_id = target_order(env)?;
        let row: Option<OrderRow> = sqlx::query_as(
            "SELECT o.id, o.shop_id, o.correlation_id, o.provider, o.status, o.currency::text AS currency, o.total_minor,
                    o.customer_name, o.customer_email, o.summary, o.channel, o.created_at, o.end_to_end_id,
                    c.provider_charge_id, o.items, o.tax_minor, o.customer_phone, o.paid_at, o.extra,
                    c.payment_link_url, c.transaction_id, c.auth_code, c.card_masked, c.card_brand,
                    o.shipping_address, s.order_rules, o.carrier, o.tracking_code, o.tracking_url,
                    o.promised_delivery_on, COALESCE(si.enabled, false) AS invoicing,
                    i.status AS invoice_status
             FROM orders o LEFT JOIN charges c ON c.order_id = o.id JOIN shops s ON s.id = o.shop_id
                  LEFT JOIN shop_invoicing si ON si.shop_id = o.shop_id LEFT JOIN invoices i ON i.order_id = o.id
             WHERE o.id = $1 FOR UPDATE OF o",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(order) = row else {
            return Err(Failure::Permanent(format!("no order {order_id} for {}", env.kind())));
        };
        let mut facts = OrderFacts::from_row(&order.status, &order.currency, order.total_minor, &order.provider)
            .map_err(Failure::Permanent)?;
        facts.charge_id = order.provider_charge_id.clone();
        facts.end_to_end_id = order.end_to_end_id.clone();
        let decision = decide(&facts, &env.payload);
        let (to, reason, history_details, paid) = match decision {
            Decision::Move {
                to,
                reason,
                details,
                paid,
            } => (to, reason, details, paid),
            Decision::Ignore(why) => {
                if !first_time(&mut *tx, env).await? {
                    return Ok(None);
                }
                tracing::info!(event_id = %env.id, status = %order.status, why, "event changes nothing");
                NO_CHANGE.with_label_values(&[env.kind()]).inc();
                return Ok(None);
            }
            Decision::Refuse(why) => {
                if !first_time(&mut *tx, env).await? {
                    return Ok(None);
                }
                NO_CHANGE.with_label_values(&[env.kind()]).inc();
                return self.refuse(tx, env, &order, &why).await.map(|event| {
                    Some(Moved {
                        event,
                        invoice: None,
                        reported_at: None,
                    })
                });
            }
        };
        let fulfilment = match &env.payload {
            EventPayload::FulfilmentReported(f) => Some(f),
            _ => None,
        };
        let rules: payhub_core::rules::OrderRules =
            serde_json::from_value(order.order_rules.clone()).unwrap_or_default();
        let actor = fulfilment
            .map(|f| payhub_core::fulfilment::actor(f.channel.as_str(), f.update.by.as_deref()))
            .unwrap_or_else(|| SERVICE.to_string());
        // The delivery promise is made once, at payment, from the shop's rule.
        let promised = match (&paid, &rules.delivery_time, order.promised_delivery_on) {
            (Some(p), Some(rule), None) => {
                let address = order.shipping_address.as_ref();
                let field = |k: &str| address.and_then(|a| a.get(k)).and_then(|v| v.as_str());
                Some(rule.promised_on(
                    p.paid_at.unwrap_or_else(OffsetDateTime::now_utc),
                    field("state"),
                    field("zipcode"),
                ))
            }
            _ => None,
        };
        let update = fulfilment.map(|f| &f.update);
        let end_to_end = paid.as_ref().and_then(|p| p.end_to_end_id.clone());
        let paid_now = OffsetDateTime::now_utc();
        let charge = match &env.payload {
            EventPayload::ChargeCreated(c) => Some(c.charge.clone()),
            _ => None,
        };
        let details = OrderDetails {
            items: serde_json::from_value(order.items.clone()).unwrap_or_default(),
            tax: Some(Money::from_minor(order.tax_minor, facts.total.currency())),
            customer_phone: order.customer_phone.clone(),
            paid_at: paid.as_ref().map(|p| p.paid_at.unwrap_or(paid_now)).or(order.paid_at),
            provider_charge_id: order.provider_charge_id.clone(),
            transaction_id: order.transaction_id.clone(),
            auth_code: order.auth_code.clone(),
            card_masked: order.card_masked.clone(),
            card_brand: order.card_brand.clone(),
            payment_link_url: charge
                .as_ref()
                .map(|c| c.payment_link_url.clone())
                .or(order.payment_link_url.clone()),
            extra: serde_json::from_value(order.extra.clone()).unwrap_or_default(),
        };
        let mut out = Envelope::for_order(
            EventPayload::OrderStatusChanged(OrderStatusChanged {
                channel: payhub_core::events::OrderChannel::parse(&order.channel),
                provider: facts.provider,
                from: facts.status,
                to,
                amount: facts.total,
                reason: reason.clone(),
                customer_name: order.customer_name,
                customer_email: order.customer_email,
                summary: order.summary,
                charge,
                end_to_end_id: end_to_end.clone(),
                order_created_at: order.created_at,
                refund: refund_notice(&env.payload),
                details: Some(Box::new(details)),
                shipment: (to.is_after_payment() || paid.is_some()).then(|| {
                    let offset = rules.delivery_time.as_ref().map_or(-3, |d| d.utc_offset_hours);
                    let local_today = OffsetDateTime::now_utc()
                        .to_offset(time::UtcOffset::from_hms(offset, 0, 0).unwrap_or(time::UtcOffset::UTC))
                        .date();
                    Box::new(ShipmentNotice {
                        carrier: update.and_then(|u| u.carrier.clone()).or(order.carrier.clone()),
                        tracking_code: update
                            .and_then(|u| u.tracking_code.clone())
                            .or(order.tracking_code.clone()),
                        tracking_url: update
                            .and_then(|u| u.tracking_url.clone())
                            .or(order.tracking_url.clone()),
                        promised_delivery_on: promised.or(order.promised_delivery_on),
                        delivered_on: (to == OrderStatus::Delivered).then_some(local_today),
                        note: update.and_then(|u| u.note.clone()),
                        actor: fulfilment.is_some().then(|| actor.clone()),
                    })
                }),
            }),
            order.id,
            order.shop_id,
            &order.correlation_id,
        );
        out.trace = payhub_telemetry::trace::current_context();
        let invoice = match invoice_action(
            &facts,
            to,
            paid.is_some(),
            order.invoicing,
            order.invoice_status.as_deref(),
        ) {
            Some(action) => {
                let EventPayload::OrderStatusChanged(c) = &out.payload else {
                    unreachable!("built above")
                };
                let mut ask = Envelope::for_order(
                    EventPayload::InvoiceRequested(InvoiceRequested {
                        action,
                        order_status: to,
                        customer_name: c.customer_name.clone(),
                        customer_email: c.customer_email.clone(),
                        amount: c.amount,
                        reason: reason.clone(),
                    }),
                    order.id,
                    order.shop_id,
                    &order.correlation_id,
                );
                ask.trace = out.trace.clone();
                Some(ask)
            }
            None => None,
        };
        // The event recorded as processed, the move, its history entry and
        // the events it publishes, in one statement (issue 14: one round
        // trip instead of three, four with an invoice request). The order is locked above, so the event's
        // record is taken under the lock as before; an event applied before
        // (its record exists) moves nothing and inserts nothing.
        let outgoing: Vec<&Envelope> = std::iter::once(&out).chain(invoice.as_ref()).collect();
        let outgoing_ids: Vec<Uuid> = outgoing.iter().map(|e| e.id).collect();
        let outgoing_keys: Vec<&str> = outgoing.iter().map(|e| e.kind()).collect();
        let outgoing_bodies: Vec<Vec<u8>> = outgoing.iter().map(|e| e.to_json()).collect();
        let published = sqlx::query(
            "WITH fresh AS (
                INSERT INTO processed_events (consumer, event_id) VALUES ($17, $7)
                ON CONFLICT DO NOTHING RETURNING event_id
             ), moved AS (
                UPDATE orders SET status = $2, status_reason = $3, updated_at = now(),
                       paid_at = COALESCE($4, paid_at), end_to_end_id = COALESCE($5, end_to_end_id),
                       carrier = COALESCE($10, carrier), tracking_code = COALESCE($11, tracking_code),
                       tracking_url = COALESCE($12, tracking_url),
                       promised_delivery_on = COALESCE($13, promised_delivery_on),
                       shipped_at = CASE WHEN $2 = 'shipped' THEN now() ELSE shipped_at END,
                       delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
                WHERE id = $1 AND EXISTS (SELECT 1 FROM fresh) RETURNING id
             ), history AS (
                INSERT INTO order_history (order_id, from_status, to_status, reason, event_id, actor, details)
                SELECT id, $6, $2, $3, $7, $8, $9 FROM moved
             )
             INSERT INTO outbox (id, routing_key, body)
             SELECT e.id, e.routing_key, e.body FROM moved,
                    unnest($14::uuid[], $15::text[], $16::bytea[]) AS e(id, routing_key, body)",
        )
        .bind(order.id)
        .bind(to.as_str())
        .bind(reason.as_deref())
        .bind(paid.as_ref().map(|p| p.paid_at.unwrap_or(paid_now)))
        .bind(end_to_end.as_deref())
        .bind(facts.status.as_str())
        .bind(env.id)
        .bind(&actor)
        .bind(&history_details)
        .bind(update.and_then(|u| u.carrier.as_deref()))
        .bind(update.and_then(|u| u.tracking_code.as_deref()))
        .bind(update.and_then(|u| u.tracking_url.as_deref()))
        .bind(promised)
        .bind(&outgoing_ids)
        .bind(&outgoing_keys)
        .bind(&outgoing_bodies)
        .bind(SERVICE)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if published.rows_affected() == 0 {
            tracing::info!(event_id = %env.id, "event already applied; acking the duplicate");
            return Ok(None);
        }
        tracing::info!(
            event_id = %env.id,
            order_id = %order.id,
            from = facts.status.as_str(),
            to = to.as_str(),
            reason = reason.as_deref().unwrap_or(""),
            "order moved"
        );
        let reported_at = match &env.payload {
            EventPayload::PaymentReported(_) => Some(env.occurred_at),
            _ => None,
        };
        Ok(Some(Moved {
            event: out,
            invoice,
            reported_at,
        }))
    }

    /// A shop's fulfilment report that cannot apply: the shop hears why
    /// (`order.rejected`, stored with the event as processed). The same
    /// report always yields the same refusal id.
    async fn refuse(
        &self,
        tx: &mut sqlx::PgConnection,
        env: &Envelope,
        order: &OrderRow,
        why: &str,
    ) -> Result<Envelope, Failure> {
        let channel = match &env.payload {
            EventPayload::FulfilmentReported(f) => f.channel,
            _ => payhub_core::events::OrderChannel::Api,
        };
        let mut errors = payhub_core::ValidationErrors::default();
        errors.push("status", "illegal_transition", why);
        let mut out = Envelope::for_order(
            EventPayload::OrderRejected(payhub_core::events::OrderRejected {
                channel,
                correlation_id: Some(order.correlation_id.clone()),
                reason: format!("the fulfilment report cannot apply: {why}"),
                errors: errors.to_rejected(),
            }),
            order.id,
            order.shop_id,
            &order.correlation_id,
        );
        out.id = Uuid::new_v5(&REFUSAL_NAMESPACE, env.id.as_bytes());
        out.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut *tx, &out).await.map_err(db)?;
        tracing::warn!(event_id = %env.id, order_id = %order.id, status = %order.status, why, "fulfilment report refused");
        Ok(out)
    }

    /// After commit: count the moves and publish what they produced.
    async fn published(&self, moved: Vec<Moved>) {
        let now = OffsetDateTime::now_utc();
        let seconds = |since: OffsetDateTime| (now - since).as_seconds_f64().max(0.0);
        for m in &moved {
            if let EventPayload::OrderStatusChanged(c) = &m.event.payload {
                TRANSITIONS
                    .with_label_values(&[c.provider.as_str(), c.to.as_str()])
                    .inc();
                if c.to == payhub_core::OrderStatus::Paid {
                    TIME_TO_PAID
                        .with_label_values(&[c.provider.as_str()])
                        .observe(seconds(c.order_created_at));
                    if let Some(at) = m.reported_at {
                        REPORTED_TO_PAID
                            .with_label_values(&[c.provider.as_str()])
                            .observe(seconds(at));
                    }
                }
            }
        }
        let events: Vec<Envelope> = moved
            .into_iter()
            .flat_map(|m| std::iter::once(m.event).chain(m.invoice))
            .collect();
        let _ = self.outbox.publish_now(&events).await;
    }
}

impl Handler for UpdateHandler {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let mut tx = self.store.begin().await.map_err(db)?;
        let out = self.apply(&mut tx, &msg.envelope).await?;
        let on_time = record_figures(&mut tx, out.as_slice()).await?;
        tx.commit().await.map_err(db)?;
        payhub_store::figures::count_deliveries(&on_time);
        self.published(out.into_iter().collect()).await;
        Ok(())
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Several events in one transaction, each under its own savepoint so a
    /// failing one is rolled back alone. Orders are locked in id order, so
    /// two batches never wait on each other in a cycle; events of the same
    /// order keep their delivery order.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Result<(), Failure>> = vec![Ok(()); msgs.len()];
        let mut order: Vec<(Uuid, usize)> = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            match target_order(&m.envelope) {
                Ok(id) => order.push((id, i)),
                Err(f) => results[i] = Err(f),
            }
        }
        order.sort_by_key(|&(id, i)| (id, i));
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(e) => return vec![Err(db(e)); msgs.len()],
        };
        let mut events = Vec::new();
        let mut applied = Vec::new();
        for &(_, i) in &order {
            let mut sp = match tx.begin().await {
                Ok(sp) => sp,
                Err(e) => return vec![Err(db(e)); msgs.len()],
            };
            match self.apply(&mut sp, &msgs[i].envelope).await {
                Ok(out) => {
                    if let Err(e) = sp.commit().await {
                        return vec![Err(db(e)); msgs.len()];
                    }
                    events.extend(out);
                    applied.push(i);
                }
                Err(Failure::Unavailable(e)) => {
                    // The connection is gone: nothing of this batch holds.
                    return vec![Err(Failure::Unavailable(e)); msgs.len()];
                }
                Err(f) => {
                    if let Err(e) = sp.rollback().await {
                        return vec![Err(db(e)); msgs.len()];
                    }
                    results[i] = Err(f);
                }
            }
        }
        let committed = match record_figures(&mut tx, &events).await {
            Ok(on_time) => tx.commit().await.map_err(db).map(|()| on_time),
            Err(f) => Err(f),
        };
        match committed {
            Ok(on_time) => payhub_store::figures::count_deliveries(&on_time),
            Err(f) => {
                for i in applied {
                    results[i] = Err(f.clone());
                }
                return results;
            }
        }
        self.published(events).await;
        results
    }
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let handler = UpdateHandler {
            store: infra.store.clone(),
            outbox,
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

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::{Currency, Provider};

    fn facts(status: OrderStatus) -> OrderFacts {
        OrderFacts {
            status,
            total: Money::from_minor(1000, Currency::Brl),
            provider: Provider::Openpix,
            charge_id: Some("ch-1".into()),
            end_to_end_id: None,
        }
    }

    #[test]
    fn only_a_payment_of_an_invoicing_shop_asks_for_an_invoice() {
        use OrderStatus::*;
        assert_eq!(
            invoice_action(&facts(AwaitingPayment), Paid, true, true, None),
            Some(InvoiceAction::Issue)
        );
        assert_eq!(invoice_action(&facts(AwaitingPayment), Paid, true, false, None), None);
        // Every other move reaches charge-creator not at all.
        assert_eq!(
            invoice_action(&facts(Accepted), AwaitingPayment, false, true, None),
            None
        );
        assert_eq!(
            invoice_action(&facts(Paid), Fulfilling, false, true, Some("issued")),
            None
        );
        assert_eq!(
            invoice_action(&facts(AwaitingPayment), UnderReview, false, true, None),
            None
        );
        assert_eq!(
            invoice_action(&facts(Paid), PartiallyRefunded, false, true, Some("issued")),
            None
        );
    }

    #[test]
    fn a_refund_in_full_or_a_cancellation_cancels_an_invoice_that_was_asked_for() {
        use OrderStatus::*;
        for to in [Refunded, Cancelled] {
            assert_eq!(
                invoice_action(&facts(Paid), to, false, true, Some("issued")),
                Some(InvoiceAction::Cancel)
            );
            // Turned off since: the issued NF-e is still cancelled.
            assert_eq!(
                invoice_action(&facts(Fulfilling), to, false, false, Some("issued")),
                Some(InvoiceAction::Cancel)
            );
            assert_eq!(
                invoice_action(&facts(Paid), to, false, true, None),
                Some(InvoiceAction::Cancel)
            );
            // Nothing issued: nothing to cancel.
            assert_eq!(invoice_action(&facts(Paid), to, false, true, Some("failed")), None);
            assert_eq!(invoice_action(&facts(Paid), to, false, false, None), None);
        }
        // A late refund confirmation on a refunded order asks nothing again.
        assert_eq!(
            invoice_action(&facts(Refunded), Refunded, false, true, Some("issued")),
            None
        );
    }
}
