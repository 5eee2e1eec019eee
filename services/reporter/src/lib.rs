//! reporter: daily figures per shop, provider and status, kept from the
//! events (each applied once: the processed-event record and the counter
//! update commit together), served as JSON or CSV.
//!
//! A row counts the orders that *entered* a status that day and their
//! amount: `accepted` counts new orders (read from the orders table by the
//! day they were created, so it needs no event), `paid` money received, and so on;
//! `partially_refunded` and `refunded` count refunds and the money they
//! gave back, each refund once, under the status it moved its order to.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::events::EventPayload;
use payhub_core::{Currency, Money, ValidationErrors};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::problem::ApiError;
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::Store;
use payhub_telemetry::{ConfigError, Env};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use time::Date;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod management;
pub mod reconcile;
pub mod settlement;
pub mod sweeper;

pub const SERVICE: &str = "reporter";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub sweep: sweeper::SweepConfig,
    /// charge-creator's internal listener, which re-checks with providers.
    pub charge_creator_url: String,
    pub internal_token: secrecy::SecretString,
    /// How often yesterday and today are reconciled with the providers
    /// (`PAYHUB_RECONCILE_INTERVAL_MS`).
    pub reconcile_interval: std::time::Duration,
    /// How often reporter looks for management reports that are due
    /// (`PAYHUB_REPORT_INTERVAL_MS`, default 5 minutes).
    pub report_interval: std::time::Duration,
    /// How long after a day (or month) closes, in the shop's time zone, its
    /// report is made, so that late events are in (`PAYHUB_REPORT_DELAY_MS`,
    /// default 2 hours).
    pub report_delay: std::time::Duration,
    /// Reconciliation's bounds on provider calls and its backfill.
    pub reconcile: reconcile::ReconcileConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let d = sweeper::SweepConfig::default();
        let sweep = sweeper::SweepConfig {
            interval: env.millis("PAYHUB_SWEEP_INTERVAL_MS", d.interval)?,
            accepted_after: env.millis("PAYHUB_SWEEP_ACCEPTED_AFTER_MS", d.accepted_after)?,
            expiry_grace: env.millis("PAYHUB_SWEEP_EXPIRY_GRACE_MS", d.expiry_grace)?,
            recheck_after: env.millis("PAYHUB_SWEEP_RECHECK_AFTER_MS", d.recheck_after)?,
            notify_after: env.millis("PAYHUB_SWEEP_NOTIFY_AFTER_MS", d.notify_after)?,
            batch: d.batch,
        };
        if sweep.interval.is_zero() {
            return Err(Env::bad("PAYHUB_SWEEP_INTERVAL_MS", "must be above 0"));
        }
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:8082")?,
            sweep,
            charge_creator_url: env.url("PAYHUB_CHARGE_CREATOR_URL", "http://127.0.0.1:9101")?,
            internal_token: payhub_service::internal::token(env)?.into(),
            reconcile_interval: {
                let d = env.millis("PAYHUB_RECONCILE_INTERVAL_MS", std::time::Duration::from_secs(3600))?;
                if d.is_zero() {
                    return Err(Env::bad("PAYHUB_RECONCILE_INTERVAL_MS", "must be above 0"));
                }
                d
            },
            report_interval: {
                let d = env.millis("PAYHUB_REPORT_INTERVAL_MS", std::time::Duration::from_secs(300))?;
                if d.is_zero() {
                    return Err(Env::bad("PAYHUB_REPORT_INTERVAL_MS", "must be above 0"));
                }
                d
            },
            report_delay: env.millis("PAYHUB_REPORT_DELAY_MS", std::time::Duration::from_secs(7200))?,
            reconcile: {
                let d = reconcile::ReconcileConfig::default();
                let c = reconcile::ReconcileConfig {
                    pixelpay_concurrency: env.parse("PAYHUB_RECONCILE_PIXELPAY_CONCURRENCY", d.pixelpay_concurrency)?,
                    pixelpay_max_per_run: env.parse("PAYHUB_RECONCILE_PIXELPAY_MAX", d.pixelpay_max_per_run)?,
                    backfill_days: env.parse("PAYHUB_RECONCILE_BACKFILL_DAYS", d.backfill_days)?,
                };
                if c.pixelpay_concurrency == 0 || c.pixelpay_concurrency > 64 {
                    return Err(Env::bad("PAYHUB_RECONCILE_PIXELPAY_CONCURRENCY", "must be 1 to 64"));
                }
                if c.pixelpay_max_per_run == 0 {
                    return Err(Env::bad("PAYHUB_RECONCILE_PIXELPAY_MAX", "must be above 0"));
                }
                if c.backfill_days > 62 {
                    return Err(Env::bad("PAYHUB_RECONCILE_BACKFILL_DAYS", "must be 0 to 62"));
                }
                c
            },
        })
    }
}

