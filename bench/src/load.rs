//! The open-model load: orders arrive on a fixed schedule whatever the system
//! does (a slow payhub cannot slow the generator down and hide its latency),
//! through the HTTP API and as AMQP order messages; the buyer who pays every
//! charge in the sandbox; and the once-a-second sampler (queue depths, CPU,
//! memory).

use crate::procstat::{self, Snapshot, Target};
use crate::stats::now_unix;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Confirmation};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken as StopToken;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// `POST /v1/orders` on ingress.
    Http,
    /// An order message on the shop-orders exchange, published with `user_id`.
    Amqp,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::Amqp => "amqp",
        }
    }
}

/// One order as the shop submitted it.
#[derive(Debug, Clone, Serialize)]
pub struct Submission {
    pub cid: String,
    pub door: Door,
    pub phase: usize,
    /// When the schedule said to submit (Unix s): latencies count from here,
    /// so a late generator cannot hide waiting time.
    pub intended: f64,
    /// When the request / publish actually left.
    pub sent: f64,
    /// When the HTTP answer (body read) or the broker's confirm arrived.
    pub answered: f64,
    pub ok: bool,
    /// HTTP status, `confirmed`, or the error.
    pub outcome: String,
    pub order_id: Option<Uuid>,
    /// Requests / publishes it took (more than 1 only when retrying).
    pub tries: u32,
}

/// A valid order (totals consistent), as the README's example.
pub fn order_body(correlation_id: &str) -> Value {
    serde_json::json!({
        "correlationID": correlation_id,
        "provider": "openpix",
        "items": [
            {"code": "0000123", "title": "Camiseta Branca Unissex", "description": "Tamanho: M", "price": 99.90, "qty": 2, "tax": 3.00, "total": 199.80},
            {"title": "Meia esportiva", "price": 19.99, "qty": 1, "total": 19.99}
        ],
        "freight": 15.00,
        "discount": 10.00,
        "total": 227.79,
        "customer": {
            "name": "Maria Oliveira",
            "email": "maria@example.com",
            "taxID": "470.436.220-50",
            "phone": "(41) 99876-5432",
            "birthDate": "1988-03-14"
        },
        "shippingAddress": {"street": "Rua Encantado", "number": "860", "neighborhood": "Centro", "city": "Dez de Maio", "state": "PR", "zipcode": "85920-970"}
    })
}

/// How orders get in.
pub struct Doors {
    http: reqwest::Client,
    /// `POST /v1/orders` of every ingress replica; retries take turns.
    orders_urls: Vec<String>,
    api_key: String,
    amqp: Option<AmqpDoor>,
    /// Retry a failed submission for this long, like a shop would (the
    /// chaos run); `None`: one try, a failure counts (the bench).
    retry_for: Option<Duration>,
    pub submissions: Mutex<Vec<Submission>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

struct AmqpDoor {
    url: String,
    /// The connection and its confirm-mode channel; opened again when the
    /// broker dropped them.
    link: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
    exchange: String,
    user: String,
}

impl AmqpDoor {
    async fn open(url: &str) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok((conn, channel))
    }

    /// The channel, reconnecting when the broker closed it.
    async fn channel(&self) -> anyhow::Result<lapin::Channel> {
        let mut link = self.link.lock().await;
        if let Some((conn, ch)) = link.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let (conn, ch) = AmqpDoor::open(&self.url).await?;
        *link = Some((conn, ch.clone()));
        Ok(ch)
    }
}

