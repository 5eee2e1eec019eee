//! The figures an order's status move adds: its row of the daily report
//! (`report_daily`), the ledger line of a payment or a refund
//! (`ledger_lines`, issue 13 §2) and a delivery's timeliness against its
//! promise (`delivery_outcomes`).
//!
//! order-updater writes them in the very transaction that moves the order
//! (issue 14: the reporter no longer takes a queue delivery per status
//! change, and the figures can never lag or drift from the orders). The
//! reporter writes them with the same function for `order.status_changed`
//! events still queued for it from before. Either way an event is counted
//! once: its id is recorded under [`CONSUMER`] in `processed_events` in the
//! same statement, whichever service gets there first, so a reporter of the
//! previous version still bound during a rolling upgrade skips what the new
//! order-updater counted.

use payhub_core::events::EventPayload;
use payhub_core::{Envelope, Money, OrderStatus};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// The consumer name the figures' events are recorded under.
pub const CONSUMER: &str = "reporter";

/// Delivered orders, on time or late against the date promised at payment.
/// No shop label: which shop is in `delivery_outcomes`.
pub static DELIVERY_OUTCOMES: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "payhub_order_deliveries_total",
        "Orders delivered, by timeliness against the date promised at payment (on_time, late).",
        &["timeliness"]
    )
    .expect("metric registers once")
});

/// Counts delivery outcomes that [`record`] stored (after commit).
pub fn count_deliveries(on_time: &[bool]) {
    for t in on_time {
        DELIVERY_OUTCOMES
            .with_label_values(&[if *t { "on_time" } else { "late" }])
            .inc();
    }
}

/// What one status change adds to the report: its day (the event's), shop,
/// provider, status, currency and amount. A refund counts the money it gave
/// back, not the order's total: a `partially_refunded` or `refunded` row adds
/// up refunds that day. Other events count nothing here; an event without a
/// shop cannot be counted (the caller decides what that means).
pub fn report_row(env: &Envelope) -> Option<(Date, Uuid, &'static str, &'static str, &'static str, i64)> {
    let EventPayload::OrderStatusChanged(c) = &env.payload else {
        return None;
    };
    let amount = c.refund.as_ref().map_or(c.amount, |r| r.amount);
    Some((
        env.occurred_at.date(),
        env.shop_id?,
        c.provider.as_str(),
        c.to.as_str(),
        amount.currency().code(),
        amount.minor(),
    ))
}

/// A ledger line an event makes: a payment when an order is paid, a refund
/// when a refund is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LedgerEntry {
    order_id: Uuid,
    kind: &'static str,
    provider: &'static str,
    method: &'static str,
    gross: Money,
    occurred_at: OffsetDateTime,
}

fn ledger_entry(env: &Envelope) -> Option<LedgerEntry> {
    let EventPayload::OrderStatusChanged(c) = &env.payload else {
        return None;
    };
    let order_id = env.order_id?;
    let (kind, gross, at) = match (&c.refund, c.to) {
        (Some(r), _) => (
            "refund",
            Money::from_minor(-r.amount.minor(), r.amount.currency()),
            env.occurred_at,
        ),
        (None, OrderStatus::Paid) => (
            "payment",
            c.amount,
            c.details.as_ref().and_then(|d| d.paid_at).unwrap_or(env.occurred_at),
        ),
        _ => return None,
    };
    Some(LedgerEntry {
        order_id,
        kind,
        provider: c.provider.as_str(),
        method: c.provider.method().as_str(),
        gross,
        occurred_at: at,
    })
}

/// A delivered order with a promise: (order, shop, promised, delivered).
fn delivery(env: &Envelope) -> Option<(Uuid, Uuid, Date, Date)> {
    let EventPayload::OrderStatusChanged(c) = &env.payload else {
        return None;
    };
    let s = c.shipment.as_deref()?;
    match (c.to, s.promised_delivery_on, s.delivered_on) {
        (OrderStatus::Delivered, Some(promised), Some(delivered)) => {
            Some((env.order_id?, env.shop_id?, promised, delivered))
        }
        _ => None,
    }
}

/// The report rows of a batch, column by column (bound as arrays).
#[derive(Default)]
struct ReportColumns {
    id: Vec<Uuid>,
    day: Vec<Date>,
    shop: Vec<Uuid>,
    provider: Vec<&'static str>,
    status: Vec<&'static str>,
    currency: Vec<&'static str>,
    amount: Vec<i64>,
}

/// The ledger lines of a batch, column by column.
#[derive(Default)]
struct LedgerColumns {
    id: Vec<Uuid>,
    source: Vec<Uuid>,
    order: Vec<Uuid>,
    kind: Vec<&'static str>,
    provider: Vec<&'static str>,
    method: Vec<&'static str>,
    currency: Vec<&'static str>,
    gross: Vec<i64>,
    occurred_at: Vec<OffsetDateTime>,
    settlement_date: Vec<Date>,
}

/// The delivery outcomes of a batch, column by column.
#[derive(Default)]
struct DeliveryColumns {
    source: Vec<Uuid>,
    order: Vec<Uuid>,
    shop: Vec<Uuid>,
    promised: Vec<Date>,
    delivered: Vec<Date>,
}

