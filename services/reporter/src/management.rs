//! Management reports (issue 13 §3): a daily and a monthly report per shop
//! and for the platform, made from the stored orders, ledger, deliveries,
//! survey and reconciliation runs, rendered as HTML (the e-mail), CSV and
//! PDF (`payhub-documents`, the receipts' font), and stored as an
//! immutable snapshot with the SHA-256 of each body and of the three.
//!
//! Exactly once per (shop or platform, period): the snapshot's unique key
//! decides; the reporter whose insert lands adds `report.ready` to the
//! outbox in the same transaction, and notifier e-mails it. No lock is held
//! while anything is sent. Made on a schedule (every
//! `PAYHUB_REPORT_INTERVAL_MS`, a day's report once the day has closed in
//! the shop's time zone and `PAYHUB_REPORT_DELAY_MS` has passed, so late
//! events are in; a month's likewise) and on demand (`payhubctl report run`,
//! `POST /internal/v1/reports`). Listed and downloaded, byte for byte, at
//! `GET /v1/reports/management[/{id}]` and with `payhubctl report list|download`.

use crate::sweeper::{add_once, fact_id};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::events::{EventPayload, ReportReady};
use payhub_core::{Currency, Envelope, Money, ValidationErrors};
use payhub_documents::ReportLine;
use payhub_service::problem::{ApiError, authenticate};
use payhub_store::Store;
use payhub_store::outbox::Outbox;
use payhub_store::reports::{SNAPSHOT_COLUMNS, Snapshot, body, content_type, list};
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::LazyLock;
use time::{Date, OffsetDateTime, UtcOffset};
use uuid::Uuid;

static MADE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_management_reports_total",
        "Management reports made, by scope (shop, platform), period (daily, monthly) and outcome (made, already_made, failed).",
        &["scope", "period", "outcome"]
    )
    .expect("metric registers once")
});

/// What rendered a snapshot, stored beside it.
pub const RENDERER: &str = "payhub-reporter-management/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }

    /// The first and last day (inclusive) of the period holding `day`.
    pub fn bounds(self, day: Date) -> (Date, Date) {
        match self {
            Period::Daily => (day, day),
            Period::Monthly => {
                let first = day.replace_day(1).expect("every month has a first day");
                let last = first
                    .replace_day(day.month().length(day.year()))
                    .expect("a month's length is one of its days");
                (first, last)
            }
        }
    }
}

/// Whose report: one shop's, or the whole platform's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Shop(Uuid),
    Platform,
}

impl Scope {
    fn key(self) -> String {
        match self {
            Scope::Shop(id) => id.to_string(),
            Scope::Platform => "platform".into(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scope::Shop(_) => "shop",
            Scope::Platform => "platform",
        }
    }

    fn shop_id(self) -> Option<Uuid> {
        match self {
            Scope::Shop(id) => Some(id),
            Scope::Platform => None,
        }
    }
}

/// The figures of one report, read from the stored data.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub title: String,
    pub scope: Scope,
    pub period: Period,
    pub start: Date,
    pub end: Date,
    pub utc_offset_hours: i8,
    pub received: i64,
    pub paid: i64,
    pub failed: i64,
    pub expired: i64,
    pub pending: i64,
    pub under_review: i64,
    pub money: Vec<MoneyRow>,
    pub paid_count_for_timing: i64,
    pub time_to_paid_p50_ms: Option<i64>,
    pub time_to_paid_p95_ms: Option<i64>,
    pub delivered: i64,
    pub delivered_on_time: i64,
    pub late_not_delivered: i64,
    pub survey_invited: i64,
    pub survey_answered: i64,
    pub survey_promoters: i64,
    pub survey_detractors: i64,
    pub reconciliation: Vec<ReconDay>,
    pub discrepancies_open: i64,
    pub discrepancies_settled: i64,
    pub discrepancies_resolved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MoneyRow {
    pub provider: String,
    pub method: String,
    pub currency: String,
    pub payments: i64,
    pub gross_minor: i64,
    pub fee_minor: i64,
    pub refunds_minor: i64,
    pub net_minor: i64,
}

/// A day's reconciliation: the latest run's status, or `not_run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconDay {
    pub day: Date,
    pub status: String,
}

fn major(minor: i64, currency: &str) -> String {
    Currency::parse(currency.trim())
        .map(|c| Money::from_minor(minor, c).to_major_string())
        .unwrap_or_else(|| minor.to_string())
}

