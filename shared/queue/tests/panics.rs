//! A handler that panics must not strand its delivery: the panic is a
//! transient failure and the message comes back through the retry queue.

mod common;

use payhub_core::events::{ChargeFailed, EventPayload};
use payhub_core::{Envelope, Provider};
use payhub_queue::{ConsumerOptions, Failure, Handler, Incoming, QueueSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct PanicsOnce {
    calls: Arc<AtomicU32>,
}

impl Handler for PanicsOnce {
    type Message = Envelope;
    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            panic!("boom on attempt {}", msg.attempt);
        }
        assert_eq!(msg.attempt, 2, "the second call is the retry");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gets_the_message_again() {
    let topology = common::unique_topology();
    let stop = CancellationToken::new();
    let broker = common::connected_broker("panic-test", &topology, &stop).await;
    let calls = Arc::new(AtomicU32::new(0));
    let consumer_stop = CancellationToken::new();
    let opts = ConsumerOptions {
        spec: QueueSpec::ORDER_UPDATER,
        service: "panic-test",
        prefetch: 4,
    };
    let consumer = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        opts,
        Arc::new(PanicsOnce { calls: calls.clone() }),
        consumer_stop.clone(),
    ));
    // Publish once the queue is declared (the consumer declares it).
    let event = Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider: Provider::Openpix,
        reason: "test".into(),
        permanent: false,
    }));
    let mut published = false;
    for _ in 0..50 {
        if broker.publish(&event).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the event was routed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "handled again after the panic");
    consumer_stop.cancel();
    consumer.await.unwrap();
    // Clean up the test's queues and exchange.
    let conn = broker.connection().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    common::delete_topology(&ch, &topology).await;
    let _ = ch
        .exchange_delete(topology.exchange.as_str().into(), Default::default())
        .await;
    stop.cancel();
}
