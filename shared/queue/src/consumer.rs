//! The one worker loop every consuming service runs.

use crate::broker::{Broker, QueueError};
use crate::metrics;
use crate::topology::{QueueSpec, headers};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel};
use payhub_core::Envelope;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Deliveries this process moved (to the retry or dead-letter queue, or
/// back to their queue) whose original it may not have been able to ack:
/// `(queue, message identity, attempt)`. When the consume connection drops
/// between the copy's confirm and the ack, the broker redelivers the
/// original; finding it here, the consumer acks it unhandled, so only the
/// copy stays live. Bounded: the oldest entries are forgotten.
struct RecentMoves {
    order: std::collections::VecDeque<(String, String, u32)>,
    set: std::collections::HashSet<(String, String, u32)>,
}

const RECENT_MOVES: usize = 10_000;

static MOVED: std::sync::LazyLock<std::sync::Mutex<RecentMoves>> = std::sync::LazyLock::new(|| {
    std::sync::Mutex::new(RecentMoves {
        order: std::collections::VecDeque::new(),
        set: std::collections::HashSet::new(),
    })
});

/// A delivery's identity: the copy id payhub gave it, else its message id,
/// else a hash of its body.
fn identity(delivery: &Delivery) -> String {
    if let Some(copy) = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| header_str(h, headers::COPY_ID))
    {
        return format!("copy:{copy}");
    }
    match delivery.properties.message_id() {
        Some(id) => id.as_str().to_string(),
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            delivery.data.hash(&mut h);
            format!("body:{:016x}", h.finish())
        }
    }
}

fn remember_move(queue: &str, delivery: &Delivery, attempt: u32) {
    let key = (queue.to_string(), identity(delivery), attempt);
    let mut m = MOVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if m.set.insert(key.clone()) {
        m.order.push_back(key);
        while m.order.len() > RECENT_MOVES {
            if let Some(old) = m.order.pop_front() {
                m.set.remove(&old);
            }
        }
    }
}

fn was_moved(queue: &str, delivery: &Delivery, attempt: u32) -> bool {
    let key = (queue.to_string(), identity(delivery), attempt);
    MOVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .set
        .contains(&key)
}

/// How a consumer reads its deliveries.
pub trait Decode: Sized + Send + Sync + Clone + 'static {
    fn decode(delivery: &Delivery) -> Result<Self, String>;
    /// Bounded label for metrics and logs (the event type).
    fn kind(&self) -> &'static str;
    /// An id for logs (the event id, or the message id).
    fn id(&self) -> String;
    fn order_id(&self) -> Option<uuid::Uuid> {
        None
    }
}

impl Decode for Envelope {
    fn decode(delivery: &Delivery) -> Result<Self, String> {
        Envelope::from_json(&delivery.data).map_err(|e| e.to_string())
    }
    fn kind(&self) -> &'static str {
        Envelope::kind(self)
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn order_id(&self) -> Option<uuid::Uuid> {
        self.order_id
    }
}

/// A message a shop published, as the broker delivered it.
#[derive(Debug, Clone)]
pub struct ShopMessage {
    pub body: Vec<u8>,
    /// The AMQP `user-id` property. RabbitMQ refuses a publish whose
    /// user-id is not the connection's user, so this names the publisher.
    pub user_id: Option<String>,
    pub message_id: Option<String>,
    pub routing_key: String,
    /// The [`headers::SHOP_USER`] header: the shop's user-id, carried by
    /// payhub when it republished the message (retry, replay). Only
    /// [`ShopMessage::publisher`] decides whether it is to be believed.
    pub forwarded_user: Option<String>,
}

impl ShopMessage {
    /// The shop user that published this message, given payhub's own broker
    /// user: the broker-validated `user-id` property, or, on a message that
    /// payhub itself republished (its `user-id` is payhub's own, which only
    /// payhub can publish as), the shop user payhub carried in the header.
    /// A message without a `user-id` has no publisher, whatever its headers
    /// say: anybody may leave the property out.
    pub fn publisher(&self, own_user: Option<&str>) -> Option<&str> {
        let nonempty = |u: &&str| !u.is_empty();
        match self.user_id.as_deref().filter(nonempty) {
            Some(u) if own_user == Some(u) => self.forwarded_user.as_deref().filter(nonempty),
            other => other,
        }
    }
}

