//! The order's life after payment (issue 12 §1), over the real RabbitMQ and
//! PostgreSQL with the sandbox as OpenPix, the shop and the mail server: a
//! paid order is forwarded, shipped (carrier, tracking code) and delivered
//! through the order API and through AMQP fulfilment messages; each move is
//! in the history with who made it, reaches the shop as a signed webhook
//! and the buyer as an e-mail with the tracking link; illegal moves are
//! refused with the reason; a promised delivery date is set at payment from
//! the shop's rule, and the sweeper tells the shop's admin, once, of an
//! order not delivered by then; the reporter counts on-time and late.

use payhub_tests::{TestApp, TestOptions, email_text, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn report(app: &TestApp, cid: &str, body: &Value) -> (u16, Value, bool) {
    let r = app.post_fulfilment(cid, body).await;
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, r.json().await.unwrap_or(Value::Null), replayed)
}

/// The shop promises 2 business days to PR (the sample's state), 5 elsewhere.
fn delivery_rule() -> payhub_core::fulfilment::DeliveryTime {
    serde_json::from_value(json!({"defaultDays": 5, "states": {"PR": 2}})).unwrap()
}

async fn promise_delivery(app: &TestApp) {
    let mut rules = app.shop.shop.order_rules.clone();
    rules.delivery_time = Some(delivery_rule());
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();
}

async fn paid_order(app: &TestApp, cid: &str) -> String {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status(cid, "paid").await;
    order_id
}

async fn mail_to(app: &TestApp, to: &str, subject: &str) -> Vec<String> {
    app.sandbox
        .emails()
        .into_iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == to) && m.subject.as_deref().is_some_and(|s| s.contains(subject)))
        .map(|m| email_text(&m.data))
        .collect()
}