/// `12.34 %`, from whole numbers (no float formatting in the documents).
fn percent(n: i64, of: i64) -> String {
    if of <= 0 {
        return "-".into();
    }
    let bp = (n * 10_000 + of / 2) / of;
    format!("{}.{:02} %", bp / 100, bp % 100)
}

fn seconds(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |ms| format!("{}.{:03} s", ms / 1000, ms % 1000))
}

impl Figures {
    pub fn conversion(&self) -> String {
        percent(self.paid, self.received)
    }

    pub fn nps(&self) -> Option<i64> {
        (self.survey_answered > 0).then(|| {
            let d = (self.survey_promoters - self.survey_detractors) * 100;
            // Rounded half away from zero, in integers.
            (2 * d + d.signum() * self.survey_answered) / (2 * self.survey_answered)
        })
    }

    /// `clean` when every day was reconciled clean and nothing is open,
    /// `open_discrepancies`, or `incomplete` (a day not reconciled, or a run
    /// that could not ask every provider).
    pub fn reconciliation_status(&self) -> &'static str {
        if self.discrepancies_open > 0 {
            "open_discrepancies"
        } else if self
            .reconciliation
            .iter()
            .all(|d| d.status == "clean" || d.status == "discrepancies")
        {
            "clean"
        } else {
            "incomplete"
        }
    }

    /// The report's summary, as the API and payhubctl list it.
    pub fn summary(&self) -> Value {
        json!({
            "title": self.title,
            "received": self.received,
            "paid": self.paid,
            "failed": self.failed,
            "expired": self.expired,
            "conversion": self.conversion(),
            "timeToPaidP50Ms": self.time_to_paid_p50_ms,
            "timeToPaidP95Ms": self.time_to_paid_p95_ms,
            "reconciliation": self.reconciliation_status(),
            "discrepanciesOpen": self.discrepancies_open,
        })
    }

    fn period_text(&self) -> String {
        match self.period {
            Period::Daily => self.start.to_string(),
            Period::Monthly => format!("{}-{:02}", self.start.year(), u8::from(self.start.month())),
        }
    }

    fn zone(&self) -> String {
        let h = self.utc_offset_hours;
        format!("UTC{}{:02}:00", if h < 0 { '-' } else { '+' }, h.unsigned_abs())
    }

    /// (section, name, provider, method, currency, value) rows: the CSV's
    /// lines, and what the HTML and PDF show.
    fn rows(&self) -> Vec<[String; 6]> {
        let s = |a: &str, b: &str, v: String| {
            [
                a.to_string(),
                b.to_string(),
                String::new(),
                String::new(),
                String::new(),
                v,
            ]
        };
        let mut out = vec![
            s("report", "title", self.title.clone()),
            s("report", "scope", self.scope.key()),
            s("report", "period", self.period.as_str().into()),
            s("report", "from", self.start.to_string()),
            s("report", "to", self.end.to_string()),
            s("report", "time_zone", self.zone()),
            s("orders", "received", self.received.to_string()),
            s("orders", "paid", self.paid.to_string()),
            s("orders", "failed", self.failed.to_string()),
            s("orders", "expired", self.expired.to_string()),
            s("orders", "pending", self.pending.to_string()),
            s("orders", "under_review", self.under_review.to_string()),
            s("orders", "conversion", self.conversion()),
            s("time_to_paid", "orders", self.paid_count_for_timing.to_string()),
            s("time_to_paid", "p50", seconds(self.time_to_paid_p50_ms)),
            s("time_to_paid", "p95", seconds(self.time_to_paid_p95_ms)),
        ];
        for m in &self.money {
            let c = m.currency.trim();
            let r = |name: &str, v: String| {
                [
                    "money".to_string(),
                    name.to_string(),
                    m.provider.clone(),
                    m.method.clone(),
                    c.to_string(),
                    v,
                ]
            };
            out.push(r("payments", m.payments.to_string()));
            out.push(r("gross", major(m.gross_minor, c)));
            out.push(r("fees", major(m.fee_minor, c)));
            out.push(r("refunds", major(m.refunds_minor, c)));
            out.push(r("net", major(m.net_minor, c)));
        }
        out.extend([
            s("deliveries", "delivered", self.delivered.to_string()),
            s("deliveries", "on_time", self.delivered_on_time.to_string()),
            s(
                "deliveries",
                "late",
                (self.delivered - self.delivered_on_time).to_string(),
            ),
            s("deliveries", "late_not_delivered", self.late_not_delivered.to_string()),
            s("survey", "invited", self.survey_invited.to_string()),
            s("survey", "answered", self.survey_answered.to_string()),
            s(
                "survey",
                "response_rate",
                percent(self.survey_answered, self.survey_invited),
            ),
            s("survey", "nps", self.nps().map_or("-".into(), |n| n.to_string())),
            s("reconciliation", "status", self.reconciliation_status().into()),
            s("reconciliation", "open", self.discrepancies_open.to_string()),
            s("reconciliation", "settled", self.discrepancies_settled.to_string()),
            s("reconciliation", "resolved", self.discrepancies_resolved.to_string()),
        ]);
        for d in &self.reconciliation {
            out.push(s("reconciliation", &d.day.to_string(), d.status.clone()));
        }
        out
    }

    pub fn csv(&self) -> Vec<u8> {
        let mut out = String::from("section,name,provider,method,currency,value\n");
        for r in self.rows() {
            let fields: Vec<String> = r.iter().map(|f| csv_field(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out.into_bytes()
    }

    pub fn html(&self) -> Vec<u8> {
        let e = html_escape;
        let mut h = String::new();
        h.push_str("<!DOCTYPE html>\n<html lang=\"pt-BR\"><head><meta charset=\"utf-8\"><title>");
        h.push_str(&e(&self.title));
        h.push_str("</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>");
        h.push_str(&e(&self.title));
        h.push_str(&format!(
            "</h1>\n<p>{} {} ({}); {} .. {}</p>\n",
            e(self.period.as_str()),
            e(&self.period_text()),
            e(&self.zone()),
            self.start,
            self.end
        ));
        let table = |h: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>| {
            h.push_str(&format!(
                "<h2>{}</h2>\n<table border=\"1\" cellpadding=\"4\">\n<tr>",
                e(title)
            ));
            for c in head {
                h.push_str(&format!("<th>{}</th>", e(c)));
            }
            h.push_str("</tr>\n");
            for r in rows {
                h.push_str("<tr>");
                for c in r {
                    h.push_str(&format!("<td>{}</td>", e(&c)));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        };
        let pairs = |v: &[(&str, String)]| v.iter().map(|(k, v)| vec![k.to_string(), v.clone()]).collect();
        table(
            &mut h,
            "Pedidos",
            &["", ""],
            pairs(&[
                ("Recebidos", self.received.to_string()),
                ("Pagos", self.paid.to_string()),
                ("Falharam", self.failed.to_string()),
                ("Expiraram", self.expired.to_string()),
                ("Em aberto", self.pending.to_string()),
                ("Em revisão", self.under_review.to_string()),
                ("Conversão", self.conversion()),
                ("Tempo até o pagamento p50", seconds(self.time_to_paid_p50_ms)),
                ("Tempo até o pagamento p95", seconds(self.time_to_paid_p95_ms)),
            ]),
        );
        table(
            &mut h,
            "Valores por provedor e forma de pagamento",
            &[
                "Provedor",
                "Forma",
                "Moeda",
                "Pagamentos",
                "Bruto",
                "Taxas",
                "Estornos",
                "Líquido",
            ],
            self.money
                .iter()
                .map(|m| {
                    let c = m.currency.trim();
                    vec![
                        m.provider.clone(),
                        m.method.clone(),
                        c.to_string(),
                        m.payments.to_string(),
                        major(m.gross_minor, c),
                        major(m.fee_minor, c),
                        major(m.refunds_minor, c),
                        major(m.net_minor, c),
                    ]
                })
                .collect(),
        );
        table(
            &mut h,
            "Entregas e pesquisa de satisfação",
            &["", ""],
            pairs(&[
                ("Entregues", self.delivered.to_string()),
                ("No prazo", self.delivered_on_time.to_string()),
                ("Atrasadas", (self.delivered - self.delivered_on_time).to_string()),
                ("Atrasadas, não entregues", self.late_not_delivered.to_string()),
                ("Pesquisas enviadas", self.survey_invited.to_string()),
                ("Respostas", self.survey_answered.to_string()),
                ("Taxa de resposta", percent(self.survey_answered, self.survey_invited)),
                ("NPS", self.nps().map_or("-".into(), |n| n.to_string())),
            ]),
        );
        let mut recon = vec![
            ("Situação", self.reconciliation_status().to_string()),
            ("Divergências em aberto", self.discrepancies_open.to_string()),
            ("Liquidadas", self.discrepancies_settled.to_string()),
            ("Resolvidas", self.discrepancies_resolved.to_string()),
        ];
        let days: Vec<(String, String)> = self
            .reconciliation
            .iter()
            .map(|d| (d.day.to_string(), d.status.clone()))
            .collect();
        recon.extend(days.iter().map(|(d, s)| (d.as_str(), s.clone())));
        table(&mut h, "Conciliação com os provedores", &["", ""], pairs(&recon));
        h.push_str("<p>O CSV e o PDF deste relatório seguem em anexo.</p>\n</body></html>\n");
        h.into_bytes()
    }

    pub fn pdf_lines(&self) -> Vec<ReportLine> {
        let mut l = vec![
            ReportLine::Heading(self.title.clone()),
            ReportLine::Text(format!(
                "{} {} ({}): {} .. {}",
                self.period.as_str(),
                self.period_text(),
                self.zone(),
                self.start,
                self.end
            )),
            ReportLine::Rule,
        ];
        let mut section = String::new();
        for [sec, name, provider, method, currency, value] in self.rows().into_iter().skip(6) {
            if sec != section {
                l.push(ReportLine::Heading(sec.clone()));
                section = sec.clone();
            }
            let label = [name, provider, method, currency]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            l.push(ReportLine::Pair(format!("  {label}"), value));
        }
        l
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

/// A shop's time zone: its delivery rules' offset when it set one, else UTC.
pub async fn shop_offset(store: &Store, shop_id: Uuid) -> Result<i8, sqlx::Error> {
    let (offset,): (Option<i32>,) =
        sqlx::query_as("SELECT (order_rules->'deliveryTime'->>'utcOffsetHours')::int FROM shops WHERE id = $1")
            .bind(shop_id)
            .fetch_one(&store.pool)
            .await?;
    Ok(offset
        .and_then(|o| i8::try_from(o).ok())
        .filter(|o| (-12..=14).contains(o))
        .unwrap_or(0))
}

fn local_midnight(day: Date, offset_hours: i8) -> OffsetDateTime {
    day.midnight()
        .assume_offset(UtcOffset::from_hms(offset_hours, 0, 0).unwrap_or(UtcOffset::UTC))
}

/// Reads the figures of `scope` over [start, end] (local days).
pub async fn figures(
    store: &Store,
    scope: Scope,
    period: Period,
    day: Date,
    offset: i8,
) -> Result<Figures, sqlx::Error> {
    let (start, end) = period.bounds(day);
    let from = local_midnight(start, offset);
    let to = local_midnight(end.next_day().unwrap_or(end), offset);
    let shop = scope.shop_id();
    let pool = &store.pool;
    let name = match shop {
        Some(id) => {
            let (n,): (String,) = sqlx::query_as("SELECT name FROM shops WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
            n
        }
        None => "payhub (plataforma)".into(),
    };
    let kind = match period {
        Period::Daily => "diário",
        Period::Monthly => "mensal",
    };
    let (received, paid, failed, expired, pending, under_review): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE paid_at IS NOT NULL OR status IN ('paid', 'partially_refunded', 'refunded',
                                 'fulfilling', 'shipped', 'delivered', 'returned', 'cancelled')),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'expired'),
                count(*) FILTER (WHERE status IN ('accepted', 'awaiting_payment', 'authorized')),
                count(*) FILTER (WHERE status = 'under_review')
         FROM orders WHERE ($1::uuid IS NULL OR shop_id = $1) AND created_at >= $2 AND created_at < $3",
    )
    .bind(shop)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let money: Vec<MoneyRow> = sqlx::query_as(
        "SELECT provider, method, currency::text AS currency,
                count(*) FILTER (WHERE kind = 'payment') AS payments,
                COALESCE(sum(gross_minor) FILTER (WHERE kind = 'payment'), 0)::bigint AS gross_minor,
                COALESCE(sum(fee_minor), 0)::bigint AS fee_minor,
                COALESCE(-sum(gross_minor) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunds_minor,
                COALESCE(sum(net_minor), 0)::bigint AS net_minor
         FROM ledger_lines WHERE ($1::uuid IS NULL OR shop_id = $1) AND occurred_at >= $2 AND occurred_at < $3
         GROUP BY provider, method, currency ORDER BY provider, method, currency",
    )
    .bind(shop)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let (timed, p50, p95): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_disc(0.5) WITHIN GROUP (ORDER BY ms),
                percentile_disc(0.95) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT (extract(epoch FROM (paid_at - created_at)) * 1000)::bigint AS ms FROM orders
               WHERE ($1::uuid IS NULL OR shop_id = $1) AND paid_at >= $2 AND paid_at < $3) t",
    )
    .bind(shop)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let (delivered, on_time): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE on_time) FROM delivery_outcomes
         WHERE ($1::uuid IS NULL OR shop_id = $1) AND delivered_on >= $2 AND delivered_on <= $3",
    )
    .bind(shop)
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    let (late_not_delivered,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM stale_orders f JOIN orders o ON o.id = f.order_id
         WHERE ($1::uuid IS NULL OR o.shop_id = $1) AND f.kind = 'late_delivery' AND f.resolved_at IS NULL",
    )
    .bind(shop)
    .fetch_one(pool)
    .await?;
    let (invited, answered, promoters, detractors): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(a.order_id), count(*) FILTER (WHERE a.score >= 9), count(*) FILTER (WHERE a.score <= 6)
         FROM survey_invitations i LEFT JOIN survey_answers a ON a.order_id = i.order_id
         WHERE ($1::uuid IS NULL OR i.shop_id = $1) AND i.invited_at >= $2 AND i.invited_at < $3",
    )
    .bind(shop)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    // Reconciliation runs by UTC day (as the provider lists them): every
    // UTC day the period touches.
    let (first_utc, last_utc) = (
        from.to_offset(UtcOffset::UTC).date(),
        (to - time::Duration::seconds(1)).to_offset(UtcOffset::UTC).date(),
    );
    let runs: Vec<(Date, Option<String>)> = sqlx::query_as(
        "SELECT d::date, (SELECT r.status FROM reconciliation_runs r WHERE r.day = d::date
                          ORDER BY r.finished_at DESC LIMIT 1)
         FROM generate_series($1::date, $2::date, interval '1 day') d ORDER BY 1",
    )
    .bind(first_utc)
    .bind(last_utc)
    .fetch_all(pool)
    .await?;
    let (open, settled, resolved): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE resolution = 'open'), count(*) FILTER (WHERE resolution = 'settled'),
                count(*) FILTER (WHERE resolution = 'resolved')
         FROM reconciliation_discrepancies
         WHERE ($1::uuid IS NULL OR shop_id = $1) AND day >= $2 AND day <= $3",
    )
    .bind(shop)
    .bind(first_utc)
    .bind(last_utc)
    .fetch_one(pool)
    .await?;
    Ok(Figures {
        title: format!("Relatório {kind} — {name}"),
        scope,
        period,
        start,
        end,
        utc_offset_hours: offset,
        received,
        paid,
        failed,
        expired,
        pending,
        under_review,
        money,
        paid_count_for_timing: timed,
        time_to_paid_p50_ms: p50,
        time_to_paid_p95_ms: p95,
        delivered,
        delivered_on_time: on_time,
        late_not_delivered,
        survey_invited: invited,
        survey_answered: answered,
        survey_promoters: promoters,
        survey_detractors: detractors,
        reconciliation: runs
            .into_iter()
            .map(|(day, s)| ReconDay {
                day,
                status: s.unwrap_or_else(|| "not_run".into()),
            })
            .collect(),
        discrepancies_open: open,
        discrepancies_settled: settled,
        discrepancies_resolved: resolved,
    })
}