impl Decode for ShopMessage {
    fn decode(delivery: &Delivery) -> Result<Self, String> {
        let hdrs = delivery.properties.headers().clone().unwrap_or_default();
        Ok(ShopMessage {
            forwarded_user: header_str(&hdrs, headers::SHOP_USER),
            body: delivery.data.clone(),
            user_id: delivery.properties.user_id().as_ref().map(|u| u.as_str().to_string()),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_string()),
            routing_key: delivery.routing_key.as_str().to_string(),
        })
    }
    fn kind(&self) -> &'static str {
        "shop.order"
    }
    fn id(&self) -> String {
        self.message_id.clone().unwrap_or_default()
    }
}

/// One delivery, decoded.
#[derive(Debug, Clone)]
pub struct Incoming<M = Envelope> {
    pub envelope: M,
    /// 1 for the first attempt; raised each time the message comes back
    /// from the retry queue.
    pub attempt: u32,
    /// The broker redelivered it (a consumer died before acking).
    pub redelivered: bool,
}

/// Why handling failed, and therefore what happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt later (provider down, timeout, database blip).
    Transient(String),
    /// Retrying cannot help (bad payload, unknown order): park it at once.
    Permanent(String),
    /// A dependency every message needs is down (the database). The worker
    /// keeps the delivery and tries it again in place, with backoff, until
    /// the dependency is back: an outage must not use up anyone's attempts.
    Unavailable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(e) => write!(f, "transient: {e}"),
            Failure::Permanent(e) => write!(f, "permanent: {e}"),
            Failure::Unavailable(e) => write!(f, "unavailable: {e}"),
        }
    }
}

/// What a consuming service implements. The effect and the record that the
/// event was processed must be committed together before returning `Ok`.
///
/// A handler may also take several deliveries at once ([`Handler::max_batch`]
/// above 1): the worker then hands it whatever deliveries are waiting, up to
/// that many, so that one transaction and one commit serve them all. Each
/// message still gets its own outcome (ack, retry, dead letter).
pub trait Handler: Send + Sync + 'static {
    type Message: Decode;
    fn handle(&self, msg: &Incoming<Self::Message>) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Most deliveries handed to [`Handler::handle_batch`] at once. 1, the
    /// default, hands each delivery to [`Handler::handle`] on its own.
    fn max_batch(&self) -> usize {
        1
    }

    /// How long a batch may wait for more deliveries after its first one
    /// arrived. Zero, the default, takes only what is already waiting, so a
    /// quiet queue adds no latency; a handler off the order's critical path
    /// (the reporter) trades a little delay for far fewer commits.
    fn batch_linger(&self) -> Duration {
        Duration::ZERO
    }

    /// Handles several deliveries together, returning one result per
    /// message, in order. A single waiting delivery goes to [`Handler::handle`].
    fn handle_batch(&self, msgs: &[Incoming<Self::Message>]) -> impl Future<Output = Vec<Result<(), Failure>>> + Send {
        async move {
            let mut out = Vec::with_capacity(msgs.len());
            for m in msgs {
                out.push(self.handle(m).await);
            }
            out
        }
    }
}

/// [`Handler::handle`] for a handler that only knows batches: the one
/// message goes through [`Handler::handle_batch`] as a batch of one.
pub async fn handle_as_batch<H: Handler>(handler: &H, msg: &Incoming<H::Message>) -> Result<(), Failure> {
    handler
        .handle_batch(std::slice::from_ref(msg))
        .await
        .pop()
        .unwrap_or_else(|| Err(Failure::Transient(LOST_COUNT.into())))
}

const LOST_COUNT: &str = "the batch handler lost count";

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub spec: QueueSpec,
    /// Recorded on dead letters as the service that gave up.
    pub service: &'static str,
    /// Deliveries in flight at once (basic.qos prefetch and concurrency).
    pub prefetch: u16,
}

