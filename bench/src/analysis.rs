//! What happened to every order, read back from PostgreSQL (orders,
//! order_history, deliveries) and the sandbox's shop endpoint (what the shop
//! received, and whether its signature verified); the verification pass;
//! per-stage latencies, the knee, and the per-second timeline.

use crate::load::{Door, Offered, Payment, Sample, Submission};
use crate::stats::{Summary, slope, unix};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// One order's story, every time as Unix seconds.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRecord {
    pub cid: String,
    pub door: Door,
    pub phase: usize,
    pub intended: f64,
    pub sent: f64,
    pub answered: f64,
    pub submit_ok: bool,
    pub outcome: String,
    pub order_id: Option<Uuid>,
    /// orders.created_at (ingress's transaction).
    pub accepted_at: Option<f64>,
    /// order_history.at of `awaiting_payment` (the charge exists).
    pub awaiting_at: Option<f64>,
    pub pay_sent: Option<f64>,
    pub pay_resends: u32,
    pub pay_error: Option<String>,
    /// order_history.at of the (first) `paid` entry.
    pub paid_at: Option<f64>,
    pub paid_rows: usize,
    /// received_at of the first verified `paid` webhook at the shop.
    pub notified_at: Option<f64>,
    /// Distinct webhook-ids of `paid` webhooks the shop received.
    pub paid_webhook_ids: Vec<String>,
    /// `paid` webhooks received in all (retries of one id included).
    pub paid_webhooks_received: usize,
    pub paid_webhooks_unverified: usize,
    /// deliveries.delivered_at of the shop webhook the shop saw first.
    pub delivery_delivered_at: Option<f64>,
}

impl OrderRecord {
    /// What the buyer's own delay was: charge visible -> pay request sent.
    pub fn payer_delay(&self) -> Option<f64> {
        Some(self.pay_sent? - self.awaiting_at?)
    }
    /// Submission -> shop notified, wall clock (includes the payer's delay).
    pub fn e2e_wall(&self) -> Option<f64> {
        Some(self.notified_at? - self.intended)
    }
    /// Submission -> shop notified minus the payer's delay: payhub's time.
    pub fn e2e_payhub(&self) -> Option<f64> {
        Some(self.e2e_wall()? - self.payer_delay()?)
    }
}

/// A shop webhook as the sandbox recorded it.
#[derive(Debug, Clone)]
pub struct Hook {
    pub id: String,
    pub order_id: Option<Uuid>,
    pub cid: Option<String>,
    pub typ: String,
    pub status: Option<String>,
    pub verified: bool,
    pub received_at: f64,
}

