//! Faults of the shared servers: RabbitMQ and PostgreSQL restarted mid-run,
//! a consumer process killed with SIGKILL mid-batch. Every order submitted
//! must reach its final state, none twice. These tests stop servers that
//! every test uses, so they run one at a time, in their own test binary.

use payhub_tests::{TestApp, TestOptions, free_addr, sample_order};
use serde_json::Value;
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::Mutex;

static SERIAL: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

fn run(cmd: &str) {
    let status = Command::new("bash").arg("-c").arg(cmd).status().expect("bash runs");
    assert!(status.success(), "`{cmd}` failed");
}

fn have(tool: &str) -> bool {
    Command::new("bash")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn options() -> TestOptions {
    TestOptions {
        retry_delay: Duration::from_millis(500),
        ..TestOptions::default()
    }
}

/// Submits `n` orders in the background, a little apart, retrying like a shop.
fn submit_in_background(app: &std::sync::Arc<TestApp>, prefix: &str, n: usize) -> tokio::task::JoinHandle<Vec<String>> {
    let app = app.clone();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..n {
            let corr = format!("{prefix}-{i}");
            app.submit_until_accepted(&sample_order(&corr)).await;
            ids.push(corr);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        ids
    })
}

async fn order_ids(app: &TestApp, correlation_ids: &[String], status: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for c in correlation_ids {
        let o = app.wait_for_status_within(c, status, Duration::from_secs(90)).await;
        ids.push(o["id"].as_str().expect("id").to_string());
    }
    ids
}

