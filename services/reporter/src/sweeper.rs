//! The sweeper: finds orders that stayed in a non-final state longer than
//! they should, re-checks them with the provider (through charge-creator's
//! confirmation call), settles what it can, and alerts on the rest.
//!
//! - `accepted` with no charge after `accepted_after`: its `order.accepted`
//!   may have been lost; it is published again (same event id every sweep,
//!   so charge-creator handles it once).
//! - `awaiting_payment` past its expiry (plus grace), or waiting longer than
//!   `recheck_after`: the provider is asked; a confirmed payment or expiry
//!   is reported as `payment.reported` (source `sweeper`, one event id per
//!   fact), exactly as a confirmed webhook would be.
//! - `paid` with no shop webhook after `notify_after`: when no delivery was
//!   ever attempted, the order's `order.status_changed` is published again
//!   (the outbox row is marked unpublished); a delivery that is failing is
//!   in the retry or dead-letter queue already and is alerted on.
//!
//! Only one replica sweeps at a time (a PostgreSQL advisory lock). Each
//! finding is kept in `stale_orders`, alerted on once, and counted in
//! `payhub_stale_orders` / `payhub_stale_order_oldest_seconds`.

use payhub_connectors::internal::{ClaimKind, ConfirmClient, ConfirmRequest, Verdict};
use payhub_core::events::{
    AlertAudience, AlertRaised, ChargeCustomer, EventPayload, OrderAccepted, PaymentReport, PaymentReported,
    PaymentSource,
};
use payhub_core::{Currency, Envelope, Money, Provider};
use payhub_store::Store;
use payhub_store::outbox::{self, Outbox};
use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

static STALE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "payhub_stale_orders",
        "Orders the sweeper found in a non-final state for too long and could not settle, by kind.",
        &["kind"]
    )
    .expect("metric registers once")
});

static OLDEST: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "payhub_stale_order_oldest_seconds",
        "Age of the oldest unsettled stale order, by kind.",
        &["kind"]
    )
    .expect("metric registers once")
});

static SETTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_sweeper_actions_total",
        "What the sweeper did, by kind and action (republished, reported, pending, alerted, unavailable).",
        &["kind", "action"]
    )
    .expect("metric registers once")
});

pub const KINDS: [&str; 4] = [
    "accepted_without_charge",
    "awaiting_past_expiry",
    "paid_not_notified",
    // A paid order not delivered by the date promised at payment (issue 12).
    "late_delivery",
];

/// An arbitrary, fixed key for the sweeper's advisory lock.
const LOCK_KEY: i64 = 0x7061_7968_7562_5357;

#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub interval: Duration,
    pub accepted_after: Duration,
    pub expiry_grace: Duration,
    pub recheck_after: Duration,
    pub notify_after: Duration,
    /// Most orders looked at per kind and sweep.
    pub batch: i64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: Duration::from_secs(60),
            accepted_after: Duration::from_secs(120),
            expiry_grace: Duration::from_secs(300),
            recheck_after: Duration::from_secs(900),
            notify_after: Duration::from_secs(600),
            batch: 100,
        }
    }
}

pub struct Sweeper {
    pub store: Store,
    pub outbox: Outbox,
    pub confirm: ConfirmClient,
    pub config: SweepConfig,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The same fact gets the same event id on every sweep.
pub(crate) fn fact_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, parts.join("|").as_bytes())
}

#[derive(sqlx::FromRow)]
struct AcceptedRow {
    id: Uuid,
    shop_id: Uuid,
    correlation_id: String,
    provider: String,
    currency: String,
    total_minor: i64,
    customer_name: String,
    customer_email: String,
    customer_tax_id: String,
    customer_phone: Option<String>,
    expires_in_secs: i32,
    summary: String,
}

