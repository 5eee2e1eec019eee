//! Batching handlers: deliveries that wait together are handed over
//! together, yet each one is settled by its own outcome (ack, dead letter,
//! held in place while a dependency is away).

mod common;

use payhub_core::events::{ChargeFailed, EventPayload};
use payhub_core::{Envelope, Provider};
use payhub_queue::{Broker, ConsumerOptions, Failure, Handler, Incoming, QueueSpec, Topology};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Seen {
    batches: Vec<usize>,
    /// Calls per event reason.
    calls: HashMap<String, u32>,
}

struct Batching {
    seen: Arc<Mutex<Seen>>,
    max: usize,
    linger: Duration,
}

fn reason(msg: &Incoming) -> String {
    match &msg.envelope.payload {
        EventPayload::ChargeFailed(c) => c.reason.clone(),
        _ => String::new(),
    }
}

impl Handler for Batching {
    type Message = Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        payhub_queue::handle_as_batch(self, msg).await
    }

    fn max_batch(&self) -> usize {
        self.max
    }

    fn batch_linger(&self) -> Duration {
        self.linger
    }

    async fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<(), Failure>> {
        let mut seen = self.seen.lock().unwrap();
        seen.batches.push(msgs.len());
        msgs.iter()
            .map(|m| {
                let r = reason(m);
                let n = {
                    let c = seen.calls.entry(r.clone()).or_default();
                    *c += 1;
                    *c
                };
                match r.as_str() {
                    "poison" => Err(Failure::Permanent("cannot be handled".into())),
                    // The database is away on the first try only.
                    "flaky" if n == 1 => Err(Failure::Unavailable("database away".into())),
                    _ => Ok(()),
                }
            })
            .collect()
    }
}

struct Fixture {
    broker: Broker,
    topology: Topology,
    stop: CancellationToken,
}

const SPEC: QueueSpec = QueueSpec::REPORTER;

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let topology = common::unique_topology();
        let stop = CancellationToken::new();
        let broker = common::connected_broker(name, &topology, &stop).await;
        Fixture { broker, topology, stop }
    }

    fn event(reason: &str) -> Envelope {
        Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
            provider: Provider::Openpix,
            reason: reason.into(),
            permanent: false,
        }))
    }

    /// Straight into the work queue (the default exchange routes by queue
    /// name): routing by event type is not what is tested here.
    async fn publish(&self, reason: &str) {
        let body = Self::event(reason).to_json();
        self.broker
            .publish_raw(
                "",
                &self.topology.work_queue(&SPEC),
                &body,
                lapin::BasicProperties::default(),
            )
            .await
            .expect("published to the work queue");
    }

    async fn depth(&self, queue: &str) -> u32 {
        let conn = self.broker.connection().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let info = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        info.message_count()
    }

    async fn declare(&self) {
        // A consumer declares its queues; start one briefly with nothing to do.
        let (task, stop) = self.start(&Arc::new(Mutex::new(Seen::default())), 1, 1, Duration::ZERO);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let conn = self.broker.connection().await.unwrap();
            let ch = conn.create_channel().await.unwrap();
            let declared = ch
                .queue_declare(
                    self.topology.work_queue(&SPEC).as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await;
            if declared.is_ok() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }

    /// Starts a consumer with a [`Batching`] handler; stop it with the token.
    fn start(
        &self,
        seen: &Arc<Mutex<Seen>>,
        prefetch: u16,
        max: usize,
        linger: Duration,
    ) -> (tokio::task::JoinHandle<()>, CancellationToken) {
        let stop = CancellationToken::new();
        let handler = Batching {
            seen: seen.clone(),
            max,
            linger,
        };
        let task = tokio::spawn(payhub_queue::consume(
            self.broker.clone(),
            self.options(prefetch),
            Arc::new(handler),
            stop.clone(),
        ));
        (task, stop)
    }

    fn options(&self, prefetch: u16) -> ConsumerOptions {
        ConsumerOptions {
            spec: SPEC,
            service: "batch-test",
            prefetch,
        }
    }

    async fn cleanup(self) {
        let conn = self.broker.connection().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        common::delete_topology(&ch, &self.topology).await;
        let _ = ch
            .exchange_delete(self.topology.exchange.as_str().into(), Default::default())
            .await;
        self.stop.cancel();
    }
}

async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_deliveries_are_handled_together_and_settled_one_by_one() {
    let fx = Fixture::new("batch-test").await;
    fx.declare().await;
    for i in 0..18 {
        fx.publish(&format!("ok-{i}")).await;
    }
    fx.publish("poison").await;
    fx.publish("flaky").await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (consumer, stop) = fx.start(&seen, 32, 8, Duration::ZERO);
    let all_settled = wait_until(|| {
        let s = seen.lock().unwrap();
        s.calls.len() == 20 && s.calls.get("flaky") == Some(&2)
    })
    .await;
    assert!(all_settled, "every message was handled, the flaky one twice");
    // Settled: the work queue empties, the poison waits in the dead letters.
    let work = fx.topology.work_queue(&SPEC);
    let dlq = fx.topology.dead_letter_queue(&SPEC);
    let mut drained = false;
    for _ in 0..100 {
        if fx.depth(&work).await == 0 && fx.depth(&dlq).await == 1 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    consumer.await.unwrap();
    assert!(drained, "acked all but the poison, which was dead-lettered");
    let s = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        s.batches.iter().all(|&n| (1..=8).contains(&n)),
        "no batch over the handler's maximum: {:?}",
        s.batches
    );
    assert!(
        s.batches.iter().any(|&n| n > 1),
        "messages already waiting went together: {:?}",
        s.batches
    );
    for i in 0..18 {
        assert_eq!(
            s.calls.get(&format!("ok-{i}")),
            Some(&1),
            "a batch-mate of the held message is not handled again"
        );
    }
    assert_eq!(s.calls.get("poison"), Some(&1), "a permanent failure is not retried");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_batch_waits_for_deliveries_that_arrive_soon_after() {
    let fx = Fixture::new("linger-test").await;
    fx.declare().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (consumer, stop) = fx.start(&seen, 32, 16, Duration::from_millis(1500));
    // Give the consumer time to subscribe, then trickle three messages in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        fx.publish(&format!("late-{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled = wait_until(|| seen.lock().unwrap().calls.len() == 3).await;
    stop.cancel();
    consumer.await.unwrap();
    assert!(handled, "all three handled");
    assert_eq!(
        seen.lock().unwrap().batches,
        vec![3],
        "three messages 100 ms apart make one batch under a 1.5 s linger"
    );
    fx.cleanup().await;
}