/// What making a report came to.
pub enum Made {
    /// This call stored it (and emitted `report.ready`).
    New(Snapshot),
    /// It existed already (made before, or by another reporter just now).
    Existing(Snapshot),
}

pub struct Reports {
    pub store: Store,
    pub outbox: Outbox,
    /// How many days back a daily report missed while reporter was down is
    /// still made (`PAYHUB_RECONCILE_BACKFILL_DAYS`); at least yesterday's.
    pub backfill_days: u16,
}

impl Reports {
    async fn find(&self, scope: Scope, period: Period, start: Date) -> Result<Option<Snapshot>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM report_snapshots WHERE scope_key = $1 AND period = $2 AND period_start = $3"
        )))
        .bind(scope.key())
        .bind(period.as_str())
        .bind(start)
        .fetch_optional(&self.store.pool)
        .await
    }

    /// Makes the report of `scope` for the period holding `day`, once:
    /// renders it, and stores it with `report.ready` in one transaction
    /// unless it is stored already.
    pub async fn make(&self, scope: Scope, period: Period, day: Date, trigger: &str) -> Result<Made, sqlx::Error> {
        let result = self.make_inner(scope, period, day, trigger).await;
        let outcome = match &result {
            Ok(Made::New(_)) => "made",
            Ok(Made::Existing(_)) => "already_made",
            Err(_) => "failed",
        };
        MADE.with_label_values(&[scope.label(), period.as_str(), outcome]).inc();
        result
    }

    async fn make_inner(&self, scope: Scope, period: Period, day: Date, trigger: &str) -> Result<Made, sqlx::Error> {
        let (start, _) = period.bounds(day);
        if let Some(s) = self.find(scope, period, start).await? {
            return Ok(Made::Existing(s));
        }
        let offset = match scope {
            Scope::Shop(id) => shop_offset(&self.store, id).await?,
            Scope::Platform => 0,
        };
        let f = figures(&self.store, scope, period, day, offset).await?;
        let html = f.html();
        let csv = f.csv();
        let created = local_midnight(f.end.next_day().unwrap_or(f.end), offset);
        let pdf = payhub_documents::render_report(&f.title, &f.pdf_lines(), created, offset)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let (hs, cs) = (sha256(&html), sha256(&csv));
        let content = sha256(&[hs.as_slice(), cs.as_slice(), pdf.sha256.as_slice()].concat());
        let id = Uuid::now_v7();
        let mut tx = self.store.pool.begin().await?;
        let stored: Option<Snapshot> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO report_snapshots (id, scope_key, shop_id, period, period_start, period_end, utc_offset_hours,
                 trigger, summary, html, html_sha256, csv, csv_sha256, pdf, pdf_sha256, content_sha256, renderer)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (scope_key, period, period_start) DO NOTHING
             RETURNING {SNAPSHOT_COLUMNS}"
        )))
        .bind(id)
        .bind(scope.key())
        .bind(scope.shop_id())
        .bind(period.as_str())
        .bind(f.start)
        .bind(f.end)
        .bind(i16::from(offset))
        .bind(trigger)
        .bind(f.summary())
        .bind(&html)
        .bind(&hs)
        .bind(&csv)
        .bind(&cs)
        .bind(&pdf.bytes)
        .bind(&pdf.sha256)
        .bind(&content)
        .bind(format!("{RENDERER} {}", payhub_documents::RENDERER))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(snapshot) = stored else {
            // Another reporter made it between our look and our insert.
            tx.rollback().await?;
            let s = self
                .find(scope, period, start)
                .await?
                .ok_or_else(|| sqlx::Error::Protocol("a report the database says exists is missing".into()))?;
            return Ok(Made::Existing(s));
        };
        let mut env = Envelope::new(EventPayload::ReportReady(ReportReady {
            report_id: id,
            period: period.as_str().into(),
            period_start: f.start.to_string(),
        }));
        env.id = fact_id(&["report", &id.to_string()]);
        env.shop_id = scope.shop_id();
        add_once(&mut tx, std::slice::from_ref(&env)).await?;
        tx.commit().await?;
        let _ = self.outbox.publish_now(std::slice::from_ref(&env)).await;
        tracing::info!(report_id = %id, scope = scope.label(), period = period.as_str(), %start, "management report made");
        Ok(Made::New(snapshot))
    }

    /// Makes every report that is due and not made yet: for each active
    /// shop (in its time zone) and the platform (UTC), the last day that
    /// closed at least `delay` ago, and the last month likewise.
    pub async fn make_due(&self, now: OffsetDateTime, delay: std::time::Duration) -> Result<usize, sqlx::Error> {
        let shops: Vec<(Uuid, OffsetDateTime)> =
            sqlx::query_as("SELECT id, created_at FROM shops WHERE active ORDER BY id")
                .fetch_all(&self.store.pool)
                .await?;
        // The platform's missed days are made back to its first shop only.
        let first = shops.iter().map(|(_, c)| *c).min();
        let mut scopes: Vec<(Scope, i8, Option<OffsetDateTime>)> = vec![(Scope::Platform, 0, None)];
        for (id, created) in shops {
            scopes.push((Scope::Shop(id), shop_offset(&self.store, id).await?, Some(created)));
        }
        let delay = time::Duration::try_from(delay).unwrap_or(time::Duration::hours(2));
        let mut made = 0;
        for (scope, offset, created) in scopes {
            let local_today = (now - delay)
                .to_offset(UtcOffset::from_hms(offset, 0, 0).unwrap_or(UtcOffset::UTC))
                .date();
            let Some(yesterday) = local_today.previous_day() else {
                continue;
            };
            let last_month = local_today
                .replace_day(1)
                .ok()
                .and_then(|d| d.previous_day())
                .unwrap_or(yesterday);
            // Yesterday, and the days before it that a reporter down across
            // their end missed (made once: a made report is found, not made again).
            let mut due: Vec<(Period, Date, Option<OffsetDateTime>)> = (0..i64::from(self.backfill_days.max(1)))
                .map(|back| {
                    let since = if back == 0 { created } else { created.or(first) };
                    (Period::Daily, yesterday - time::Duration::days(back), since)
                })
                .collect();
            due.push((Period::Monthly, last_month, created));
            for (period, day, created) in due {
                let (_, end) = period.bounds(day);
                // No report of a period that ended before the shop existed.
                if created.is_some_and(|c| local_midnight(end.next_day().unwrap_or(end), offset) <= c) {
                    continue;
                }
                match self.make(scope, period, day, "schedule").await {
                    Ok(Made::New(_)) => made += 1,
                    Ok(Made::Existing(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, scope = scope.label(), "a management report could not be made; trying again next time")
                    }
                }
            }
        }
        Ok(made)
    }

    pub async fn run_periodically(
        self: std::sync::Arc<Self>,
        interval: std::time::Duration,
        delay: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.make_due(OffsetDateTime::now_utc(), delay).await {
                tracing::warn!(error = %e, "management reports: the database is unavailable; trying again next time");
            }
        }
    }
}

