//! The PIX order pipeline, end to end, over the real RabbitMQ and PostgreSQL.

use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pix_order_goes_from_accepted_to_paid_and_everyone_is_told() {
    let app = TestApp::spawn().await;

    // The shop submits an order.
    let resp = app.post_order(&sample_order("pedido-1001")).await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["status"], "accepted");
    assert_eq!(created["amounts"]["total"], "227.79");

    // charge-creator creates the charge; the order can be paid.
    let order = app.wait_for_status("pedido-1001", "awaiting_payment").await;
    let br_code = order["charge"]["brCode"].as_str().expect("brCode");
    assert!(payhub_core::brcode::is_valid(br_code), "{br_code}");
    assert!(order["charge"]["paymentLinkUrl"].as_str().unwrap().starts_with("http"));
    let order_id = order["id"].as_str().unwrap().to_string();
    let charge = app
        .sandbox
        .charge(&order_id)
        .expect("the provider got the charge with the order id as correlationID");
    assert_eq!(charge.value, 22779);

    // The buyer pays; the provider's signed webhook is accepted.
    let answer = app.sandbox.pay(&order_id).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let order = app.wait_for_status("pedido-1001", "paid").await;
    assert!(order["endToEndId"].as_str().unwrap().starts_with('E'));
    let history: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["accepted", "awaiting_payment", "paid"]);

    // The shop gets a verifiable webhook for each status change.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.shop_webhooks().len() >= 2
        })
        .await
    );
    let hooks = app.sandbox.shop_webhooks();
    assert!(
        hooks.iter().all(|h| h.verified),
        "every shop webhook verifies: {hooks:#?}"
    );
    let statuses: Vec<String> = hooks
        .iter()
        .map(|h| {
            serde_json::from_str::<Value>(&h.body).unwrap()["data"]["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        statuses.contains(&"awaiting_payment".to_string()) && statuses.contains(&"paid".to_string()),
        "{statuses:?}"
    );

    // The buyer gets the PIX code, then the confirmation.
    assert!(eventually(Duration::from_secs(10), || async { app.sandbox.emails().len() >= 2 }).await);
    let mails = app.sandbox.emails();
    assert!(
        mails
            .iter()
            .all(|m| m.rcpt_to.iter().any(|r| r.contains("maria@example.com")))
    );
    assert!(
        mails
            .iter()
            .any(|m| payhub_tests::email_text(&m.data).contains(br_code)),
        "the PIX e-mail carries the copy-and-paste code: {mails:#?}"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.subject.as_deref().is_some_and(|s| s.contains("Pagamento confirmado"))),
        "{mails:#?}"
    );

    // Deliveries are recorded as delivered, not merely recorded.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.count("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await
                == 4
        })
        .await,
        "two shop webhooks and two e-mails delivered"
    );

    // The reporter counted the day.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r: Value = app
                .http
                .get(format!("{}/v1/reports/daily?date={today}", app.reporter_url))
                .bearer_auth(app.api_key())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["rows"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|row| row["status"] == "paid" && row["orders"] == 1 && row["amount"] == "227.79")
            })
        })
        .await
    );
    let csv = app
        .http
        .get(format!("{}/v1/reports/daily?date={today}&format=csv", app.reporter_url))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("date,shop_id,provider,status,currency,orders,amount\n"),
        "{csv}"
    );
    assert!(csv.contains(",openpix,paid,BRL,1,227.79\n"), "{csv}");

    // Every service shows its counters.
    for (name, base) in &app.ops_urls {
        let text = app
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("payhub_messages_published_total") || text.contains("payhub_messages_consumed_total"),
            "{name} metrics"
        );
        assert!(text.contains("payhub_http_requests_total"), "{name} metrics");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_webhook_changes_nothing() {
    let app = TestApp::spawn().await;
    app.post_order(&sample_order("pedido-forjado")).await;
    let order = app.wait_for_status("pedido-forjado", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap();

    let body = json!({
        "event": "OPENPIX:CHARGE_COMPLETED",
        "charge": {"correlationID": order_id, "value": 22779, "status": "COMPLETED", "transactionID": "x"},
        "pix": {"value": 22779, "endToEndId": "E00000000202601010000forged0000"}
    })
    .to_string();
    // No signature.
    let r = app.sandbox.send_raw_webhook(body.as_bytes(), None).await.unwrap();
    assert_eq!(r.status, 401);
    // A signature made over another body.
    let other_sig = app.sandbox.sign(b"{\"event\":\"something else\"}");
    let r = app
        .sandbox
        .send_raw_webhook(body.as_bytes(), Some(&other_sig))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    // Garbage.
    let r = app
        .sandbox
        .send_raw_webhook(body.as_bytes(), Some("bm90IGEgc2lnbmF0dXJl"))
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.order_status("pedido-forjado").await.as_deref(),
        Some("awaiting_payment")
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE verdict = 'rejected'")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'payment.reported'")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_webhook_pays_once() {
    let app = TestApp::spawn().await;
    app.post_order(&sample_order("pedido-dup")).await;
    let order = app.wait_for_status("pedido-dup", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    assert_eq!(app.sandbox.pay(&order_id).await.unwrap().status, 200);
    // The provider sends the very same webhook again, twice.
    assert_eq!(app.sandbox.resend_last_webhook(&order_id).await.unwrap().status, 200);
    assert_eq!(app.sandbox.resend_last_webhook(&order_id).await.unwrap().status, 200);
    app.wait_for_status("pedido-dup", "paid").await;
    // The same (provider, transaction, event) is acknowledged and stops at
    // the door: one payment notice reaches the order.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.count("SELECT count(*) FROM processed_events WHERE consumer = 'order-updater'")
                .await
                == 2
        })
        .await,
        "charge.created and one payment notice processed"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE verdict = 'accepted'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE verdict = 'duplicate'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .await,
        1
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paid_hooks = app
        .sandbox
        .shop_webhooks()
        .iter()
        .filter(|h| serde_json::from_str::<Value>(&h.body).unwrap()["data"]["status"] == "paid")
        .count();
    assert_eq!(paid_hooks, 1, "the shop hears about the payment once");
    let paid_mails = app
        .sandbox
        .emails()
        .iter()
        .filter(|m| m.subject.as_deref().is_some_and(|s| s.contains("Pagamento confirmado")))
        .count();
    assert_eq!(paid_mails, 1, "the buyer hears about the payment once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_order_is_rejected_with_field_errors_and_nothing_stored() {
    let app = TestApp::spawn().await;
    let mut body = sample_order("pedido-invalido");
    body["customer"]["taxID"] = json!("123.456.789-01");
    body["customer"]["email"] = json!("not-an-email");
    body["items"][0]["title"] = json!("ab");
    body["items"][1]["qty"] = json!(0);
    body["shippingAddress"]["zipcode"] = json!("1234");
    let resp = app.post_order(&body).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "customer.taxID",
        "customer.email",
        "items[0].title",
        "items[1].qty",
        "shippingAddress.zipcode",
    ] {
        assert!(fields.contains(&f), "{f} missing from {problem:#}");
    }
    // Not JSON at all.
    let resp = app
        .http
        .post(format!("{}/v1/orders", app.ingress_url))
        .bearer_auth(app.api_key())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM order_history").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_003_item_list_is_rejected_for_its_first_total() {
    let app = TestApp::spawn().await;
    let mut body = sample_order("pedido-seed-003");
    // The item list exactly as seed 003 prints it.
    body["items"] =
        serde_json::from_str(include_str!("../fixtures/pixelpay/order-content-as-documented.json")).unwrap();
    let resp = app.post_order(&body).await;
    assert_eq!(resp.status(), 422);
    let problem: Value = resp.json().await.unwrap();
    let err = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "items[0].total")
        .expect("items[0].total is named");
    assert_eq!(err["code"], "total_mismatch");
    assert_eq!(err["message"], "is 9.99 but price × qty = 99.99 × 1 = 99.99");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_correlation_id_submitted_twice_is_one_order() {
    let app = TestApp::spawn().await;
    let body = sample_order("pedido-repetido");
    let (a, b) = tokio::join!(app.post_order(&body), app.post_order(&body));
    let mut codes = [a.status().as_u16(), b.status().as_u16()];
    codes.sort();
    assert_eq!(codes, [200, 201], "one creates, the other replays");
    let a: Value = a.json().await.unwrap();
    let b: Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let again = app.post_order(&body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // The same correlationID with other content is refused, not merged.
    let mut other = body.clone();
    other["customer"]["name"] = json!("Outra Pessoa");
    assert_eq!(app.post_order(&other).await.status(), 409);

    app.wait_for_status("pedido-repetido", "awaiting_payment").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);
    // A replay or a conflict writes no history line and no event (the
    // order, its first line and its event are one statement).
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'accepted'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'order.accepted'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM charges").await, 1);
    assert_eq!(app.sandbox.charges().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_authenticate_and_never_see_each_others_orders() {
    let app = TestApp::spawn().await;
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    assert_eq!(app.post_order(&sample_order("pedido-a")).await.status(), 201);

    let no_key = app
        .http
        .post(format!("{}/v1/orders", app.ingress_url))
        .json(&sample_order("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(app.post_order_as(&sample_order("x"), "phk_wrong").await.status(), 401);

    let peek = app
        .http
        .get(format!("{}/v1/orders/pedido-a", app.ingress_url))
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(peek.status(), 404);
    // The other shop may use the same correlationID for its own order.
    assert_eq!(
        app.post_order_as(&sample_order("pedido-a"), &other.api_key)
            .await
            .status(),
        201
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_calls_expiry_and_wrong_amounts_are_handled() {
    let app = TestApp::spawn().await;
    // The provider's registration test call: 200, nothing else.
    let test_call = include_bytes!("../fixtures/openpix/webhook-test-call.json");
    let sig = app.sandbox.sign(test_call);
    assert_eq!(
        app.sandbox
            .send_raw_webhook(test_call, Some(&sig))
            .await
            .unwrap()
            .status,
        200
    );

    // An order whose charge expires unpaid.
    app.post_order(&sample_order("pedido-expira")).await;
    let o = app.wait_for_status("pedido-expira", "awaiting_payment").await;
    assert_eq!(app.sandbox.expire(o["id"].as_str().unwrap()).await.unwrap().status, 200);
    app.wait_for_status("pedido-expira", "expired").await;

    // A payment of the wrong amount is flagged, not paid, and the admin is alerted.
    app.post_order(&sample_order("pedido-valor")).await;
    let o = app.wait_for_status("pedido-valor", "awaiting_payment").await;
    assert_eq!(
        app.sandbox
            .pay_with_value(o["id"].as_str().unwrap(), 100)
            .await
            .unwrap()
            .status,
        200
    );
    let o = app.wait_for_status("pedido-valor", "under_review").await;
    assert!(o["statusReason"].as_str().unwrap().contains("amount mismatch"), "{o:#}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .emails()
                .iter()
                .any(|m| m.rcpt_to.iter().any(|r| r.contains("admin@loja.example.com")))
        })
        .await,
        "the shop's admin is alerted"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE verdict = 'test_call'")
            .await,
        1
    );
    app.stop().await;
}

/// charge-creator stores the processed mark, the charge and `charge.created`
/// in one statement: an `order.accepted` delivered again (a redelivery, or a
/// copy the outbox published twice) calls the provider once, stores one
/// charge and publishes one `charge.created`, and the order moves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_accepted_delivered_again_is_charged_once() {
    let app = TestApp::spawn().await;
    let resp = app.post_order(&sample_order("pedido-again")).await;
    assert_eq!(resp.status(), 201);
    let order = app.wait_for_status("pedido-again", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let (body,): (Vec<u8>,) = sqlx::query_as("SELECT body FROM outbox WHERE routing_key = 'order.accepted'")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    let accepted = payhub_core::Envelope::from_json(&body).unwrap();
    let spec = payhub_queue::QueueSpec::CHARGE_CREATOR;
    let before = app.deliveries_taken(&spec, "order.accepted");
    app.put_on_queue(&spec, &[accepted.clone(), accepted]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.deliveries_taken(&spec, "order.accepted") >= before + 2
        })
        .await,
        "charge-creator took both copies"
    );
    let charged = app
        .sandbox
        .charges()
        .iter()
        .filter(|c| c.correlation_id == order_id)
        .count();
    assert_eq!(charged, 1, "the provider was asked once");
    assert_eq!(app.count("SELECT count(*) FROM charges").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'charge.created'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM processed_events WHERE consumer = 'charge-creator'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'awaiting_payment'")
            .await,
        1
    );
    let admin = app.dead_letter_admin().await;
    let parked = admin.list(&spec, 10).await.unwrap();
    admin.close().await;
    assert!(parked.is_empty(), "nothing parked: {parked:?}");
    app.stop().await;
}