/// Drains `reporter.events`: the `order.status_changed` events an earlier
/// version routed here. order-updater now records each move's figures in
/// the move's own transaction ([`payhub_store::figures`]), so nothing new
/// arrives; what is still queued is counted with the same function, once.
pub struct ReportHandler {
    pub store: Store,
}

/// Most events counted in one transaction.
pub const MAX_BATCH: usize = 256;

/// How long a batch waits for more events after its first.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(200);

impl Handler for ReportHandler {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        payhub_queue::handle_as_batch(self, msg).await
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// The report is read by people, not by the order's next step: a
    /// moment's wait lets one commit count many events.
    fn batch_linger(&self) -> std::time::Duration {
        LINGER
    }

    /// Counts a batch in one transaction; a status change without a shop
    /// cannot be counted and is refused for good.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Result<(), Failure>> = vec![Ok(()); msgs.len()];
        let mut counted = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let env = &m.envelope;
            match (&env.payload, env.shop_id) {
                (EventPayload::OrderStatusChanged(_), None) => {
                    results[i] = Err(Failure::Permanent(format!("{} without a shop", env.kind())));
                }
                (EventPayload::OrderStatusChanged(_), Some(_)) => counted.push((i, env)),
                // Anything else an earlier version routed here counts nothing.
                _ => {}
            }
        }
        if counted.is_empty() {
            return results;
        }
        let events: Vec<&payhub_core::Envelope> = counted.iter().map(|(_, e)| *e).collect();
        let recorded = async {
            let mut tx = self.store.begin().await?;
            let on_time = payhub_store::figures::record(&mut tx, &events).await?;
            tx.commit().await?;
            Ok::<_, payhub_store::StoreError>(on_time)
        }
        .await;
        match recorded {
            Ok(on_time) => payhub_store::figures::count_deliveries(&on_time),
            Err(e) => {
                let f = db(e);
                for (i, _) in &counted {
                    results[*i] = Err(f.clone());
                }
            }
        }
        results
    }
}

#[derive(Clone)]
struct AppState {
    store: Store,
}

#[derive(Debug, Deserialize)]
struct DailyQuery {
    date: Option<String>,
    format: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    provider: String,
    status: String,
    currency: String,
    orders: i64,
    amount_minor: i64,
}

fn major(minor: i64, currency: &str) -> String {
    Currency::parse(currency.trim())
        .map(|c| Money::from_minor(minor, c).to_major_string())
        .unwrap_or_else(|| minor.to_string())
}

