//! The machine's facts, PostgreSQL's and the services' own counters, and the
//! outputs: result.json, summary.md and timeline.svg.

use crate::analysis::{PhaseResult, Second, Stages, Verification};
use crate::ceiling::{PgResult, RelayResult};
use crate::load::Sample;
use crate::procstat::Snapshot;
use crate::stats::Summary;
use crate::svg::{self, Band, PALETTE, Panel, Series};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mb: u64,
    pub kernel: String,
    pub load_average_at_start: String,
    /// Cores busy over the 2 s before the run (nothing of the bench running yet).
    pub busy_cores_at_start: f64,
    pub pg_version: String,
    pub pg_version_short: String,
    pub pg_fsync: String,
    pub pg_synchronous_commit: String,
    pub pg_wal_sync_method: String,
    pub pg_full_page_writes: String,
    pub pg_max_connections: String,
    pub pg_shared_buffers: String,
    pub rabbitmq_version: String,
}

fn first_line_value(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

async fn setting(c: &mut sqlx::PgConnection, name: &str) -> String {
    sqlx::query_as::<_, (String,)>("SELECT setting FROM pg_settings WHERE name = $1")
        .bind(name)
        .fetch_one(c)
        .await
        .map(|r| r.0)
        .unwrap_or_else(|_| "unknown".into())
}

/// The machine, PostgreSQL's durability settings (checked, not assumed) and
/// RabbitMQ's version.
pub async fn environment(pg_server_url: &str) -> anyhow::Result<Environment> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&format!("{pg_server_url}/postgres")).await?;
    let fsync = setting(&mut c, "fsync").await;
    let sync_commit = setting(&mut c, "synchronous_commit").await;
    let wal_sync = setting(&mut c, "wal_sync_method").await;
    let fpw = setting(&mut c, "full_page_writes").await;
    let max_conn = setting(&mut c, "max_connections").await;
    let shared = sqlx::query_as::<_, (String,)>("SHOW shared_buffers")
        .fetch_one(&mut c)
        .await
        .map(|r| r.0)
        .unwrap_or_else(|_| "unknown".into());
    let (version,): (String,) = sqlx::query_as("SELECT version()").fetch_one(&mut c).await?;
    let (short,): (String,) = sqlx::query_as("SHOW server_version").fetch_one(&mut c).await?;
    let _ = c.close().await;
    let before = crate::procstat::machine_ticks();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = crate::procstat::machine_ticks();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let busy_cores =
        (after.0.saturating_sub(before.0)) as f64 / (after.1.saturating_sub(before.1)).max(1) as f64 * cpus as f64;
    let rabbit = std::process::Command::new("rabbitmqctl")
        .args(["-q", "version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown (rabbitmqctl not available)".into());
    Ok(Environment {
        cpus,
        busy_cores_at_start: busy_cores,
        cpu_model: first_line_value("/proc/cpuinfo", "model name").unwrap_or_default(),
        mem_total_mb: first_line_value("/proc/meminfo", "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_average_at_start: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        pg_version: version,
        pg_version_short: short,
        pg_fsync: fsync,
        pg_synchronous_commit: sync_commit,
        pg_wal_sync_method: wal_sync,
        pg_full_page_writes: fpw,
        pg_max_connections: max_conn,
        pg_shared_buffers: shared,
        rabbitmq_version: rabbit,
    })
}

/// The bench database's transaction and tuple counters, and the server's WAL.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PgCounters {
    pub xact_commit: i64,
    pub xact_rollback: i64,
    pub tup_inserted: i64,
    pub tup_updated: i64,
    pub tup_deleted: i64,
    pub wal_records: i64,
    pub wal_bytes: i64,
    /// WAL flushes to disk (fdatasync), server-wide.
    pub wal_sync: i64,
}

pub async fn pg_counters(pool: &sqlx::PgPool, db: &str) -> anyhow::Result<PgCounters> {
    // Statistics reach shared memory when a backend goes idle (at most once a
    // second): give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted,
                w.wal_records, w.wal_bytes::bigint, w.wal_sync
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = $1",
    )
    .bind(db)
    .fetch_one(pool)
    .await?;
    Ok(PgCounters {
        xact_commit: r.0,
        xact_rollback: r.1,
        tup_inserted: r.2,
        tup_updated: r.3,
        tup_deleted: r.4,
        wal_records: r.5,
        wal_bytes: r.6,
        wal_sync: r.7,
    })
}

