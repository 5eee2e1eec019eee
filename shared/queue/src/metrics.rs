//! Queue metrics, registered once in the process's default registry.

use prometheus::{
    HistogramVec, IntCounterVec, IntGaugeVec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
};
use std::sync::LazyLock;

pub static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_messages_published_total",
        "Messages published and confirmed by the broker, by routing key and result.",
        &["routing_key", "result"]
    )
    .expect("metric registers once")
});

pub static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_messages_consumed_total",
        "Messages consumed, by queue, event type and outcome (ack, retry, dead_letter, requeue, handed_back).",
        &["queue", "type", "outcome"]
    )
    .expect("metric registers once")
});

pub static HANDLE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_message_handle_seconds",
        "Time to handle one message, from delivery to ack.",
        &["queue", "type"],
        vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
        ]
    )
    .expect("metric registers once")
});

pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_messages_dead_lettered_total",
        "Messages parked in a dead-letter queue, by queue and reason.",
        &["queue", "reason"]
    )
    .expect("metric registers once")
});

pub static RECONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_broker_connections_total",
        "Broker connection attempts, by result.",
        &["result"]
    )
    .expect("metric registers once")
});

pub static RETRIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_messages_retried_total",
        "Messages sent to a retry queue after a transient failure, by queue and attempt that failed.",
        &["queue", "attempt"]
    )
    .expect("metric registers once")
});

pub static REPLAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_messages_replayed_total",
        "Dead letters an operator replayed, counted when the consumer receives them, by queue.",
        &["queue"]
    )
    .expect("metric registers once")
});

pub static QUEUE_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "payhub_queue_messages",
        "Messages ready in a queue (work, retry or dead-letter), sampled by its consumer.",
        &["queue", "kind"]
    )
    .expect("metric registers once")
});

pub static UNAVAILABLE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_dependency_unavailable_total",
        "In-place waits because a dependency (the database) was unavailable, by queue.",
        &["queue"]
    )
    .expect("metric registers once")
});

pub static BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_message_batch_size",
        "Deliveries handled together (one transaction for handlers that batch).",
        &["queue"],
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    )
    .expect("metric registers once")
});