async fn deliveries_report(app: &TestApp) -> Value {
    app.http
        .get(format!("{}/v1/reports/deliveries", app.reporter_url))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(app: &TestApp, service: &str) -> String {
    let ops = &app.ops_urls.iter().find(|(n, _)| *n == service).expect("ops url").1;
    app.http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_is_forwarded_shipped_and_delivered_on_time_and_illegal_moves_are_refused() {
    let app = TestApp::spawn().await;
    promise_delivery(&app).await;
    let cid = "ff-api";
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    app.wait_for_status(cid, "awaiting_payment").await;

    // Not paid: nothing can ship.
    let ship = json!({
        "status": "shipped", "carrier": "Correios", "trackingCode": "QB123456789BR",
        "trackingUrl": "https://rastreamento.example.com/QB123456789BR", "by": "joao@loja.example.com"
    });
    let (status, problem, _) = report(&app, cid, &ship).await;
    assert_eq!(status, 409, "{problem:#}");
    assert!(problem["detail"].as_str().unwrap().contains("not paid"), "{problem:#}");
    let (status, _, _) = report(&app, "no-such-order", &json!({"status": "fulfilling"})).await;
    assert_eq!(status, 404);

    let order = app.get_order(cid).await.json::<Value>().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    let paid = app.wait_for_status(cid, "paid").await;
    // The promise is made at payment from the shop's rule: 2 business days to PR.
    let paid_at = time::OffsetDateTime::parse(
        paid["paidAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let promised = delivery_rule().promised_on(paid_at, Some("PR"), Some("85920970"));
    assert_eq!(paid["shipment"]["promisedDeliveryOn"], promised.to_string(), "{paid:#}");

    let (status, r, _) = report(
        &app,
        cid,
        &json!({"status": "fulfilling", "by": "maria@loja.example.com"}),
    )
    .await;
    assert_eq!(status, 202, "{r:#}");
    assert_eq!(r["from"], "paid");
    app.wait_for_status(cid, "fulfilling").await;

    // Field by field: a shipment without its tracking code is invalid.
    let (status, problem, _) = report(&app, cid, &json!({"status": "shipped", "carrier": "Correios"})).await;
    assert_eq!(status, 422, "{problem:#}");
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "trackingCode" && e["code"] == "required"),
        "{problem:#}"
    );

    let (status, r, _) = report(&app, cid, &ship).await;
    assert_eq!(status, 202, "{r:#}");
    let shipped = app.wait_for_status(cid, "shipped").await;
    assert_eq!(shipped["shipment"]["carrier"], "Correios");
    assert_eq!(shipped["shipment"]["trackingCode"], "QB123456789BR");
    assert!(shipped["shipment"]["shippedAt"].is_string());
    // The same report again changes nothing and says so.
    let (status, _, replayed) = report(&app, cid, &ship).await;
    assert_eq!((status, replayed), (200, true));
    // A shipped order cannot be cancelled (it can be returned).
    let (status, problem, _) = report(&app, cid, &json!({"status": "cancelled"})).await;
    assert_eq!(status, 409, "{problem:#}");

    let (status, _, _) = report(&app, cid, &json!({"status": "delivered"})).await;
    assert_eq!(status, 202);
    let delivered = app.wait_for_status(cid, "delivered").await;
    let (status, problem, _) = report(&app, cid, &ship).await;
    assert_eq!(status, 409);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("from delivered it can be returned"),
        "{problem:#}"
    );

    // The history says who moved the order.
    let history = delivered["history"].as_array().unwrap();
    let by = |to: &str| {
        history
            .iter()
            .find(|h| h["to"] == to)
            .map(|h| h["by"].as_str().unwrap().to_string())
    };
    assert_eq!(by("paid").as_deref(), Some("order-updater"));
    assert_eq!(by("fulfilling").as_deref(), Some("shop:api:maria@loja.example.com"));
    assert_eq!(by("shipped").as_deref(), Some("shop:api:joao@loja.example.com"));
    assert_eq!(by("delivered").as_deref(), Some("shop:api"));
    assert_eq!(
        history.iter().filter(|h| h["to"] == "shipped").count(),
        1,
        "{history:#?}"
    );

    // The shop hears of each move, signed; the shipment rides along.
    for st in ["fulfilling", "shipped", "delivered"] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                app.shop_hooks_for(cid, st).len() == 1
            })
            .await,
            "one {st} webhook"
        );
        let hook = &app.shop_hooks_for(cid, st)[0];
        assert!(hook.verified, "{st}: {:?}", hook.verify_error);
    }
    let hook: Value = serde_json::from_str(&app.shop_hooks_for(cid, "shipped")[0].body).unwrap();
    assert_eq!(hook["data"]["shipment"]["trackingCode"], "QB123456789BR");
    assert_eq!(hook["data"]["shipment"]["promisedDeliveryOn"], promised.to_string());
    assert_eq!(hook["data"]["previousStatus"], "fulfilling");

    // The buyer gets the tracking link.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !mail_to(&app, "maria@example.com", "enviado").await.is_empty()
        })
        .await
    );
    let mail = &mail_to(&app, "maria@example.com", "enviado").await[0];
    assert!(
        mail.contains("https://rastreamento.example.com/QB123456789BR"),
        "{mail}"
    );
    assert!(mail.contains("QB123456789BR") && mail.contains("Correios"), "{mail}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            !mail_to(&app, "maria@example.com", "entregue").await.is_empty()
        })
        .await
    );

    // Delivered before the promise: on time.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = deliveries_report(&app).await;
            r["delivered"] == 1 && r["onTime"] == 1 && r["late"] == 0
        })
        .await,
        "{:#}",
        deliveries_report(&app).await
    );
    let m = metrics(&app, "reporter").await;
    assert!(
        m.contains("payhub_order_deliveries_total{timeliness=\"on_time\"}"),
        "{m}"
    );
    assert!(
        !m.lines()
            .any(|l| l.starts_with("payhub_order_deliveries_total") && l.contains("shop"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfilment_messages_over_amqp_move_the_order_and_bad_or_illegal_ones_are_refused_with_the_reason() {
    let app = TestApp::spawn().await;
    let shop_user = app.amqp_user_for(app.shop.shop.id).await;
    let cid = "ff-amqp";
    paid_order(&app, cid).await;

    let out = app.publish_with_pika(
        &shop_user,
        &json!({"type": "order.shipped", "correlationID": cid, "carrier": "Jadlog", "trackingCode": "JD0001"}),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shipped = app.wait_for_status(cid, "shipped").await;
    assert_eq!(shipped["shipment"]["carrier"], "Jadlog");
    let history = shipped["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["to"] == "shipped" && h["by"] == "shop:amqp"),
        "{history:#?}"
    );
    // No promise without a rule: the order is never late.
    assert!(shipped["shipment"]["promisedDeliveryOn"].is_null());

    let rejected = |code: &'static str| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(10), || async {
                app.sandbox.shop_webhooks().iter().any(|h| {
                    serde_json::from_str::<Value>(&h.body).is_ok_and(|b| {
                        b["type"] == "order.rejected"
                            && b["data"]["correlationID"] == cid
                            && b["data"]["errors"]
                                .as_array()
                                .is_some_and(|e| e.iter().any(|e| e["code"] == code))
                    })
                })
            })
            .await
        }
    };
    // Illegal: a shipped order cannot be cancelled.
    let out = app.publish_with_pika(&shop_user, &json!({"type": "order.cancelled", "correlationID": cid}));
    assert!(out.status.success());
    assert!(rejected("illegal_transition").await, "the shop hears why");
    let hook = app
        .sandbox
        .shop_webhooks()
        .into_iter()
        .find(|h| h.body.contains("illegal_transition"))
        .unwrap();
    assert!(hook.verified);
    assert!(hook.body.contains("it can be delivered or returned"), "{}", hook.body);
    // Invalid: a delivery with a tracking code, a shipment without one.
    let out = app.publish_with_pika(
        &shop_user,
        &json!({"type": "order.returned", "correlationID": cid, "trackingCode": "X1"}),
    );
    assert!(out.status.success());
    assert!(rejected("forbidden").await);
    let out = app.publish_with_pika(&shop_user, &json!({"type": "order.delivered", "correlationID": "nope"}));
    assert!(out.status.success());
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("not_found") && h.body.contains("nope"))
        })
        .await
    );
    assert_eq!(app.order_status(cid).await.as_deref(), Some("shipped"));

    let out = app.publish_with_pika(&shop_user, &json!({"type": "order.delivered", "correlationID": cid}));
    assert!(out.status.success());
    app.wait_for_status(cid, "delivered").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.shop_hooks_for(cid, "delivered").len() == 1
        })
        .await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_order_alerts_the_shops_admin_once_and_counts_as_late() {
    let app = TestApp::spawn_with(TestOptions {
        sweep: reporter::sweeper::SweepConfig {
            interval: Duration::from_millis(300),
            ..Default::default()
        },
        ..TestOptions::default()
    })
    .await;
    promise_delivery(&app).await;
    let cid = "ff-late";
    let order_id = paid_order(&app, cid).await;
    let (status, _, _) = report(
        &app,
        cid,
        &json!({"status": "shipped", "carrier": "Correios", "trackingCode": "QB000000001BR"}),
    )
    .await;
    assert_eq!(status, 202);
    app.wait_for_status(cid, "shipped").await;
    assert!(mail_to(&app, "admin@loja.example.com", "atrasado").await.is_empty());

    // The promised day passes without a delivery (the clock is the database's).
    sqlx::query("UPDATE orders SET promised_delivery_on = current_date - 3 WHERE id = $1::uuid")
        .bind(&order_id)
        .execute(&app.store.pool)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            !mail_to(&app, "admin@loja.example.com", "atrasado").await.is_empty()
        })
        .await,
        "the shop's admin is told the order is late"
    );
    let alert = &mail_to(&app, "admin@loja.example.com", "atrasado").await[0];
    assert!(alert.contains(cid) && alert.contains("shipped"), "{alert}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            deliveries_report(&app).await["lateNow"] == 1
        })
        .await
    );
    let m = metrics(&app, "reporter").await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("payhub_stale_orders{kind=\"late_delivery\"}") && !l.ends_with(" 0")),
        "{m}"
    );
    // Several sweeps later: still one alert.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mail_to(&app, "admin@loja.example.com", "atrasado").await.len(), 1);

    let (status, _, _) = report(&app, cid, &json!({"status": "delivered"})).await;
    assert_eq!(status, 202);
    app.wait_for_status(cid, "delivered").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let r = deliveries_report(&app).await;
            r["delivered"] == 1 && r["late"] == 1 && r["onTime"] == 0 && r["lateNow"] == 0
        })
        .await,
        "{:#}",
        deliveries_report(&app).await
    );
    assert_eq!(mail_to(&app, "admin@loja.example.com", "atrasado").await.len(), 1);
    app.stop().await;
}

/// Every fulfilment example of the contract is a report payhub reads.
#[test]
fn the_contracts_fulfilment_examples_are_what_payhub_reads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/contracts/fulfilment-examples");
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let msg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let update = payhub_core::fulfilment::FulfilmentUpdate::from_message(&msg)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        seen.insert(update.to.as_str());
    }
    let all: std::collections::BTreeSet<_> = payhub_core::fulfilment::REPORTABLE.iter().map(|s| s.as_str()).collect();
    assert_eq!(seen, all, "one example per message type");
}
