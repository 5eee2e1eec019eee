//! The same machine's ceilings, measured in the same run: RabbitMQ relaying
//! persistent, confirmed, acked 1 KB messages through five quorum queues,
//! and PostgreSQL's single-row commit rate.

use crate::stats::{Summary, now_unix};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize)]
pub struct RelayResult {
    pub queues: usize,
    pub message_bytes: usize,
    pub prefetch: u16,
    pub in_flight_limit: usize,
    pub measured_seconds: f64,
    /// Messages that made it through every queue, per second.
    pub messages_per_s: f64,
    /// Queue writes per second (messages × queues).
    pub enqueues_per_s: f64,
    /// Time from the first publish to the last consumer's ack, ms.
    pub latency_ms: Summary,
    pub errors: u64,
}

fn quorum_args() -> FieldTable {
    // Like payhub's work queues (shared/queue/src/topology.rs), minus the
    // dead-lettering, which a relay never exercises.
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    t.insert("x-delivery-limit".into(), AMQPValue::LongInt(5));
    t
}

async fn publish_confirmed(ch: &lapin::Channel, queue: &str, body: &[u8]) -> bool {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into());
    let Ok(pc) = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
    else {
        return false;
    };
    matches!(pc.await, Ok(Confirmation::Ack(None)))
}

/// A producer publishes into queue 1; each of hops 1..n-1 consumes queue i,
/// publishes the message to queue i+1, waits for the broker's confirm and
/// only then acks (what every payhub consumer does per event); a last
/// consumer acks queue n. Each hop has its own connection (a service), a
/// prefetch like payhub's, and handles its deliveries concurrently. At most
/// `in_flight` messages are in the chain at once, so the queues stay short and
/// the figure is throughput, not how fast a backlog can be built.
pub async fn relay(
    amqp_url: &str,
    prefix: &str,
    queues: usize,
    prefetch: u16,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<RelayResult> {
    const BYTES: usize = 1024;
    let names: Vec<String> = (1..=queues).map(|i| format!("{prefix}relay.{i}")).collect();
    let setup = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let sch = setup.create_channel().await?;
    for q in &names {
        let _ = sch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let sch = setup.create_channel().await?;
    for q in &names {
        sch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum_args(),
        )
        .await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let measuring = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut conns = Vec::new();
    let mut tasks = Vec::new();

    // Hops and the final consumer.
    for i in 0..queues {
        let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
        let cch = conn.create_channel().await?;
        cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let pch = conn.create_channel().await?;
        pch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut consumer = cch
            .basic_consume(
                names[i].as_str().into(),
                format!("relay-{i}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let next = names.get(i + 1).cloned();
        let (delivered, errors, latencies, measuring, permits) = (
            delivered.clone(),
            errors.clone(),
            latencies.clone(),
            measuring.clone(),
            permits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                let Ok(d) = d else { break };
                let pch = pch.clone();
                let next = next.clone();
                let (delivered, errors, latencies, measuring, permits) = (
                    delivered.clone(),
                    errors.clone(),
                    latencies.clone(),
                    measuring.clone(),
                    permits.clone(),
                );
                tokio::spawn(async move {
                    if let Some(next) = next {
                        if !publish_confirmed(&pch, &next, &d.data).await {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        if d.acker.ack(BasicAckOptions::default()).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if measuring.load(Ordering::Relaxed) {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&d.data[..8]);
                            let sent = f64::from_le_bytes(ts);
                            if let Ok(mut l) = latencies.lock() {
                                l.push((now_unix() - sent) * 1000.0);
                            }
                        }
                        permits.add_permits(1);
                    }
                });
            }
        }));
        conns.push(conn);
    }

    // The producer.
    let pconn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let pch = pconn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let first = names[0].clone();
    let producer = {
        let (stop, errors, permits) = (stop.clone(), errors.clone(), permits.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(p) = permits.acquire().await else { break };
                p.forget();
                let mut body = vec![b'x'; BYTES];
                body[..8].copy_from_slice(&now_unix().to_le_bytes());
                let (pch, first, errors) = (pch.clone(), first.clone(), errors.clone());
                tokio::spawn(async move {
                    if !publish_confirmed(&pch, &first, &body).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        })
    };

    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    permits.add_permits(in_flight);
    let _ = producer.await;
    // Let the chain empty, then take it down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in &tasks {
        t.abort();
    }
    for c in conns {
        let _ = c.close(200, "done".into()).await;
    }
    let _ = pconn.close(200, "done".into()).await;
    let sch = setup.create_channel().await?;
    for q in &names {
        let _ = sch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = setup.close(200, "done".into()).await;
    let lat = latencies
        .lock()
        .map(|l| Summary::of(l.iter().copied()))
        .unwrap_or_default();
    Ok(RelayResult {
        queues,
        message_bytes: BYTES,
        prefetch,
        in_flight_limit: in_flight,
        measured_seconds: secs,
        messages_per_s: n as f64 / secs,
        enqueues_per_s: n as f64 * queues as f64 / secs,
        latency_ms: lat,
        errors: errors.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PgResult {
    pub connections: u32,
    pub measured_seconds: f64,
    pub commits_per_s: f64,
    pub commit_latency_ms: Summary,
    pub errors: u64,
}

/// `connections` sessions, each in a loop: BEGIN; INSERT one row; COMMIT,
/// with the server's durability settings as they are.
pub async fn pg_commits(
    database_url: &str,
    connections: u32,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<PgResult> {
    use sqlx::Connection;
    let mut setup = sqlx::PgConnection::connect(database_url).await?;
    sqlx::query("DROP TABLE IF EXISTS bench_commit_probe")
        .execute(&mut setup)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_commit_probe (id bigserial PRIMARY KEY, worker int NOT NULL, payload text NOT NULL,
                                          at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut setup)
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..connections {
        let mut conn = sqlx::PgConnection::connect(database_url).await?;
        let (stop, measuring, errors) = (stop.clone(), measuring.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let payload = "x".repeat(200);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = async {
                    let mut tx = conn.begin().await?;
                    sqlx::query("INSERT INTO bench_commit_probe (worker, payload) VALUES ($1, $2)")
                        .bind(w as i32)
                        .bind(&payload)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                }
                .await;
                match r {
                    Ok(()) if measuring.load(Ordering::Relaxed) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok(()) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let _ = conn.close().await;
            lat
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    sqlx::query("DROP TABLE IF EXISTS bench_commit_probe")
        .execute(&mut setup)
        .await?;
    let _ = setup.close().await;
    Ok(PgResult {
        connections,
        measured_seconds: secs,
        commits_per_s: all.len() as f64 / secs,
        commit_latency_ms: Summary::of(all),
        errors: errors.load(Ordering::Relaxed),
    })
}
