//! Order messages over RabbitMQ: the contract, a real pika client, shop
//! identity by the broker-validated user-id, and refusals that reach the shop.

use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

fn contract_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/contracts")
}

fn have_rabbitmqctl() -> bool {
    std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_contract_examples_follow_the_schema_and_payhubs_validation() {
    let dir = contract_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(dir.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        payhub_core::NewOrder::from_json(&v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 2);
    let out = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_contract.py"))
        .arg(&dir)
        .output()
        .expect("python3 runs (with jsonschema installed: pip install jsonschema)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_client_order_reaches_paid() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    let out = app.publish_with_pika(&shop, &sample_order("amqp-1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let order = app.wait_for_status("amqp-1", "awaiting_payment").await;
    app.sandbox.pay(order["id"].as_str().unwrap()).await.unwrap();
    app.wait_for_status("amqp-1", "paid").await;
    let (channel,): (String,) = sqlx::query_as("SELECT channel FROM orders")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(channel, "amqp");
    // The same message again is the same order.
    assert!(app.publish_with_pika(&shop, &sample_order("amqp-1")).status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    drop(shop);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_another_shops_name_is_refused() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let mine = app.amqp_user_for(app.shop.shop.id).await;
    let theirs = app.amqp_user_for(other.shop.id).await;

    // 1. user-id naming another RabbitMQ user: the broker itself refuses it.
    let conn = lapin::Connection::connect(&mine.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let props = lapin::BasicProperties::default().with_user_id(theirs.user.as_str().into());
    let body = sample_order("forged-user").to_string();
    let published = async {
        ch.basic_publish(
            app.topology.orders_exchange.as_str().into(),
            "orders".into(),
            Default::default(),
            body.as_bytes(),
            props,
        )
        .await?
        .await
    }
    .await;
    assert!(
        published.is_err(),
        "RabbitMQ refuses a user-id that is not the connection's user: {published:?}"
    );
    let _ = conn.close(200, "done".into()).await;

    // 2. The body claims the other shop: refused, and the publisher is told why.
    let mut claim = sample_order("forged-shop");
    claim["shopId"] = json!(other.shop.id);
    assert!(app.publish_with_pika(&mine, &claim).status.success());
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("order.rejected") && h.body.contains("shopId"))
        })
        .await,
        "the shop hears the refusal"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM orders").await,
        0,
        "nothing stored for anybody"
    );
    drop((mine, theirs));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_refused_with_their_reasons_and_parked() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    let mut bad = sample_order("amqp-bad");
    bad["items"][0]["total"] = json!(1.00);
    bad["customer"]["taxID"] = json!("111.111.111-11");
    assert!(app.publish_with_pika(&shop, &bad).status.success());

    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("order.rejected"))
        })
        .await
    );
    let hook = app
        .sandbox
        .shop_webhooks()
        .into_iter()
        .find(|h| h.body.contains("order.rejected"))
        .unwrap();
    assert!(hook.verified, "the refusal is signed like every webhook");
    let body: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(body["data"]["correlationID"], "amqp-bad");
    let fields: Vec<&str> = body["data"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"items[0].total") && fields.contains(&"customer.taxID"),
        "{body:#}"
    );

    let admin = app.dead_letter_admin().await;
    let parked = admin.list(&payhub_queue::QueueSpec::INGRESS_ORDERS, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].story.reason.as_deref(), Some("permanent"));
    assert!(
        parked[0].story.errors[0].contains("items[0].total"),
        "{:?}",
        parked[0].story
    );
    admin.close().await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0, "nothing half-stored");
    drop(shop);
    app.stop().await;
}