impl Doors {
    pub async fn connect(ingress_url: &str, api_key: &str, amqp: Option<(&str, &str, &str)>) -> anyhow::Result<Doors> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()?;
        let amqp = match amqp {
            Some((url, user, exchange)) => Some(AmqpDoor {
                url: url.to_string(),
                link: tokio::sync::Mutex::new(Some(AmqpDoor::open(url).await?)),
                exchange: exchange.to_string(),
                user: user.to_string(),
            }),
            None => None,
        };
        Ok(Doors {
            http,
            orders_urls: vec![format!("{ingress_url}/v1/orders")],
            api_key: api_key.to_string(),
            amqp,
            retry_for: None,
            submissions: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    /// Submissions that fail are tried again (the next ingress replica, or
    /// the AMQP door reconnected) every 250 ms for up to `retry_for`, as a
    /// shop retries: the same correlationID is the same order.
    pub fn retrying(mut self, ingress_urls: &[String], retry_for: Duration) -> Doors {
        if !ingress_urls.is_empty() {
            self.orders_urls = ingress_urls.iter().map(|u| format!("{u}/v1/orders")).collect();
        }
        self.retry_for = Some(retry_for);
        self
    }

    async fn submit(&self, door: Door, cid: String, phase: usize, intended: f64) {
        let body = serde_json::to_vec(&order_body(&cid)).unwrap_or_default();
        let sent = now_unix();
        let deadline = self.retry_for.map(|d| Instant::now() + d);
        let mut tries: u32 = 0;
        let (ok, outcome, order_id) = loop {
            let (ok, outcome, order_id) = match door {
                Door::Http => {
                    self.submit_http(&self.orders_urls[tries as usize % self.orders_urls.len()], &body)
                        .await
                }
                Door::Amqp => self.submit_amqp(&cid, &body).await,
            };
            tries += 1;
            // Refusals (4xx) will not get better by retrying.
            let refused = outcome.len() == 3 && outcome.starts_with('4') && outcome != "429";
            match deadline {
                Some(d) if !ok && !refused && Instant::now() < d => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => break (ok, outcome, order_id),
            }
        };
        let answered = now_unix();
        let s = Submission {
            cid,
            door,
            phase,
            intended,
            sent,
            answered,
            ok,
            outcome,
            order_id,
            tries,
        };
        if let Ok(mut v) = self.submissions.lock() {
            v.push(s);
        }
    }

    async fn submit_http(&self, url: &str, body: &[u8]) -> (bool, String, Option<Uuid>) {
        let r = self
            .http
            .post(url)
            .bearer_auth(&self.api_key)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // A retry of an order that did get in is answered 200 with
                // `idempotent-replayed: true`: the same order, accepted.
                let replayed =
                    status == 200 && self.retry_for.is_some() && resp.headers().get("idempotent-replayed").is_some();
                let json: Option<Value> = resp.json().await.ok();
                let id = json
                    .as_ref()
                    .and_then(|j| j["id"].as_str())
                    .and_then(|s| Uuid::parse_str(s).ok());
                (status == 201 || replayed, status.to_string(), id)
            }
            Err(e) => (false, format!("http error: {e}"), None),
        }
    }

