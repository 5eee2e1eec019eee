//! Reconciliation with the providers (issue 13 §1): for a day (UTC), every
//! provider account payhub charged under is asked, through charge-creator
//! (which holds the credentials), for its own listing of the day's charges
//! (OpenPix `GET /api/v1/charge?start&end`), and the listing is compared
//! with payhub's orders:
//!
//! - `paid_at_provider_only`: the provider lists the charge COMPLETED, payhub
//!   has not applied a payment. payhub re-queries it (the confirmation call,
//!   the same proof a webhook needs) and, when confirmed, reports the payment
//!   (`payment.reported`, one event id per fact): resolution `settled`.
//! - `unknown_at_provider`: payhub created a charge the provider does not list.
//! - `not_paid_at_provider`: payhub has the order paid, the provider does not
//!   list the charge COMPLETED.
//! - `amount_mismatch`: the listed value is not what payhub charged.
//! - `duplicate`: the provider lists the same reference more than once.
//!
//! Each run and what it found is stored; a discrepancy a later run no
//! longer finds is `resolved`; an open one is alerted once to the shop's
//! admin and the platform (`alert.raised`). Runs: every
//! `PAYHUB_RECONCILE_INTERVAL_MS` for yesterday and today (one replica at a
//! time), and on demand (`payhubctl reconcile --date`, `POST /internal/v1/reconcile`).
//!
//! PixelPay has no listing and no lookup by order id (providers-2.md §2.3):
//! payhub's own PixelPay orders of the day are the list (each run says so in
//! `sources`), and each payment payhub recorded (the charge's, or the card
//! attempt's when the sale's answer was never settled) is re-queried with
//! PixelPay's `status` through charge-creator, under the account recorded
//! with it (the shop's otherwise), at most
//! `PAYHUB_RECONCILE_PIXELPAY_CONCURRENCY` at a time and
//! `PAYHUB_RECONCILE_PIXELPAY_MAX` a run (the rest is `not_compared` and left
//! for a later run, unpaid orders first). The same kinds are found (but
//! `duplicate`, which a per-payment query cannot see); a payment PixelPay
//! took and payhub did not apply is settled as OpenPix's are, through the
//! confirmation call (PixelPay's `status` with every proof a callback needs).
//! An order whose sale answer carried no `payment_uuid` cannot be asked
//! about: `not_compared`. Pago Seguro documents neither a listing nor a
//! status query: its orders are `not_compared`, with the reason.
//!
//! Backfill: a day is reconciled by the schedule once it has closed; when
//! reporter was down across a day's end, the closed days of the last
//! `PAYHUB_RECONCILE_BACKFILL_DAYS` that have orders and no complete run
//! made after their end are run when it comes back (and on every pass), so
//! a day already run is never run again by it.

use crate::sweeper::{add_once, fact_id, reported_event};
use futures::StreamExt;
use payhub_connectors::internal::{
    ClaimKind, ConfirmClient, ConfirmRequest, ListedCharge, ListingClient, ListingRequest, PixelPayClaim,
    PixelPayStatusAnswer, PixelPayStatusClient, PixelPayStatusRequest, Verdict,
};
use payhub_core::Envelope;
use payhub_core::events::{AlertAudience, AlertRaised, EventPayload, PaymentReport};
use payhub_store::Store;
use payhub_store::outbox::Outbox;
use prometheus::{IntGaugeVec, register_int_gauge_vec};
use serde_json::json;
use std::collections::HashMap;
use std::sync::LazyLock;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

static OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "payhub_reconciliation_discrepancies",
        "Reconciliation discrepancies still open, by provider and kind (all days); set after each run.",
        &["provider", "kind"]
    )
    .expect("metric registers once")
});

pub const KINDS: [&str; 5] = [
    "paid_at_provider_only",
    "unknown_at_provider",
    "not_paid_at_provider",
    "amount_mismatch",
    "duplicate",
];

/// An arbitrary, fixed key: one run at a time.
const LOCK_KEY: i64 = 0x7061_7968_7562_5243;