/// Publishes `body` to the shop-orders exchange as `shop` (its own user-id),
/// with extra headers, and waits for the broker's confirm.
async fn publish_as(
    app: &TestApp,
    shop: &payhub_tests::AmqpShopUser,
    user_id: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let conn = lapin::Connection::connect(&shop.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut h = lapin::types::FieldTable::default();
    for (k, v) in headers {
        h.insert((*k).into(), lapin::types::AMQPValue::LongString((*v).into()));
    }
    let mut props = lapin::BasicProperties::default()
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(h);
    if let Some(u) = user_id {
        props = props.with_user_id(u.into());
    }
    let confirm = ch
        .basic_publish(
            app.topology.orders_exchange.as_str().into(),
            "orders.test".into(),
            Default::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    let _ = conn.close(200, "done".into()).await;
}

fn rejections_for(app: &TestApp, correlation_id: &str) -> Vec<payhub_sandbox::ReceivedWebhook> {
    app.sandbox
        .shop_webhooks()
        .into_iter()
        .filter(|h| {
            serde_json::from_str::<Value>(&h.body)
                .is_ok_and(|b| b["type"] == "order.rejected" && b["data"]["correlationID"] == correlation_id)
        })
        .collect()
}

async fn parked(app: &TestApp) -> Vec<payhub_queue::dead_letters::DeadLetter> {
    let admin = app.dead_letter_admin().await;
    let parked = admin.list(&payhub_queue::QueueSpec::INGRESS_ORDERS, 10).await.unwrap();
    admin.close().await;
    parked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_service_that_never_answers_ends_in_one_rejection_after_the_last_attempt() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    // A stock service that takes the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stock", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    let rules: payhub_core::rules::OrderRules =
        serde_json::from_value(json!({"stock": {"kind": "callback", "url": url, "timeoutMs": 200}})).unwrap();
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    publish_as(
        &app,
        &shop,
        Some(&shop.user),
        &[],
        sample_order("stock-silent").to_string().as_bytes(),
    )
    .await;

    assert!(
        eventually(Duration::from_secs(20), || async {
            !rejections_for(&app, "stock-silent").is_empty()
        })
        .await,
        "the shop hears of the order once the attempts ran out"
    );
    // Every attempt asked the stock service: the retried copies kept their shop.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hooks = rejections_for(&app, "stock-silent");
    assert_eq!(hooks.len(), 1, "exactly one rejection");
    let body: Value = serde_json::from_str(&hooks[0].body).unwrap();
    assert_eq!(body["data"]["errors"][0]["code"], "stock_unavailable", "{body:#}");
    assert!(
        !hooks[0].body.contains("127.0.0.1"),
        "no address in the refusal: {}",
        hooks[0].body
    );
    let parked = parked(&app).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].story.attempts, 3);
    assert_eq!(parked[0].story.reason.as_deref(), Some("permanent"));
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    drop(shop);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_keeps_its_shop_and_a_forged_shop_header_is_not_believed() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let mine = app.amqp_user_for(app.shop.shop.id).await;
    let theirs = app.amqp_user_for(other.shop.id).await;
    let header = payhub_queue::headers::SHOP_USER;

    // The stock service fails the first call, then answers: the order is
    // accepted on its second attempt, which came back through the retry
    // queue under payhub's own user-id, for the right shop.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stock", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let router = axum::Router::new().route(
        "/stock",
        axum::routing::post(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})))
                } else {
                    (axum::http::StatusCode::OK, axum::Json(json!({"unavailable": []})))
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let rules: payhub_core::rules::OrderRules =
        serde_json::from_value(json!({"stock": {"kind": "callback", "url": url, "timeoutMs": 1000}})).unwrap();
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();
    // The publisher also forges the header, naming the other shop: its own
    // validated user-id wins, on the first attempt and on the retry.
    publish_as(
        &app,
        &mine,
        Some(&mine.user),
        &[(header, &theirs.user)],
        sample_order("retried").to_string().as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.count("SELECT count(*) FROM orders WHERE correlation_id = 'retried'")
                .await
                == 1
        })
        .await,
        "the order is accepted on its retry"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "accepted on the retry"
    );
    let (shop_id,): (uuid::Uuid,) = sqlx::query_as("SELECT shop_id FROM orders WHERE correlation_id = 'retried'")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(shop_id, app.shop.shop.id);

    // No user-id at all, the header naming a shop: nobody vouches for it.
    publish_as(
        &app,
        &theirs,
        None,
        &[(header, &mine.user)],
        sample_order("anonymous-forged").to_string().as_bytes(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async { !parked(&app).await.is_empty() }).await,
        "the anonymous message is parked"
    );
    let parked = parked(&app).await;
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0].story.errors[0].contains("no user-id"),
        "{:?}",
        parked[0].story
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    assert!(rejections_for(&app, "anonymous-forged").is_empty());
    drop((mine, theirs));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_parked_unread_and_replay_keeps_its_shop() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    // Over the 256 KiB limit, and not even JSON: never parsed.
    let mut huge = b"{\"correlationID\": \"huge\", ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 300 * 1024));
    publish_as(&app, &shop, Some(&shop.user), &[], &huge).await;
    assert!(
        eventually(Duration::from_secs(10), || async { !parked(&app).await.is_empty() }).await,
        "the message is parked"
    );
    let dead = parked(&app).await;
    assert_eq!(dead.len(), 1);
    let why = &dead[0].story.errors[0];
    assert!(why.contains("over the body limit"), "{why}");
    assert!(!why.contains("JSON"), "refused before parsing: {why}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("order.rejected") && h.body.contains("too_large"))
        })
        .await,
        "the shop hears why"
    );

    // Replayed by an operator, under payhub's own user: still the shop's
    // message (refused again for its size, not parked as anonymous), and
    // the same refusal, so no second webhook.
    let admin = app.dead_letter_admin().await;
    let n = admin
        .replay(&payhub_queue::QueueSpec::INGRESS_ORDERS, &Default::default())
        .await
        .unwrap();
    admin.close().await;
    assert_eq!(n, 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            parked(&app).await.first().is_some_and(|d| d.replayed == 1)
        })
        .await
    );
    let again = parked(&app).await;
    assert!(
        again[0].story.errors[0].contains("over the body limit"),
        "{:?}",
        again[0].story
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks: Vec<_> = app
        .sandbox
        .shop_webhooks()
        .into_iter()
        .filter(|h| h.body.contains("too_large"))
        .collect();
    assert_eq!(hooks.len(), 1, "one refusal under one webhook id");
    drop(shop);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_message_carrying_a_card_is_refused_and_not_parked() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    let mut order = sample_order("amqp-card");
    order["provider"] = serde_json::json!("pixelpay");
    order["currency"] = serde_json::json!("HNL");
    order["card"] =
        serde_json::json!({"number": "4111111111111111", "cvv": "739", "expire": "3012", "holder": "Dan Silva"});
    assert!(app.publish_with_pika(&shop, &order).status.success());
    // The shop hears why, and the message is dropped: a dead letter would keep the card.
    assert!(
        payhub_tests::eventually(Duration::from_secs(15), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("card data is never taken over AMQP"))
        })
        .await,
        "the shop is told"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = app.dead_letter_admin().await;
    let parked = admin.list(&payhub_queue::QueueSpec::INGRESS_ORDERS, 100).await.unwrap();
    assert!(
        parked.iter().all(|d| !d.body.contains("4111111111111111")),
        "nothing parked with the card"
    );
    admin.close().await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    drop(shop);
    app.stop().await;
}