fn delta(a: PgCounters, b: PgCounters) -> PgCounters {
    PgCounters {
        xact_commit: b.xact_commit - a.xact_commit,
        xact_rollback: b.xact_rollback - a.xact_rollback,
        tup_inserted: b.tup_inserted - a.tup_inserted,
        tup_updated: b.tup_updated - a.tup_updated,
        tup_deleted: b.tup_deleted - a.tup_deleted,
        wal_records: b.wal_records - a.wal_records,
        wal_bytes: b.wal_bytes - a.wal_bytes,
        wal_sync: b.wal_sync - a.wal_sync,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PgDeltas {
    /// From just before the sustained phase to after it drained.
    pub sustained: Option<PgCounters>,
    /// The knee steps, to after they drained.
    pub knee: Option<PgCounters>,
}

pub fn pg_deltas(before: Option<PgCounters>, mid: Option<PgCounters>, end: Option<PgCounters>) -> PgDeltas {
    PgDeltas {
        sustained: before.zip(mid).map(|(a, b)| delta(a, b)),
        knee: mid.zip(end).map(|(a, b)| delta(a, b)),
    }
}

/// The services' own counters at the end (`/metrics`), the series that tell
/// retries, dead letters and failures.
pub async fn scrape(http: &reqwest::Client, services: &[(String, String)]) -> BTreeMap<String, BTreeMap<String, f64>> {
    const FAMILIES: [&str; 13] = [
        "payhub_message_handle_seconds_sum",
        "payhub_message_handle_seconds_count",
        "payhub_http_request_duration_seconds_sum",
        "payhub_http_request_duration_seconds_count",
        "payhub_messages_consumed_total",
        "payhub_messages_published_total",
        "payhub_messages_dead_lettered_total",
        "payhub_messages_retried_total",
        "payhub_deliveries_total",
        "payhub_http_requests_total",
        "payhub_provider_webhooks_total",
        "payhub_order_transitions_total",
        "payhub_dependency_unavailable_total",
    ];
    let mut out = BTreeMap::new();
    for (name, base) in services {
        let Ok(r) = http.get(format!("{base}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        let mut m = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if FAMILIES.iter().any(|f| line.starts_with(f))
                && let Some((series, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                m.insert(series.to_string(), v);
            }
        }
        out.insert(name.clone(), m);
    }
    out
}

/// Mean handling time of one series in two windows.
#[derive(Debug, Clone, Serialize)]
pub struct Handling {
    pub service: String,
    pub what: String,
    pub sustained_count: f64,
    pub sustained_mean_ms: f64,
    pub knee_count: f64,
    pub knee_mean_ms: f64,
}

/// Per-message and per-request mean times from the services' histograms,
/// for the sustained phase and the knee steps (differences of snapshots).
pub fn handling(
    start: &BTreeMap<String, BTreeMap<String, f64>>,
    mid: &BTreeMap<String, BTreeMap<String, f64>>,
    end: &BTreeMap<String, BTreeMap<String, f64>>,
    queue_prefix: &str,
) -> Vec<Handling> {
    let mut out = Vec::new();
    for (svc, m) in end {
        for fam in ["payhub_message_handle_seconds", "payhub_http_request_duration_seconds"] {
            let sum_prefix = format!("{fam}_sum");
            for series in m.keys().filter(|k| k.starts_with(&sum_prefix)) {
                let labels = &series[sum_prefix.len()..];
                if ["/readyz", "/healthz", "/metrics"].iter().any(|r| labels.contains(r)) {
                    continue;
                }
                let count_key = format!("{fam}_count{labels}");
                let get = |snap: &BTreeMap<String, BTreeMap<String, f64>>, k: &str| {
                    snap.get(svc).and_then(|x| x.get(k)).copied().unwrap_or(0.0)
                };
                let (s0, s1, s2) = (get(start, series), get(mid, series), get(end, series));
                let (c0, c1, c2) = (get(start, &count_key), get(mid, &count_key), get(end, &count_key));
                let mean = |ds: f64, dc: f64| if dc > 0.0 { ds * 1000.0 / dc } else { f64::NAN };
                out.push(Handling {
                    service: svc.clone(),
                    what: labels
                        .trim_start_matches('{')
                        .trim_end_matches('}')
                        .replace(queue_prefix, "")
                        .replace('"', ""),
                    sustained_count: c1 - c0,
                    sustained_mean_ms: mean(s1 - s0, c1 - c0),
                    knee_count: c2 - c1,
                    knee_mean_ms: mean(s2 - s1, c2 - c1),
                });
            }
        }
    }
    out
}

/// Sum of a family's series whose labels contain `label` (empty: all).
fn metric_sum(m: &BTreeMap<String, f64>, family: &str, label: &str) -> f64 {
    // + 0.0: an empty f64 sum is -0.0.
    m.iter()
        .filter(|(k, _)| k.starts_with(family) && k.contains(label))
        .map(|(_, v)| *v)
        .sum::<f64>()
        + 0.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub process: String,
    pub is_service: bool,
    /// CPU seconds in the sustained phase (its start to its end + grace).
    pub cpu_s_sustained: f64,
    /// CPU milliseconds per order in the sustained phase.
    pub cpu_ms_per_order: f64,
    /// Average cores busy in the sustained phase.
    pub cores_sustained: f64,
    /// CPU seconds from the first to the last sample (all load).
    pub cpu_s_total: f64,
    /// Highest one-second CPU share seen (1.0 = one core).
    pub peak_cores: f64,
    /// VmHWM (the largest process of a group), MB.
    pub peak_rss_mb: f64,
}

pub fn resources(
    phases: &[PhaseResult],
    samples: &[Sample],
    final_procs: &Snapshot,
    services: &HashSet<&str>,
) -> Vec<Resource> {
    let sustained = phases.first();
    let mut out = Vec::new();
    for (name, fin) in final_procs {
        let cpu_s = sustained.and_then(|p| p.cpu_s.get(name)).copied().unwrap_or(0.0);
        let (orders, secs) = sustained.map(|p| (p.orders as f64, p.seconds)).unwrap_or((0.0, 0.0));
        let first = samples.first().and_then(|s| s.procs.get(name)).map(|r| r.cpu_s);
        let last = samples.last().and_then(|s| s.procs.get(name)).map(|r| r.cpu_s);
        let peak = samples
            .windows(2)
            .filter_map(|w| {
                let a = w[0].procs.get(name)?.cpu_s;
                let b = w[1].procs.get(name)?.cpu_s;
                Some((b - a) / (w[1].t - w[0].t).max(1e-3))
            })
            .fold(0.0, f64::max);
        out.push(Resource {
            process: name.clone(),
            is_service: services.contains(name.as_str()),
            cpu_s_sustained: cpu_s,
            cpu_ms_per_order: if orders > 0.0 { cpu_s * 1000.0 / orders } else { 0.0 },
            cores_sustained: if secs > 0.0 { cpu_s / secs } else { 0.0 },
            cpu_s_total: last.zip(first).map(|(b, a)| b - a).unwrap_or(0.0),
            peak_cores: peak,
            peak_rss_mb: fin.hwm_kb as f64 / 1024.0,
        });
    }
    out.sort_by(|a, b| b.cpu_s_sustained.total_cmp(&a.cpu_s_sustained));
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct LogFinding {
    pub process: String,
    pub errors: usize,
    pub warnings: usize,
    pub panics: usize,
    /// The first panic: where, what, and the first frame in payhub's code.
    pub first_panic: Option<String>,
}

/// Counts ERROR and WARN lines (JSON logs) and panics in every log.
pub fn scan_logs(dir: &Path) -> Vec<LogFinding> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut first_panic = None;
        let mut panics = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.contains("panicked at") {
                panics += 1;
                if first_panic.is_none() {
                    let message = lines.get(i + 1).copied().unwrap_or("").trim();
                    let frame = lines[i..]
                        .iter()
                        .take(200)
                        .find(|x| x.trim_start().starts_with("at ./"))
                        .map(|x| x.trim().trim_start_matches("at ").to_string())
                        .unwrap_or_default();
                    first_panic = Some(format!("{} {message} (first payhub frame: {frame})", l.trim()));
                }
            }
        }
        out.push(LogFinding {
            process: path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .trim_start_matches("payhub-")
                .to_string(),
            errors: lines.iter().filter(|l| l.contains("\"level\":\"ERROR\"")).count(),
            warnings: lines.iter().filter(|l| l.contains("\"level\":\"WARN\"")).count(),
            panics,
            first_panic,
        });
    }
    out
}

/// Ready and unacknowledged counts of this run's queues, from rabbitmqctl
/// (the unacked count is what a stuck consumer holds); non-empty ones only.
pub fn queues_at_end(vhost: &str, prefix: &str) -> Vec<(String, u64, u64)> {
    let Ok(out) = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let ready = f.next()?.parse::<u64>().ok()?;
            let unacked = f.next()?.parse::<u64>().ok()?;
            (name.starts_with(prefix) && ready + unacked > 0)
                .then(|| (name.trim_start_matches(prefix).to_string(), ready, unacked))
        })
        .collect()
}

