//! What the broker-level tests share: the broker URL and a topology of
//! their own (unique names, so tests run side by side on one vhost).

use payhub_queue::{Broker, RetryPolicy, Topology};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn amqp_url() -> String {
    std::env::var("PAYHUB_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Exchanges and queue prefix no other test uses; retries 200 ms apart.
pub fn unique_topology() -> Topology {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Topology {
        exchange: format!("payhub.test.{id}"),
        orders_exchange: format!("payhub.test-orders.{id}"),
        prefix: format!("t{id}."),
        retry: RetryPolicy {
            delay: Duration::from_millis(200),
            max_attempts: 3,
            delivery_limit: 5,
            hold_limit: Duration::from_secs(600),
        },
    }
}

/// A broker handle named `client`, connected (or the test fails).
pub async fn connected_broker(client: &str, topology: &Topology, stop: &CancellationToken) -> Broker {
    let broker = Broker::start(&amqp_url(), client, topology.clone(), stop.clone());
    broker.wait_connected(Duration::from_secs(10)).await.unwrap();
    broker
}

/// Deletes every queue of `topology` (the broker declares all of them at
/// connect) and its exchanges, so a run leaves nothing behind: leftover
/// quorum queues hold the broker's file handles.
#[allow(dead_code)]
pub async fn delete_topology(ch: &lapin::Channel, topology: &Topology) {
    for spec in payhub_queue::QueueSpec::ALL {
        for q in [
            topology.work_queue(&spec),
            topology.retry_queue(&spec),
            topology.dead_letter_queue(&spec),
        ] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
    }
    for e in [&topology.exchange, &topology.orders_exchange] {
        let _ = ch.exchange_delete(e.as_str().into(), Default::default()).await;
    }
}