/// Issue 11 §1: an order message with a `checkout` block gets payhub's
/// hosted checkout, and its URL reaches the shop in the order's first
/// webhook (`awaiting_payment`), with the buyer's "my orders" page; a Pago
/// Seguro order over AMQP needs the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_message_with_a_checkout_block_hands_the_checkout_url_in_its_first_webhook() {
    if !have_rabbitmqctl() {
        eprintln!("SKIPPED: rabbitmqctl is needed to make the shop's RabbitMQ user");
        return;
    }
    let app = TestApp::spawn().await;
    app.use_sandbox_pagoseguro();
    let shop = app.amqp_user_for(app.shop.shop.id).await;
    let base = app.sandbox.shop_webhook_url().replace("/shop/webhooks", "");
    let checkout = json!({
        "returnUrl": format!("{base}/shop/checkout/return"),
        "cancelUrl": format!("{base}/shop/checkout/cancel"),
    });
    let mut pix = sample_order("amqp-co-pix");
    pix["checkout"] = checkout.clone();
    let pagoseguro = json!({
        "correlationID": "amqp-co-ps",
        "provider": "pagoseguro",
        "currency": "COP",
        "items": [{"title": "Camiseta Roja", "price": "75000.00", "qty": 1, "total": "75000.00"}],
        "total": "75000.00",
        "customer": {"name": "Pedro Pérez", "email": "pedro.perez@example.com"},
        "checkout": checkout,
    });
    let mut bare = pagoseguro.clone();
    bare["correlationID"] = json!("amqp-co-bare");
    bare.as_object_mut().unwrap().remove("checkout");
    let mut bad = sample_order("amqp-co-bad");
    bad["checkout"] = json!({"returnUrl": "ftp://shop.example/ok"});
    for order in [&pix, &pagoseguro, &bare, &bad] {
        let out = app.publish_with_pika(&shop, order);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for cid in ["amqp-co-pix", "amqp-co-ps"] {
        app.wait_for_status(cid, "awaiting_payment").await;
        assert!(
            eventually(Duration::from_secs(15), || async {
                !app.shop_hooks_for(cid, "awaiting_payment").is_empty()
            })
            .await,
            "{cid}: the first webhook"
        );
        let hook: Value = serde_json::from_str(&app.shop_hooks_for(cid, "awaiting_payment")[0].body).unwrap();
        let data = &hook["data"];
        let url = data["checkout"]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{cid}: {data:#}"));
        assert!(url.starts_with(&format!("{}/checkout/", app.ingress_url)), "{url}");
        assert!(data["checkout"]["expiresAt"].is_string(), "{data:#}");
        let my_orders = data["myOrdersUrl"].as_str().unwrap();
        assert!(
            my_orders.starts_with(&format!(
                "{}/my/orders/{}/",
                app.ingress_url,
                data["orderId"].as_str().unwrap()
            )),
            "{my_orders}"
        );
        // The URL is the order API's own, and the page opens.
        let view: Value = app.get_order(cid).await.json().await.unwrap();
        assert_eq!(view["checkout"]["url"], url);
        assert_eq!(view["myOrdersUrl"], my_orders);
        let page = app.http.get(url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("Loja Teste"), "{html}");
        assert_eq!(app.http.get(my_orders).send().await.unwrap().status(), 200);
    }
    // Refused with their reasons: no checkout for Pago Seguro, a bad block.
    for (cid, field) in [("amqp-co-bare", "checkout"), ("amqp-co-bad", "checkout.returnUrl")] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                !rejections_for(&app, cid).is_empty()
            })
            .await,
            "{cid} refused"
        );
        let body: Value = serde_json::from_str(&rejections_for(&app, cid)[0].body).unwrap();
        let errors = body["data"]["errors"].to_string();
        assert!(errors.contains(&format!("\"{field}\"")), "{cid}: {errors}");
        assert_eq!(app.order_status(cid).await, None, "{cid} not stored");
    }
    // Later webhooks carry the "my orders" link but not the checkout again.
    let order = app.get_order("amqp-co-pix").await.json::<Value>().await.unwrap();
    app.pay_until_acknowledged(order["id"].as_str().unwrap()).await;
    app.wait_for_status("amqp-co-pix", "paid").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.shop_hooks_for("amqp-co-pix", "paid").is_empty()
        })
        .await
    );
    let paid: Value = serde_json::from_str(&app.shop_hooks_for("amqp-co-pix", "paid")[0].body).unwrap();
    assert_eq!(paid["data"]["myOrdersUrl"], order["myOrdersUrl"]);
    assert!(paid["data"].get("checkout").is_none(), "{paid:#}");
    drop(shop);
    app.stop().await;
}
