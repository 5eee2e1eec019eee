//! PixelPay-style retries and dead-letter queues, over the real broker:
//! shop webhooks, charge creation, poison messages, replay.

use payhub_sandbox::{ProviderFault, ShopFault};
use payhub_tests::{TestApp, TestOptions, email_text, eventually, sample_order};
use serde_json::Value;
use std::time::Duration;

fn subjects(app: &TestApp) -> Vec<String> {
    app.sandbox.emails().iter().filter_map(|m| m.subject.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_endpoint_failing_twice_gets_the_webhook_on_attempt_3() {
    let app = TestApp::spawn().await;
    app.sandbox.shop_fail_next(2, ShopFault::Status(500));
    app.post_order(&sample_order("retry-3")).await;
    app.wait_for_status("retry-3", "awaiting_payment").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.shop_hooks_for("retry-3", "awaiting_payment")
                .iter()
                .any(|h| h.answered == Some(200))
        })
        .await
    );
    let hooks = app.shop_hooks_for("retry-3", "awaiting_payment");
    let answers: Vec<Option<u16>> = hooks.iter().map(|h| h.answered).collect();
    assert_eq!(answers, [Some(500), Some(500), Some(200)]);
    assert!(
        hooks.iter().all(|h| h.id == hooks[0].id),
        "the same webhook-id on every attempt"
    );
    assert!(hooks.iter().all(|h| h.verified));
    // The shop's 200 arrives before notifier records it: wait for the record.
    let record = || async {
        sqlx::query_as::<_, (i32, String)>("SELECT attempts, status FROM deliveries WHERE kind = 'shop_webhook'")
            .fetch_one(&app.store.pool)
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async { record().await.1 == "delivered" }).await,
        "the delivery is recorded as delivered: {:?}",
        record().await
    );
    let (attempts, status) = record().await;
    assert_eq!((attempts, status.as_str()), (3, "delivered"));
    // The buyer's e-mail went out once, on the first attempt, not on each retry.
    assert_eq!(subjects(&app).iter().filter(|s| s.contains("com PIX")).count(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_endpoint_that_never_answers_is_retried_after_the_timeout() {
    let app = TestApp::spawn().await;
    app.sandbox.shop_fail_next(1, ShopFault::Hang);
    app.post_order(&sample_order("retry-hang")).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.shop_hooks_for("retry-hang", "awaiting_payment")
                .iter()
                .any(|h| h.answered == Some(200))
        })
        .await
    );
    let answers: Vec<Option<u16>> = app
        .shop_hooks_for("retry-hang", "awaiting_payment")
        .iter()
        .map(|h| h.answered)
        .collect();
    assert_eq!(answers, [None, Some(200)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_endpoint_that_always_fails_is_parked_alerted_and_replayed_once() {
    let app = TestApp::spawn().await;
    app.sandbox.shop_fail_always(ShopFault::Status(503));
    app.post_order(&sample_order("retry-dlq")).await;
    app.wait_for_status("retry-dlq", "awaiting_payment").await;

    // Exactly three attempts, then the parking lot.
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.count("SELECT count(*) FROM deliveries WHERE kind = 'shop_webhook' AND status = 'failed'")
                .await
                == 1
        })
        .await,
        "the delivery is marked failed"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.shop_hooks_for("retry-dlq", "awaiting_payment").len(), 3);
    let listed = app.payhubctl(&["dlq", "list", "--queue", "notifier.status", "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let letters = listed[0]["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed:#}");
    let story = &letters[0]["story"];
    assert_eq!(story["reason"], "attempts_exhausted");
    assert_eq!(story["attempts"], 3);
    assert_eq!(story["failed_by"], "notifier");
    assert_eq!(story["original_routing_key"], "order.status_changed");
    assert_eq!(
        story["errors"].as_array().unwrap().len(),
        3,
        "one error per attempt: {story:#}"
    );
    assert!(story["first_failure"].is_string() && story["last_failure"].is_string());

    // The shop's admin is told, once.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.emails().iter().any(|m| {
                m.rcpt_to.iter().any(|r| r.contains("admin@loja.example.com"))
                    && m.subject.as_deref().is_some_and(|s| s.contains("Webhook não entregue"))
            })
        })
        .await,
        "{:?}",
        subjects(&app)
    );
    let alert = app
        .sandbox
        .emails()
        .into_iter()
        .find(|m| m.subject.as_deref().is_some_and(|s| s.contains("Webhook não entregue")))
        .unwrap();
    assert!(email_text(&alert.data).contains("payhubctl dlq replay notifier.status"));

    // The shop recovers; the operator replays; the webhook arrives once more, same id.
    app.sandbox.shop_recover();
    let replay = app.payhubctl(&["dlq", "replay", "notifier.status", "--reason", "attempts_exhausted"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout).trim(),
        "replayed 1 dead letter(s) into notifier.status"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.count("SELECT count(*) FROM deliveries WHERE kind = 'shop_webhook' AND status = 'delivered'")
                .await
                == 1
        })
        .await
    );
    let hooks = app.shop_hooks_for("retry-dlq", "awaiting_payment");
    let answers: Vec<Option<u16>> = hooks.iter().map(|h| h.answered).collect();
    assert_eq!(answers, [Some(503), Some(503), Some(503), Some(200)]);
    assert!(hooks.iter().all(|h| h.id == hooks[0].id));
    // Replaying again is a no-op: nothing is parked, and a delivered webhook is never resent.
    let again = app.payhubctl(&["dlq", "replay", "notifier.status", "--all"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "replayed 0 dead letter(s) into notifier.status"
    );
    assert_eq!(subjects(&app).iter().filter(|s| s.contains("com PIX")).count(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_for_the_whole_window_blocks_the_order_and_tells_buyer_and_admin() {
    let app = TestApp::spawn().await;
    app.sandbox.provider_fail_always(ProviderFault::Status(503));
    app.post_order(&sample_order("provider-down")).await;
    let order = app.wait_for_status("provider-down", "failed").await;
    assert!(
        order["statusReason"]
            .as_str()
            .unwrap()
            .contains("unavailable for 3 attempts"),
        "{order:#}"
    );
    assert_eq!(app.sandbox.charge_requests(), 3, "exactly three attempts");
    assert_eq!(app.count("SELECT count(*) FROM charges").await, 0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = subjects(&app);
            s.iter().any(|s| s.contains("Não foi possível processar"))
                && s.iter().any(|s| s.contains("[payhub] Pedido provider-down failed"))
        })
        .await,
        "{:?}",
        subjects(&app)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_once_creates_the_charge_on_attempt_2() {
    let app = TestApp::spawn().await;
    app.sandbox.provider_fail_next(1, ProviderFault::Status(500));
    app.post_order(&sample_order("provider-blip")).await;
    app.wait_for_status("provider-blip", "awaiting_payment").await;
    assert_eq!(app.sandbox.charge_requests(), 2);

    // A provider that does not answer within the timeout is retried too.
    app.sandbox.provider_fail_next(1, ProviderFault::Timeout);
    app.post_order(&sample_order("provider-slow")).await;
    app.wait_for_status_within("provider-slow", "awaiting_payment", Duration::from_secs(30))
        .await;
    assert_eq!(app.sandbox.charge_requests(), 4);
    assert_eq!(app.sandbox.charges().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_parked_with_their_reason_and_the_consumer_keeps_working() {
    let app = TestApp::spawn().await;
    let conn = lapin::Connection::connect(&payhub_tests::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let publish = |key: &'static str, body: Vec<u8>| {
        let ch = ch.clone();
        let exchange = app.topology.exchange.clone();
        async move {
            ch.basic_publish(
                exchange.as_str().into(),
                key.into(),
                Default::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // Not JSON at all.
    publish("order.accepted", b"\x00\xffnot json".to_vec()).await;
    // A well-formed event about an order that does not exist.
    let unknown = payhub_core::Envelope::new(payhub_core::EventPayload::PaymentReported(
        payhub_core::events::PaymentReported {
            provider: payhub_core::Provider::Openpix,
            webhook_event_id: uuid::Uuid::now_v7(),
            provider_reference: uuid::Uuid::now_v7().to_string(),
            report: payhub_core::events::PaymentReport::Expired,
            confirmation: None,
            source: Default::default(),
        },
    ));
    publish("payment.reported", unknown.to_json()).await;

    // The consumers carry on.
    app.post_order(&sample_order("after-poison")).await;
    app.wait_for_status("after-poison", "awaiting_payment").await;

    let admin = app.dead_letter_admin().await;
    let ok = eventually(Duration::from_secs(10), || async {
        admin
            .list(&payhub_queue::QueueSpec::CHARGE_CREATOR, 10)
            .await
            .unwrap()
            .len()
            == 1
            && admin
                .list(&payhub_queue::QueueSpec::ORDER_UPDATER, 10)
                .await
                .unwrap()
                .len()
                == 1
    })
    .await;
    assert!(ok, "both poison messages parked at once");
    let garbage = &admin.list(&payhub_queue::QueueSpec::CHARGE_CREATOR, 10).await.unwrap()[0];
    assert_eq!(garbage.story.reason.as_deref(), Some("unparseable"));
    assert_eq!(garbage.story.attempts, 1, "never retried");
    let unknown_order = &admin.list(&payhub_queue::QueueSpec::ORDER_UPDATER, 10).await.unwrap()[0];
    assert_eq!(unknown_order.story.reason.as_deref(), Some("permanent"));
    assert!(
        unknown_order.story.errors[0].contains("no order"),
        "{:?}",
        unknown_order.story
    );
    // Listing left them in place.
    assert_eq!(
        admin
            .list(&payhub_queue::QueueSpec::CHARGE_CREATOR, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Purged, they are gone.
    let purge = app.payhubctl(&["dlq", "purge", "charge-creator.orders", "--yes"]);
    assert_eq!(
        String::from_utf8_lossy(&purge.stdout).trim(),
        "purged 1 dead letter(s) from charge-creator.orders"
    );
    assert!(
        admin
            .list(&payhub_queue::QueueSpec::CHARGE_CREATOR, 10)
            .await
            .unwrap()
            .is_empty()
    );
    admin.close().await;
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_provider_webhooks_pay_once() {
    let app = TestApp::spawn().await;
    app.post_order(&sample_order("ooo-paid")).await;
    app.post_order(&sample_order("ooo-expired")).await;
    let paid = app.wait_for_status("ooo-paid", "awaiting_payment").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expired = app.wait_for_status("ooo-expired", "awaiting_payment").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // OpenPix reports one pix twice (CHARGE_COMPLETED and TRANSACTION_RECEIVED);
    // the notices are held and delivered in reverse, with an expiry in between.
    app.sandbox.hold_webhooks(true);
    app.sandbox.pay_with_transaction_received(&paid).await.unwrap();
    app.sandbox.expire(&expired).await.unwrap();
    app.sandbox.hold_webhooks(false);
    let answers = app.sandbox.release_held_webhooks(true).await.unwrap();
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");

    app.wait_for_status("ooo-paid", "paid").await;
    app.wait_for_status("ooo-expired", "expired").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .await,
        1
    );
    assert_eq!(app.shop_hooks_for("ooo-paid", "paid").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_declared_with_the_retry_topology() {
    let app = TestApp::spawn_with(TestOptions {
        retry_delay: Duration::from_millis(300),
        ..TestOptions::default()
    })
    .await;
    let conn = lapin::Connection::connect(&payhub_tests::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    // Re-declaring a queue with other arguments fails (PRECONDITION_FAILED),
    // so a successful re-declaration proves the arguments the services used.
    for spec in payhub_queue::QueueSpec::ALL {
        let t = &app.topology;
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, args) in [
            (t.work_queue(&spec), t.work_args(&spec)),
            (t.retry_queue(&spec), t.retry_args(&spec)),
            (t.dead_letter_queue(&spec), t.dead_letter_args()),
        ] {
            let ch = conn.create_channel().await.unwrap();
            ch.queue_declare(name.as_str().into(), durable, args)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

/// Payment notices that reach order-updater together are applied in one
/// transaction, each under its own savepoint: every order moves once, a
/// duplicate changes nothing, and a notice for an unknown order is parked
/// without taking its batch-mates down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_arriving_together_are_each_applied_once_and_a_bad_one_alone_is_parked() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let cid = format!("together-{i}");
        assert_eq!(app.post_order(&sample_order(&cid)).await.status(), 201);
        ids.push(cid);
    }
    let mut orders = Vec::new();
    for cid in &ids {
        let view = app.wait_for_status(cid, "awaiting_payment").await;
        orders.push(view["id"].as_str().unwrap().to_string());
    }
    // Notices as webhook-verifier stores them once the provider confirmed
    // them: about the charge payhub created.
    let mut charge_ids = std::collections::HashMap::new();
    for id in &orders {
        let (charge,): (String,) = sqlx::query_as("SELECT provider_charge_id FROM charges WHERE order_id = $1::uuid")
            .bind(id)
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
        charge_ids.insert(id.clone(), charge);
    }
    let notice = |reference: String| {
        payhub_core::Envelope::new(payhub_core::EventPayload::PaymentReported(
            payhub_core::events::PaymentReported {
                provider: payhub_core::Provider::Openpix,
                webhook_event_id: uuid::Uuid::now_v7(),
                confirmation: Some(payhub_core::events::PaymentConfirmation {
                    provider_charge_id: charge_ids.get(&reference).cloned().unwrap_or_default(),
                    account: "platform".into(),
                    confirmed_at: time::OffsetDateTime::now_utc(),
                }),
                provider_reference: reference,
                report: payhub_core::events::PaymentReport::Expired,
                source: Default::default(),
            },
        ))
    };
    let mut events: Vec<payhub_core::Envelope> = orders.iter().map(|id| notice(id.clone())).collect();
    events.push(events[0].clone());
    events.push(notice(uuid::Uuid::now_v7().to_string()));

    let conn = lapin::Connection::connect(&payhub_tests::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    // All published back to back, confirms awaited after: they wait in the
    // queue together.
    let mut confirms = Vec::new();
    for e in &events {
        let body = e.to_json();
        confirms.push(
            ch.basic_publish(
                app.topology.exchange.as_str().into(),
                "payment.reported".into(),
                Default::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        c.await.unwrap();
    }
    for cid in &ids {
        app.wait_for_status(cid, "expired").await;
    }
    let admin = app.dead_letter_admin().await;
    let parked = eventually(Duration::from_secs(10), || async {
        admin
            .list(&payhub_queue::QueueSpec::ORDER_UPDATER, 10)
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert!(parked, "the notice for an unknown order is parked");
    let parked = &admin.list(&payhub_queue::QueueSpec::ORDER_UPDATER, 10).await.unwrap()[0];
    assert!(parked.story.errors[0].contains("no order"), "{:?}", parked.story);
    // Give a late duplicate time to do harm, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'expired'")
            .await,
        8,
        "each order expired exactly once"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'order.status_changed'")
            .await,
        16,
        "two status changes stored per order: awaiting payment, then expired"
    );
    app.stop().await;
}
