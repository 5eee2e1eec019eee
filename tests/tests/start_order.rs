//! No event is lost however the services start (issue "Safe with money",
//! §2): every service declares the whole topology at connect, and the
//! reporter's sweeper settles orders whose events did go missing.

use payhub_tests::{SERVICES, TestApp, TestOptions, eventually, sample_order};
use std::time::Duration;

/// A fixed shuffle per run: the services start in an order a fresh
/// installation might, with orders already flowing.
fn shuffled(seed: u64) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = SERVICES.to_vec();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_in_any_order_lose_no_order() {
    for seed in [7_u64, 1234] {
        let mut order = shuffled(seed);
        // Ingress and reporter first, the rest later: the order of the issue's
        // reproduction, then a shuffle of the others.
        order.retain(|s| *s != "ingress" && *s != "reporter");
        let mut app = TestApp::spawn_with(TestOptions {
            deferred: SERVICES.iter().copied().filter(|s| *s != "ingress").collect(),
            ..TestOptions::default()
        })
        .await;
        app.start_service("reporter").await.unwrap();
        // Orders go in while charge-creator, order-updater and notifier do
        // not exist yet.
        let cid = format!("early-{seed}");
        assert_eq!(
            app.submit_until_accepted(&sample_order(&cid)).await["status"],
            "accepted"
        );
        for name in &order {
            tokio::time::sleep(Duration::from_millis(150)).await;
            app.start_service(name).await.unwrap();
        }
        app.wait_ready().await.unwrap();
        let view = app.wait_for_status(&cid, "awaiting_payment").await;
        app.pay_until_acknowledged(view["id"].as_str().unwrap()).await;
        app.wait_for_status(&cid, "paid").await;
        assert!(
            eventually(Duration::from_secs(15), || async {
                !app.shop_hooks_for(&cid, "paid").is_empty()
            })
            .await,
            "the shop hears of the payment (start order {order:?})"
        );
        app.stop().await;
    }
}

fn sweeping() -> TestOptions {
    TestOptions {
        sweep: reporter::sweeper::SweepConfig {
            interval: Duration::from_millis(300),
            accepted_after: Duration::from_millis(500),
            expiry_grace: Duration::from_secs(3600),
            recheck_after: Duration::from_millis(500),
            notify_after: Duration::from_millis(500),
            batch: 100,
        },
        ..TestOptions::default()
    }
}

/// Deletes every message waiting in a service's work queue: the event is
/// lost as if it had never been routed there.
async fn lose_messages(app: &TestApp, spec: payhub_queue::QueueSpec) {
    let conn = lapin::Connection::connect(&payhub_tests::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(app.topology.work_queue(&spec).as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_settles_a_lost_payment_a_lost_order_and_a_lost_notification() {
    let mut app = TestApp::spawn_with(TestOptions {
        deferred: vec!["charge-creator", "notifier"],
        ..sweeping()
    })
    .await;
    // A lost order.accepted: the order waits with no charge.
    let lost = sample_order("lost-accepted");
    assert_eq!(app.post_order(&lost).await.status(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    lose_messages(&app, payhub_queue::QueueSpec::CHARGE_CREATOR).await;
    app.start_service("charge-creator").await.unwrap();
    let view = app
        .wait_for_status_within("lost-accepted", "awaiting_payment", Duration::from_secs(20))
        .await;
    let order_id = view["id"].as_str().unwrap().to_string();

    // A lost webhook: the buyer paid, the webhook never arrived.
    app.sandbox.hold_webhooks(true);
    app.sandbox.pay(&order_id).await.unwrap();
    let _ = app.sandbox.take_held_webhooks();
    app.sandbox.hold_webhooks(false);
    // The sweeper asks the provider and settles it. The notifier is not
    // running, and its message is lost too.
    app.wait_for_status_within("lost-accepted", "paid", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lose_messages(&app, payhub_queue::QueueSpec::NOTIFIER).await;
    app.start_service("notifier").await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !app.shop_hooks_for("lost-accepted", "paid").is_empty()
        })
        .await,
        "the sweeper publishes the paid change again and the shop hears of it"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .await,
        1
    );
    // Each finding was recorded, alerted on once, and is settled.
    let kinds: Vec<(String, bool)> =
        sqlx::query_as("SELECT kind, resolved_at IS NOT NULL FROM stale_orders ORDER BY kind")
            .fetch_all(&app.store.pool)
            .await
            .unwrap();
    assert!(kinds.iter().any(|(k, _)| k == "accepted_without_charge"), "{kinds:?}");
    assert!(kinds.iter().any(|(k, _)| k == "paid_not_notified"), "{kinds:?}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.count("SELECT count(*) FROM stale_orders WHERE resolved_at IS NULL")
                .await
                == 0
        })
        .await,
        "every finding is settled: {kinds:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_the_broker_refuses_does_not_hold_back_the_rest() {
    use payhub_core::events::{AlertAudience, AlertRaised, EventPayload, OrderChannel, OrderRejected};
    let app = TestApp::spawn().await;
    // Nothing routes alerts any more: an alert becomes unpublishable.
    let conn = lapin::Connection::connect(&payhub_tests::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_unbind(
        app.topology
            .work_queue(&payhub_queue::QueueSpec::NOTIFIER)
            .as_str()
            .into(),
        app.topology.exchange.as_str().into(),
        "alert.raised".into(),
        Default::default(),
    )
    .await
    .unwrap();
    let poison = payhub_core::Envelope::new(EventPayload::AlertRaised(AlertRaised {
        audience: AlertAudience::Platform,
        kind: "test".into(),
        subject: "unroutable".into(),
        detail: "nothing is bound to it".into(),
    }));
    let mut next = payhub_core::Envelope::new(EventPayload::OrderRejected(OrderRejected {
        channel: OrderChannel::Amqp,
        correlation_id: Some("after-poison".into()),
        reason: "test".into(),
        errors: vec![],
    }));
    next.shop_id = Some(app.shop.shop.id);
    let mut tx = app.store.pool.begin().await.unwrap();
    payhub_store::outbox::add(&mut tx, &poison).await.unwrap();
    payhub_store::outbox::add(&mut tx, &next).await.unwrap();
    // Both left behind by a crash, the poison one first.
    sqlx::query("UPDATE outbox SET created_at = now() - interval '20 seconds' WHERE id = $1")
        .bind(poison.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET created_at = now() - interval '10 seconds' WHERE id = $1")
        .bind(next.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("after-poison"))
        })
        .await,
        "the event behind the refused one is delivered"
    );
    let (attempts, error, published): (i32, Option<String>, bool) =
        sqlx::query_as("SELECT publish_attempts, last_error, published_at IS NOT NULL FROM outbox WHERE id = $1")
            .bind(poison.id)
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
    assert!(
        attempts >= 1 && error.is_some() && !published,
        "{attempts} {error:?} {published}"
    );
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}
