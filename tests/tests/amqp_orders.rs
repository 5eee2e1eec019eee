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