pub fn parse_hooks(v: &Value) -> Vec<Hook> {
    let Some(list) = v["webhooks"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|h| {
            let body: Value = h["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let received_at = h["received_at"]
                .as_str()
                .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
                .map(unix)
                .unwrap_or(f64::NAN);
            Hook {
                id: h["id"].as_str().unwrap_or_default().to_string(),
                order_id: body["data"]["orderId"].as_str().and_then(|s| Uuid::parse_str(s).ok()),
                cid: body["data"]["correlationID"].as_str().map(str::to_string),
                typ: body["type"].as_str().unwrap_or_default().to_string(),
                status: body["data"]["status"].as_str().map(str::to_string),
                verified: h["verified"].as_bool().unwrap_or(false),
                received_at,
            }
        })
        .collect()
}

/// Everything read back after the run.
pub struct Readback {
    /// correlation_id -> (order id, channel, created_at)
    pub orders: HashMap<String, (Uuid, String, f64)>,
    /// order id -> [(to_status, at)] in id order
    pub history: HashMap<Uuid, Vec<(String, f64)>>,
    /// webhook_id -> delivered_at
    pub delivered_at: HashMap<String, f64>,
    /// shop webhook deliveries by status: delivered / failed / pending
    pub delivery_status: BTreeMap<String, u64>,
    pub hooks: Vec<Hook>,
}

pub async fn read_back(pool: &sqlx::PgPool, sandbox_url: &str, http: &reqwest::Client) -> anyhow::Result<Readback> {
    let rows: Vec<(Uuid, String, String, time::OffsetDateTime)> =
        sqlx::query_as("SELECT id, correlation_id, channel, created_at FROM orders")
            .fetch_all(pool)
            .await?;
    let orders = rows
        .into_iter()
        .map(|(id, cid, ch, at)| (cid, (id, ch, unix(at))))
        .collect();
    let rows: Vec<(Uuid, String, time::OffsetDateTime)> =
        sqlx::query_as("SELECT order_id, to_status, at FROM order_history ORDER BY id")
            .fetch_all(pool)
            .await?;
    let mut history: HashMap<Uuid, Vec<(String, f64)>> = HashMap::new();
    for (id, to, at) in rows {
        history.entry(id).or_default().push((to, unix(at)));
    }
    let rows: Vec<(Option<String>, String, Option<time::OffsetDateTime>)> =
        sqlx::query_as("SELECT webhook_id, status, delivered_at FROM deliveries WHERE kind = 'shop_webhook'")
            .fetch_all(pool)
            .await?;
    let mut delivered_at = HashMap::new();
    let mut delivery_status = BTreeMap::new();
    for (id, status, at) in rows {
        *delivery_status.entry(status).or_insert(0) += 1;
        if let (Some(id), Some(at)) = (id, at) {
            delivered_at.insert(id, unix(at));
        }
    }
    let v: Value = http
        .get(format!("{sandbox_url}/sandbox/shop/webhooks"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Readback {
        orders,
        history,
        delivered_at,
        delivery_status,
        hooks: parse_hooks(&v),
    })
}

pub fn records(subs: &[Submission], payments: &[Payment], rb: &Readback) -> Vec<OrderRecord> {
    let pay: HashMap<Uuid, &Payment> = payments.iter().map(|p| (p.order_id, p)).collect();
    let mut hooks: HashMap<Uuid, Vec<&Hook>> = HashMap::new();
    for h in &rb.hooks {
        if h.status.as_deref() == Some("paid")
            && h.typ == "order.status_changed"
            && let Some(o) = h.order_id
        {
            hooks.entry(o).or_default().push(h);
        }
    }
    subs.iter()
        .map(|s| {
            let db = rb.orders.get(&s.cid);
            let order_id = db.map(|d| d.0).or(s.order_id);
            let hist = order_id.and_then(|id| rb.history.get(&id));
            let at = |status: &str| hist.and_then(|h| h.iter().find(|(to, _)| to == status).map(|(_, at)| *at));
            let paid_rows = hist
                .map(|h| h.iter().filter(|(to, _)| to == "paid").count())
                .unwrap_or(0);
            let p = order_id.and_then(|id| pay.get(&id));
            let hs: &[&Hook] = order_id.and_then(|id| hooks.get(&id)).map(Vec::as_slice).unwrap_or(&[]);
            let mut ids: Vec<String> = hs
                .iter()
                .map(|h| h.id.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            ids.sort();
            let first = hs
                .iter()
                .filter(|h| h.verified)
                .min_by(|a, b| a.received_at.total_cmp(&b.received_at));
            OrderRecord {
                cid: s.cid.clone(),
                door: s.door,
                phase: s.phase,
                intended: s.intended,
                sent: s.sent,
                answered: s.answered,
                submit_ok: s.ok,
                outcome: s.outcome.clone(),
                order_id,
                accepted_at: db.map(|d| d.2),
                awaiting_at: at("awaiting_payment"),
                pay_sent: p.map(|p| p.sent),
                pay_resends: p.map(|p| p.resends).unwrap_or(0),
                pay_error: p.filter(|p| !p.ok).and_then(|p| p.error.clone()),
                paid_at: at("paid"),
                paid_rows,
                notified_at: first.map(|h| h.received_at),
                paid_webhook_ids: ids,
                paid_webhooks_received: hs.len(),
                paid_webhooks_unverified: hs.iter().filter(|h| !h.verified).count(),
                delivery_delivered_at: first.and_then(|h| rb.delivered_at.get(&h.id).copied()),
            }
        })
        .collect()
}

/// orders.jsonl: one line per order, every timestamp.
pub fn write_jsonl(path: &std::path::Path, recs: &[OrderRecord]) -> anyhow::Result<()> {
    let mut lines = String::new();
    for r in recs {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    std::fs::write(path, lines)?;
    Ok(())
}

/// The verification pass: anything lost or duplicated fails the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub submitted: usize,
    /// The door refused or failed (HTTP not 201, publish not confirmed).
    pub door_errors: usize,
    /// Confirmed at the door but no order row exists.
    pub lost_before_db: usize,
    pub never_paid: usize,
    pub never_notified: usize,
    /// More than one `paid` history row for one order.
    pub duplicate_paid: usize,
    /// Two or more different webhook-ids of `paid` for one order.
    pub duplicate_notified: usize,
    /// `paid` webhooks whose signature did not verify.
    pub unverified_webhooks: usize,
    /// The same webhook-id received more than once (a redelivery; allowed).
    pub webhook_redeliveries: usize,
    /// Payments whose webhook was resent after a 503 / no answer.
    pub payment_resends: u64,
    pub payment_errors: usize,
    /// Orders in the database the bench did not submit.
    pub unexpected_orders: usize,
    /// `order.rejected` webhooks (an AMQP order refused).
    pub rejected_webhooks: usize,
    pub door_error_examples: Vec<String>,
    pub lost_examples: Vec<String>,
    pub passed: bool,
}

pub fn verify(recs: &[OrderRecord], rb: &Readback) -> Verification {
    let mut v = Verification {
        submitted: recs.len(),
        ..Default::default()
    };
    let submitted: HashSet<&str> = recs.iter().map(|r| r.cid.as_str()).collect();
    v.unexpected_orders = rb.orders.keys().filter(|c| !submitted.contains(c.as_str())).count();
    v.rejected_webhooks = rb.hooks.iter().filter(|h| h.typ == "order.rejected").count();
    for r in recs {
        if !r.submit_ok {
            v.door_errors += 1;
            if v.door_error_examples.len() < 5 {
                v.door_error_examples
                    .push(format!("{} ({}): {}", r.cid, r.door.name(), r.outcome));
            }
            continue;
        }
        let mut lost = None;
        if r.accepted_at.is_none() {
            v.lost_before_db += 1;
            lost = Some("no order row");
        } else if r.paid_rows == 0 {
            v.never_paid += 1;
            lost = Some("never paid");
        } else if r.notified_at.is_none() {
            v.never_notified += 1;
            lost = Some("shop never notified of paid");
        }
        if let Some(why) = lost
            && v.lost_examples.len() < 10
        {
            let last = r
                .order_id
                .and_then(|id| rb.history.get(&id))
                .and_then(|h| h.last().map(|x| x.0.clone()))
                .unwrap_or_else(|| "-".into());
            v.lost_examples.push(format!(
                "{} ({}): {why}; last status {last}{}",
                r.cid,
                r.door.name(),
                r.pay_error
                    .as_deref()
                    .map(|e| format!("; payment: {e}"))
                    .unwrap_or_default()
            ));
        }
        if r.paid_rows > 1 {
            v.duplicate_paid += 1;
        }
        if r.paid_webhook_ids.len() > 1 {
            v.duplicate_notified += 1;
        }
        v.unverified_webhooks += r.paid_webhooks_unverified;
        v.webhook_redeliveries += r.paid_webhooks_received.saturating_sub(r.paid_webhook_ids.len());
        v.payment_resends += u64::from(r.pay_resends);
        if r.pay_error.is_some() {
            v.payment_errors += 1;
        }
    }
    v.passed = v.door_errors == 0
        && v.lost_before_db == 0
        && v.never_paid == 0
        && v.never_notified == 0
        && v.duplicate_paid == 0
        && v.duplicate_notified == 0
        && v.unverified_webhooks == 0;
    v
}

/// Per-stage latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    pub orders: usize,
    /// HTTP: request sent -> answer read (client side, per request).
    pub http_request: Summary,
    /// AMQP: publish -> broker confirm (client side).
    pub amqp_publish_confirm: Summary,
    /// Schedule -> request actually sent (the generator's own lag).
    pub generator_lag: Summary,
    /// Submission -> order row (orders.created_at).
    pub accepted: Summary,
    /// Submission -> `awaiting_payment` (charge created at the provider).
    pub charge_created: Summary,
    /// `awaiting_payment` -> pay request sent: the bench's buyer, not payhub.
    pub payer_delay: Summary,
    /// Pay request sent -> `paid` (provider webhook, webhook-verifier, order-updater).
    pub paid_after_pay: Summary,
    /// `paid` -> shop received the signed `paid` webhook (notifier).
    pub notified_after_paid: Summary,
    /// Submission -> shop notified, minus the payer's delay: payhub's own time.
    pub end_to_end_payhub: Summary,
    /// Submission -> shop notified, wall clock, payer's delay included.
    pub end_to_end_wall: Summary,
    /// Same as end_to_end_payhub, per door.
    pub end_to_end_payhub_by_door: BTreeMap<String, Summary>,
    pub accepted_by_door: BTreeMap<String, Summary>,
}

fn diff(later: Option<f64>, earlier: Option<f64>) -> Option<f64> {
    Some(later? - earlier?)
}

fn ms(x: Option<f64>) -> f64 {
    x.map(|v| v * 1000.0).unwrap_or(f64::NAN)
}

pub fn stages<'a>(recs: impl IntoIterator<Item = &'a OrderRecord>) -> Stages {
    let recs: Vec<&OrderRecord> = recs.into_iter().filter(|r| r.submit_ok).collect();
    let by_door = |f: &dyn Fn(&OrderRecord) -> f64| -> BTreeMap<String, Summary> {
        let mut m: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &recs {
            m.entry(r.door.name().to_string()).or_default().push(f(r));
        }
        m.into_iter().map(|(k, v)| (k, Summary::of(v))).collect()
    };
    let e2e = |r: &OrderRecord| ms(r.e2e_payhub());
    let acc = |r: &OrderRecord| ms(r.accepted_at.map(|a| a - r.intended));
    Stages {
        orders: recs.len(),
        http_request: Summary::of(
            recs.iter()
                .filter(|r| r.door == Door::Http)
                .map(|r| (r.answered - r.sent) * 1000.0),
        ),
        amqp_publish_confirm: Summary::of(
            recs.iter()
                .filter(|r| r.door == Door::Amqp)
                .map(|r| (r.answered - r.sent) * 1000.0),
        ),
        generator_lag: Summary::of(recs.iter().map(|r| (r.sent - r.intended) * 1000.0)),
        accepted: Summary::of(recs.iter().map(|r| acc(r))),
        charge_created: Summary::of(recs.iter().map(|r| ms(r.awaiting_at.map(|a| a - r.intended)))),
        payer_delay: Summary::of(recs.iter().map(|r| ms(r.payer_delay()))),
        paid_after_pay: Summary::of(recs.iter().map(|r| ms(diff(r.paid_at, r.pay_sent)))),
        notified_after_paid: Summary::of(recs.iter().map(|r| ms(diff(r.notified_at, r.paid_at)))),
        end_to_end_payhub: Summary::of(recs.iter().map(|r| e2e(r))),
        end_to_end_wall: Summary::of(recs.iter().map(|r| ms(r.e2e_wall()))),
        end_to_end_payhub_by_door: by_door(&e2e),
        accepted_by_door: by_door(&acc),
    }
}

/// Total ready messages in the work queues in one sample.
pub fn work_depth(s: &Sample) -> u64 {
    s.depths
        .iter()
        .filter(|(k, _)| !k.ends_with(".retry") && !k.ends_with(".dlq"))
        .map(|(_, v)| u64::from(*v))
        .sum()
}

/// One phase of load: the sustained rate or one knee step.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub label: String,
    /// Unix time of the phase's first order.
    pub start: f64,
    pub offered_rate: f64,
    pub orders: u64,
    pub seconds: f64,
    /// Submissions actually sent per second (the generator kept up if ~offered).
    pub sent_rate: f64,
    /// Orders of this phase whose shop was notified by the phase's end + grace,
    /// per second of the phase.
    pub completion_rate: f64,
    pub completion_ratio: f64,
    /// Shop notifications (any order) per second while the phase's load ran,
    /// its first fifth (at most 5 s) left out for the pipeline to fill: the
    /// rate payhub completed orders at.
    pub notified_rate_steady: f64,
    pub work_depth_start: u64,
    pub work_depth_end: u64,
    pub work_depth_max: u64,
    /// Least-squares slope of the summed work-queue depth over the phase, messages/s.
    pub work_depth_slope: f64,
    pub depth_growing: bool,
    /// Highest ready count per queue during the phase (to its end + grace).
    pub queue_depth_max: BTreeMap<String, u32>,
    /// Ready count per queue at the phase's end.
    pub queue_depth_end: BTreeMap<String, u32>,
    /// Average cores other user-space processes on the machine used during the phase.
    pub foreign_cores: f64,
    /// Average cores the kernel used outside the watched processes.
    pub kernel_cores: f64,
    /// Average share of all CPUs busy during the phase's load (start to end).
    pub machine_busy: f64,
    pub stages: Stages,
    /// CPU seconds each process used from the phase's start to its end + grace.
    pub cpu_s: BTreeMap<String, f64>,
    /// Average cores each process used while the load ran (start to end).
    pub cores_during_load: BTreeMap<String, f64>,
    pub verdict: String,
}