pub struct Reconciler {
    pub store: Store,
    pub outbox: Outbox,
    pub listing: ListingClient,
    pub confirm: ConfirmClient,
    pub pixelpay: PixelPayStatusClient,
    pub config: ReconcileConfig,
}

/// How hard a run may lean on a provider, and how far back missed days are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// PixelPay `status` re-queries in flight at once
    /// (`PAYHUB_RECONCILE_PIXELPAY_CONCURRENCY`, default 4).
    pub pixelpay_concurrency: usize,
    /// PixelPay `status` re-queries per run (`PAYHUB_RECONCILE_PIXELPAY_MAX`,
    /// default 500); the rest is left for a later run.
    pub pixelpay_max_per_run: usize,
    /// How many closed days back a missed day is still run
    /// (`PAYHUB_RECONCILE_BACKFILL_DAYS`, default 7; 0 turns backfill off).
    pub backfill_days: u16,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            pixelpay_concurrency: 4,
            pixelpay_max_per_run: 500,
            backfill_days: 7,
        }
    }
}

/// One of payhub's PixelPay orders of the day.
#[derive(sqlx::FromRow, Clone)]
struct PixelPayOrder {
    order_id: Uuid,
    shop_id: Uuid,
    status: String,
    amount_minor: i64,
    /// The charge's payment, else the card attempt's.
    payment_uuid: Option<String>,
    /// payhub stored a charge (money payhub holds as taken or authorised).
    charged: bool,
}

/// What the PixelPay part of a run saw.
#[derive(Default)]
struct PixelPayPart {
    checked: usize,
    found: Vec<Found>,
    problems: Vec<String>,
    not_compared: Vec<serde_json::Value>,
    /// Orders not asked about this run: their open findings stay open.
    unasked: Vec<Uuid>,
}

#[derive(sqlx::FromRow)]
struct Ours {
    order_id: Uuid,
    shop_id: Uuid,
    provider: String,
    status: String,
    amount_minor: i64,
    account: String,
}

/// A run as it is stored.
struct Run<'a> {
    id: Uuid,
    day: Date,
    trigger: &'a str,
    status: &'a str,
    checked: usize,
    sources: &'a serde_json::Value,
    unasked: &'a [Uuid],
    started: OffsetDateTime,
}

/// One finding before it is stored.
struct Found {
    provider: &'static str,
    shop_id: Option<Uuid>,
    order_id: Option<Uuid>,
    reference: String,
    account: String,
    kind: &'static str,
    detail: String,
    settled: Option<String>,
}

fn paid_like(status: &str) -> bool {
    matches!(status, "paid" | "partially_refunded" | "refunded")
}