/// The story a dead letter carries, read back from its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterStory {
    pub original_routing_key: Option<String>,
    pub attempts: u32,
    pub errors: Vec<String>,
    pub first_failure: Option<String>,
    pub last_failure: Option<String>,
    pub failed_by: Option<String>,
    pub reason: Option<String>,
}

fn header_str(h: &FieldTable, k: &str) -> Option<String> {
    match h.inner().get(k)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header_u32(h: &FieldTable, k: &str) -> Option<u32> {
    match h.inner().get(k)? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn header_list(h: &FieldTable, k: &str) -> Vec<String> {
    match h.inner().get(k) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl DeadLetterStory {
    pub fn from_headers(h: &FieldTable) -> DeadLetterStory {
        DeadLetterStory {
            original_routing_key: header_str(h, headers::ORIGINAL_ROUTING_KEY),
            attempts: header_u32(h, headers::ATTEMPT).unwrap_or(1),
            errors: header_list(h, headers::ERRORS),
            first_failure: header_str(h, headers::FIRST_FAILURE),
            last_failure: header_str(h, headers::LAST_FAILURE),
            failed_by: header_str(h, headers::FAILED_BY),
            reason: header_str(h, headers::DEAD_LETTER_REASON),
        }
    }
}

/// Declares the queue trio for `spec` and binds the work queue.
pub async fn declare(ch: &Channel, broker: &Broker, spec: &QueueSpec) -> Result<(), lapin::Error> {
    let topo = broker.topology();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let exchange = topo.source_exchange(spec);
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        topo.dead_letter_queue(spec).as_str().into(),
        durable,
        topo.dead_letter_args(),
    )
    .await?;
    ch.queue_declare(topo.retry_queue(spec).as_str().into(), durable, topo.retry_args(spec))
        .await?;
    ch.queue_declare(topo.work_queue(spec).as_str().into(), durable, topo.work_args(spec))
        .await?;
    for key in spec.bindings {
        ch.queue_bind(
            topo.work_queue(spec).as_str().into(),
            exchange.into(),
            (*key).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for key in spec.retired_bindings {
        // Unbinding what is not bound is not an error.
        ch.queue_unbind(
            topo.work_queue(spec).as_str().into(),
            exchange.into(),
            (*key).into(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Runs the worker loop until `shutdown`, reconnecting as needed. On
/// shutdown it stops taking deliveries and lets in-flight ones finish.
pub async fn consume<H: Handler>(broker: Broker, opts: ConsumerOptions, handler: Arc<H>, shutdown: CancellationToken) {
    let monitor = tokio::spawn(monitor_depths(broker.clone(), opts.spec, shutdown.clone()));
    while !shutdown.is_cancelled() {
        let conn = match broker.connection().await {
            Ok(c) => c,
            Err(_) => break,
        };
        match session(&broker, &conn, &opts, handler.clone(), &shutdown).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(queue = opts.spec.base, error = %e, "consumer session ended; starting again");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    monitor.abort();
}

/// Samples the depth of the work, retry and dead-letter queues every few
/// seconds into `payhub_queue_messages` (what autoscaling and alerts read).
async fn monitor_depths(broker: Broker, spec: QueueSpec, shutdown: CancellationToken) {
    let topo = broker.topology().clone();
    let queues = [
        (topo.work_queue(&spec), "work"),
        (topo.retry_queue(&spec), "retry"),
        (topo.dead_letter_queue(&spec), "dead_letter"),
    ];
    loop {
        let sample = async {
            if let Ok(conn) = broker.connection().await
                && let Ok(ch) = conn.create_channel().await
            {
                for (q, kind) in &queues {
                    let passive = QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    };
                    match ch
                        .queue_declare(q.as_str().into(), passive, FieldTable::default())
                        .await
                    {
                        Ok(info) => metrics::QUEUE_DEPTH
                            .with_label_values(&[spec.base, kind])
                            .set(i64::from(info.message_count())),
                        // A failed passive declare closes the channel; try again next round.
                        Err(_) => break,
                    }
                }
                let _ = ch.close(200, "sampled".into()).await;
            }
        };
        // A sample stuck on a dead connection is skipped, not waited for.
        let _ = tokio::time::timeout(BROKER_STEP_TIMEOUT, sample).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn session<H: Handler>(
    broker: &Broker,
    conn: &lapin::Connection,
    opts: &ConsumerOptions,
    handler: Arc<H>,
    shutdown: &CancellationToken,
) -> Result<(), QueueError> {
    let queue = broker.topology().work_queue(&opts.spec);
    let tag = format!("{}-{}", opts.service, uuid::Uuid::new_v4().simple());
    let setup = async {
        let ch = conn.create_channel().await?;
        ch.basic_qos(opts.prefetch, BasicQosOptions::default()).await?;
        declare(&ch, broker, &opts.spec).await?;
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((ch, consumer))
    };
    let (ch, mut consumer) = tokio::time::timeout(BROKER_STEP_TIMEOUT, setup)
        .await
        .map_err(|_| QueueError::Unavailable(format!("the channel was not set up within {BROKER_STEP_TIMEOUT:?}")))??;
    tracing::info!(queue = %queue, "consuming");
    let max_batch = handler.max_batch().max(1);
    let linger = if max_batch > 1 {
        handler.batch_linger()
    } else {
        Duration::ZERO
    };
    let permits = Arc::new(Semaphore::new(usize::from(opts.prefetch.max(1))));
    let mut tasks = JoinSet::new();
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            d = consumer.next() => d,
            _ = health.tick() => {
                if conn.status().connected() && ch.status().connected() {
                    continue;
                }
                break Err(QueueError::Unavailable("the connection or channel was lost".into()));
            }
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(QueueError::Amqp(e)),
            None => break Err(QueueError::Unavailable("the consumer was cancelled".into())),
        };
        let mut held = vec![permits.clone().acquire_owned().await.expect("semaphore never closes")];
        let mut batch = vec![delivery];
        // Whatever else has already arrived joins the batch; nothing waits
        // for more, so a quiet queue keeps its latency.
        let mut ended = None;
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max_batch {
            let next = if linger.is_zero() {
                consumer.next().now_or_never()
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => None,
                    _ = tokio::time::sleep_until(deadline) => None,
                    d = consumer.next() => Some(d),
                }
            };
            match next {
                Some(Some(Ok(d))) => {
                    held.push(permits.clone().acquire_owned().await.expect("semaphore never closes"));
                    batch.push(d);
                }
                Some(Some(Err(e))) => {
                    ended = Some(Err(QueueError::Amqp(e)));
                    break;
                }
                Some(None) => {
                    ended = Some(Err(QueueError::Unavailable("the consumer was cancelled".into())));
                    break;
                }
                None => break,
            }
        }
        let (broker, opts, handler, queue, stop) = (
            broker.clone(),
            opts.clone(),
            handler.clone(),
            queue.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            process(&broker, &opts, &queue, handler.as_ref(), batch, &stop).await;
            drop(held);
        });
        if let Some(end) = ended {
            break end;
        }
    };
    if result.is_ok() {
        let cancel = ch.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        let _ = tokio::time::timeout(BROKER_STEP_TIMEOUT, cancel).await;
    }
    if result.is_ok() {
        // Stopping: everything already handed to a handler finishes and is
        // acked (the service's own shutdown deadline bounds this).
        while tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(BROKER_STEP_TIMEOUT, ch.close(200, "consumer stopped".into())).await;
    } else {
        // The connection is gone: give in-flight handlers a while to commit
        // their work, then drop them (the broker redelivers what was not
        // acked) rather than keep the queue without a consumer.
        let drained =
            tokio::time::timeout(DRAIN_AFTER_LOSS, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(queue = %queue, abandoned = tasks.len(), "in-flight handlers did not finish after the connection was lost; the broker redelivers their messages");
            tasks.abort_all();
        }
    }
    result
}

/// One decoded delivery on its way through a batch.
struct Item<M> {
    delivery: Delivery,
    hdrs: FieldTable,
    incoming: Incoming<M>,
    kind: &'static str,
    span: tracing::Span,
}

fn panic_failure(panic: Box<dyn std::any::Any + Send>, span: &tracing::Span) -> Failure {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(parent: span, panic = %why, "the handler panicked");
    Failure::Transient(format!("the handler panicked: {why}"))
}

/// Handles deliveries that arrived together: decodes them, hands them to
/// the handler (one alone to `handle`, several to `handle_batch`), holds
/// the ones whose dependency is unavailable and tries them again in place,
/// then settles each one by its own outcome.
async fn process<H: Handler>(
    broker: &Broker,
    opts: &ConsumerOptions,
    queue: &str,
    handler: &H,
    deliveries: Vec<Delivery>,
    shutdown: &CancellationToken,
) {
    let started = Instant::now();
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let hdrs = delivery.properties.headers().clone().unwrap_or_default();
        let attempt = header_u32(&hdrs, headers::ATTEMPT).unwrap_or(1).max(1);
        if delivery.redelivered && was_moved(queue, &delivery, attempt) {
            // Its copy is already live: the ack of this original was lost
            // with the connection.
            tracing::info!(
                queue,
                attempt,
                "a redelivered message was already moved; acking the original"
            );
            if let Err(e) = ack(&delivery).await {
                tracing::warn!(error = %e, "acking a moved original failed; it comes back and is acked then");
            }
            metrics::CONSUMED
                .with_label_values(&[queue, "unknown", "moved_before"])
                .inc();
            continue;
        }
        let envelope = match H::Message::decode(&delivery) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(queue, error = %e, "unparseable message; dead-lettering it");
                let reason = format!("unparseable message: {e}");
                finish_failed(
                    broker,
                    opts,
                    queue,
                    &delivery,
                    &hdrs,
                    attempt,
                    &reason,
                    "unparseable",
                    "unknown",
                )
                .await;
                continue;
            }
        };
        let kind = envelope.kind();
        let span = tracing::info_span!(
            "handle",
            queue,
            event_id = %envelope.id(),
            event_type = kind,
            order_id = ?envelope.order_id(),
            attempt
        );
        if attempt == 1 && hdrs.inner().contains_key(crate::dead_letters::REPLAYED) {
            metrics::REPLAYED.with_label_values(&[queue]).inc();
        }
        let redelivered = delivery.redelivered;
        items.push(Item {
            delivery,
            hdrs,
            incoming: Incoming {
                envelope,
                attempt,
                redelivered,
            },
            kind,
            span,
        });
    }
    if items.is_empty() {
        return;
    }
    metrics::BATCH_SIZE
        .with_label_values(&[queue])
        .observe(items.len() as f64);
    let mut outcomes: Vec<Option<Result<(), Failure>>> = vec![None; items.len()];
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut pause = Duration::from_millis(100);
    while !pending.is_empty() {
        let results = if let [only] = pending[..] {
            // A handler that panics must not strand the delivery unacked:
            // its panic becomes a transient failure, retried like any other.
            let item = &items[only];
            let r = std::panic::AssertUnwindSafe(handler.handle(&item.incoming).instrument(item.span.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(panic_failure(panic, &item.span)));
            vec![r]
        } else {
            let msgs: Vec<Incoming<H::Message>> = pending.iter().map(|&i| items[i].incoming.clone()).collect();
            let span = tracing::info_span!("handle_batch", queue, messages = msgs.len());
            let mut rs = std::panic::AssertUnwindSafe(handler.handle_batch(&msgs).instrument(span.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let f = panic_failure(panic, &span);
                    vec![Err(f); msgs.len()]
                });
            if rs.len() != msgs.len() {
                tracing::error!(parent: &span, results = rs.len(), "the handler answered for a different number of messages");
                rs = vec![Err(Failure::Transient(LOST_COUNT.into())); msgs.len()];
            }
            rs
        };
        let mut unavailable = Vec::new();
        for (&i, r) in pending.iter().zip(results) {
            match r {
                Err(Failure::Unavailable(e)) => {
                    let item = &items[i];
                    if shutdown.is_cancelled() {
                        // Hand it back; another consumer (or we, restarted) takes it.
                        requeue(&item.delivery).await;
                        metrics::CONSUMED
                            .with_label_values(&[queue, item.kind, "requeue"])
                            .inc();
                    } else {
                        tracing::warn!(parent: &item.span, error = %e, pause = ?pause, "a dependency is unavailable; holding the message and trying again");
                        metrics::UNAVAILABLE.with_label_values(&[queue]).inc();
                        unavailable.push(i);
                    }
                }
                other => outcomes[i] = Some(other),
            }
        }
        pending = unavailable;
        if !pending.is_empty() && started.elapsed() >= broker.topology().retry.hold_limit {
            // Held long enough: before the broker's consumer_timeout closes
            // the channel, hand each one back to the tail of its queue as a
            // copy with the same attempt (a nack would count against the
            // delivery limit and end in the dead-letter queue).
            let work = broker.topology().work_queue(&opts.spec);
            for &i in &pending {
                let item = &items[i];
                tracing::warn!(parent: &item.span, held = ?started.elapsed(),
                    "a dependency stayed unavailable; handing the message back to its queue without using an attempt");
                settle(
                    broker,
                    &item.delivery,
                    &work,
                    item.hdrs.clone(),
                    queue,
                    item.kind,
                    "handed_back",
                )
                .await;
            }
            pending.clear();
        }
        if !pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
    for (item, outcome) in items.into_iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        conclude(broker, opts, queue, item, outcome, started).await;
    }
}

/// How long an ack, a nack or a channel set-up step may take. A connection
/// that died without lapin noticing must not hold a worker (and with it the
/// consumer's restart) forever: past this the step counts as failed, and an
/// unacked delivery is redelivered by the broker once the connection is gone.
const BROKER_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a consumer whose connection was lost waits for its in-flight
/// handlers before it abandons them and starts a new session. Their
/// deliveries cannot be acked on the dead channel anyway: the broker hands
/// them out again, and the handlers' idempotency absorbs the second run.
const DRAIN_AFTER_LOSS: Duration = Duration::from_secs(15);

/// How often a waiting consumer checks that its connection and channel are
/// still up (a dead connection does not always end the delivery stream).
const HEALTH_CHECK: Duration = Duration::from_millis(500);

async fn ack(delivery: &Delivery) -> Result<(), String> {
    match tokio::time::timeout(BROKER_STEP_TIMEOUT, delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {BROKER_STEP_TIMEOUT:?}")),
    }
}

/// Hands a delivery back to its queue (best effort: if the channel is gone,
/// the broker requeues it anyway).
async fn requeue(delivery: &Delivery) {
    let nack = delivery.acker.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    });
    let _ = tokio::time::timeout(BROKER_STEP_TIMEOUT, nack).await;
}

/// Settles one delivery by its outcome: ack, retry queue, or dead letters.
async fn conclude<M>(
    broker: &Broker,
    opts: &ConsumerOptions,
    queue: &str,
    item: Item<M>,
    outcome: Result<(), Failure>,
    started: Instant,
) {
    let Item {
        delivery,
        hdrs,
        incoming,
        kind,
        span,
    } = item;
    let attempt = incoming.attempt;
    async {
        metrics::HANDLE_SECONDS
            .with_label_values(&[queue, kind])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                if let Err(e) = ack(&delivery).await {
                    tracing::warn!(error = %e, "ack failed; the broker will redeliver and the handler's idempotency absorbs it");
                }
                metrics::CONSUMED.with_label_values(&[queue, kind, "ack"]).inc();
            }
            Err(Failure::Transient(e)) if attempt < broker.topology().retry.max_attempts => {
                tracing::warn!(error = %e, "transient failure; will retry");
                let mut h = failure_headers(&hdrs, &delivery, attempt, &e, opts.service, None);
                h.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt + 1)));
                let target = broker.topology().retry_queue(&opts.spec);
                if settle(broker, &delivery, &target, h, queue, kind, "retry").await {
                    metrics::RETRIED.with_label_values(&[queue, &attempt.to_string()]).inc();
                }
            }
            Err(Failure::Transient(e)) => {
                tracing::error!(error = %e, "transient failure on the last attempt; dead-lettering");
                finish_failed(
                    broker,
                    opts,
                    queue,
                    &delivery,
                    &hdrs,
                    attempt,
                    &e,
                    "attempts_exhausted",
                    kind,
                )
                .await;
            }
            Err(Failure::Permanent(e)) | Err(Failure::Unavailable(e)) => {
                tracing::error!(error = %e, "permanent failure; dead-lettering");
                finish_failed(broker, opts, queue, &delivery, &hdrs, attempt, &e, "permanent", kind).await;
            }
        }
    }
    .instrument(span)
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn finish_failed(
    broker: &Broker,
    opts: &ConsumerOptions,
    queue: &str,
    delivery: &Delivery,
    hdrs: &FieldTable,
    attempt: u32,
    error: &str,
    reason: &'static str,
    kind: &str,
) {
    let h = failure_headers(hdrs, delivery, attempt, error, opts.service, Some(reason));
    let target = broker.topology().dead_letter_queue(&opts.spec);
    if settle(broker, delivery, &target, h, queue, kind, "dead_letter").await {
        metrics::DEAD_LETTERED.with_label_values(&[queue, reason]).inc();
    }
}