async fn daily(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DailyQuery>,
) -> Result<Response, ApiError> {
    let shop = payhub_service::problem::authenticate(&st.store, &headers).await?;
    let mut errs = ValidationErrors::default();
    let date = match q.date.as_deref() {
        None => {
            errs.push("date", "required", "is required, as YYYY-MM-DD");
            None
        }
        Some(d) => Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| errs.push("date", "format", "must be a date as YYYY-MM-DD"))
            .ok(),
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
        Some(_) => {
            errs.push("format", "unsupported", "must be json or csv");
            false
        }
    };
    let date = errs
        .into_result(date)
        .map_err(ApiError::Validation)?
        .expect("validated above");
    let rows = report_rows(&st.store, date, shop.id).await?;
    if csv {
        let mut out = String::from("date,shop_id,provider,status,currency,orders,amount\n");
        for r in &rows {
            out.push_str(&format!(
                "{date},{},{},{},{},{},{}\n",
                shop.id,
                r.provider,
                r.status,
                r.currency.trim(),
                r.orders,
                major(r.amount_minor, &r.currency)
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    Ok(axum::Json(json!({
        "date": date.to_string(),
        "shopId": shop.id,
        "rows": rows.iter().map(|r| json!({
            "provider": r.provider,
            "status": r.status,
            "currency": r.currency.trim(),
            "orders": r.orders,
            "amount": major(r.amount_minor, &r.currency),
            "amountMinor": r.amount_minor,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn report_rows(store: &Store, date: Date, shop_id: Uuid) -> Result<Vec<Row>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT provider, status, currency::text AS currency, orders, amount_minor FROM report_daily
         WHERE day = $1 AND shop_id = $2 AND status <> 'accepted'
         UNION ALL
         SELECT provider, 'accepted', currency::text, count(*), sum(total_minor)::bigint FROM orders
         WHERE shop_id = $2 AND created_at >= $1::timestamp AT TIME ZONE 'UTC'
           AND created_at < ($1 + 1)::timestamp AT TIME ZONE 'UTC'
         GROUP BY provider, currency
         ORDER BY provider, status, currency",
    )
    .bind(date)
    .bind(shop_id)
    .fetch_all(&store.pool)
    .await?)
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeliveriesQuery {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
}

/// `GET /v1/reports/deliveries?from=&to=`: the shop's delivered orders in
/// the period (by delivery day), on time and late against the promise, and
/// the orders late right now (not delivered by their promised day).
impl DeliveriesQuery {
    /// `from` and `to` as dates (either may be left out), checked field by
    /// field: YYYY-MM-DD, and `to` not before `from`.
    pub(crate) fn period(&self) -> Result<(Option<Date>, Option<Date>), ApiError> {
        let mut errs = ValidationErrors::default();
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let mut day = |field: &'static str, v: &Option<String>| -> Option<Date> {
            v.as_deref().and_then(|d| {
                Date::parse(d, fmt)
                    .map_err(|_| errs.push(field, "format", "must be a date as YYYY-MM-DD"))
                    .ok()
            })
        };
        let from = day("from", &self.from);
        let to = day("to", &self.to);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            errs.push("to", "range", "must not be before from");
        }
        errs.into_result(()).map_err(ApiError::Validation)?;
        Ok((from, to))
    }
}

async fn deliveries(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let shop = payhub_service::problem::authenticate(&st.store, &headers).await?;
    let (from, to) = q.period()?;
    let (delivered, on_time): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE on_time) FROM delivery_outcomes
         WHERE shop_id = $1 AND ($2::date IS NULL OR delivered_on >= $2) AND ($3::date IS NULL OR delivered_on <= $3)",
    )
    .bind(shop.id)
    .bind(from)
    .bind(to)
    .fetch_one(&st.store.pool)
    .await?;
    let (late_open,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM stale_orders f JOIN orders o ON o.id = f.order_id
         WHERE o.shop_id = $1 AND f.kind = 'late_delivery' AND f.resolved_at IS NULL",
    )
    .bind(shop.id)
    .fetch_one(&st.store.pool)
    .await?;
    Ok(axum::Json(json!({
        "shopId": shop.id,
        "from": from.map(|d| d.to_string()),
        "to": to.map(|d| d.to_string()),
        "delivered": delivered,
        "onTime": on_time,
        "late": delivered - on_time,
        "onTimeRate": if delivered > 0 { Some(on_time as f64 / delivered as f64) } else { None },
        "lateNow": late_open,
    }))
    .into_response())
}

/// `GET /v1/reports/survey?from=&to=`: the shop's satisfaction survey
/// (issue 12 §4) over the invitations sent in the period: how many were
/// asked and answered, the response rate, NPS (% promoters 9–10 minus %
/// detractors 0–6, over the answers) and the latest comments.
async fn survey(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let shop = payhub_service::problem::authenticate(&st.store, &headers).await?;
    let (from, to) = q.period()?;
    let (invited, answered, promoters, passives, detractors): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(a.order_id), count(*) FILTER (WHERE a.score >= 9),
                count(*) FILTER (WHERE a.score BETWEEN 7 AND 8), count(*) FILTER (WHERE a.score <= 6)
         FROM survey_invitations i LEFT JOIN survey_answers a ON a.order_id = i.order_id
         WHERE i.shop_id = $1 AND ($2::date IS NULL OR i.invited_at::date >= $2)
           AND ($3::date IS NULL OR i.invited_at::date <= $3)",
    )
    .bind(shop.id)
    .bind(from)
    .bind(to)
    .fetch_one(&st.store.pool)
    .await?;
    let comments: Vec<(String, i16, String, time::OffsetDateTime)> = sqlx::query_as(
        "SELECT o.correlation_id, a.score, a.comment, a.answered_at
         FROM survey_answers a JOIN survey_invitations i ON i.order_id = a.order_id JOIN orders o ON o.id = a.order_id
         WHERE a.shop_id = $1 AND a.comment IS NOT NULL AND ($2::date IS NULL OR i.invited_at::date >= $2)
           AND ($3::date IS NULL OR i.invited_at::date <= $3)
         ORDER BY a.answered_at DESC LIMIT 50",
    )
    .bind(shop.id)
    .bind(from)
    .bind(to)
    .fetch_all(&st.store.pool)
    .await?;
    let rate = |n: i64, of: i64| if of > 0 { Some(n as f64 / of as f64) } else { None };
    Ok(axum::Json(json!({
        "shopId": shop.id,
        "from": from.map(|d| d.to_string()),
        "to": to.map(|d| d.to_string()),
        "invited": invited,
        "answered": answered,
        "responseRate": rate(answered, invited),
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "nps": (answered > 0).then(|| ((promoters - detractors) as f64 * 100.0 / answered as f64).round() as i64),
        "comments": comments.iter().map(|(cid, score, comment, at)| json!({
            "correlationID": cid,
            "score": score,
            "comment": comment,
            "answeredAt": at.format(&time::format_description::well_known::Rfc3339).ok(),
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let handler = ReportHandler {
            store: infra.store.clone(),
        };
        let sweeper = sweeper::Sweeper {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            confirm: payhub_connectors::internal::ConfirmClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                std::time::Duration::from_secs(15),
            )?,
            config: config.sweep.clone(),
        };
        let reconciler = std::sync::Arc::new(reconcile::Reconciler {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            listing: payhub_connectors::internal::ListingClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                std::time::Duration::from_secs(60),
            )?,
            confirm: payhub_connectors::internal::ConfirmClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                std::time::Duration::from_secs(15),
            )?,
            pixelpay: payhub_connectors::internal::PixelPayStatusClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                std::time::Duration::from_secs(15),
            )?,
            config: config.reconcile,
        });
        let reports = std::sync::Arc::new(management::Reports {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            backfill_days: config.reconcile.backfill_days,
        });
        infra.tasks.spawn(reports.clone().run_periodically(
            config.report_interval,
            config.report_delay,
            infra.shutdown.clone(),
        ));
        infra.tasks.spawn(sweeper.run(infra.shutdown.clone()));
        infra.tasks.spawn(
            reconciler
                .clone()
                .run_periodically(config.reconcile_interval, infra.shutdown.clone()),
        );
        let routes = Router::new()
            .route("/v1/reports/daily", get(daily))
            .route("/v1/reports/deliveries", get(deliveries))
            .route("/v1/reports/survey", get(survey))
            .with_state(AppState {
                store: infra.store.clone(),
            })
            .merge(reconcile::shop_router(infra.store.clone()))
            .merge(management::router(management::ReportsState {
                reports,
                token: config.internal_token.clone(),
            }))
            .merge(settlement::router(settlement::SettlementState {
                store: infra.store.clone(),
            }))
            .merge(
                Router::new()
                    .route(
                        reconcile::RECONCILE_PATH,
                        axum::routing::post(reconcile::reconcile_route),
                    )
                    .with_state(std::sync::Arc::new(reconcile::ReconcileState {
                        reconciler,
                        token: config.internal_token.clone(),
                    })),
            );
        let mut app = payhub_service::App::start(infra, config.common.http_addr, routes).await?;
        app.consume(QueueSpec::REPORTER, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