    async fn submit_amqp(&self, cid: &str, body: &[u8]) -> (bool, String, Option<Uuid>) {
        let Some(a) = &self.amqp else {
            return (false, "no AMQP door".into(), None);
        };
        let channel = match a.channel().await {
            Ok(c) => c,
            Err(e) => return (false, format!("connect error: {e:#}"), None),
        };
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(cid.into())
            .with_user_id(a.user.as_str().into());
        let publish = channel
            .basic_publish(
                a.exchange.as_str().into(),
                "orders.bench".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await;
        let confirm = match publish {
            Ok(c) => c.await,
            Err(e) => return (false, format!("publish error: {e}"), None),
        };
        match confirm {
            Ok(Confirmation::Ack(None)) => (true, "confirmed".into(), None),
            Ok(Confirmation::Ack(Some(_))) => (false, "unroutable (returned)".into(), None),
            Ok(Confirmation::Nack(_)) => (false, "nacked by the broker".into(), None),
            Ok(Confirmation::NotRequested) => (false, "confirms not enabled".into(), None),
            Err(e) => (false, format!("confirm error: {e}"), None),
        }
    }

    pub fn has_amqp(&self) -> bool {
        self.amqp.is_some()
    }
}

/// What one phase offered.
#[derive(Debug, Clone, Serialize)]
pub struct Offered {
    pub phase: usize,
    pub label: String,
    pub rate: f64,
    pub count: u64,
    pub start: f64,
    /// When the last order was due.
    pub end: f64,
}

/// Submits `count` orders at `rate` per second on a fixed schedule, the
/// doors taking turns; each submission runs in its own task, so a slow
/// answer never delays the next arrival.
pub async fn offer(
    doors: &Arc<Doors>,
    mix: &[Door],
    phase: usize,
    label: &str,
    rate: f64,
    count: u64,
    run_id: &str,
) -> Offered {
    let start_instant = Instant::now();
    let start = now_unix();
    let mut end = start;
    for i in 0..count {
        let due = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start_instant + due).await;
        let door = mix[(i as usize) % mix.len()];
        let cid = format!("bench-{run_id}-{phase}-{i}");
        let intended = start + due.as_secs_f64();
        end = intended;
        let d = doors.clone();
        let now = d.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        d.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::spawn(async move {
            d.submit(door, cid, phase, intended).await;
            d.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Offered {
        phase,
        label: label.to_string(),
        rate,
        count,
        start,
        end,
    }
}

/// The buyer: pays every charge once its order is `awaiting_payment`.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub order_id: Uuid,
    /// When the pay request left (the payer's own delay ends here).
    pub sent: f64,
    /// When the sandbox answered (it answers after webhook-verifier did).
    pub answered: f64,
    /// What webhook-verifier answered the (last) provider webhook.
    pub webhook_status: u16,
    /// Webhooks sent again after a 503 / no answer.
    pub resends: u32,
    pub ok: bool,
    pub error: Option<String>,
}

pub struct Payer {
    pool: sqlx::PgPool,
    http: reqwest::Client,
    sandbox_url: String,
    seen: Mutex<HashSet<Uuid>>,
    pub payments: Mutex<Vec<Payment>>,
    pub in_flight: AtomicUsize,
}

impl Payer {
    pub fn new(pool: sqlx::PgPool, sandbox_url: &str) -> anyhow::Result<Payer> {
        Ok(Payer {
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .build()?,
            sandbox_url: sandbox_url.to_string(),
            seen: Mutex::new(HashSet::new()),
            payments: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Watches order_history for `awaiting_payment` entries (every 100 ms
    /// past the last id seen; every 2 s again over the last 5,000 ids, for
    /// rows that committed out of id order; every 10 s over all orders) and
    /// pays each new one at once.
    pub async fn run(self: Arc<Self>, stop: StopToken) {
        let mut last_id: i64 = 0;
        let mut tick: u64 = 0;
        while !stop.is_cancelled() {
            let mut found: Vec<Uuid> = Vec::new();
            let rows: Result<Vec<(i64, Uuid, bool)>, _> = sqlx::query_as(
                "SELECT id, order_id, to_status = 'awaiting_payment' FROM order_history WHERE id > $1 ORDER BY id",
            )
            .bind(last_id)
            .fetch_all(&self.pool)
            .await;
            if let Ok(rows) = rows {
                for (id, order, awaiting) in rows {
                    last_id = last_id.max(id);
                    if awaiting {
                        found.push(order);
                    }
                }
            }
            if tick % 20 == 19 {
                let rows: Result<Vec<(Uuid,)>, _> = sqlx::query_as(
                    "SELECT order_id FROM order_history WHERE id > $1 AND to_status = 'awaiting_payment'",
                )
                .bind(last_id - 5000)
                .fetch_all(&self.pool)
                .await;
                found.extend(rows.unwrap_or_default().into_iter().map(|r| r.0));
            }
            if tick % 100 == 99 {
                let rows: Result<Vec<(Uuid,)>, _> =
                    sqlx::query_as("SELECT id FROM orders WHERE status = 'awaiting_payment'")
                        .fetch_all(&self.pool)
                        .await;
                found.extend(rows.unwrap_or_default().into_iter().map(|r| r.0));
            }
            for order in found {
                let new = self.seen.lock().map(|mut s| s.insert(order)).unwrap_or(false);
                if new {
                    let me = self.clone();
                    me.in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let p = me.pay(order).await;
                        if let Ok(mut v) = me.payments.lock() {
                            v.push(p);
                        }
                        me.in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
            tick += 1;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// `POST /sandbox/charges/{orderId}/pay`; while webhook-verifier answers
    /// 503 (or nothing), `POST .../resend` as the provider would, for up to
    /// two minutes.
    async fn pay(&self, order_id: Uuid) -> Payment {
        let sent = now_unix();
        let base = format!("{}/sandbox/charges/{order_id}", self.sandbox_url);
        let mut p = Payment {
            order_id,
            sent,
            answered: f64::NAN,
            webhook_status: 0,
            resends: 0,
            ok: false,
            error: None,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut url = format!("{base}/pay");
        loop {
            let r = self.http.post(&url).send().await;
            if p.answered.is_nan() {
                p.answered = now_unix();
            }
            match r {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    let hook = v["webhook"]["status"].as_u64().unwrap_or(0) as u16;
                    p.webhook_status = hook;
                    if status == 200 && (200..300).contains(&hook) {
                        p.ok = true;
                        return p;
                    }
                    // 502: the webhook got no answer; 200 with a 5xx webhook
                    // status: webhook-verifier could not take it now. Anything
                    // else will not get better by resending.
                    if !(status == 502 || (status == 200 && hook >= 500)) {
                        p.error = Some(format!("sandbox answered {status}: {v}"));
                        return p;
                    }
                    p.error = Some(format!("sandbox {status}, webhook {hook}"));
                }
                Err(e) => p.error = Some(format!("pay request failed: {e}")),
            }
            if Instant::now() > deadline {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            url = format!("{base}/resend");
            p.resends += 1;
        }
    }
}

/// Processes watched by name: RabbitMQ's VM and helpers, PostgreSQL.
const WATCHED_COMMS: &[&str] = &["beam.smp", "postgres", "epmd", "erl_child_setup", "inet_gethost"];

/// One sampler reading.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t: f64,
    /// Ready messages per queue (`<base>` or `<base>.retry` / `.dlq`).
    pub depths: BTreeMap<String, u32>,
    pub procs: Snapshot,
    /// Busy share of all CPUs since the previous sample (0..1).
    pub machine_busy: f64,
    /// Cumulative CPU seconds of user-space processes the bench does not watch.
    pub foreign_cpu_s: f64,
    /// Cumulative CPU seconds of kernel threads.
    pub kernel_threads_cpu_s: f64,
}

/// Reads, once a second, every queue's ready count (a passive queue.declare,
/// as the services' `payhub_queue_messages` gauge does, but every second
/// instead of every five), each process's CPU and memory, and the
/// machine's CPU.
pub async fn sample(
    amqp_url: String,
    queues: Vec<(String, &'static str, String)>,
    targets: Vec<(String, Target)>,
    ticks: f64,
    stop: StopToken,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let mut conn: Option<lapin::Connection> = None;
    let mut ch: Option<lapin::Channel> = None;
    let mut prev = procstat::machine_ticks();
    let excluded: HashSet<u32> = targets
        .iter()
        .filter_map(|(_, t)| match t {
            Target::Pid(p) => Some(*p),
            Target::Named(_) => None,
        })
        .collect();
    let start = Instant::now();
    let mut n: u32 = 0;
    loop {
        n += 1;
        let mut depths = BTreeMap::new();
        if ch.as_ref().is_none_or(|c| !c.status().connected()) {
            if conn.as_ref().is_none_or(|c| !c.status().connected()) {
                conn = lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default())
                    .await
                    .ok();
            }
            ch = match &conn {
                Some(c) => c.create_channel().await.ok(),
                None => None,
            };
        }
        if let Some(c) = &ch {
            for (base, kind, name) in &queues {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                match c.queue_declare(name.as_str().into(), passive, Default::default()).await {
                    Ok(q) => {
                        let key = if *kind == "work" {
                            base.clone()
                        } else {
                            format!("{base}.{kind}")
                        };
                        depths.insert(key, q.message_count());
                    }
                    Err(_) => break,
                }
            }
        }
        let procs = procstat::snapshot(&targets, ticks);
        let (foreign_cpu_s, kernel_threads_cpu_s) = procstat::others(&excluded, WATCHED_COMMS, ticks);
        let now_ticks = procstat::machine_ticks();
        let busy = (now_ticks.0.saturating_sub(prev.0)) as f64 / (now_ticks.1.saturating_sub(prev.1)).max(1) as f64;
        prev = now_ticks;
        if let Ok(mut v) = out.lock() {
            v.push(Sample {
                t: now_unix(),
                depths,
                procs,
                machine_busy: busy,
                foreign_cpu_s,
                kernel_threads_cpu_s,
            });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(start + Duration::from_secs(u64::from(n))) => {}
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, "done".into()).await;
    }
}