fn failure_headers(
    hdrs: &FieldTable,
    delivery: &Delivery,
    attempt: u32,
    error: &str,
    service: &str,
    dead_letter_reason: Option<&str>,
) -> FieldTable {
    let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    let mut h = hdrs.clone();
    // x-death is the broker's own record; it is rebuilt on each dead-letter.
    let mut inner = h.inner().clone();
    inner.remove("x-death");
    let mut h2 = FieldTable::from(inner);
    if header_str(&h, headers::ORIGINAL_ROUTING_KEY).is_none() {
        h2.insert(
            headers::ORIGINAL_ROUTING_KEY.into(),
            AMQPValue::LongString(delivery.routing_key.as_str().into()),
        );
    }
    if header_str(&h, headers::FIRST_FAILURE).is_none() {
        h2.insert(
            headers::FIRST_FAILURE.into(),
            AMQPValue::LongString(now.as_str().into()),
        );
    }
    h2.insert(headers::LAST_FAILURE.into(), AMQPValue::LongString(now.as_str().into()));
    let mut errors: Vec<AMQPValue> = header_list(&h, headers::ERRORS)
        .into_iter()
        .map(|s| AMQPValue::LongString(s.as_str().into()))
        .collect();
    let mut line = format!("{now} attempt {attempt}: {error}");
    line.truncate(2000);
    errors.push(AMQPValue::LongString(line.as_str().into()));
    h2.insert(headers::ERRORS.into(), AMQPValue::FieldArray(FieldArray::from(errors)));
    h2.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    h2.insert(headers::FAILED_BY.into(), AMQPValue::LongString(service.into()));
    if let Some(r) = dead_letter_reason {
        h2.insert(headers::DEAD_LETTER_REASON.into(), AMQPValue::LongString(r.into()));
    }
    h = h2;
    h
}