/// Where a phase's steady window starts: a fifth of it (at most 5 s) in.
pub fn steady_from(start: f64, seconds: f64) -> f64 {
    start + (0.2 * seconds).min(5.0)
}

/// Whether a phase kept up. Backlog when the shop got fewer than
/// `threshold` × the offered rate per second while the load ran (steady
/// window), or fewer than `threshold` of the phase's orders by its end +
/// grace, or the work queues kept growing: a least-squares slope above 5 % of
/// the offered rate per second, ending above max(20, rate / 4) ready
/// messages. Generator-limited when the bench could not even send 95 % of
/// the rate. Returns (growing, verdict).
pub fn judge(
    rate: f64,
    sent_rate: f64,
    notified_rate: f64,
    completion_ratio: f64,
    depth_slope: f64,
    depth_end: u64,
    threshold: f64,
) -> (bool, String) {
    let growing = depth_slope > 0.05 * rate && depth_end as f64 > (rate / 4.0).max(20.0);
    let verdict = if sent_rate < 0.95 * rate {
        "generator-limited"
    } else if notified_rate < threshold * rate || completion_ratio < threshold || growing {
        "backlog"
    } else {
        "keeps up"
    };
    (growing, verdict.to_string())
}

#[allow(clippy::too_many_arguments)]
pub fn phase_result(
    off: &Offered,
    recs: &[OrderRecord],
    notified_times: &[f64],
    samples: &[Sample],
    grace: f64,
    threshold: f64,
    cpus: f64,
) -> PhaseResult {
    let mine: Vec<&OrderRecord> = recs.iter().filter(|r| r.phase == off.phase).collect();
    let seconds = (off.count as f64 / off.rate).max(1e-9);
    let end = off.start + seconds;
    let sent_in_window = mine.iter().filter(|r| r.sent <= end + 0.5).count();
    let completed = mine
        .iter()
        .filter(|r| r.notified_at.is_some_and(|t| t <= end + grace))
        .count();
    let steady_from = steady_from(off.start, seconds);
    let notified_steady = notified_times
        .iter()
        .filter(|t| **t >= steady_from && **t < end)
        .count();
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= off.start && s.t <= end + 0.5)
        .collect();
    let pts: Vec<(f64, f64)> = window.iter().map(|s| (s.t - off.start, work_depth(s) as f64)).collect();
    let depth_slope = slope(&pts);
    let depth_start = window.first().map(|s| work_depth(s)).unwrap_or(0);
    let depth_end = window.last().map(|s| work_depth(s)).unwrap_or(0);
    let depth_max = window.iter().map(|s| work_depth(s)).max().unwrap_or(0);
    let notified_rate_steady = notified_steady as f64 / (end - steady_from).max(1e-9);
    let completion_ratio = completed as f64 / (off.count.max(1)) as f64;
    let sent_rate = sent_in_window as f64 / seconds;
    let (depth_growing, verdict) = judge(
        off.rate,
        sent_rate,
        notified_rate_steady,
        completion_ratio,
        depth_slope,
        depth_end,
        threshold,
    );
    let mut queue_depth_max: BTreeMap<String, u32> = BTreeMap::new();
    for smp in samples.iter().filter(|x| x.t >= off.start && x.t <= end + grace + 0.5) {
        for (q, d) in &smp.depths {
            let e = queue_depth_max.entry(q.clone()).or_insert(0);
            *e = (*e).max(*d);
        }
    }
    let queue_depth_end = window.last().map(|x| x.depths.clone()).unwrap_or_default();
    let completion_rate = completed as f64 / seconds;
    let cpu_at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
    };
    let mut cpu_s = BTreeMap::new();
    if let (Some(a), Some(b)) = (cpu_at(off.start), cpu_at(end + grace)) {
        for (name, r) in &b.procs {
            let before = a.procs.get(name).map(|x| x.cpu_s).unwrap_or(0.0);
            cpu_s.insert(name.clone(), r.cpu_s - before);
        }
    }
    // Machine-level shares over the load itself (start to end).
    let busy: Vec<&Sample> = samples.iter().filter(|x| x.t > off.start && x.t <= end + 0.5).collect();
    let machine_busy = busy.iter().map(|x| x.machine_busy).sum::<f64>() / busy.len().max(1) as f64;
    let mut cores_during_load: BTreeMap<String, f64> = BTreeMap::new();
    let (foreign_cores, kernel_cores) = match (cpu_at(off.start), cpu_at(end)) {
        (Some(a), Some(b)) if b.t > a.t => {
            let dt = b.t - a.t;
            for (n, r) in &b.procs {
                let before = a.procs.get(n).map(|x| x.cpu_s).unwrap_or(r.cpu_s);
                cores_during_load.insert(n.clone(), (r.cpu_s - before) / dt);
            }
            let ours: f64 = cores_during_load.values().sum();
            let f = ((b.foreign_cpu_s - a.foreign_cpu_s) / dt).max(0.0);
            (f, (machine_busy * cpus - ours - f).max(0.0))
        }
        _ => (0.0, 0.0),
    };
    PhaseResult {
        label: off.label.clone(),
        start: off.start,
        offered_rate: off.rate,
        orders: off.count,
        seconds,
        sent_rate,
        completion_rate,
        completion_ratio,
        notified_rate_steady,
        work_depth_start: depth_start,
        work_depth_end: depth_end,
        work_depth_max: depth_max,
        work_depth_slope: depth_slope,
        depth_growing,
        queue_depth_max,
        queue_depth_end,
        foreign_cores,
        kernel_cores,
        machine_busy,
        stages: stages(mine.iter().copied()),
        cpu_s,
        cores_during_load,
        verdict,
    }
}

