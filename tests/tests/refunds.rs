//! Refunds (issue 10 §6), over the real RabbitMQ and PostgreSQL with the
//! sandbox as OpenPix and PixelPay: `POST /v1/orders/{correlationID}/refunds`
//! gives money of a paid order back through charge-creator, under the
//! account that took it; the order moves to `partially_refunded` or
//! `refunded` in its history, the shop and the buyer are told, and the
//! daily figures count the money returned.

use payhub_sandbox::{OTHER_MERCHANT_APP_ID, PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY, PIXELPAY_TEST_VISA};
use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

async fn refund(app: &TestApp, cid: &str, body: &Value) -> (u16, Value, bool) {
    refund_as(app, cid, body, app.api_key()).await
}

async fn refund_as(app: &TestApp, cid: &str, body: &Value, key: &str) -> (u16, Value, bool) {
    let r = app
        .http
        .post(format!("{}/v1/orders/{cid}/refunds", app.ingress_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("ingress answers");
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, r.json().await.unwrap_or(Value::Null), replayed)
}

/// A PIX order of the sample (R$ 227,79), paid in the platform's account.
async fn paid_order(app: &TestApp, cid: &str) -> String {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status(cid, "paid").await;
    order_id
}

fn secret_file(secret: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("payhub-secret-{}", uuid::Uuid::new_v4()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    path
}

fn payhubctl_ok(app: &TestApp, args: &[&str]) {
    let out = app.payhubctl(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn refunds_in_history(app: &TestApp, cid: &str) -> Vec<Value> {
    let view: Value = app.get_order(cid).await.json().await.unwrap();
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["to"] == "refunded" || h["to"] == "partially_refunded")
        .cloned()
        .collect()
}

async fn mail_with(app: &TestApp, subject: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        app.sandbox
            .emails()
            .iter()
            .any(|m| m.subject.as_deref().is_some_and(|s| s.contains(subject)))
    })
    .await
}

/// The reporter's rows of today for `status`: (orders, amount).
async fn report_row(app: &TestApp, status: &str) -> Option<(i64, String)> {
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let report: Value = app
        .http
        .get(format!("{}/v1/reports/daily?date={today}", app.reporter_url))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["status"] == status)
        .map(|r| {
            (
                r["orders"].as_i64().unwrap_or_default(),
                r["amount"].as_str().unwrap_or_default().to_string(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pix_refund_refunds_the_order_and_tells_the_shop_and_the_buyer() {
    let app = TestApp::spawn().await;
    let order_id = paid_order(&app, "rf-full").await;

    let (status, r, replayed) = refund(
        &app,
        "rf-full",
        &json!({"idempotencyKey": "full-1", "reason": "produto com defeito"}),
    )
    .await;
    assert_eq!(status, 201, "{r:#}");
    assert!(!replayed);
    assert_eq!(r["status"], "confirmed", "{r:#}");
    assert_eq!(r["amount"], "227.79", "no amount refunds what was paid");
    assert_eq!(r["refunded"], "227.79");
    assert_eq!(r["remaining"], "0.00");
    assert_eq!(r["currency"], "BRL");
    assert!(r["providerRefundId"].as_str().unwrap().starts_with('D'), "{r:#}");
    // At the provider, under the charge's correlationID, once, for the whole payment.
    let at_provider = app.sandbox.refunds(&order_id);
    assert_eq!(at_provider.len(), 1);
    assert_eq!(at_provider[0].value, 22779);
    assert_eq!(at_provider[0].correlation_id, r["id"].as_str().unwrap());
    assert_eq!(at_provider[0].comment.as_deref(), Some("produto com defeito"));

    let refunded = app.wait_for_status("rf-full", "refunded").await;
    assert!(
        refunded["statusReason"]
            .as_str()
            .unwrap()
            .contains("produto com defeito"),
        "{refunded:#}"
    );
    let history = refunds_in_history(&app, "rf-full").await;
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["from"], "paid");

    // The shop hears it in a signed status webhook that says how much went back.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !app.shop_hooks_for("rf-full", "refunded").is_empty()
        })
        .await
    );
    let hook = &app.shop_hooks_for("rf-full", "refunded")[0];
    assert!(hook.verified, "{:?}", hook.verify_error);
    let body: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(body["data"]["previousStatus"], "paid");
    assert_eq!(body["data"]["refund"]["amount"]["value"], "227.79");
    assert_eq!(body["data"]["refund"]["idempotencyKey"], "full-1");
    // The buyer gets a mail with the amount.
    assert!(
        mail_with(&app, "Reembolso de R$ 227,79").await,
        "{:#?}",
        app.sandbox.emails()
    );
    // And the day's figures count the money returned.
    assert!(
        eventually(Duration::from_secs(10), || async {
            report_row(&app, "refunded").await == Some((1, "227.79".into()))
        })
        .await,
        "{:?}",
        report_row(&app, "refunded").await
    );
    // Nothing is left to refund.
    let (status, problem, _) = refund(&app, "rf-full", &json!({"idempotencyKey": "full-2"})).await;
    assert_eq!(status, 409, "{problem:#}");
    assert_eq!(app.sandbox.refund_requests(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_refund_then_the_rest() {
    let app = TestApp::spawn().await;
    let order_id = paid_order(&app, "rf-part").await;

    let (status, r, _) = refund(&app, "rf-part", &json!({"idempotencyKey": "p-1", "amount": "27.79"})).await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["status"], "confirmed");
    assert_eq!(r["remaining"], "200.00");
    app.wait_for_status("rf-part", "partially_refunded").await;
    assert!(mail_with(&app, "Reembolso de R$ 27,79").await);

    // The rest: no amount.
    let (status, r, _) = refund(&app, "rf-part", &json!({"idempotencyKey": "p-2"})).await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["amount"], "200.00");
    assert_eq!(r["refunded"], "227.79");
    app.wait_for_status("rf-part", "refunded").await;
    let history = refunds_in_history(&app, "rf-part").await;
    let moves: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h["from"].as_str().unwrap(), h["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        [("paid", "partially_refunded"), ("partially_refunded", "refunded")]
    );
    let values: Vec<i64> = app.sandbox.refunds(&order_id).iter().map(|r| r.value).collect();
    assert_eq!(values, [2779, 20000]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            report_row(&app, "partially_refunded").await == Some((1, "27.79".into()))
                && report_row(&app, "refunded").await == Some((1, "200.00".into()))
        })
        .await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_twice_is_one_refund_and_one_provider_call() {
    let app = TestApp::spawn().await;
    paid_order(&app, "rf-key").await;
    let body = json!({"idempotencyKey": "once", "amount": 10.00});
    let (status, first, _) = refund(&app, "rf-key", &body).await;
    assert_eq!(status, 201, "{first:#}");
    let (status, again, replayed) = refund(&app, "rf-key", &body).await;
    assert_eq!(status, 200, "{again:#}");
    assert!(replayed, "the idempotent-replayed header");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "confirmed");
    assert_eq!(app.sandbox.refund_requests(), 1, "one call to the provider");
    // The key without an amount is the same refund too; with another amount, a conflict.
    let (status, _, replayed) = refund(&app, "rf-key", &json!({"idempotencyKey": "once"})).await;
    assert!(status == 200 && replayed);
    let (status, problem, _) = refund(&app, "rf-key", &json!({"idempotencyKey": "once", "amount": "11.00"})).await;
    assert_eq!(status, 409, "{problem:#}");
    assert_eq!(app.count("SELECT count(*) FROM refunds").await, 1);
    app.wait_for_status("rf-key", "partially_refunded").await;
    assert_eq!(refunds_in_history(&app, "rf-key").await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_refunded_is_refused_before_the_provider_is_called() {
    let app = TestApp::spawn().await;
    paid_order(&app, "rf-no").await;

    // More than was paid: 409 with the reason.
    let (status, problem, _) = refund(&app, "rf-no", &json!({"idempotencyKey": "big", "amount": "300.00"})).await;
    assert_eq!(status, 409, "{problem:#}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("more than what remains") && detail.contains("227.79"),
        "{detail}"
    );
    // Field by field, in the order's currency.
    let (status, problem, _) = refund(&app, "rf-no", &json!({"amount": "1.001", "reason": 5})).await;
    assert_eq!(status, 422, "{problem:#}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["amount", "idempotencyKey", "reason"] {
        assert!(fields.contains(&f), "{f} in {problem:#}");
    }
    let (status, _, _) = refund(&app, "rf-no", &json!({"idempotencyKey": "zero", "amount": 0})).await;
    assert_eq!(status, 422);
    // An order not paid yet.
    assert_eq!(app.post_order(&sample_order("rf-unpaid")).await.status(), 201);
    app.wait_for_status("rf-unpaid", "awaiting_payment").await;
    let (status, problem, _) = refund(&app, "rf-unpaid", &json!({"idempotencyKey": "u"})).await;
    assert_eq!(status, 409, "{problem:#}");
    // Another shop's order is not found, like a missing one.
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let (status, _, _) = refund_as(&app, "rf-no", &json!({"idempotencyKey": "x"}), &other.api_key).await;
    assert_eq!(status, 404);
    let (status, _, _) = refund(&app, "rf-missing", &json!({"idempotencyKey": "x"})).await;
    assert_eq!(status, 404);

    assert_eq!(app.sandbox.refund_requests(), 0, "the provider was never called");
    assert_eq!(app.count("SELECT count(*) FROM refunds").await, 0);
    assert_eq!(app.order_status("rf-no").await.as_deref(), Some("paid"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusal_is_answered_with_its_reason_and_changes_nothing() {
    let app = TestApp::spawn().await;
    paid_order(&app, "rf-ref").await;
    app.sandbox
        .refund_refuse_next("Saldo insuficiente para realizar o reembolso");
    let (status, r, _) = refund(&app, "rf-ref", &json!({"idempotencyKey": "no", "amount": "50.00"})).await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["status"], "refused");
    assert!(
        r["detail"].as_str().unwrap().contains("Saldo insuficiente"),
        "the provider's reason: {r:#}"
    );
    assert_eq!(r["refunded"], "0.00");
    assert_eq!(r["remaining"], "227.79", "a refused refund takes nothing");
    // The same key repeats the refusal without asking again.
    let (status, again, replayed) = refund(&app, "rf-ref", &json!({"idempotencyKey": "no"})).await;
    assert!(status == 200 && replayed && again["status"] == "refused", "{again:#}");
    assert_eq!(app.sandbox.refund_requests(), 1);
    // refund.failed is published and changes no order.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.count("SELECT count(*) FROM outbox WHERE routing_key = 'refund.failed' AND published_at IS NOT NULL")
                .await
                == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.order_status("rf-ref").await.as_deref(), Some("paid"));
    assert!(refunds_in_history(&app, "rf-ref").await.is_empty());
    // A new key may still refund.
    let (status, r, _) = refund(&app, "rf-ref", &json!({"idempotencyKey": "yes", "amount": "50.00"})).await;
    assert_eq!((status, r["status"].as_str()), (201, Some("confirmed")), "{r:#}");
    app.wait_for_status("rf-ref", "partially_refunded").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_provider_has_not_settled_is_asked_about_again_with_the_same_key() {
    let app = TestApp::spawn().await;
    let order_id = paid_order(&app, "rf-proc").await;
    app.sandbox.refund_process_next(1);
    let body = json!({"idempotencyKey": "slow"});
    let (status, r, _) = refund(&app, "rf-proc", &body).await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["status"], "processing");
    assert_eq!(r["remaining"], "0.00", "counted against what remains while open");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.order_status("rf-proc").await.as_deref(), Some("paid"));
    // Asked again, OpenPix has settled it: the same refund, confirmed.
    let (status, r, replayed) = refund(&app, "rf-proc", &body).await;
    assert_eq!(status, 201, "{r:#}");
    assert!(!replayed);
    assert_eq!(r["status"], "confirmed");
    assert_eq!(app.sandbox.refunds(&order_id).len(), 1, "one refund at the provider");
    app.wait_for_status("rf-proc", "refunded").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_under_the_shops_own_openpix_account_goes_to_that_account() {
    let app = TestApp::spawn().await;
    let path = secret_file(OTHER_MERCHANT_APP_ID);
    payhubctl_ok(
        &app,
        &[
            "shop",
            "set-provider",
            &app.shop.shop.id.to_string(),
            "openpix",
            "--secret-file",
            path.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(app.post_order(&sample_order("rf-own")).await.status(), 201);
    let order = app.wait_for_status("rf-own", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let attempt = app.sandbox.pay_in_other_account(&order_id).await.unwrap();
    assert_eq!(attempt.status, 200, "{}", attempt.body);
    app.wait_for_status("rf-own", "paid").await;

    let (status, r, _) = refund(&app, "rf-own", &json!({"idempotencyKey": "own", "amount": "7.79"})).await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["status"], "confirmed", "{r:#}");
    let at_shop = app.sandbox.other_account_refunds(&order_id);
    assert_eq!(at_shop.len(), 1, "refunded in the shop's own account");
    assert_eq!(at_shop[0].value, 779);
    assert!(
        app.sandbox.refunds(&order_id).is_empty(),
        "nothing at the platform's account"
    );
    let (account,): (String,) = sqlx::query_as("SELECT provider_account FROM refunds")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_ne!(account, "platform");
    app.wait_for_status("rf-own", "partially_refunded").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixelpay_card_order_is_refunded_whole_through_void() {
    let app = TestApp::spawn().await;
    let path = secret_file(PIXELPAY_SANDBOX_SECRET_KEY);
    let provider_url = app.sandbox.provider_url();
    payhubctl_ok(
        &app,
        &[
            "shop",
            "set-provider",
            &app.shop.shop.id.to_string(),
            "pixelpay",
            "--secret-file",
            path.to_str().unwrap(),
            "--key-id",
            PIXELPAY_SANDBOX_KEY_ID,
            "--endpoint",
            &provider_url,
            "--allow",
        ],
    );
    let _ = std::fs::remove_file(&path);
    let order = json!({
        "correlationID": "rf-card",
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"title": "Camiseta Roja", "price": "150.00", "qty": 1, "total": "150.00"}],
        "total": "150.00",
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {
            "number": PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    });
    let r = app.post_order(&order).await;
    assert_eq!(r.status(), 201);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["cardPayment"]["outcome"], "approved", "{view:#}");
    let uuid = view["cardPayment"]["paymentUuid"].as_str().unwrap().to_string();
    app.wait_for_status("rf-card", "paid").await;

    // A part: PixelPay can only void the whole sale.
    let before = app.sandbox.pixelpay_requests();
    let (status, problem, _) = refund(&app, "rf-card", &json!({"idempotencyKey": "c-1", "amount": "50.00"})).await;
    assert_eq!(status, 422, "{problem:#}");
    assert_eq!(problem["errors"][0]["field"], "amount");
    assert_eq!(problem["errors"][0]["code"], "partial_not_supported");
    assert_eq!(app.sandbox.pixelpay_requests(), before, "nothing sent to PixelPay");

    let (status, r, _) = refund(
        &app,
        "rf-card",
        &json!({"idempotencyKey": "c-2", "reason": "cliente desistiu"}),
    )
    .await;
    assert_eq!(status, 201, "{r:#}");
    assert_eq!(r["status"], "confirmed", "{r:#}");
    assert_eq!(r["amount"], "150.00");
    assert_eq!(r["currency"], "HNL");
    let tx = app.sandbox.pixelpay_transaction(&uuid).unwrap();
    assert!(tx.voided, "voided at PixelPay");
    assert_eq!(tx.void_reason.as_deref(), Some("cliente desistiu"));
    app.wait_for_status("rf-card", "refunded").await;
    assert!(mail_with(&app, "Reembolso de L 150.00").await);
    // Asked again: the first outcome, and no second void.
    let after = app.sandbox.pixelpay_requests();
    let (status, _, replayed) = refund(&app, "rf-card", &json!({"idempotencyKey": "c-2"})).await;
    assert!(status == 200 && replayed);
    assert_eq!(app.sandbox.pixelpay_requests(), after);
    app.stop().await;
}
