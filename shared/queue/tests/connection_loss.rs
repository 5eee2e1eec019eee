//! A consumer whose connection is lost while a handler is stuck must not
//! stay without a session: it gives its in-flight handlers a bounded while,
//! starts again, and the broker hands the unacked message out once more.

mod common;

use payhub_core::events::{ChargeFailed, EventPayload};
use payhub_core::{Envelope, Provider};
use payhub_queue::{ConsumerOptions, Failure, Handler, Incoming, QueueSpec};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hangs (far longer than the test) on its first call; answers at once after.
struct StuckOnce {
    calls: Arc<AtomicU32>,
}

impl Handler for StuckOnce {
    type Message = Envelope;
    async fn handle(&self, _msg: &Incoming) -> Result<(), Failure> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }
}

fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = Command::new("rabbitmqctl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Closes, from the broker's side, every connection whose client properties
/// mention `name`. Returns how many it closed.
fn close_connections_named(name: &str) -> usize {
    let Some(list) = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]) else {
        return 0;
    };
    let pids: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| l.split('\t').next())
        .collect();
    pids.iter()
        .filter(|pid| rabbitmqctl(&["-q", "close_connection", pid, "test: connection lost"]).is_some())
        .count()
}

async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_handler_does_not_keep_the_consumer_down_after_the_connection_is_lost() {
    if rabbitmqctl(&["-q", "status"]).is_none() {
        eprintln!("SKIPPED: rabbitmqctl cannot reach the broker on this machine");
        return;
    }
    let topology = common::unique_topology();
    let id = topology.prefix.trim_end_matches('.').to_string();
    let spec = QueueSpec::REPORTER;
    let client = format!("loss-test-{id}");
    let stop = CancellationToken::new();
    let broker = common::connected_broker(&client, &topology, &stop).await;

    let calls = Arc::new(AtomicU32::new(0));
    let consumer_stop = CancellationToken::new();
    let consumer = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        ConsumerOptions {
            spec,
            service: "loss-test",
            prefetch: 4,
        },
        Arc::new(StuckOnce { calls: calls.clone() }),
        consumer_stop.clone(),
    ));
    // The consumer declares its queue; publish once it is there.
    let event = Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider: Provider::Openpix,
        reason: "stuck".into(),
        permanent: false,
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker
        .publish_raw(
            "",
            &topology.work_queue(&spec),
            &event.to_json(),
            lapin::BasicProperties::default(),
        )
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the work queue was never declared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("the first delivery", Duration::from_secs(10), || {
        calls.load(Ordering::SeqCst) >= 1
    })
    .await;

    // The broker drops the connection while the handler hangs.
    assert!(
        close_connections_named(&client) >= 1,
        "no connection named {client} to close"
    );

    // The consumer starts again without waiting for the stuck handler, and
    // the unacked message comes back to it.
    wait_for("the redelivery", Duration::from_secs(45), || {
        calls.load(Ordering::SeqCst) >= 2
    })
    .await;

    consumer_stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer stops")
        .unwrap();
    if let Ok(conn) = broker.connection().await
        && let Ok(ch) = conn.create_channel().await
    {
        for q in [
            topology.work_queue(&spec),
            topology.retry_queue(&spec),
            topology.dead_letter_queue(&spec),
        ] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = ch
            .exchange_delete(topology.exchange.as_str().into(), Default::default())
            .await;
    }
    stop.cancel();
}