impl Reconciler {
    /// Reconciles `day`; the run's summary. `Err` only when the database
    /// fails; a provider that cannot be asked makes the run `incomplete`.
    pub async fn run(&self, day: Date, trigger: &str) -> Result<serde_json::Value, sqlx::Error> {
        let mut lock = self.store.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await?;
        let result = self.run_locked(day, trigger).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn run_locked(&self, day: Date, trigger: &str) -> Result<serde_json::Value, sqlx::Error> {
        let started = OffsetDateTime::now_utc();
        let run_id = Uuid::now_v7();
        let start = day.midnight().assume_utc();
        let end = start + time::Duration::days(1);
        let ours: Vec<Ours> = sqlx::query_as(
            "SELECT o.id AS order_id, o.shop_id, o.provider, o.status, c.amount_minor, c.provider_account AS account
             FROM charges c JOIN orders o ON o.id = c.order_id
             WHERE c.provider = 'openpix' AND c.method = 'pix' AND c.created_at >= $1 AND c.created_at < $2
             ORDER BY o.id",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.store.pool)
        .await?;
        let mut accounts: Vec<String> = ours.iter().map(|o| o.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for account in &accounts {
            let listed = match self
                .listing
                .list(&ListingRequest {
                    account: account.clone(),
                    provider: "openpix".into(),
                    // A little before and after: a charge created at the
                    // day's edge may carry the provider's clock.
                    start: start - time::Duration::minutes(10),
                    end: end + time::Duration::minutes(10),
                })
                .await
            {
                Ok(a) => a.charges,
                Err(e) => {
                    problems.push(format!("account {account}: {e}"));
                    continue;
                }
            };
            let mine: Vec<&Ours> = ours.iter().filter(|o| &o.account == account).collect();
            found.extend(self.compare(account, &mine, &listed).await);
        }
        let pp = self.pixelpay_part(start, end).await?;
        found.extend(pp.found);
        problems.extend(pp.problems);
        // What this run does not compare, said in the run (not pretended):
        // Pago Seguro documents neither a listing nor a status query.
        let skipped: Vec<(String, i64)> = sqlx::query_as(
            "SELECT provider, count(*) FROM orders
             WHERE provider NOT IN ('openpix', 'pixelpay') AND created_at >= $1 AND created_at < $2
             GROUP BY provider ORDER BY provider",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.store.pool)
        .await?;
        let mut not_compared: Vec<serde_json::Value> = skipped
            .iter()
            .map(|(provider, n)| {
                json!({
                    "provider": provider,
                    "orders": n,
                    "reason": match provider.as_str() {
                        "pagoseguro" => "not reconcilable: Pago Seguro documents no listing or status query (providers-2.md §4)",
                        _ => "not reconcilable: payhub knows no way to ask this provider",
                    },
                })
            })
            .collect();
        not_compared.extend(pp.not_compared);
        let sources = json!([
            {"provider": "openpix", "accounts": accounts.len(), "checked": ours.len(),
             "source": "the provider's listing of each account's charges (GET /api/v1/charge)"},
            {"provider": "pixelpay", "checked": pp.checked,
             "source": "payhub's own PixelPay orders: PixelPay has no listing, so each payment payhub recorded is re-queried with status by its payment_uuid"},
        ]);
        let checked = ours.len() + pp.checked;
        let status = if !problems.is_empty() {
            "incomplete"
        } else if found.iter().any(|f| f.settled.is_none()) {
            "discrepancies"
        } else {
            "clean"
        };
        let open = self
            .store_run(
                Run {
                    id: run_id,
                    day,
                    trigger,
                    status,
                    checked,
                    sources: &sources,
                    unasked: &pp.unasked,
                    started,
                },
                &found,
                &problems,
                &not_compared,
            )
            .await?;
        self.refresh_metrics().await?;
        Ok(json!({
            "runId": run_id,
            "date": day.to_string(),
            "status": status,
            "checked": checked,
            "discrepancies": found.iter().map(|f| json!({
                "provider": f.provider,
                "kind": f.kind,
                "reference": f.reference,
                "orderId": f.order_id,
                "detail": f.detail,
                "resolution": if f.settled.is_some() { "settled" } else { "open" },
            })).collect::<Vec<_>>(),
            "open": open,
            "problems": problems,
            "notCompared": not_compared,
            "sources": sources,
        }))
    }

    async fn compare(&self, account: &str, ours: &[&Ours], listed: &[ListedCharge]) -> Vec<Found> {
        let mut by_ref: HashMap<&str, Vec<&ListedCharge>> = HashMap::new();
        for l in listed {
            if let Some(r) = l.reference.as_deref() {
                by_ref.entry(r).or_default().push(l);
            }
        }
        let mut found = Vec::new();
        for o in ours {
            let reference = o.order_id.to_string();
            let f = |kind: &'static str, detail: String| Found {
                provider: "openpix",
                shop_id: Some(o.shop_id),
                order_id: Some(o.order_id),
                reference: reference.clone(),
                account: account.to_string(),
                kind,
                detail,
                settled: None,
            };
            let Some(entries) = by_ref.get(reference.as_str()) else {
                found.push(f(
                    "unknown_at_provider",
                    format!(
                        "payhub created a charge (order {}, {}) the provider does not list",
                        o.order_id, o.status
                    ),
                ));
                continue;
            };
            if entries.len() > 1 {
                found.push(f(
                    "duplicate",
                    format!("the provider lists {} charges for order {}", entries.len(), o.order_id),
                ));
            }
            let l = entries[0];
            if l.value_minor != o.amount_minor {
                found.push(f(
                    "amount_mismatch",
                    format!(
                        "payhub charged {} centavos, the provider lists {}",
                        o.amount_minor, l.value_minor
                    ),
                ));
            }
            let completed = l.status == "COMPLETED";
            if completed && !paid_like(&o.status) {
                let mut d = f(
                    "paid_at_provider_only",
                    format!(
                        "the provider lists the charge COMPLETED, payhub has the order {}",
                        o.status
                    ),
                );
                d.settled = self.settle(o.order_id, o.shop_id, &o.provider, None).await;
                found.push(d);
            } else if !completed && paid_like(&o.status) {
                found.push(f(
                    "not_paid_at_provider",
                    format!(
                        "payhub has the order {}, the provider lists the charge {}",
                        o.status, l.status
                    ),
                ));
            }
        }
        found
    }

    /// Re-queries a payment payhub missed and reports it when the provider
    /// confirms it (the confirmation call: OpenPix's charge, or PixelPay's
    /// `status` of `pixelpay`'s payment with every proof a callback needs);
    /// the resolution's detail, or `None` when it stays open. One event id
    /// per order and fact: found again, it is not reported twice.
    async fn settle(
        &self,
        order_id: Uuid,
        shop_id: Uuid,
        provider: &str,
        pixelpay: Option<PixelPayClaim>,
    ) -> Option<String> {
        let answer = self
            .confirm
            .confirm(&ConfirmRequest {
                order_id,
                claim: if pixelpay.is_some() {
                    ClaimKind::Paid
                } else {
                    ClaimKind::Status
                },
                provider_charge_id: None,
                end_to_end_id: None,
                pixelpay,
            })
            .await
            .ok()?;
        match (answer.verdict, answer.report, answer.confirmation) {
            (Verdict::Confirmed, Some(report @ PaymentReport::Completed { .. }), Some(confirmation)) => {
                let (env, fact) = reported_event(order_id, shop_id, provider, report, confirmation);
                let mut tx = self.store.pool.begin().await.ok()?;
                add_once(&mut tx, std::slice::from_ref(&env)).await.ok()?;
                tx.commit().await.ok()?;
                let _ = self.outbox.publish_now(std::slice::from_ref(&env)).await;
                tracing::warn!(%order_id, fact, provider, "reconciliation settled a payment payhub had missed");
                Some(format!("re-queried and confirmed by the provider; reported as {fact}"))
            }
            _ => None,
        }
    }

    /// PixelPay: payhub's own orders of `[start, end)` are the list; each
    /// recorded payment is asked about with `status`, a few at a time, at
    /// most the run's cap (unpaid orders first: a missed payment matters most).
    async fn pixelpay_part(&self, start: OffsetDateTime, end: OffsetDateTime) -> Result<PixelPayPart, sqlx::Error> {
        let orders: Vec<PixelPayOrder> = sqlx::query_as(
            "SELECT o.id AS order_id, o.shop_id, o.status, COALESCE(c.amount_minor, o.total_minor) AS amount_minor,
                    COALESCE(c.provider_charge_id, a.payment_uuid) AS payment_uuid, (c.order_id IS NOT NULL) AS charged
             FROM orders o LEFT JOIN charges c ON c.order_id = o.id LEFT JOIN card_attempts a ON a.order_id = o.id
             WHERE o.provider = 'pixelpay' AND o.created_at >= $1 AND o.created_at < $2
               AND (c.order_id IS NOT NULL OR a.order_id IS NOT NULL)
             ORDER BY o.status IN ('paid', 'partially_refunded', 'refunded'), o.id",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.store.pool)
        .await?;
        let mut part = PixelPayPart::default();
        let (askable, blind): (Vec<PixelPayOrder>, Vec<PixelPayOrder>) =
            orders.into_iter().partition(|o| o.payment_uuid.is_some());
        if !blind.is_empty() {
            part.unasked.extend(blind.iter().map(|o| o.order_id));
            part.not_compared.push(json!({
                "provider": "pixelpay",
                "orders": blind.len(),
                "reason": "PixelPay looks a payment up only by its payment_uuid, and the sale's answer carried none (lost): check these orders in PixelPay's dashboard",
            }));
        }
        let cap = self.config.pixelpay_max_per_run;
        let (asked, over): (Vec<PixelPayOrder>, Vec<PixelPayOrder>) = if askable.len() > cap {
            let mut a = askable;
            let over = a.split_off(cap);
            (a, over)
        } else {
            (askable, Vec::new())
        };
        if !over.is_empty() {
            part.unasked.extend(over.iter().map(|o| o.order_id));
            part.not_compared.push(json!({
                "provider": "pixelpay",
                "orders": over.len(),
                "reason": format!("over this run's cap of {cap} status re-queries (PAYHUB_RECONCILE_PIXELPAY_MAX); a later run compares them"),
            }));
        }
        let answers: Vec<(PixelPayOrder, Result<PixelPayStatusAnswer, String>)> = futures::stream::iter(asked)
            .map(|o| async move {
                let answer = self
                    .pixelpay
                    .status(&PixelPayStatusRequest {
                        order_id: o.order_id,
                        payment_uuid: o.payment_uuid.clone().unwrap_or_default(),
                    })
                    .await;
                (o, answer)
            })
            .buffer_unordered(self.config.pixelpay_concurrency.max(1))
            .collect()
            .await;
        for (o, answer) in answers {
            match answer {
                Ok(a) => {
                    part.checked += 1;
                    part.found.extend(self.compare_pixelpay(&o, &a).await);
                }
                Err(e) => {
                    part.unasked.push(o.order_id);
                    part.problems.push(format!("pixelpay order {}: {e}", o.order_id));
                }
            }
        }
        Ok(part)
    }

    async fn compare_pixelpay(&self, o: &PixelPayOrder, a: &PixelPayStatusAnswer) -> Vec<Found> {
        let uuid = o.payment_uuid.clone().unwrap_or_default();
        let f = |kind: &'static str, detail: String| Found {
            provider: "pixelpay",
            shop_id: Some(o.shop_id),
            order_id: Some(o.order_id),
            reference: o.order_id.to_string(),
            account: a.account.clone(),
            kind,
            detail,
            settled: None,
        };
        let mut found = Vec::new();
        if !a.known {
            if o.charged || paid_like(&o.status) {
                found.push(f(
                    "unknown_at_provider",
                    format!(
                        "payhub recorded PixelPay payment {uuid} (order {}, {}); PixelPay knows no such payment under account {}",
                        o.order_id, o.status, a.account
                    ),
                ));
            }
            return found;
        }
        if a.approved
            && let Some(amount) = a.amount_minor
            && amount != o.amount_minor
        {
            found.push(f(
                "amount_mismatch",
                format!(
                    "payhub charged {} (minor units), PixelPay approved {amount} for payment {uuid}",
                    o.amount_minor
                ),
            ));
        }
        if a.paid && !paid_like(&o.status) {
            let mut d = f(
                "paid_at_provider_only",
                format!(
                    "PixelPay says payment {uuid} is approved ({}), payhub has the order {}",
                    a.transaction_type.as_deref().unwrap_or("sale"),
                    o.status
                ),
            );
            d.settled = self
                .settle(
                    o.order_id,
                    o.shop_id,
                    "pixelpay",
                    Some(PixelPayClaim {
                        payment_uuid: uuid.clone(),
                        reference: None,
                    }),
                )
                .await;
            found.push(d);
        } else if !a.paid && paid_like(&o.status) && !(a.voided && o.status != "paid") {
            // A refunded order's payment voided at PixelPay is the refund.
            found.push(f(
                "not_paid_at_provider",
                format!(
                    "payhub has the order {}, PixelPay says payment {uuid} is {}",
                    o.status,
                    if a.voided {
                        "voided"
                    } else if a.authorised_only {
                        "only authorised"
                    } else {
                        "not approved"
                    }
                ),
            ));
        }
        found
    }

    async fn store_run(
        &self,
        run: Run<'_>,
        found: &[Found],
        problems: &[String],
        not_compared: &[serde_json::Value],
    ) -> Result<i64, sqlx::Error> {
        let Run {
            id: run_id,
            day,
            trigger,
            status,
            checked,
            sources,
            unasked,
            started,
        } = run;
        let mut tx = self.store.pool.begin().await?;
        sqlx::query(
            "INSERT INTO reconciliation_runs (id, day, trigger, status, checked, discrepancies, detail, started_at,
                                              not_compared, sources)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(run_id)
        .bind(day)
        .bind(trigger)
        .bind(status)
        .bind(checked as i32)
        .bind(found.len() as i32)
        .bind((!problems.is_empty()).then(|| problems.join("; ")))
        .bind(started)
        .bind(serde_json::Value::Array(not_compared.to_vec()))
        .bind(sources)
        .execute(&mut *tx)
        .await?;
        let mut alerts = Vec::new();
        for f in found {
            let resolution = if f.settled.is_some() { "settled" } else { "open" };
            let (id, alerted): (Uuid, Option<OffsetDateTime>) = sqlx::query_as(
                "INSERT INTO reconciliation_discrepancies (id, day, shop_id, order_id, reference, provider, account, kind,
                     detail, resolution, resolution_detail, first_run, last_run, resolved_at)
                 VALUES ($1, $2, $3, $4, $5, $12, $6, $7, $8, $9, $10, $11, $11,
                         CASE WHEN $9 <> 'open' THEN now() END)
                 ON CONFLICT (day, reference, kind) DO UPDATE
                    SET last_run = EXCLUDED.last_run, detail = EXCLUDED.detail,
                        resolution = CASE WHEN reconciliation_discrepancies.resolution = 'settled' THEN 'settled'
                                          ELSE EXCLUDED.resolution END,
                        resolution_detail = COALESCE(EXCLUDED.resolution_detail, reconciliation_discrepancies.resolution_detail),
                        resolved_at = CASE WHEN EXCLUDED.resolution = 'open'
                                                AND reconciliation_discrepancies.resolution <> 'settled' THEN NULL
                                           ELSE COALESCE(reconciliation_discrepancies.resolved_at, now()) END
                 RETURNING id, alerted_at",
            )
            .bind(Uuid::now_v7())
            .bind(day)
            .bind(f.shop_id)
            .bind(f.order_id)
            .bind(&f.reference)
            .bind(&f.account)
            .bind(f.kind)
            .bind(&f.detail)
            .bind(resolution)
            .bind(f.settled.as_deref())
            .bind(run_id)
            .bind(f.provider)
            .fetch_one(&mut *tx)
            .await?;
            if f.settled.is_none() && alerted.is_none() {
                for audience in [AlertAudience::Platform, AlertAudience::Shop] {
                    let mut env = Envelope::new(EventPayload::AlertRaised(AlertRaised {
                        audience,
                        kind: "reconciliation_discrepancy".into(),
                        subject: format!("Reconciliation {day}: {} ({})", f.kind, f.reference),
                        detail: format!(
                            "Reconciling {day} with the provider found {}: {}. It stays open until a run no longer finds it.",
                            f.kind, f.detail
                        ),
                    }));
                    let who = if audience == AlertAudience::Platform {
                        "platform"
                    } else {
                        "shop"
                    };
                    env.id = fact_id(&["reconciliation", &id.to_string(), who]);
                    env.order_id = f.order_id;
                    env.shop_id = f.shop_id;
                    alerts.push(env);
                }
                sqlx::query("UPDATE reconciliation_discrepancies SET alerted_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // What this run (complete) no longer finds is resolved; an order it
        // did not ask about (over the cap, no payment to ask by) keeps its own.
        if problems.is_empty() {
            sqlx::query(
                "UPDATE reconciliation_discrepancies
                 SET resolution = 'resolved', resolved_at = now(),
                     resolution_detail = 'no longer found by run ' || $2::text
                 WHERE day = $1 AND resolution = 'open' AND last_run <> $2
                   AND (order_id IS NULL OR NOT (order_id = ANY($3)))",
            )
            .bind(day)
            .bind(run_id)
            .bind(unasked)
            .execute(&mut *tx)
            .await?;
        }
        add_once(&mut tx, &alerts).await?;
        let (open,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM reconciliation_discrepancies WHERE day = $1 AND resolution = 'open'")
                .bind(day)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        let _ = self.outbox.publish_now(&alerts).await;
        Ok(open)
    }

    async fn refresh_metrics(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT provider, kind, count(*) FROM reconciliation_discrepancies WHERE resolution = 'open'
             GROUP BY provider, kind",
        )
        .fetch_all(&self.store.pool)
        .await?;
        for p in ["openpix", "pixelpay"] {
            for k in KINDS {
                OPEN.with_label_values(&[p, k]).set(
                    rows.iter()
                        .find(|(rp, rk, _)| rp == p && rk == k)
                        .map_or(0, |(_, _, n)| *n),
                );
            }
        }
        Ok(())
    }

    /// The closed days (UTC) of the last `backfill_days` before `today`
    /// that have orders and no run that saw them whole: none started after
    /// the day ended, or only incomplete ones. Oldest first.
    pub async fn missed_days(&self, today: Date) -> Result<Vec<Date>, sqlx::Error> {
        let mut days = Vec::new();
        for back in (1..=i64::from(self.config.backfill_days)).rev() {
            let day = today - time::Duration::days(back);
            let start = day.midnight().assume_utc();
            let end = start + time::Duration::days(1);
            let (orders, run): (bool, bool) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM orders WHERE created_at >= $1 AND created_at < $2),
                        EXISTS (SELECT 1 FROM reconciliation_runs
                                WHERE day = $3 AND status <> 'incomplete' AND started_at >= $2)",
            )
            .bind(start)
            .bind(end)
            .bind(day)
            .fetch_one(&self.store.pool)
            .await?;
            if orders && !run {
                days.push(day);
            }
        }
        Ok(days)
    }

    /// Runs the days [`Reconciler::missed_days`] finds (reporter was down
    /// across their end); the days run. A day already run is not run again.
    pub async fn backfill(&self, today: Date) -> Result<Vec<Date>, sqlx::Error> {
        let days = self.missed_days(today).await?;
        for day in &days {
            tracing::info!(%day, "reconciliation: running a day missed while reporter was down");
            self.run(*day, "backfill").await?;
        }
        Ok(days)
    }

    /// At start, the missed days; then every `interval`: yesterday, today
    /// and any day still missed.
    pub async fn run_periodically(
        self: std::sync::Arc<Self>,
        interval: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.backfill(OffsetDateTime::now_utc().date()).await {
                tracing::warn!(error = %e, "reconciliation backfill failed; trying again next time");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let today = OffsetDateTime::now_utc().date();
            for day in [today.previous_day().unwrap_or(today), today] {
                if let Err(e) = self.run(day, "schedule").await {
                    tracing::warn!(error = %e, %day, "reconciliation failed; trying again next time");
                }
            }
        }
    }
}

/// `POST /internal/v1/reconcile {"date": "YYYY-MM-DD"}` (payhubctl reconcile
/// --date): runs the day's reconciliation now and answers its summary.
pub async fn reconcile_route(
    axum::extract::State(st): axum::extract::State<std::sync::Arc<ReconcileState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&st.token)) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "internal token required"})),
        )
            .into_response();
    }
    let day = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("date").and_then(|d| d.as_str()).map(str::to_string))
        .and_then(|d| Date::parse(&d, time::macros::format_description!("[year]-[month]-[day]")).ok());
    let Some(day) = day else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": "date is required, as YYYY-MM-DD"})),
        )
            .into_response();
    };
    match st.reconciler.run(day, "on_demand").await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reconciliation failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "the database is unavailable"})),
            )
                .into_response()
        }
    }
}