/// Every order went accepted -> awaiting_payment -> paid, each step once,
/// and the shop heard of each payment once.
async fn assert_each_paid_exactly_once(app: &TestApp, n: usize) {
    let n = n as i64;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, n);
    assert_eq!(app.count("SELECT count(*) FROM orders WHERE status = 'paid'").await, n);
    assert_eq!(app.count("SELECT count(*) FROM charges").await, n);
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .await,
        n
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'awaiting_payment'")
            .await,
        n
    );
    assert_eq!(app.count("SELECT count(*) FROM order_history").await, 3 * n);
    assert_eq!(
        app.sandbox.charges().len() as i64,
        n,
        "one charge per order at the provider"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let paid_ids: std::collections::HashSet<String> = app
            .sandbox
            .shop_webhooks()
            .iter()
            .filter(|h| {
                h.verified && serde_json::from_str::<Value>(&h.body).is_ok_and(|b| b["data"]["status"] == "paid")
            })
            .map(|h| h.id.clone())
            .collect();
        if paid_ids.len() as i64 == n {
            break;
        }
        assert!(paid_ids.len() as i64 <= n, "more paid notifications than orders");
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} paid webhooks arrived",
            paid_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarted_mid_run_loses_nothing() {
    if !have("rabbitmqctl") {
        eprintln!("SKIPPED: rabbitmqctl is not on this machine");
        return;
    }
    let _serial = SERIAL.lock().await;
    let app = std::sync::Arc::new(TestApp::spawn_with(options()).await);
    let n = 12;
    let submitting = submit_in_background(&app, "rmq", n);
    tokio::time::sleep(Duration::from_millis(150)).await;
    run("rabbitmqctl -q stop_app");
    tokio::time::sleep(Duration::from_secs(2)).await;
    run("rabbitmqctl -q start_app && rabbitmqctl -q await_startup");
    let correlation_ids = submitting.await.unwrap();
    let ids = order_ids(&app, &correlation_ids, "awaiting_payment").await;

    // Pay half, restart the broker, pay the rest.
    for id in &ids[..n / 2] {
        app.pay_until_acknowledged(id).await;
    }
    run("rabbitmqctl -q stop_app");
    tokio::time::sleep(Duration::from_secs(1)).await;
    run("rabbitmqctl -q start_app && rabbitmqctl -q await_startup");
    for id in &ids[n / 2..] {
        app.pay_until_acknowledged(id).await;
    }
    order_ids(&app, &correlation_ids, "paid").await;
    assert_each_paid_exactly_once(&app, n).await;
    std::sync::Arc::into_inner(app).expect("no other owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_run_loses_nothing() {
    if !have("pg_ctlcluster") {
        eprintln!("SKIPPED: pg_ctlcluster is not on this machine");
        return;
    }
    let _serial = SERIAL.lock().await;
    let app = std::sync::Arc::new(TestApp::spawn_with(options()).await);
    let n = 12;
    let submitting = submit_in_background(&app, "pg", n);
    tokio::time::sleep(Duration::from_millis(150)).await;
    run("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main restart");
    let correlation_ids = submitting.await.unwrap();
    let ids = order_ids(&app, &correlation_ids, "awaiting_payment").await;
    for id in &ids[..n / 2] {
        app.pay_until_acknowledged(id).await;
    }
    run("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main restart");
    for id in &ids[n / 2..] {
        app.pay_until_acknowledged(id).await;
    }
    order_ids(&app, &correlation_ids, "paid").await;
    assert_each_paid_exactly_once(&app, n).await;
    // Nothing was parked: the outage held messages, it did not use up attempts.
    let depths = app.dead_letter_admin().await;
    for d in depths.depths().await.unwrap() {
        assert_eq!(d.dead_letters, 0, "{} has dead letters", d.queue);
    }
    depths.close().await;
    std::sync::Arc::into_inner(app).expect("no other owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let mut app = TestApp::spawn_with(TestOptions {
        external: vec!["order-updater"],
        ..options()
    })
    .await;
    let addr = free_addr();
    let mut child = app.spawn_process("order-updater", &addr);
    app.ops_urls.push(("order-updater", format!("http://{addr}")));
    app.wait_ready().await.unwrap();
    let app = std::sync::Arc::new(app);

    let n = 30;
    let submitting = submit_in_background(&app, "kill", n);
    tokio::time::sleep(Duration::from_millis(400)).await;
    child.kill().unwrap(); // SIGKILL: no drain, no acks
    child.wait().unwrap();
    let mut child = app.spawn_process("order-updater", &free_addr());
    let correlation_ids = submitting.await.unwrap();
    let ids = order_ids(&app, &correlation_ids, "awaiting_payment").await;

    let paying = {
        let app = app.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            for id in &ids {
                app.pay_until_acknowledged(id).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = app.spawn_process("order-updater", &free_addr());
    paying.await.unwrap();
    order_ids(&app, &correlation_ids, "paid").await;
    assert_each_paid_exactly_once(&app, n).await;
    // Each order's two events were applied once each, and each status change
    // was announced once.
    assert_eq!(
        app.count("SELECT count(*) FROM processed_events WHERE consumer = 'order-updater'")
            .await,
        2 * n as i64
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'order.status_changed'")
            .await,
        2 * n as i64
    );

    run(&format!("kill -TERM {}", child.id()));
    let status = child.wait().unwrap();
    assert!(status.success(), "order-updater exits cleanly on SIGTERM: {status}");
    std::sync::Arc::into_inner(app).expect("no other owner").stop().await;
}

/// Restores RabbitMQ's memory watermark however the test ends.
struct Watermark(String);

impl Drop for Watermark {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_vm_memory_high_watermark", &self.0])
            .status();
    }
}

struct AckOnly {
    broker: payhub_queue::Broker,
    handled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl payhub_queue::Handler for AckOnly {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &payhub_queue::Incoming) -> Result<(), payhub_queue::Failure> {
        // What a service publishes after its commit is blocked by the
        // alarm; it goes on in the background while the delivery is acked.
        let (broker, body) = (self.broker.clone(), msg.envelope.to_json());
        tokio::spawn(async move {
            let _ = broker
                .publish_raw("", "amq.rabbitmq.does-not-matter", &body, Default::default())
                .await;
        });
        self.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

fn queue_counts(queue: &str) -> Option<(u64, u64)> {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            &TestApp::vhost(),
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
        ])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().find(|q| q["name"] == queue).map(|q| {
        (
            q["messages_ready"].as_u64().unwrap_or(u64::MAX),
            q["messages_unacknowledged"].as_u64().unwrap_or(u64::MAX),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_publishing_but_not_acking() {
    let _serial = SERIAL.lock().await;
    if !have("rabbitmqctl") {
        eprintln!("SKIPPED: rabbitmqctl is needed to raise a memory alarm");
        return;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topology = payhub_queue::Topology {
        exchange: format!("payhub.test.{id}"),
        orders_exchange: format!("payhub.test-orders.{id}"),
        prefix: format!("t{id}."),
        retry: payhub_queue::RetryPolicy::default(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let broker = payhub_queue::Broker::start(&payhub_tests::amqp_url(), "alarm-test", topology.clone(), stop.clone());
    broker.wait_connected(Duration::from_secs(10)).await.unwrap();
    let spec = payhub_queue::QueueSpec::REPORTER;
    let work = topology.work_queue(&spec);
    for i in 0..5 {
        let env = payhub_core::Envelope::new(payhub_core::EventPayload::ChargeFailed(
            payhub_core::events::ChargeFailed {
                provider: payhub_core::Provider::Openpix,
                reason: format!("alarm {i}"),
                permanent: false,
            },
        ));
        broker
            .publish_raw("", &work, &env.to_json(), Default::default())
            .await
            .unwrap();
    }
    // Publishing connections block from here on.
    let current = Command::new("rabbitmqctl")
        .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok()
        .filter(|w| w.parse::<f64>().is_ok())
        .unwrap_or_else(|| "0.4".into());
    let _restore = Watermark(current);
    run("rabbitmqctl -q set_vm_memory_high_watermark absolute 1");
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumer_stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(payhub_queue::consume(
        broker.clone(),
        payhub_queue::ConsumerOptions {
            spec,
            service: "alarm-test",
            prefetch: 1,
        },
        std::sync::Arc::new(AckOnly {
            broker: broker.clone(),
            handled: handled.clone(),
        }),
        consumer_stop.clone(),
    ));
    // Every delivery is handled and acked while the alarm holds: with
    // prefetch 1, the next one is delivered only once the last is acked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let acked = handled.load(std::sync::atomic::Ordering::SeqCst) == 5 && queue_counts(&work) == Some((0, 0));
        if acked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handled {} of 5 during the alarm; queue (ready, unacked) {:?}",
            handled.load(std::sync::atomic::Ordering::SeqCst),
            queue_counts(&work)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(_restore);
    consumer_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    stop.cancel();
    payhub_tests::delete_topology(&topology).await;
}