/// One second of the run, for the plot.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: f64,
    pub submitted: u32,
    pub accepted: u32,
    pub paid: u32,
    pub notified: u32,
    /// Percentiles of end_to_end_payhub (ms) of the orders notified in this second.
    pub e2e_p50: Option<f64>,
    pub e2e_p95: Option<f64>,
    pub e2e_p99: Option<f64>,
    pub work_depth: Option<u64>,
    /// Ready messages per queue (work queues by base name; retry / dlq only when not empty).
    pub depths: BTreeMap<String, u32>,
    /// CPU share (1.0 = one core) per process in this second.
    pub cpu: BTreeMap<String, f64>,
    pub machine_busy: Option<f64>,
    /// Cores used by user-space processes the bench does not watch: other
    /// work on the machine.
    pub foreign_cores: Option<f64>,
    /// Cores used by the kernel outside any watched process (kernel threads,
    /// interrupts: disk flushes and loopback networking of the load itself).
    pub kernel_cores: Option<f64>,
}

pub fn timeline(recs: &[OrderRecord], samples: &[Sample], t0: f64, t1: f64, cpus: f64) -> Vec<Second> {
    let n = ((t1 - t0).ceil().max(1.0)) as usize;
    let mut secs: Vec<Second> = (0..n)
        .map(|i| Second {
            t: i as f64,
            submitted: 0,
            accepted: 0,
            paid: 0,
            notified: 0,
            e2e_p50: None,
            e2e_p95: None,
            e2e_p99: None,
            work_depth: None,
            depths: BTreeMap::new(),
            cpu: BTreeMap::new(),
            machine_busy: None,
            foreign_cores: None,
            kernel_cores: None,
        })
        .collect();
    let idx = |t: f64| -> Option<usize> {
        let i = (t - t0).floor();
        (i >= 0.0 && (i as usize) < n).then_some(i as usize)
    };
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in recs.iter().filter(|r| r.submit_ok) {
        if let Some(i) = idx(r.intended) {
            secs[i].submitted += 1;
        }
        if let Some(i) = r.accepted_at.and_then(idx) {
            secs[i].accepted += 1;
        }
        if let Some(i) = r.paid_at.and_then(idx) {
            secs[i].paid += 1;
        }
        if let Some(i) = r.notified_at.and_then(idx) {
            secs[i].notified += 1;
            if let Some(e) = r.e2e_payhub() {
                lat[i].push(e * 1000.0);
            }
        }
    }
    for (i, l) in lat.into_iter().enumerate() {
        if !l.is_empty() {
            let s = Summary::of(l);
            secs[i].e2e_p50 = Some(s.p50);
            secs[i].e2e_p95 = Some(s.p95);
            secs[i].e2e_p99 = Some(s.p99);
        }
    }
    for w in samples.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if let Some(i) = idx(b.t) {
            secs[i].work_depth = Some(work_depth(b));
            secs[i].depths = b
                .depths
                .iter()
                .filter(|(k, v)| **v > 0 || !(k.ends_with(".retry") || k.ends_with(".dlq")))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            secs[i].machine_busy = Some(b.machine_busy);
            let dt = (b.t - a.t).max(1e-3);
            let mut ours = 0.0;
            for (name, r) in &b.procs {
                let before = a.procs.get(name).map(|x| x.cpu_s).unwrap_or(r.cpu_s);
                let c = ((r.cpu_s - before) / dt).max(0.0);
                ours += c;
                secs[i].cpu.insert(name.clone(), c);
            }
            let foreign = ((b.foreign_cpu_s - a.foreign_cpu_s) / dt).max(0.0);
            secs[i].foreign_cores = Some(foreign);
            secs[i].kernel_cores = Some((b.machine_busy * cpus - ours - foreign).max(0.0));
        }
    }
    secs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cid: &str) -> OrderRecord {
        OrderRecord {
            cid: cid.into(),
            door: Door::Http,
            phase: 0,
            intended: 100.0,
            sent: 100.001,
            answered: 100.01,
            submit_ok: true,
            outcome: "201".into(),
            order_id: Some(Uuid::nil()),
            accepted_at: Some(100.005),
            awaiting_at: Some(100.1),
            pay_sent: Some(100.15),
            pay_resends: 0,
            pay_error: None,
            paid_at: Some(100.2),
            paid_rows: 1,
            notified_at: Some(100.3),
            paid_webhook_ids: vec!["msg_1".into()],
            paid_webhooks_received: 1,
            paid_webhooks_unverified: 0,
            delivery_delivered_at: Some(100.3),
        }
    }

    fn readback(cids: &[&str]) -> Readback {
        Readback {
            orders: cids
                .iter()
                .map(|c| (c.to_string(), (Uuid::nil(), "api".into(), 100.005)))
                .collect(),
            history: HashMap::new(),
            delivered_at: HashMap::new(),
            delivery_status: BTreeMap::new(),
            hooks: Vec::new(),
        }
    }

    #[test]
    fn knee_judgement() {
        // Keeps up: everything at the shop, queues flat.
        assert_eq!(judge(40.0, 40.0, 39.5, 1.0, 0.3, 2, 0.95).1, "keeps up");
        // The shop got too little while the step ran.
        assert_eq!(judge(50.0, 50.0, 30.0, 1.0, 0.0, 0, 0.95).1, "backlog");
        // Queues growing steadily.
        assert_eq!(judge(40.0, 40.0, 39.0, 1.0, 9.2, 70, 0.95), (true, "backlog".into()));
        // A blip at the end is not growth.
        assert!(!judge(40.0, 40.0, 39.0, 1.0, 9.2, 12, 0.95).0);
        // The bench could not send the rate.
        assert_eq!(judge(400.0, 300.0, 300.0, 1.0, 0.0, 0, 0.95).1, "generator-limited");
    }

    #[test]
    fn payer_delay_is_taken_out() {
        let r = rec("a");
        assert!((r.e2e_wall().unwrap() - 0.3).abs() < 1e-9);
        assert!((r.e2e_payhub().unwrap() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn verification_counts_losses_and_duplicates() {
        let ok = rec("a");
        assert!(verify(std::slice::from_ref(&ok), &readback(&["a"])).passed);

        let mut twice_paid = rec("b");
        twice_paid.paid_rows = 2;
        let mut two_ids = rec("c");
        two_ids.paid_webhook_ids.push("msg_2".into());
        two_ids.paid_webhooks_received = 2;
        let mut unnotified = rec("d");
        unnotified.notified_at = None;
        let mut unpaid = rec("e");
        unpaid.paid_rows = 0;
        unpaid.paid_at = None;
        let mut redelivered = rec("f");
        redelivered.paid_webhooks_received = 3;
        let v = verify(
            &[ok, twice_paid, two_ids, unnotified, unpaid, redelivered],
            &readback(&["a", "b", "c", "d", "e", "f", "zz"]),
        );
        assert!(!v.passed);
        assert_eq!(
            (v.duplicate_paid, v.duplicate_notified, v.never_notified, v.never_paid),
            (1, 1, 1, 1)
        );
        assert_eq!((v.webhook_redeliveries, v.unexpected_orders), (2, 1));

        let mut refused = rec("g");
        refused.submit_ok = false;
        let v = verify(&[refused], &readback(&[]));
        assert_eq!((v.door_errors, v.passed), (1, false));
    }

    #[test]
    fn hooks_parse_from_the_sandbox_listing() {
        let body = serde_json::json!({"type": "order.status_changed",
            "data": {"orderId": "00000000-0000-0000-0000-000000000001", "status": "paid"}});
        let v = serde_json::json!({"webhooks": [{"id": "msg_1", "body": body.to_string(), "verified": true,
            "received_at": "2026-11-23T15:15:35.25Z"}]});
        let h = parse_hooks(&v);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status.as_deref(), Some("paid"));
        assert!(h[0].verified);
        assert!((h[0].received_at.fract() - 0.25).abs() < 1e-6);
    }
}