/// The headers of a copy that payhub republishes under its own user
/// (`own_user`) of a message that arrived with `user_id`: the publisher's
/// validated user goes into [`headers::SHOP_USER`]. A header that the
/// original publisher set itself is overwritten (a shop's own user-id wins)
/// or dropped (no user-id: nobody vouches for it); only a copy payhub
/// already made, whose user-id is payhub's own, keeps the header it has.
pub(crate) fn carry_shop_user(h: FieldTable, user_id: Option<&str>, own_user: Option<&str>) -> FieldTable {
    match user_id.filter(|u| !u.is_empty()) {
        Some(u) if own_user == Some(u) => h,
        Some(u) => {
            let mut h = h;
            h.insert(headers::SHOP_USER.into(), AMQPValue::LongString(u.into()));
            h
        }
        None => {
            let mut inner = h.inner().clone();
            inner.remove(headers::SHOP_USER);
            FieldTable::from(inner)
        }
    }
}

/// Moves a delivery to `target` (retry or dead-letter queue) and acks it
/// once the broker confirmed the copy; if the copy fails, the delivery is
/// requeued so nothing is lost. Returns whether the move happened.
async fn settle(
    broker: &Broker,
    delivery: &Delivery,
    target: &str,
    h: FieldTable,
    queue: &str,
    kind: &str,
    outcome: &str,
) -> bool {
    let h = carry_shop_user(
        h,
        delivery.properties.user_id().as_ref().map(|u| u.as_str()),
        broker.user(),
    );
    let mut h = h;
    h.insert(
        headers::COPY_ID.into(),
        AMQPValue::LongString(uuid::Uuid::new_v4().to_string().as_str().into()),
    );
    let mut props = BasicProperties::default().with_headers(h);
    if let Some(own) = broker.user() {
        // The broker checks it against our connection: this is what lets a
        // consumer believe the [`headers::SHOP_USER`] header on the copy.
        props = props.with_user_id(own.into());
    }
    if let Some(id) = delivery.properties.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(t) = delivery.properties.kind() {
        props = props.with_type(t.clone());
    }
    match broker.publish_raw("", target, &delivery.data, props).await {
        Ok(()) => {
            let attempt = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| header_u32(h, headers::ATTEMPT))
                .unwrap_or(1)
                .max(1);
            remember_move(queue, delivery, attempt);
            if let Err(e) = ack(delivery).await {
                tracing::warn!(error = %e, "ack after moving the message failed");
            }
            metrics::CONSUMED.with_label_values(&[queue, kind, outcome]).inc();
            true
        }
        Err(e) => {
            tracing::error!(error = %e, target, "could not move the message; requeueing it");
            requeue(delivery).await;
            metrics::CONSUMED.with_label_values(&[queue, kind, "requeue"]).inc();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(user_id: Option<&str>, forwarded: Option<&str>) -> ShopMessage {
        ShopMessage {
            body: Vec::new(),
            user_id: user_id.map(str::to_string),
            message_id: None,
            routing_key: "orders".into(),
            forwarded_user: forwarded.map(str::to_string),
        }
    }

    #[test]
    fn the_shop_user_header_is_believed_only_under_payhubs_own_user() {
        let own = Some("payhub");
        // Published by the shop itself: its validated user-id, the header ignored.
        assert_eq!(msg(Some("loja-a"), Some("loja-b")).publisher(own), Some("loja-a"));
        // Republished by payhub: the header payhub set.
        assert_eq!(msg(Some("payhub"), Some("loja-a")).publisher(own), Some("loja-a"));
        assert_eq!(msg(Some("payhub"), None).publisher(own), None);
        // No user-id: nobody vouches for the header.
        assert_eq!(msg(None, Some("loja-a")).publisher(own), None);
        assert_eq!(msg(Some(""), Some("loja-a")).publisher(own), None);
    }

    #[test]
    fn republishing_carries_the_validated_user_and_never_a_forged_one() {
        let forged = {
            let mut h = FieldTable::default();
            h.insert(headers::SHOP_USER.into(), AMQPValue::LongString("loja-b".into()));
            h
        };
        let own = Some("payhub");
        let h = carry_shop_user(forged.clone(), Some("loja-a"), own);
        assert_eq!(header_str(&h, headers::SHOP_USER).as_deref(), Some("loja-a"));
        let h = carry_shop_user(forged.clone(), None, own);
        assert_eq!(header_str(&h, headers::SHOP_USER), None);
        let h = carry_shop_user(forged, Some("payhub"), own);
        assert_eq!(header_str(&h, headers::SHOP_USER).as_deref(), Some("loja-b"));
    }

    #[test]
    fn the_broker_user_comes_from_the_url() {
        assert_eq!(
            crate::broker::user_of("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
            Some("guest")
        );
        assert_eq!(crate::broker::user_of("amqp://us%40er:x@h/v").as_deref(), Some("us@er"));
    }
}