pub struct ReconcileState {
    pub reconciler: std::sync::Arc<Reconciler>,
    pub token: secrecy::SecretString,
}

/// Where payhubctl asks for a run.
pub const RECONCILE_PATH: &str = "/internal/v1/reconcile";

/// The shop-facing reconciliation API (issue 13 §1):
///
/// - `GET /v1/reconciliation/runs?from=&to=`: the runs of the days (UTC)
///   from `from` to `to` (both optional), newest first, each with how many
///   of the calling shop's discrepancies of that day are open. Runs cover
///   every shop; only the shop's own findings are counted.
/// - `GET /v1/reconciliation/discrepancies?from=&to=&resolution=`: the
///   shop's discrepancies of those days (`open`, `settled`, `resolved`, or all).
pub fn shop_router(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/v1/reconciliation/runs", axum::routing::get(runs_route))
        .route(
            "/v1/reconciliation/discrepancies",
            axum::routing::get(discrepancies_route),
        )
        .with_state(store)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn runs_route(
    axum::extract::State(store): axum::extract::State<Store>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<crate::DeliveriesQuery>,
) -> Result<axum::Json<serde_json::Value>, payhub_service::problem::ApiError> {
    let shop = payhub_service::problem::authenticate(&store, &headers).await?;
    let (from, to) = q.period()?;
    let rows: Vec<(Uuid, Date, String, String, OffsetDateTime, OffsetDateTime, i64)> = sqlx::query_as(
        "SELECT r.id, r.day, r.trigger, r.status, r.started_at, r.finished_at,
                (SELECT count(*) FROM reconciliation_discrepancies d
                 WHERE d.day = r.day AND d.shop_id = $1 AND d.resolution = 'open')
         FROM reconciliation_runs r
         WHERE ($2::date IS NULL OR r.day >= $2) AND ($3::date IS NULL OR r.day <= $3)
         ORDER BY r.finished_at DESC LIMIT 200",
    )
    .bind(shop.id)
    .bind(from)
    .bind(to)
    .fetch_all(&store.pool)
    .await?;
    Ok(axum::Json(json!({
        "runs": rows.iter().map(|(id, day, trigger, status, started, finished, open)| json!({
            "runId": id,
            "date": day.to_string(),
            "trigger": trigger,
            "status": status,
            "startedAt": rfc3339(*started),
            "finishedAt": rfc3339(*finished),
            "openForShop": open,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, serde::Deserialize)]
struct DiscrepancyQuery {
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
}

async fn discrepancies_route(
    axum::extract::State(store): axum::extract::State<Store>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<DiscrepancyQuery>,
) -> Result<axum::Json<serde_json::Value>, payhub_service::problem::ApiError> {
    let shop = payhub_service::problem::authenticate(&store, &headers).await?;
    let (from, to) = crate::DeliveriesQuery { from: q.from, to: q.to }.period()?;
    if let Some(r) = q.resolution.as_deref()
        && !matches!(r, "open" | "settled" | "resolved")
    {
        let mut errs = payhub_core::ValidationErrors::default();
        errs.push("resolution", "unsupported", "must be open, settled or resolved");
        return Err(payhub_service::problem::ApiError::Validation(errs));
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        Date,
        Option<Uuid>,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        OffsetDateTime,
        Option<OffsetDateTime>,
    )> = sqlx::query_as(
        "SELECT d.id, d.day, d.order_id, COALESCE(o.correlation_id, ''), d.provider, d.kind, d.detail, d.resolution,
                    d.resolution_detail, d.found_at, d.resolved_at
             FROM reconciliation_discrepancies d LEFT JOIN orders o ON o.id = d.order_id
             WHERE d.shop_id = $1 AND ($2::date IS NULL OR d.day >= $2) AND ($3::date IS NULL OR d.day <= $3)
               AND ($4::text IS NULL OR d.resolution = $4)
             ORDER BY d.day DESC, d.found_at DESC LIMIT 500",
    )
    .bind(shop.id)
    .bind(from)
    .bind(to)
    .bind(q.resolution.as_deref())
    .fetch_all(&store.pool)
    .await?;
    Ok(axum::Json(json!({
        "discrepancies": rows.iter().map(|(id, day, order, cid, provider, kind, detail, resolution, how, found, resolved)| json!({
            "id": id,
            "date": day.to_string(),
            "orderId": order,
            "correlationID": cid,
            "provider": provider,
            "kind": kind,
            "detail": detail,
            "resolution": resolution,
            "resolutionDetail": how,
            "foundAt": rfc3339(*found),
            "resolvedAt": resolved.map(rfc3339),
        })).collect::<Vec<_>>(),
    })))
}