/// Records the figures of `events` not recorded before, in one statement on
/// `conn` (inside the caller's transaction). Returns the timeliness of each
/// delivery outcome stored, for [`count_deliveries`] after commit. Events
/// that add no figure are skipped; an event listed twice counts once.
pub async fn record(conn: &mut sqlx::PgConnection, events: &[&Envelope]) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let mut report = ReportColumns::default();
    let mut ledger = LedgerColumns::default();
    let mut deliveries = DeliveryColumns::default();
    for env in events {
        let Some((day, shop, provider, status, currency, amount)) = report_row(env) else {
            continue;
        };
        if !seen.insert(env.id) {
            continue;
        }
        ids.push(env.id);
        report.id.push(env.id);
        report.day.push(day);
        report.shop.push(shop);
        report.provider.push(provider);
        report.status.push(status);
        report.currency.push(currency);
        report.amount.push(amount);
        if let Some(l) = ledger_entry(env) {
            ledger.id.push(Uuid::now_v7());
            ledger.source.push(env.id);
            ledger.order.push(l.order_id);
            ledger.kind.push(l.kind);
            ledger.provider.push(l.provider);
            ledger.method.push(l.method);
            ledger.currency.push(l.gross.currency().code());
            ledger.gross.push(l.gross.minor());
            ledger.occurred_at.push(l.occurred_at);
            ledger.settlement_date.push(l.occurred_at.date());
        }
        if let Some((order, shop, promised, delivered)) = delivery(env) {
            deliveries.source.push(env.id);
            deliveries.order.push(order);
            deliveries.shop.push(shop);
            deliveries.promised.push(promised);
            deliveries.delivered.push(delivered);
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Report rows are summed per key and written in key order, so that two
    // transactions never wait on each other's rows in a cycle.
    let on_time: Vec<(bool,)> = sqlx::query_as(
        "WITH fresh AS (
            INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[])
            ON CONFLICT DO NOTHING RETURNING event_id
         ), counted AS (
            INSERT INTO report_daily (day, shop_id, provider, status, currency, orders, amount_minor)
            SELECT e.day, e.shop_id, e.provider, e.status, e.currency, count(*), sum(e.amount)::bigint
            FROM unnest($3::uuid[], $4::date[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::bigint[])
                 AS e(id, day, shop_id, provider, status, currency, amount)
            JOIN fresh ON fresh.event_id = e.id
            GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (day, shop_id, provider, status, currency)
            DO UPDATE SET orders = report_daily.orders + EXCLUDED.orders,
                          amount_minor = report_daily.amount_minor + EXCLUDED.amount_minor
         ), ledger AS (
            INSERT INTO ledger_lines (id, shop_id, order_id, correlation_id, kind, source_event_id, provider,
                                      method, currency, gross_minor, fee_minor, net_minor, settlement_date,
                                      occurred_at)
            SELECT l.id, o.shop_id, o.id, o.correlation_id, l.kind, l.source, l.provider,
                   COALESCE((SELECT c.method FROM charges c WHERE c.order_id = o.id), l.method), l.currency,
                   l.gross, f.fee, l.gross - f.fee, l.settlement_date, l.occurred_at
            FROM unnest($10::uuid[], $11::uuid[], $12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[],
                        $17::bigint[], $18::timestamptz[], $19::date[])
                 AS l(id, source, order_id, kind, provider, method, currency, gross, occurred_at, settlement_date)
            JOIN fresh ON fresh.event_id = l.source
            JOIN orders o ON o.id = l.order_id
            CROSS JOIN LATERAL (SELECT CASE WHEN l.kind = 'payment' THEN o.provider_fee_minor ELSE 0 END AS fee) f
            ON CONFLICT (source_event_id) DO NOTHING
         ), delivered AS (
            INSERT INTO delivery_outcomes (order_id, shop_id, promised_on, delivered_on, on_time)
            SELECT d.order_id, d.shop_id, d.promised, d.delivered, d.delivered <= d.promised
            FROM unnest($20::uuid[], $21::uuid[], $22::uuid[], $23::date[], $24::date[])
                 AS d(source, order_id, shop_id, promised, delivered)
            JOIN fresh ON fresh.event_id = d.source
            ON CONFLICT (order_id) DO NOTHING
            RETURNING on_time
         )
         SELECT on_time FROM delivered",
    )
    .bind(CONSUMER)
    .bind(&ids)
    .bind(&report.id)
    .bind(&report.day)
    .bind(&report.shop)
    .bind(&report.provider)
    .bind(&report.status)
    .bind(&report.currency)
    .bind(&report.amount)
    .bind(&ledger.id)
    .bind(&ledger.source)
    .bind(&ledger.order)
    .bind(&ledger.kind)
    .bind(&ledger.provider)
    .bind(&ledger.method)
    .bind(&ledger.currency)
    .bind(&ledger.gross)
    .bind(&ledger.occurred_at)
    .bind(&ledger.settlement_date)
    .bind(&deliveries.source)
    .bind(&deliveries.order)
    .bind(&deliveries.shop)
    .bind(&deliveries.promised)
    .bind(&deliveries.delivered)
    .fetch_all(conn)
    .await?;
    Ok(on_time.into_iter().map(|(t,)| t).collect())
}