/// Adds each event to the outbox inside `tx` unless a row with its id is
/// there already (the same fact, stored by an earlier pass).
pub(crate) async fn add_once(tx: &mut sqlx::PgConnection, events: &[Envelope]) -> Result<(), sqlx::Error> {
    for e in events {
        let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM outbox WHERE id = $1")
            .bind(e.id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            outbox::add(&mut *tx, e).await.map_err(|e| match e {
                payhub_store::StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        }
    }
    Ok(())
}

/// The `payment.reported` of a fact the provider confirmed when payhub
/// asked it (a sweep, a reconciliation): one event id per order and fact,
/// however often it is found.
pub(crate) fn reported_event(
    order: Uuid,
    shop: Uuid,
    provider: &str,
    report: PaymentReport,
    confirmation: payhub_core::events::PaymentConfirmation,
) -> (Envelope, String) {
    let fact = match &report {
        PaymentReport::Completed { end_to_end_id, .. } => {
            format!("paid:{}", end_to_end_id.as_deref().unwrap_or("charge"))
        }
        PaymentReport::Expired => "expired".to_string(),
    };
    let mut env = Envelope::new(EventPayload::PaymentReported(PaymentReported {
        provider: Provider::parse(provider).unwrap_or(Provider::Openpix),
        webhook_event_id: fact_id(&["sweep", &order.to_string()]),
        provider_reference: order.to_string(),
        report,
        confirmation: Some(confirmation),
        source: PaymentSource::Sweeper,
    }));
    env.id = fact_id(&["payment.reported", &order.to_string(), &fact]);
    env.order_id = Some(order);
    env.shop_id = Some(shop);
    (env, fact)
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %e, "the sweep failed; trying again next time");
            }
        }
    }

    /// One sweep, if no other replica is sweeping.
    pub async fn sweep_once(&self) -> Result<(), sqlx::Error> {
        let mut lock = self.store.pool.acquire().await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *lock)
            .await?;
        if !got {
            return Ok(());
        }
        let result = async {
            self.accepted_without_charge().await?;
            self.awaiting_payment().await?;
            self.paid_not_notified().await?;
            self.late_deliveries().await?;
            self.surveys_due().await?;
            self.refresh_metrics().await
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn note(&self, order: Uuid, kind: &str, result: &str) -> Result<bool, sqlx::Error> {
        // Returns true the first time the order is alerted on for `kind`.
        let (first_alert,): (bool,) = sqlx::query_as(
            "INSERT INTO stale_orders (order_id, kind, last_result) VALUES ($1, $2, $3)
             ON CONFLICT (order_id, kind) DO UPDATE
                SET last_checked = now(), checks = stale_orders.checks + 1, last_result = EXCLUDED.last_result,
                    resolved_at = NULL
             RETURNING alerted_at IS NULL",
        )
        .bind(order)
        .bind(kind)
        .bind(result.chars().take(500).collect::<String>())
        .fetch_one(&self.store.pool)
        .await?;
        Ok(first_alert)
    }

    async fn resolve(&self, order: Uuid, kind: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE stale_orders SET resolved_at = now(), last_checked = now() WHERE order_id = $1 AND kind = $2
             AND resolved_at IS NULL",
        )
        .bind(order)
        .bind(kind)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Stores `events` in the outbox in one transaction (with the alert
    /// mark, if any) and publishes them.
    async fn emit(&self, events: Vec<Envelope>, alerted: Option<(Uuid, &str)>) -> Result<(), sqlx::Error> {
        let mut tx = self.store.pool.begin().await?;
        add_once(&mut tx, &events).await?;
        if let Some((order, kind)) = alerted {
            sqlx::query("UPDATE stale_orders SET alerted_at = now() WHERE order_id = $1 AND kind = $2")
                .bind(order)
                .bind(kind)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let _ = self.outbox.publish_now(&events).await;
        Ok(())
    }

    async fn alert(
        &self,
        order: Uuid,
        shop: Option<Uuid>,
        kind: &'static str,
        detail: String,
    ) -> Result<(), sqlx::Error> {
        SETTLED.with_label_values(&[kind, "alerted"]).inc();
        let mut env = Envelope::new(EventPayload::AlertRaised(AlertRaised {
            audience: AlertAudience::Platform,
            kind: "stale_order".into(),
            subject: format!("Order {order} is stuck ({kind})"),
            detail,
        }));
        env.id = fact_id(&["alert", kind, &order.to_string()]);
        env.order_id = Some(order);
        env.shop_id = shop;
        self.emit(vec![env], Some((order, kind))).await
    }

    async fn accepted_without_charge(&self) -> Result<(), sqlx::Error> {
        const KIND: &str = "accepted_without_charge";
        let rows: Vec<AcceptedRow> = sqlx::query_as(
            "SELECT o.id, o.shop_id, o.correlation_id, o.provider, o.currency::text AS currency, o.total_minor,
                    o.customer_name, o.customer_email, o.customer_tax_id, o.customer_phone, o.expires_in_secs, o.summary
             FROM orders o
             WHERE o.status = 'accepted' AND o.created_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.order_id = o.id)
             ORDER BY o.created_at LIMIT $2",
        )
        .bind(secs(self.config.accepted_after))
        .bind(self.config.batch)
        .fetch_all(&self.store.pool)
        .await?;
        for r in rows {
            let (Some(currency), Ok(provider)) = (Currency::parse(r.currency.trim()), Provider::parse(&r.provider))
            else {
                continue;
            };
            if provider.method() == payhub_core::PaymentMethod::Card {
                // A card is charged only while the door holds it: nothing can
                // be published again. Its card_attempts row (or none) tells a
                // person what happened; the card is never charged again.
                let first = self.note(r.id, KIND, "card order without an outcome").await?;
                if first {
                    self.alert(
                        r.id,
                        Some(r.shop_id),
                        KIND,
                        format!(
                            "Card order {} (shop correlationID {}) has no card outcome after {} s: the card call \
                             was interrupted. Check the payment at the provider before anything else; payhub \
                             will not charge the card again.",
                            r.id,
                            r.correlation_id,
                            self.config.accepted_after.as_secs()
                        ),
                    )
                    .await?;
                }
                continue;
            }
            let first = self.note(r.id, KIND, "order.accepted published again").await?;
            let mut env = Envelope::for_order(
                EventPayload::OrderAccepted(OrderAccepted {
                    provider,
                    provider_reference: r.id.to_string(),
                    amount: Money::from_minor(r.total_minor, currency),
                    customer: ChargeCustomer {
                        name: r.customer_name,
                        email: r.customer_email,
                        tax_id: r.customer_tax_id,
                        phone: r.customer_phone,
                    },
                    expires_in_secs: u32::try_from(r.expires_in_secs).unwrap_or(86_400),
                    description: r.summary,
                    method: provider.method(),
                }),
                r.id,
                r.shop_id,
                &r.correlation_id,
            );
            env.id = fact_id(&["order.accepted", &r.id.to_string()]);
            tracing::warn!(order_id = %r.id, "an accepted order has no charge; publishing order.accepted again");
            SETTLED.with_label_values(&[KIND, "republished"]).inc();
            self.emit(vec![env], None).await?;
            if first {
                self.alert(
                    r.id,
                    Some(r.shop_id),
                    KIND,
                    format!(
                        "Order {} (shop correlationID {}) was accepted but has no charge after {} s. \
                         Its order.accepted event was published again.",
                        r.id,
                        r.correlation_id,
                        self.config.accepted_after.as_secs()
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn awaiting_payment(&self) -> Result<(), sqlx::Error> {
        const KIND: &str = "awaiting_past_expiry";
        let rows: Vec<(Uuid, Uuid, String, bool)> = sqlx::query_as(
            "SELECT o.id, o.shop_id, o.provider,
                    COALESCE(c.expires_at < now() - make_interval(secs => $1), false) AS past_expiry
             FROM orders o JOIN charges c ON c.order_id = o.id
             LEFT JOIN stale_orders s ON s.order_id = o.id AND s.kind = 'awaiting_past_expiry'
             WHERE o.status = 'awaiting_payment'
               AND (c.expires_at < now() - make_interval(secs => $1)
                    OR o.updated_at < now() - make_interval(secs => $2))
               AND (s.last_checked IS NULL OR s.last_checked < now() - make_interval(secs => $3))
             ORDER BY s.last_checked NULLS FIRST, o.updated_at LIMIT $4",
        )
        .bind(secs(self.config.expiry_grace))
        .bind(secs(self.config.recheck_after))
        // Each waiting order is asked about once per `recheck_after`, the
        // least recently checked first, so no order is starved.
        .bind(secs(self.config.recheck_after))
        .bind(self.config.batch)
        .fetch_all(&self.store.pool)
        .await?;
        for (order, shop, provider, past_expiry) in rows {
            let answer = self
                .confirm
                .confirm(&ConfirmRequest {
                    order_id: order,
                    claim: ClaimKind::Status,
                    provider_charge_id: None,
                    end_to_end_id: None,
                    pixelpay: None,
                })
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(why) => {
                    SETTLED.with_label_values(&[KIND, "unavailable"]).inc();
                    self.note(order, KIND, &format!("the provider could not be asked: {why}"))
                        .await?;
                    continue;
                }
            };
            match (answer.verdict, answer.report, answer.confirmation) {
                (Verdict::Confirmed, Some(report), Some(confirmation)) => {
                    let (env, fact) = reported_event(order, shop, &provider, report, confirmation);
                    tracing::warn!(order_id = %order, fact, "the sweeper settled an order with the provider's answer");
                    SETTLED.with_label_values(&[KIND, "reported"]).inc();
                    self.emit(vec![env], None).await?;
                    self.resolve(order, KIND).await?;
                }
                (Verdict::Pending, _, _) if !past_expiry => {
                    SETTLED.with_label_values(&[KIND, "pending"]).inc();
                    // Waiting, not yet expired: nothing is wrong. Remember the check.
                    self.note(order, KIND, "still waiting for payment").await?;
                    self.resolve(order, KIND).await?;
                }
                (verdict, _, _) => {
                    let why = answer.reason.unwrap_or_else(|| format!("{verdict:?}"));
                    if self.note(order, KIND, &why).await? {
                        self.alert(
                            order,
                            Some(shop),
                            KIND,
                            format!(
                                "Order {order} is still awaiting payment past its expiry and the provider says: {why}"
                            ),
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn paid_not_notified(&self) -> Result<(), sqlx::Error> {
        const KIND: &str = "paid_not_notified";
        // The paid change's event is stored in the outbox in the same
        // transaction as the history row, so both have the same `now()`.
        let rows: Vec<(Uuid, Uuid, bool, Option<Uuid>)> = sqlx::query_as(
            "SELECT o.id, o.shop_id,
                    EXISTS (SELECT 1 FROM deliveries d WHERE d.order_id = o.id AND d.kind = 'shop_webhook'
                            AND d.created_at >= h.at) AS attempted,
                    (SELECT x.id FROM outbox x WHERE x.routing_key = 'order.status_changed' AND x.created_at = h.at
                       AND position(convert_to(o.id::text, 'UTF8') in x.body) > 0 LIMIT 1) AS event
             FROM orders o
             JOIN shops s ON s.id = o.shop_id AND s.webhook_url IS NOT NULL
             JOIN LATERAL (SELECT at FROM order_history WHERE order_id = o.id AND to_status = 'paid'
                           ORDER BY id DESC LIMIT 1) h ON true
             WHERE o.status = 'paid' AND h.at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.order_id = o.id AND d.kind = 'shop_webhook'
                               AND d.status = 'delivered' AND d.created_at >= h.at)
             ORDER BY h.at LIMIT $2",
        )
        .bind(secs(self.config.notify_after))
        .bind(self.config.batch)
        .fetch_all(&self.store.pool)
        .await?;
        for (order, shop, attempted, event) in rows {
            match (attempted, event) {
                (false, Some(event)) => {
                    let first = self.note(order, KIND, "order.status_changed published again").await?;
                    sqlx::query("UPDATE outbox SET published_at = NULL WHERE id = $1")
                        .bind(event)
                        .execute(&self.store.pool)
                        .await?;
                    SETTLED.with_label_values(&[KIND, "republished"]).inc();
                    tracing::warn!(order_id = %order, "a paid order never reached the shop; publishing its change again");
                    if first {
                        self.alert(
                            order,
                            Some(shop),
                            KIND,
                            format!(
                                "Paid order {order} had not been notified to the shop; its webhook was sent again."
                            ),
                        )
                        .await?;
                    }
                }
                (_, _) => {
                    let why = if attempted {
                        "the shop webhook keeps failing (see the notifier's retry and dead-letter queues)"
                    } else {
                        "the paid change's event could not be found to publish again"
                    };
                    if self.note(order, KIND, why).await? {
                        self.alert(
                            order,
                            Some(shop),
                            KIND,
                            format!("Paid order {order} is not notified: {why}."),
                        )
                        .await?;
                    }
                }
            }
        }
        // Orders notified since are settled.
        sqlx::query(
            "UPDATE stale_orders s SET resolved_at = now()
             WHERE s.kind = 'paid_not_notified' AND s.resolved_at IS NULL
               AND EXISTS (SELECT 1 FROM deliveries d WHERE d.order_id = s.order_id AND d.kind = 'shop_webhook'
                           AND d.status = 'delivered' AND d.updated_at >= s.first_seen)",
        )
        .execute(&self.store.pool)
        .await?;
        sqlx::query(
            "UPDATE stale_orders s SET resolved_at = now()
             FROM orders o
             WHERE s.order_id = o.id AND s.resolved_at IS NULL
               AND ((s.kind = 'accepted_without_charge' AND o.status <> 'accepted')
                 OR (s.kind = 'awaiting_past_expiry' AND o.status <> 'awaiting_payment'))",
        )
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Paid orders not delivered by the date promised at payment (in the
    /// shop's time zone): the shop's admin is told once per order; the
    /// finding is resolved when the order is delivered, returned, cancelled
    /// or refunded.
    async fn late_deliveries(&self) -> Result<(), sqlx::Error> {
        const KIND: &str = "late_delivery";
        let rows: Vec<(Uuid, Uuid, String, String, time::Date)> = sqlx::query_as(
            "SELECT o.id, o.shop_id, o.correlation_id, o.status, o.promised_delivery_on
             FROM orders o JOIN shops s ON s.id = o.shop_id
             WHERE o.promised_delivery_on IS NOT NULL AND o.status IN ('paid', 'fulfilling', 'shipped')
               AND o.promised_delivery_on < (now() AT TIME ZONE 'UTC'
                     + make_interval(hours => COALESCE((s.order_rules->'deliveryTime'->>'utcOffsetHours')::int, -3)))::date
               AND NOT EXISTS (SELECT 1 FROM stale_orders f WHERE f.order_id = o.id AND f.kind = 'late_delivery'
                               AND f.alerted_at IS NOT NULL)
             ORDER BY o.promised_delivery_on, o.id LIMIT $1",
        )
        .bind(self.config.batch)
        .fetch_all(&self.store.pool)
        .await?;
        for (order, shop, correlation_id, status, promised) in rows {
            let why = format!("not delivered by {promised} (status {status})");
            if !self.note(order, KIND, &why).await? {
                continue;
            }
            SETTLED.with_label_values(&[KIND, "alerted"]).inc();
            let mut env = Envelope::for_order(
                EventPayload::AlertRaised(AlertRaised {
                    audience: AlertAudience::Shop,
                    kind: KIND.into(),
                    subject: format!("Pedido {correlation_id} atrasado: entrega prometida até {promised}"),
                    detail: format!(
                        "O pedido {correlation_id} (payhub {order}) devia ser entregue até {promised} e ainda está \
                         {status}. Verifique com a transportadora e avise o comprador."
                    ),
                }),
                order,
                shop,
                &correlation_id,
            );
            env.id = fact_id(&["alert", KIND, &order.to_string()]);
            tracing::warn!(order_id = %order, %promised, "a paid order is late; the shop's admin is told");
            self.emit(vec![env], Some((order, KIND))).await?;
        }
        sqlx::query(
            "UPDATE stale_orders s SET resolved_at = now()
             FROM orders o
             WHERE s.order_id = o.id AND s.resolved_at IS NULL AND s.kind = 'late_delivery'
               AND o.status NOT IN ('paid', 'fulfilling', 'shipped')",
        )
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Issue 12 §4: the buyers of a shop that reports no shipping
    /// (`survey_after_payment_days`) are invited to the survey that many
    /// days after payment, once per order (`survey_due`, recorded with its
    /// `survey.due` in one transaction; notifier invites). An order already
    /// invited (delivered) is left alone.
    async fn surveys_due(&self) -> Result<(), sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Due {
            id: Uuid,
            shop_id: Uuid,
            correlation_id: String,
            customer_name: String,
            customer_email: String,
            currency: String,
            total_minor: i64,
            days: i32,
        }
        let due: Vec<Due> = sqlx::query_as(
            "SELECT o.id, o.shop_id, o.correlation_id, o.customer_name, o.customer_email,
                    o.currency::text AS currency, o.total_minor, s.survey_after_payment_days AS days
             FROM orders o JOIN shops s ON s.id = o.shop_id
             WHERE s.survey_after_payment_days IS NOT NULL
               AND o.status IN ('paid', 'fulfilling', 'shipped')
               AND o.paid_at <= now() - make_interval(days => s.survey_after_payment_days)
               AND NOT EXISTS (SELECT 1 FROM survey_due d WHERE d.order_id = o.id)
               AND NOT EXISTS (SELECT 1 FROM survey_invitations i WHERE i.order_id = o.id)
             ORDER BY o.paid_at LIMIT $1",
        )
        .bind(self.config.batch)
        .fetch_all(&self.store.pool)
        .await?;
        for d in due {
            let Some(currency) = Currency::parse(d.currency.trim()) else {
                continue;
            };
            let mut event = Envelope::for_order(
                EventPayload::SurveyDue(payhub_core::events::SurveyDue {
                    customer_name: d.customer_name,
                    customer_email: d.customer_email,
                    amount: Money::from_minor(d.total_minor, currency),
                    days_after_payment: u16::try_from(d.days).unwrap_or(u16::MAX),
                }),
                d.id,
                d.shop_id,
                &d.correlation_id,
            );
            event.id = fact_id(&["survey.due", &d.id.to_string()]);
            let mut tx = self.store.pool.begin().await?;
            let r = sqlx::query("INSERT INTO survey_due (order_id, shop_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(d.id)
                .bind(d.shop_id)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                continue;
            }
            add_once(&mut tx, std::slice::from_ref(&event)).await?;
            tx.commit().await?;
            let _ = self.outbox.publish_now(std::slice::from_ref(&event)).await;
            SETTLED.with_label_values(&["survey_due", "invited"]).inc();
            tracing::info!(order_id = %d.id, days = d.days, "survey due after payment");
        }
        Ok(())
    }

    async fn refresh_metrics(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, i64, Option<f64>)> = sqlx::query_as(
            "SELECT kind, count(*), EXTRACT(EPOCH FROM now() - min(first_seen))::float8
             FROM stale_orders WHERE resolved_at IS NULL GROUP BY kind",
        )
        .fetch_all(&self.store.pool)
        .await?;
        for kind in KINDS {
            let (n, age) = rows
                .iter()
                .find(|(k, _, _)| k == kind)
                .map(|(_, n, a)| (*n, a.unwrap_or(0.0)))
                .unwrap_or((0, 0.0));
            STALE.with_label_values(&[kind]).set(n);
            OLDEST.with_label_values(&[kind]).set(age as i64);
        }
        Ok(())
    }
}
