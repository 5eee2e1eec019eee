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
        common::delete_topology(&ch, &topology).await;
        let _ = ch
            .exchange_delete(topology.exchange.as_str().into(), Default::default())
            .await;
    }
    stop.cancel();
}

/// Fails its first attempt, but only once the test says so; records every
/// call's attempt.
struct FailAfterSignal {
    attempts: Arc<std::sync::Mutex<Vec<u32>>>,
    go: Arc<tokio::sync::Notify>,
}

impl Handler for FailAfterSignal {
    type Message = Envelope;
    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        self.attempts.lock().unwrap().push(msg.attempt);
        if msg.attempt == 1 {
            self.go.notified().await;
            return Err(Failure::Transient("first attempt fails".into()));
        }
        Ok(())
    }
}

/// A settle that straddles a reconnect: the copy for the retry queue is
/// confirmed (over the publishing connection), but the consume connection
/// is gone before the original is acked. The broker redelivers the
/// original; it must not become a second live copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_across_a_lost_connection_leaves_one_live_copy() {
    if rabbitmqctl(&["-q", "status"]).is_none() {
        eprintln!("SKIPPED: rabbitmqctl cannot reach the broker on this machine");
        return;
    }
    let topology = common::unique_topology();
    let id = topology.prefix.trim_end_matches('.').to_string();
    let spec = QueueSpec::REPORTER;
    let client = format!("straddle-test-{id}");
    let stop = CancellationToken::new();
    let broker = common::connected_broker(&client, &topology, &stop).await;
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let go = Arc::new(tokio::sync::Notify::new());
    let consumer_stop = CancellationToken::new();
    let consumer = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        ConsumerOptions {
            spec,
            service: "straddle-test",
            prefetch: 4,
        },
        Arc::new(FailAfterSignal {
            attempts: attempts.clone(),
            go: go.clone(),
        }),
        consumer_stop.clone(),
    ));
    let event = Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider: Provider::Openpix,
        reason: "straddle".into(),
        permanent: false,
    }));
    broker
        .publish_raw(
            "",
            &topology.work_queue(&spec),
            &event.to_json(),
            lapin::BasicProperties::default().with_message_id(event.id.to_string().into()),
        )
        .await
        .unwrap();
    wait_for("the first delivery", Duration::from_secs(10), || {
        !attempts.lock().unwrap().is_empty()
    })
    .await;
    // Only the consuming connection goes; the publishing one stays.
    let list = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]).unwrap_or_default();
    let exact = format!("\"{client}\"}}");
    let pids: Vec<String> = list
        .lines()
        .filter(|l| l.contains(&exact))
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    assert_eq!(pids.len(), 1, "one consuming connection named {client}: {list}");
    rabbitmqctl(&["-q", "close_connection", &pids[0], "test: connection lost"]).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The handler now fails: the copy goes to the retry queue, the ack is lost.
    go.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !attempts.lock().unwrap().contains(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retried copy; attempts seen {:?}",
            attempts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = attempts.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![1, 2],
        "the first attempt handled once, then its one copy: {seen:?}"
    );
    consumer_stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer stops")
        .unwrap();
    if let Ok(conn) = broker.connection().await
        && let Ok(ch) = conn.create_channel().await
    {
        common::delete_topology(&ch, &topology).await;
    }
    stop.cancel();
}