/// The arguments as run (credentials left out).
#[derive(Debug, Clone, Serialize)]
pub struct ArgsOut {
    pub rate: f64,
    pub duration: f64,
    pub orders: Option<u64>,
    pub steps: Vec<f64>,
    pub step_seconds: f64,
    pub grace: f64,
    pub knee_threshold: f64,
    pub doors: Vec<String>,
    pub drain_timeout: f64,
    pub relay_seconds: f64,
    pub relay_in_flight: usize,
    pub pg_seconds: f64,
    pub pg_connections: u32,
    pub db_max_connections: u32,
    pub amqp_host: String,
}

impl From<crate::Args> for ArgsOut {
    fn from(a: crate::Args) -> ArgsOut {
        let (_, host, vhost) = crate::cluster::split_amqp(&a.amqp_url);
        ArgsOut {
            rate: a.rate,
            duration: a.duration,
            orders: a.orders,
            steps: a.steps.0,
            step_seconds: a.step_seconds,
            grace: a.grace,
            knee_threshold: a.knee_threshold,
            doors: a.doors.iter().map(|d| d.name().to_string()).collect(),
            drain_timeout: a.drain_timeout,
            relay_seconds: a.relay_seconds,
            relay_in_flight: a.relay_in_flight,
            pg_seconds: a.pg_seconds,
            pg_connections: a.pg_connections,
            db_max_connections: a.db_max_connections,
            amqp_host: format!("{host}/{vhost}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub timestamp: String,
    pub run_id: String,
    pub args: ArgsOut,
    pub environment: Environment,
    pub doors: Vec<String>,
    pub amqp_unavailable: Option<String>,
    pub relay: Option<RelayResult>,
    /// PostgreSQL's commit rate over one connection, then over --pg-connections.
    pub pg: Vec<PgResult>,
    /// The sustained phase first, then the knee steps that ran.
    pub phases: Vec<PhaseResult>,
    /// The decision taken at each knee step's end (rate, verdict).
    pub knee_live: Vec<(f64, String)>,
    pub drained: bool,
    pub verification: Verification,
    pub resources: Vec<Resource>,
    pub pg_counters: PgDeltas,
    /// Mean time per message / request per service, per phase.
    pub handling: Vec<Handling>,
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    pub max_in_flight_submissions: usize,
    pub timeline: Vec<Second>,
    /// Unix time of the timeline's second 0.
    pub t0: f64,
    pub wall_seconds: f64,
    pub shutdown_problems: Vec<String>,
    /// ERROR / WARN lines and panics in each process's log.
    pub log_findings: Vec<LogFinding>,
    /// Queues of this run not empty after the drain: (queue, ready, unacked), from rabbitmqctl.
    pub queues_at_end: Vec<(String, u64, u64)>,
    /// Shop webhook deliveries by status (deliveries table).
    pub delivery_status: BTreeMap<String, u64>,
    pub services: Vec<String>,
}

impl BenchResult {
    pub fn sustained(&self) -> Option<&PhaseResult> {
        self.phases.first()
    }

    /// The last step that kept up and the first that did not.
    pub fn knee(&self) -> (Option<&PhaseResult>, Option<&PhaseResult>) {
        let steps = self.phases.get(1..).unwrap_or(&[]);
        let first_bad = steps.iter().position(|p| p.verdict != "keeps up");
        match first_bad {
            Some(i) => (i.checked_sub(1).map(|j| &steps[j]), Some(&steps[i])),
            None => (steps.last(), None),
        }
    }
}

pub fn write(dir: &Path, r: &BenchResult) -> anyhow::Result<()> {
    std::fs::write(dir.join("result.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("summary.md"), markdown(r))?;
    std::fs::write(dir.join("timeline.svg"), plot(r))?;
    Ok(())
}

fn f0(v: f64) -> String {
    if v.is_finite() { format!("{v:.0}") } else { "-".into() }
}

fn f1(v: f64) -> String {
    if v.is_finite() { format!("{v:.1}") } else { "-".into() }
}

fn row(name: &str, s: &Summary) -> String {
    if s.n == 0 {
        return format!("| {name} | - | - | - | - | 0 |\n");
    }
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        f1(s.p50),
        f1(s.p95),
        f1(s.p99),
        f1(s.max),
        s.n
    )
}

fn stage_table(st: &Stages) -> String {
    let mut s = String::from("| stage (ms) | p50 | p95 | p99 | max | n |\n|---|---:|---:|---:|---:|---:|\n");
    s += &row("accepted (submission → order row)", &st.accepted);
    s += &row("charge created (submission → awaiting_payment)", &st.charge_created);
    s += &row("paid (pay request → paid)", &st.paid_after_pay);
    s += &row(
        "shop notified (paid → shop received the paid webhook)",
        &st.notified_after_paid,
    );
    s += &row(
        "**end to end, payhub** (submission → shop notified − payer delay)",
        &st.end_to_end_payhub,
    );
    s += &row("end to end, wall clock (payer delay included)", &st.end_to_end_wall);
    s += &row(
        "payer delay (awaiting_payment → pay request; the bench's buyer)",
        &st.payer_delay,
    );
    s += &row("ingress HTTP request, client side", &st.http_request);
    s += &row("AMQP publish → broker confirm, client side", &st.amqp_publish_confirm);
    s += &row("generator lag (schedule → sent)", &st.generator_lag);
    for (door, sum) in &st.end_to_end_payhub_by_door {
        s += &row(&format!("end to end, payhub, {door} door"), sum);
    }
    for (door, sum) in &st.accepted_by_door {
        s += &row(&format!("accepted, {door} door"), sum);
    }
    s
}

pub fn markdown(r: &BenchResult) -> String {
    let mut s = String::new();
    let v = &r.verification;
    let e = &r.environment;
    let _ = writeln!(s, "# payhub bench {}\n", r.timestamp);
    let _ = writeln!(
        s,
        "**Verification: {}** — {} orders submitted; door errors {}, lost before the database {}, never paid {}, never notified {}, paid twice {}, notified under two webhook ids {}, unverified signatures {}; webhook redeliveries (same id) {}, payment webhooks resent after 503 {}.\n",
        if v.passed { "PASSED" } else { "FAILED" },
        v.submitted,
        v.door_errors,
        v.lost_before_db,
        v.never_paid,
        v.never_notified,
        v.duplicate_paid,
        v.duplicate_notified,
        v.unverified_webhooks,
        v.webhook_redeliveries,
        v.payment_resends
    );
    for ex in v.door_error_examples.iter().chain(&v.lost_examples) {
        let _ = writeln!(s, "- {ex}");
    }
    for (q, ready, unacked) in &r.queues_at_end {
        let _ = writeln!(
            s,
            "- after the drain, queue `{q}` still held {ready} ready and {unacked} unacknowledged message(s)"
        );
    }
    for f in r.log_findings.iter().filter(|f| f.panics > 0) {
        let _ = writeln!(
            s,
            "- **{} panicked {} time(s)** (logs/payhub-{}.log): {}",
            f.process,
            f.panics,
            f.process,
            f.first_panic.as_deref().unwrap_or("")
        );
    }
    if !r.queues_at_end.is_empty() || r.log_findings.iter().any(|f| f.panics > 0) || !v.passed {
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {} MB RAM, Linux {}; load average at start {}, {:.2} cores busy in the 2 s before the run. PostgreSQL {} with fsync={}, synchronous_commit={}, wal_sync_method={}, full_page_writes={}, max_connections={}. RabbitMQ {}. Doors: {}{}. Wall time {:.0} s.\n",
        e.cpus,
        e.cpu_model,
        e.mem_total_mb,
        e.kernel,
        e.load_average_at_start,
        e.busy_cores_at_start,
        e.pg_version_short,
        e.pg_fsync,
        e.pg_synchronous_commit,
        e.pg_wal_sync_method,
        e.pg_full_page_writes,
        e.pg_max_connections,
        e.rabbitmq_version,
        r.doors.join(" + "),
        r.amqp_unavailable
            .as_deref()
            .map(|w| format!(" (AMQP door unavailable: {w})"))
            .unwrap_or_default(),
        r.wall_seconds
    );

    let _ = writeln!(s, "## Throughput\n");
    let (good, bad) = r.knee();
    if let Some(p) = r.sustained() {
        let _ = writeln!(
            s,
            "- Sustained phase: {:.0} orders/s offered for {:.0} s; {:.1} orders/s reached the shop in its steady window; {:.0} % of its orders at the shop within {} s of its end.",
            p.offered_rate,
            p.seconds,
            p.notified_rate_steady,
            p.completion_ratio * 100.0,
            r.args.grace
        );
    }
    match (good, bad) {
        (Some(g), Some(b)) => {
            let _ = writeln!(
                s,
                "- **Knee: between {:.0} and {:.0} orders/s** — the {:.0}/s step kept up; at {:.0}/s {} (the shop got {:.1} orders/s while it ran, work-queue depth {} → {}).",
                g.offered_rate,
                b.offered_rate,
                g.offered_rate,
                b.offered_rate,
                b.verdict,
                b.notified_rate_steady,
                b.work_depth_start,
                b.work_depth_end
            );
        }
        (None, Some(b)) => {
            let _ = writeln!(
                s,
                "- **Knee: below {:.0} orders/s** — the first step ({:.0}/s) already fell behind ({}).",
                b.offered_rate, b.offered_rate, b.verdict
            );
        }
        (Some(g), None) => {
            let _ = writeln!(
                s,
                "- No knee up to {:.0} orders/s (every step kept up).",
                g.offered_rate
            );
        }
        (None, None) => {}
    }
    if let Some(relay) = &r.relay {
        let sustained = r.sustained().map(|p| p.notified_rate_steady).unwrap_or(0.0);
        let best = good.map(|g| g.notified_rate_steady).unwrap_or(sustained);
        let _ = writeln!(
            s,
            "- Ceiling, same machine, same run: RabbitMQ relayed **{:.0} messages/s** through 5 quorum queues (persistent, confirmed, acked 1 KB; {:.0} queue writes/s; latency p50 {:.1} ms, p99 {:.1} ms).",
            relay.messages_per_s, relay.enqueues_per_s, relay.latency_ms.p50, relay.latency_ms.p99
        );
        let pgs: Vec<String> =
            r.pg.iter()
                .map(|pg| {
                    format!(
                        "**{:.0} commits/s over {} connection{}** (p50 {:.1} ms, p99 {:.1} ms)",
                        pg.commits_per_s,
                        pg.connections,
                        if pg.connections == 1 { "" } else { "s" },
                        pg.commit_latency_ms.p50,
                        pg.commit_latency_ms.p99
                    )
                })
                .collect();
        if !pgs.is_empty() {
            let _ = writeln!(
                s,
                "- PostgreSQL single-row commits (BEGIN; INSERT; COMMIT, durable): {}; one session waits for its own WAL flush, many share flushes (group commit).",
                pgs.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "- payhub end to end as a fraction of the relay ceiling: sustained {:.1} orders/s = **{:.1} %**; the fastest step that kept up completed {:.1} orders/s = **{:.1} %**.",
            sustained,
            100.0 * sustained / relay.messages_per_s.max(1e-9),
            best,
            100.0 * best / relay.messages_per_s.max(1e-9)
        );
    }
    let _ = writeln!(
        s,
        "\n| phase | offered/s | sent/s | at the shop /s (while it ran) | its orders at the shop by end + {} s | work-queue depth start → end (max) | depth slope /s | e2e payhub p50 / p99 ms | machine busy (cores) | kernel / other processes (cores) | verdict |\n|---|---:|---:|---:|---:|---|---:|---|---:|---|---|",
        r.args.grace
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} % | {} → {} ({}) | {:+.1} | {} / {} | {:.2} | {:.2} / {:.2} | {} |",
            p.label,
            p.offered_rate,
            p.sent_rate,
            p.notified_rate_steady,
            p.completion_ratio * 100.0,
            p.work_depth_start,
            p.work_depth_end,
            p.work_depth_max,
            p.work_depth_slope,
            f0(p.stages.end_to_end_payhub.p50),
            f0(p.stages.end_to_end_payhub.p99),
            p.machine_busy * r.environment.cpus as f64,
            p.kernel_cores,
            p.foreign_cores,
            p.verdict
        );
    }
    let busiest = r.phases.iter().map(|p| p.foreign_cores).fold(0.0, f64::max);
    if busiest > 0.25 {
        let _ = writeln!(
            s,
            "\n**The machine was not quiet**: other user-space processes (not payhub, its broker and database, the sandbox or the bench) used up to {busiest:.2} of {} cores during a phase; payhub's figures are understated by that much competition.",
            r.environment.cpus
        );
    }
    // Queue depths per phase: where the backlog builds.
    let mut queues: Vec<&String> = r.phases.iter().flat_map(|p| p.queue_depth_max.keys()).collect();
    queues.sort();
    queues.dedup();
    if !queues.is_empty() {
        let _ = writeln!(
            s,
            "\nHighest ready count per queue in each phase (sampled every second; retry and dead-letter queues listed only when not empty):\n"
        );
        let mut head = String::from("| queue |");
        let mut sep = String::from("|---|");
        for p in &r.phases {
            head += &format!(" {} |", p.label);
            sep += "---:|";
        }
        let _ = writeln!(s, "{head}\n{sep}");
        for q in queues {
            let side = q.ends_with(".retry") || q.ends_with(".dlq");
            if side
                && r.phases
                    .iter()
                    .all(|p| p.queue_depth_max.get(q).copied().unwrap_or(0) == 0)
            {
                continue;
            }
            let mut line = format!("| {q} |");
            for p in &r.phases {
                line += &format!(" {} |", p.queue_depth_max.get(q).copied().unwrap_or(0));
            }
            let _ = writeln!(s, "{line}");
        }
    }

    if let (_, Some(b)) = r.knee() {
        let _ = writeln!(s, "\n{}", saturation(r, b));
    }

    if let Some(p) = r.sustained() {
        let _ = writeln!(
            s,
            "\n## Latency, sustained phase ({:.0} orders/s)\n\nTimes from the submission count from when the schedule said to submit (open model). Stage times come from PostgreSQL (`orders.created_at`, `order_history.at`: each transaction's start) and the sandbox shop (`received_at` of the first verified `paid` webhook). The payer's delay is the bench's buyer noticing the charge (it polls `order_history` every 100 ms); **end to end, payhub** subtracts it.\n",
            p.offered_rate
        );
        s += &stage_table(&p.stages);
    }
    for p in r.phases.iter().skip(1) {
        let st = &p.stages;
        let _ = writeln!(
            s,
            "\n{}: accepted p99 {} ms, charge created p99 {} ms, paid p99 {} ms, notified p99 {} ms, e2e payhub p50/p99/max {}/{}/{} ms, HTTP p50/p99 {}/{} ms.",
            p.label,
            f0(st.accepted.p99),
            f0(st.charge_created.p99),
            f0(st.paid_after_pay.p99),
            f0(st.notified_after_paid.p99),
            f0(st.end_to_end_payhub.p50),
            f0(st.end_to_end_payhub.p99),
            f0(st.end_to_end_payhub.max),
            f0(st.http_request.p50),
            f0(st.http_request.p99)
        );
    }

    let _ = writeln!(
        s,
        "\n## Resources\n\nCPU from /proc/<pid>/stat (user + system), peak RSS from VmHWM. `postgresql` is every postgres process (the server is shared: other databases' work counts too), `rabbitmq` is beam.smp, `bench` is this load generator, buyer and sampler. The services and the sandbox start with the run, so their peak RSS is the run's; RabbitMQ's and PostgreSQL's is their peak since they started (the largest single process for PostgreSQL).\n\n| process | CPU s (sustained) | CPU ms / order | cores (sustained avg) | peak cores (1 s) | CPU s (all load) | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for res in &r.resources {
        let _ = writeln!(
            s,
            "| {}{} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
            res.process,
            if res.is_service { "" } else { " *" },
            res.cpu_s_sustained,
            res.cpu_ms_per_order,
            res.cores_sustained,
            res.peak_cores,
            res.cpu_s_total,
            res.peak_rss_mb
        );
    }
    let _ = writeln!(s, "\n\\* not a payhub service.");
    let per_order = |pred: &dyn Fn(&Resource) -> bool| -> f64 {
        r.resources.iter().filter(|x| pred(x)).map(|x| x.cpu_ms_per_order).sum()
    };
    let services = per_order(&|x| x.is_service);
    let pg_ms = per_order(&|x| x.process == "postgresql");
    let mq_ms = per_order(&|x| x.process == "rabbitmq");
    let harness = per_order(&|x| x.process == "sandbox" || x.process == "bench");
    let total = services + pg_ms + mq_ms;
    if total > 0.0 {
        let _ = writeln!(
            s,
            "\nCPU per order in the sustained phase: the six services {services:.1} ms + PostgreSQL {pg_ms:.1} ms + RabbitMQ {mq_ms:.1} ms = **{total:.1} ms** (the harness, sandbox and bench, another {harness:.1} ms). {} cores at that cost bound payhub at about **{:.0} orders/s** ({:.0} with the harness on the same cores).",
            r.environment.cpus,
            r.environment.cpus as f64 * 1000.0 / total,
            r.environment.cpus as f64 * 1000.0 / (total + harness)
        );
    }
    if let Some(d) = &r.pg_counters.sustained
        && let Some(p) = r.sustained()
    {
        let n = p.orders.max(1) as f64;
        let _ = writeln!(
            s,
            "\nPostgreSQL per order (sustained phase, bench database; transactions include read-only ones and the bench's own polling): {:.1} transactions, {:.1} rows inserted, {:.1} rows updated, {:.1} WAL records, {:.1} kB WAL; server-wide WAL flushes {:.2} per order.",
            d.xact_commit as f64 / n,
            d.tup_inserted as f64 / n,
            d.tup_updated as f64 / n,
            d.wal_records as f64 / n,
            d.wal_bytes as f64 / n / 1024.0,
            d.wal_sync as f64 / n
        );
    }
    let _ = writeln!(
        s,
        "\nService counters at the end (`/metrics`): \n\n| service | consumed ack | retry | dead-letter | requeue | published ok | publish errors | dependency waits |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (svc, m) in &r.metrics {
        let c = "payhub_messages_consumed_total";
        let p = "payhub_messages_published_total";
        let _ = writeln!(
            s,
            "| {svc} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            metric_sum(m, c, "outcome=\"ack\""),
            metric_sum(m, c, "outcome=\"retry\""),
            metric_sum(m, c, "outcome=\"dead_letter\""),
            metric_sum(m, c, "outcome=\"requeue\""),
            metric_sum(m, p, "result=\"ok\""),
            metric_sum(m, p, "") - metric_sum(m, p, "result=\"ok\""),
            metric_sum(m, "payhub_dependency_unavailable_total", "")
        );
    }
    if !r.handling.is_empty() {
        let sustained_s = r.sustained().map(|p| p.seconds).unwrap_or(0.0);
        let knee_s: f64 = r.phases.iter().skip(1).map(|p| p.seconds).sum();
        let in_flight = |count: f64, mean_ms: f64, secs: f64| {
            if secs > 0.0 && mean_ms.is_finite() {
                f1(count * mean_ms / 1000.0 / secs)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            s,
            "\nService-side time per message (delivery → ack) and per HTTP request, from the services' own histograms, per phase. A mean that climbs with the rate marks the stage that saturates first; *in flight* is count × mean ÷ the phase's load seconds (Little's law), to set against the consumer prefetch of 32:\n\n| service | what | sustained: count | mean ms | in flight | knee steps: count | mean ms | in flight |\n|---|---|---:|---:|---:|---:|---:|---:|"
        );
        for h in &r.handling {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} | {:.0} | {} | {} |",
                h.service,
                h.what,
                h.sustained_count,
                f1(h.sustained_mean_ms),
                in_flight(h.sustained_count, h.sustained_mean_ms, sustained_s),
                h.knee_count,
                f1(h.knee_mean_ms),
                in_flight(h.knee_count, h.knee_mean_ms, knee_s)
            );
        }
    }
    if !r.delivery_status.is_empty() {
        let _ = writeln!(
            s,
            "\nShop webhook deliveries (deliveries table): {}.",
            r.delivery_status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.drained {
        let _ = writeln!(
            s,
            "\n**Not every order reached the shop within the drain timeout ({} s)**; those count as lost above.",
            r.args.drain_timeout
        );
    }
    let noisy: Vec<String> = r
        .log_findings
        .iter()
        .filter(|f| f.errors + f.panics > 0)
        .map(|f| format!("{} {} ERROR line(s), {} panic(s)", f.process, f.errors, f.panics))
        .collect();
    if !noisy.is_empty() {
        let _ = writeln!(
            s,
            "\nLogs: {} (in a clean run these are a 404 when a consumer's first passive declare races the queue's creation at start, and lapin's \"invalid channel state: Closing\" at shutdown).",
            noisy.join("; ")
        );
    }
    for p in &r.shutdown_problems {
        let _ = writeln!(s, "\nShutdown: {p}");
    }
    let _ = writeln!(
        s,
        "\nFiles: result.json (every figure), orders.jsonl (every order's timestamps), timeline.svg (throughput, latency, queue depth and CPU per second), logs/ (each process's output)."
    );
    s
}

/// Where the first step that fell behind saturated: the machine, the
/// queue that grew, the busiest processes, the slowest consumer.
fn saturation(r: &BenchResult, b: &PhaseResult) -> String {
    let mut procs: Vec<(&String, f64)> = b.cores_during_load.iter().map(|(n, c)| (n, *c)).collect();
    procs.sort_by(|x, y| y.1.total_cmp(&x.1));
    let top: Vec<String> = procs.iter().take(4).map(|(n, c)| format!("{n} {c:.2}")).collect();
    let queue = b
        .queue_depth_max
        .iter()
        .max_by_key(|(_, d)| **d)
        .filter(|(_, d)| **d > 0)
        .map(|(q, d)| format!("`{q}` (up to {d} ready)"))
        .unwrap_or_else(|| "none".into());
    let slowest = r
        .handling
        .iter()
        .filter(|h| h.knee_mean_ms.is_finite())
        .max_by(|x, y| x.knee_mean_ms.total_cmp(&y.knee_mean_ms))
        .map(|h| {
            format!(
                "{} {} at {:.0} ms per message in the knee steps ({} ms sustained)",
                h.service,
                h.what,
                h.knee_mean_ms,
                f0(h.sustained_mean_ms)
            )
        })
        .unwrap_or_default();
    format!(
        "Where it saturates ({}): the machine was {:.2} of {} cores busy during the step; the backlog built in {queue}; busiest processes (cores): {}; slowest handling: {slowest}.",
        b.label,
        b.machine_busy * r.environment.cpus as f64,
        r.environment.cpus,
        top.join(", ")
    )
}

fn series(name: &str, color: &'static str, r: &BenchResult, f: impl Fn(&Second) -> Option<f64>) -> Series {
    Series {
        name: name.into(),
        color,
        points: r.timeline.iter().map(|sec| (sec.t, f(sec))).collect(),
    }
}

/// The timeline: throughput, latency percentiles, work-queue depth and CPU
/// per process, one point per second, phases shaded.
pub fn plot(r: &BenchResult) -> String {
    let bands: Vec<Band> = r
        .phases
        .iter()
        .map(|p| Band {
            start: (p.start - r.t0).max(0.0),
            end: (p.start - r.t0).max(0.0) + p.seconds,
            label: format!("{} ({})", p.label, p.verdict),
        })
        .collect();
    let x_max = r.timeline.last().map(|s| s.t + 1.0).unwrap_or(1.0);
    let throughput = Panel {
        title: "Throughput per second".into(),
        unit: "orders/s".into(),
        log_y: false,
        series: vec![
            series("submitted", PALETTE[7], r, |s| Some(f64::from(s.submitted))),
            series("accepted", PALETTE[0], r, |s| Some(f64::from(s.accepted))),
            series("paid", PALETTE[3], r, |s| Some(f64::from(s.paid))),
            series("shop notified", PALETTE[2], r, |s| Some(f64::from(s.notified))),
        ],
    };
    let latency = Panel {
        title: "End to end, payhub (submission → shop notified − payer delay), by second of notification".into(),
        unit: "ms, log scale".into(),
        log_y: true,
        series: vec![
            series("p50", PALETTE[0], r, |s| s.e2e_p50),
            series("p95", PALETTE[3], r, |s| s.e2e_p95),
            series("p99", PALETTE[1], r, |s| s.e2e_p99),
        ],
    };
    let mut qnames: Vec<String> = r
        .timeline
        .iter()
        .flat_map(|sec| sec.depths.keys().cloned())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    qnames.sort();
    let mut depth_series = vec![series("all work queues", "#000000", r, |s| {
        s.work_depth.map(|d| d as f64)
    })];
    for (i, q) in qnames.into_iter().enumerate() {
        let name = q.clone();
        depth_series.push(series(&name, PALETTE[i % PALETTE.len()], r, move |s| {
            s.work_depth.map(|_| f64::from(s.depths.get(&q).copied().unwrap_or(0)))
        }));
    }
    let depth = Panel {
        title: "Queues: ready messages".into(),
        unit: "messages".into(),
        log_y: false,
        series: depth_series,
    };
    let mut names: Vec<&str> = r.resources.iter().map(|x| x.process.as_str()).collect();
    names.sort_by_key(|n| {
        std::cmp::Reverse(
            (r.resources
                .iter()
                .find(|x| x.process == *n)
                .map(|x| x.cpu_s_total)
                .unwrap_or(0.0)
                * 1000.0) as i64,
        )
    });
    let mut cpu_series: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n = n.to_string();
            series(&n.clone(), PALETTE[i % PALETTE.len()], r, move |s| {
                s.cpu.get(&n).copied()
            })
        })
        .collect();
    let svc: Vec<String> = r.services.clone();
    cpu_series.insert(
        0,
        series("six services (sum)", "#006400", r, move |s| {
            Some(svc.iter().filter_map(|n| s.cpu.get(n)).sum::<f64>())
        }),
    );
    cpu_series.push(series("kernel (I/O, network)", "#bbbbbb", r, |s| s.kernel_cores));
    cpu_series.push(series("other processes", "#777777", r, |s| s.foreign_cores));
    cpu_series.push(series("machine (all CPUs = cores)", "#000000", r, |s| {
        s.machine_busy.map(|b| b * r.environment.cpus as f64)
    }));
    let cpu = Panel {
        title: "CPU per process".into(),
        unit: "cores".into(),
        log_y: false,
        series: cpu_series,
    };
    let subtitle = format!(
        "{} CPUs, PostgreSQL {} (fsync={}, synchronous_commit={}), RabbitMQ {}; doors {}; verification {}",
        r.environment.cpus,
        r.environment.pg_version_short,
        r.environment.pg_fsync,
        r.environment.pg_synchronous_commit,
        r.environment.rabbitmq_version,
        r.doors.join("+"),
        if r.verification.passed { "passed" } else { "FAILED" }
    );
    svg::render(
        &format!("payhub bench {}", r.timestamp),
        &subtitle,
        &[throughput, latency, depth, cpu],
        &bands,
        x_max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_panics_and_errors_in_logs() {
        let dir = std::env::temp_dir().join(format!("payhub-bench-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("payhub-order-updater.log"),
            "{\"level\":\"ERROR\",\"fields\":{}}\n{\"level\":\"WARN\"}\n\nthread 'tokio-rt-worker' (1) panicked at /x/sharded.rs:317:9:\nassertion failed: boom\nstack backtrace:\n  12: tracing::span::Span::new\n             at ./shared/queue/src/consumer.rs:386:16\n",
        )
        .expect("write log");
        std::fs::write(dir.join("payhub-ingress.log"), "{\"level\":\"INFO\"}\n").expect("write log");
        let f = scan_logs(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(f.len(), 2);
        let ou = f.iter().find(|x| x.process == "order-updater").expect("order-updater");
        assert_eq!((ou.errors, ou.warnings, ou.panics), (1, 1, 1));
        let p = ou.first_panic.as_deref().unwrap_or_default();
        assert!(
            p.contains("boom") && p.contains("./shared/queue/src/consumer.rs:386:16"),
            "{p}"
        );
        assert_eq!(f.iter().find(|x| x.process == "ingress").map(|x| x.panics), Some(0));
    }
}
