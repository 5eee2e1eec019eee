//! A dependency that stays away longer than the hold limit (RabbitMQ's
//! `consumer_timeout` is 30 min by default) must not dead-letter anything:
//! the held delivery is handed back to its queue before the broker's
//! timeout, without using an attempt or the delivery limit.

mod common;

use payhub_core::events::{ChargeFailed, EventPayload};
use payhub_core::{Envelope, Provider};
use payhub_queue::{ConsumerOptions, Failure, Handler, Incoming, QueueSpec};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SPEC: QueueSpec = QueueSpec::REPORTER;

struct Away {
    until: Instant,
    seen: Arc<Mutex<Vec<(u32, bool, bool)>>>,
}

impl Handler for Away {
    type Message = Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let ok = Instant::now() >= self.until;
        self.seen.lock().unwrap().push((msg.attempt, msg.redelivered, ok));
        if ok {
            Ok(())
        } else {
            Err(Failure::Unavailable("database away".into()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_hands_the_message_back_without_using_an_attempt() {
    let mut topology = common::unique_topology();
    topology.retry.hold_limit = Duration::from_millis(700);
    // Fewer redeliveries allowed than hand-backs happen: a nack-based
    // hand-back would end in the dead-letter queue.
    topology.retry.delivery_limit = 1;
    let stop = CancellationToken::new();
    let broker = common::connected_broker("holding-test", &topology, &stop).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Away {
        until: Instant::now() + Duration::from_secs(4),
        seen: seen.clone(),
    };
    let consumer_stop = CancellationToken::new();
    let task = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        ConsumerOptions {
            spec: SPEC,
            service: "holding-test",
            prefetch: 1,
        },
        Arc::new(handler),
        consumer_stop.clone(),
    ));
    let event = Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider: Provider::Openpix,
        reason: "held".into(),
        permanent: false,
    }));
    broker
        .publish_raw("", &topology.work_queue(&SPEC), &event.to_json(), Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.lock().unwrap().iter().any(|&(_, _, ok)| ok) {
        assert!(Instant::now() < deadline, "the message was never handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|&(attempt, _, _)| attempt == 1),
        "no attempt used: {seen:?}"
    );
    assert!(
        seen.iter().all(|&(_, redelivered, _)| !redelivered),
        "handed back as a fresh copy, not a redelivery: {seen:?}"
    );
    let handed_back: u64 = prometheus::gather()
        .iter()
        .filter(|f| f.name() == "payhub_messages_consumed_total")
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "handed_back"))
        .map(|m| m.get_counter().get_value() as u64)
        .sum();
    assert!(handed_back >= 2, "handed back to the queue {handed_back} times");
    let conn = broker.connection().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let dlq = ch
        .queue_declare(
            topology.dead_letter_queue(&SPEC).as_str().into(),
            passive,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dlq.message_count(), 0, "nothing dead-lettered");
    consumer_stop.cancel();
    task.await.unwrap();
    common::delete_topology(&ch, &topology).await;
    stop.cancel();
}

struct AlwaysBroken;

impl Handler for AlwaysBroken {
    type Message = Envelope;

    async fn handle(&self, _msg: &Incoming) -> Result<(), Failure> {
        Err(Failure::Permanent("still broken".into()))
    }
}

/// `payhubctl dlq replay` replays at most what was in the dead-letter
/// queue when it started, even when what it replays fails again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_only_what_was_there_when_it_started() {
    let topology = common::unique_topology();
    let stop = CancellationToken::new();
    let broker = common::connected_broker("replay-bound-test", &topology, &stop).await;
    let consumer_stop = CancellationToken::new();
    let task = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        ConsumerOptions {
            spec: SPEC,
            service: "replay-bound-test",
            prefetch: 4,
        },
        Arc::new(AlwaysBroken),
        consumer_stop.clone(),
    ));
    for i in 0..3 {
        let event = Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
            provider: Provider::Openpix,
            reason: format!("broken {i}"),
            permanent: true,
        }));
        broker
            .publish_raw("", &topology.work_queue(&SPEC), &event.to_json(), Default::default())
            .await
            .unwrap();
    }
    let admin = payhub_queue::dead_letters::DeadLetterAdmin::connect(&common::amqp_url(), topology.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.list(&SPEC, 10).await.unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the broken messages were never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `list` looks at them over a channel it then closes; until the broker
    // has put them back they are not ready, and a replay takes only what is
    // ready when it starts.
    while admin.depth(&topology.dead_letter_queue(&SPEC)).await.unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the listed dead letters were never ready again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = tokio::time::timeout(
        Duration::from_secs(20),
        admin.replay(&SPEC, &payhub_queue::dead_letters::Filter::default()),
    )
    .await
    .expect("the replay ends")
    .unwrap();
    assert_eq!(replayed, 3);
    // They failed again and are parked again, each once more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let parked = admin.list(&SPEC, 10).await.unwrap();
        if parked.len() == 3 && parked.iter().all(|d| d.replayed == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "{parked:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer_stop.cancel();
    task.await.unwrap();
    let conn = broker.connection().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    common::delete_topology(&ch, &topology).await;
    admin.close().await;
    stop.cancel();
}

/// Publishing and consuming go over two AMQP connections, so a memory or
/// disk alarm (which blocks publishing connections) cannot stop consumers
/// from acking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_use_separate_connections() {
    if std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .arg("status")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED: rabbitmqctl is needed to list connections");
        return;
    }
    let topology = common::unique_topology();
    let stop = CancellationToken::new();
    let name = format!("conn-test-{}", uuid::Uuid::new_v4().simple());
    let broker = common::connected_broker(&name, &topology, &stop).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "client_properties", "--formatter", "json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let consume = text.matches(&format!("\"{name}\"")).count();
        let publish = text.matches(&format!("\"{name}-publish\"")).count();
        if consume == 1 && publish == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections named {name}: {consume} and {name}-publish: {publish}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(broker.is_connected());
    let conn = broker.connection().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    common::delete_topology(&ch, &topology).await;
    stop.cancel();
}

/// A retry delay changed in configuration conflicts with the queues the
/// broker already has: the service stays not ready (and logs the queue
/// and the argument) instead of running without consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_retry_delay_keeps_the_service_not_ready() {
    let topology = common::unique_topology();
    let stop = CancellationToken::new();
    let first = common::connected_broker("conflict-test-a", &topology, &stop).await;
    let mut changed = topology.clone();
    changed.retry.delay = Duration::from_millis(999);
    let second = payhub_queue::Broker::start(&common::amqp_url(), "conflict-test-b", changed, stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(first.is_connected());
    assert!(!second.is_connected(), "a conflicting topology must not look ready");
    let conn = first.connection().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    common::delete_topology(&ch, &topology).await;
    stop.cancel();
}