#[derive(Clone)]
pub struct ReportsState {
    pub reports: std::sync::Arc<Reports>,
    pub token: secrecy::SecretString,
}

pub fn router(state: ReportsState) -> Router {
    Router::new()
        .route("/v1/reports/management", get(list_route))
        .route("/v1/reports/management/{id}", get(download_route))
        .route(RUN_PATH, axum::routing::post(run_route))
        .with_state(state)
}

/// Where payhubctl asks for a report.
pub const RUN_PATH: &str = "/internal/v1/reports";

async fn list_route(State(st): State<ReportsState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let shop = authenticate(&st.reports.store, &headers).await?;
    let all = list(&st.reports.store, Some(shop.id)).await?;
    Ok(axum::Json(json!({"reports": all.iter().map(Snapshot::to_json).collect::<Vec<_>>()})).into_response())
}

#[derive(Debug, Deserialize)]
struct Format {
    format: Option<String>,
}

async fn download_route(
    State(st): State<ReportsState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Format>,
) -> Result<Response, ApiError> {
    let shop = authenticate(&st.reports.store, &headers).await?;
    let format = q.format.unwrap_or_else(|| "pdf".into());
    if !matches!(format.as_str(), "pdf" | "csv" | "html") {
        let mut errs = ValidationErrors::default();
        errs.push("format", "unsupported", "must be pdf, csv or html");
        return Err(ApiError::Validation(errs));
    }
    let not_found = || ApiError::NotFound(format!("no report {id} for this shop"));
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let (bytes, hash) = body(&st.reports.store, Some(shop.id), id, &format)
        .await?
        .ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&format).to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"report-{id}.{format}\""),
            ),
            (
                header::HeaderName::from_static("x-content-sha256"),
                payhub_documents::hex(&hash),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /internal/v1/reports {"period": "daily"|"monthly", "date":
/// "YYYY-MM-DD", "shopId": uuid | absent for the platform}`: makes the
/// report now unless it exists; 201 when made, 200 with the existing one.
async fn run_route(State(st): State<ReportsState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !payhub_service::internal::bearer_matches(auth, secrecy::ExposeSecret::expose_secret(&st.token)) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "internal token required"})),
        )
            .into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut errs = ValidationErrors::default();
    let period = match v.get("period").and_then(Value::as_str) {
        Some(p) => Period::parse(p).or_else(|| {
            errs.push("period", "unsupported", "must be daily or monthly");
            None
        }),
        None => {
            errs.push("period", "required", "is required: daily or monthly");
            None
        }
    };
    let day = match v.get("date").and_then(Value::as_str) {
        Some(d) => Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| errs.push("date", "format", "must be a date as YYYY-MM-DD"))
            .ok(),
        None => {
            errs.push("date", "required", "is required, as YYYY-MM-DD");
            None
        }
    };
    let scope = match v.get("shopId") {
        None | Some(Value::Null) => Some(Scope::Platform),
        Some(s) => s
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(Scope::Shop)
            .or_else(|| {
                errs.push("shopId", "format", "must be a shop id");
                None
            }),
    };
    let (Some(period), Some(day), Some(scope)) = (period, day, scope) else {
        return ApiError::Validation(errs).into_response();
    };
    if let Scope::Shop(id) = scope {
        match payhub_store::shops::by_id(&st.reports.store, id).await {
            Ok(Some(_)) => {}
            Ok(None) => return ApiError::NotFound(format!("no shop {id}")).into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    match st.reports.make(scope, period, day, "on_demand").await {
        Ok(Made::New(s)) => (StatusCode::CREATED, axum::Json(s.to_json())).into_response(),
        Ok(Made::Existing(s)) => axum::Json(s.to_json()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a management report could not be made");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "the database is unavailable"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn sample() -> Figures {
        Figures {
            title: "Relatório diário — Loja, \"Teste\" <b>".into(),
            scope: Scope::Shop(Uuid::nil()),
            period: Period::Daily,
            start: date!(2026 - 12 - 02),
            end: date!(2026 - 12 - 02),
            utc_offset_hours: -3,
            received: 3,
            paid: 2,
            failed: 0,
            expired: 1,
            pending: 0,
            under_review: 0,
            money: vec![MoneyRow {
                provider: "openpix".into(),
                method: "pix".into(),
                currency: "BRL".into(),
                payments: 2,
                gross_minor: 45558,
                fee_minor: 200,
                refunds_minor: 1000,
                net_minor: 44358,
            }],
            paid_count_for_timing: 2,
            time_to_paid_p50_ms: Some(1500),
            time_to_paid_p95_ms: Some(65_002),
            delivered: 1,
            delivered_on_time: 1,
            late_not_delivered: 0,
            survey_invited: 2,
            survey_answered: 1,
            survey_promoters: 1,
            survey_detractors: 0,
            reconciliation: vec![ReconDay {
                day: date!(2026 - 12 - 02),
                status: "clean".into(),
            }],
            discrepancies_open: 0,
            discrepancies_settled: 0,
            discrepancies_resolved: 0,
        }
    }

    #[test]
    fn the_csv_html_and_pdf_hold_the_figures_and_escape_what_they_quote() {
        let f = sample();
        let csv = String::from_utf8(f.csv()).unwrap();
        assert!(csv.starts_with("section,name,provider,method,currency,value\n"));
        assert!(
            csv.contains("report,title,,,,\"Relatório diário — Loja, \"\"Teste\"\" <b>\"\n"),
            "{csv}"
        );
        assert!(csv.contains("orders,conversion,,,,66.67 %\n"), "{csv}");
        assert!(csv.contains("money,gross,openpix,pix,BRL,455.58\n"));
        assert!(csv.contains("money,net,openpix,pix,BRL,443.58\n"));
        assert!(csv.contains("time_to_paid,p95,,,,65.002 s\n"));
        assert!(csv.contains("survey,nps,,,,100\n"));
        assert!(csv.contains("reconciliation,status,,,,clean\n"));
        let html = String::from_utf8(f.html()).unwrap();
        assert!(
            html.contains("Loja, &quot;Teste&quot; &lt;b&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("<td>455.58</td>"));
        let pdf = payhub_documents::render_report(&f.title, &f.pdf_lines(), OffsetDateTime::UNIX_EPOCH, -3).unwrap();
        assert!(pdf.bytes.starts_with(b"%PDF-"));
        assert_eq!(f.csv(), sample().csv());
        assert_eq!(f.html(), sample().html());
    }

    #[test]
    fn conversion_nps_and_reconciliation_status_follow_the_figures() {
        assert_eq!(percent(1, 3), "33.33 %");
        assert_eq!(percent(0, 0), "-");
        let mut f = sample();
        f.survey_answered = 3;
        f.survey_promoters = 1;
        f.survey_detractors = 2;
        assert_eq!(f.nps(), Some(-33));
        f.reconciliation[0].status = "not_run".into();
        assert_eq!(f.reconciliation_status(), "incomplete");
        f.discrepancies_open = 1;
        assert_eq!(f.reconciliation_status(), "open_discrepancies");
    }

    #[test]
    fn a_month_runs_from_its_first_to_its_last_day() {
        assert_eq!(
            Period::Monthly.bounds(date!(2028 - 02 - 15)),
            (date!(2028 - 02 - 01), date!(2028 - 02 - 29))
        );
        assert_eq!(
            Period::Daily.bounds(date!(2026 - 12 - 31)),
            (date!(2026 - 12 - 31), date!(2026 - 12 - 31))
        );
    }
}
