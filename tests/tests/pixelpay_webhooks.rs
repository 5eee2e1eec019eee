//! PixelPay's collection (QuickPay) webhooks (issue 10 §3, seed 003), over
//! the real RabbitMQ and PostgreSQL with the sandbox's PixelPay simulator:
//! received at the order's unguessable callback URL, re-queried with
//! `status` before anything is paid, idempotent by the payment's `uuid`,
//! answered 200 once stored, retried by PixelPay after anything else; the
//! error webhook stored and the shop's admin mailed.
//!
//! The orders here are PixelPay orders without a charge: their card call
//! never reached charge-creator (it is started only after the order is
//! taken), so what pays them is a collection the buyer paid at PixelPay.

use payhub_sandbox::{
    PIXELPAY_OTHER_KEY_ID, PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_TEST_VISA, PixelPayCollection, PixelPayDelivery,
    PixelPayItem,
};
use payhub_tests::{PLATFORM_ADMIN, TestApp, TestOptions, eventually};
use serde_json::{Map, Value, json};
use std::time::Duration;

const TOTAL_MINOR: i64 = 15000;
const ADMIN: &str = "admin@loja.example.com";

/// The shop's own PixelPay account (the simulator's public sandbox
/// merchant); returns its account id.
fn set_pixelpay(app: &TestApp) -> String {
    app.use_sandbox_pixelpay()
}

fn card_order(cid: &str) -> Value {
    json!({
        "correlationID": cid,
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"code": "0000123", "title": "Camiseta Roja", "price": "150.00", "qty": 1, "total": "150.00"}],
        "total": "150.00",
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {
            "number": PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    })
}

/// A collection of `amount_minor` HNL at `merchant`.
fn collection(merchant: &str, amount_minor: i64) -> PixelPayCollection {
    PixelPayCollection {
        merchant_key_id: merchant.to_string(),
        currency: "HNL".into(),
        amount_minor,
        tax_amount_minor: 0,
        description: Some("Pedido".into()),
        note: None,
        items: vec![PixelPayItem {
            code: Some("0000123".into()),
            title: "Camiseta Roja".into(),
            description: None,
            tax_minor: 0,
            price_minor: amount_minor,
            qty: 1,
            total_minor: amount_minor,
        }],
        customer_name: "PEDRO PEREZ".into(),
        customer_email: "pedro.perez@example.com".into(),
        customer_phone: None,
        extra: Map::new(),
    }
}

/// A test app whose shop has a PixelPay account, and a PixelPay order of
/// 150.00 HNL without a charge: charge-creator is started only after ingress
/// took the order (so its card call was never made), unless `start` is false.
/// Returns the app, the account id and the order's callback URL.
async fn unpaid_order(cid: &str, opts: TestOptions, start: bool) -> (TestApp, String, String) {
    let mut app = TestApp::spawn_with(TestOptions {
        deferred: vec!["charge-creator"],
        ..opts
    })
    .await;
    app.wait_ready().await.unwrap();
    let account = set_pixelpay(&app);
    let r = app.post_order(&card_order(cid)).await;
    assert_eq!(r.status(), 201);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["cardPayment"]["outcome"], "indeterminate", "{view:#}");
    assert_eq!(view["status"], "accepted");
    let callback = view["payment"]["callbackUrl"].as_str().unwrap().to_string();
    if start {
        app.start_service("charge-creator").await.unwrap();
        app.wait_ready().await.unwrap();
    }
    (app, account, callback)
}

async fn wait_delivery(app: &TestApp, id: u64) -> PixelPayDelivery {
    app.sandbox
        .pixelpay_wait_delivery(id, Duration::from_secs(30))
        .await
        .unwrap()
}

async fn verdicts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT verdict, reason FROM webhook_events WHERE provider = 'pixelpay' ORDER BY received_at")
        .fetch_all(&app.store.pool)
        .await
        .unwrap()
}

async fn charges(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM charges").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_collection_is_re_queried_paid_once_and_repeats_are_duplicates() {
    let (app, account, callback) = unpaid_order("pp-col-1", TestOptions::default(), true).await;
    // The order's own URL: under the public base, an unguessable token that
    // is not the order's id.
    let order = app.wait_for_status("pp-col-1", "accepted").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let token = callback
        .strip_prefix(&format!("{}/webhooks/pixelpay/", app.verifier_url))
        .unwrap_or_else(|| panic!("{callback}"));
    assert_eq!(token.len(), 64);
    assert!(!token.contains(&order_id.replace('-', "")));
    assert_eq!(order["payment"]["provider"], "pixelpay");

    let before = app.sandbox.pixelpay_requests();
    let paid = app
        .sandbox
        .pixelpay_pay_collection(&collection(PIXELPAY_SANDBOX_KEY_ID, TOTAL_MINOR), &callback)
        .await
        .unwrap();
    let delivery = wait_delivery(&app, paid.delivery_id).await;
    assert!(delivery.delivered, "{delivery:#?}");
    assert_eq!(delivery.attempts.len(), 1, "answered 200 at once: {delivery:#?}");

    let view = app.wait_for_status("pp-col-1", "paid").await;
    assert_eq!(view["payment"]["method"], "card");
    assert_eq!(view["payment"]["account"], json!(account));
    assert_eq!(view["payment"]["callbackUrl"], json!(callback));
    // PixelPay was asked before anything was paid, and its payment is the charge.
    assert!(app.sandbox.pixelpay_requests() > before, "status was asked");
    let (charge_id, charge_account): (String, String) =
        sqlx::query_as("SELECT provider_charge_id, provider_account FROM charges WHERE order_id = $1::uuid")
            .bind(&order_id)
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
    assert_eq!(charge_id, paid.uuid);
    assert_eq!(charge_account, account);

    // PixelPay sends the same webhook again (twice): 200, nothing changes.
    for _ in 0..2 {
        let r = app
            .http
            .post(&callback)
            .header("content-type", "application/json")
            .body(delivery.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "duplicate", "{body}");
    }
    let seen: Vec<String> = verdicts(&app).await.into_iter().map(|(v, _)| v).collect();
    assert_eq!(seen, ["accepted", "duplicate", "duplicate"]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.shop_hooks_for("pp-col-1", "paid").len() == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = app.wait_for_status("pp-col-1", "paid").await;
    let paid_entries = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["to"] == "paid")
        .count();
    assert_eq!(paid_entries, 1, "paid exactly once: {view:#}");
    assert_eq!(app.shop_hooks_for("pp-col-1", "paid").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_wrong_collection_webhook_is_rejected_and_changes_nothing() {
    let (app, _, callback) = unpaid_order("pp-forged", TestOptions::default(), true).await;
    let post = |body: Value| {
        let (http, url) = (app.http.clone(), callback.clone());
        async move {
            let r = http.post(&url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A payment PixelPay does not know, claiming the right amount.
    let (status, body) = post(
        json!({"ref": "REF-0001-0006350867", "uuid": "1dab5ed0", "status": "paid",
                                     "currency": "HNL", "amount": 150.00}),
    )
    .await;
    assert_eq!((status, &body["status"]), (200, &json!("rejected")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("knows no payment"), "{body}");

    // Genuine collections that are not this order's: another amount, and the
    // right amount in another merchant's account.
    for c in [
        collection(PIXELPAY_SANDBOX_KEY_ID, 100),
        collection(PIXELPAY_OTHER_KEY_ID, TOTAL_MINOR),
    ] {
        let paid = app.sandbox.pixelpay_pay_collection(&c, &callback).await.unwrap();
        let d = wait_delivery(&app, paid.delivery_id).await;
        assert!(d.delivered, "PixelPay stops retrying: {d:#?}");
        assert!(d.attempts[0].answer.contains("rejected"), "{d:#?}");
    }
    let seen = verdicts(&app).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|(v, _)| v == "rejected"), "{seen:?}");
    let reasons: Vec<String> = seen.into_iter().filter_map(|(_, r)| r).collect();
    assert!(reasons[1].contains("approved"), "the amount: {reasons:?}");
    assert!(
        reasons[2].contains("knows no payment"),
        "the other account: {reasons:?}"
    );
    // Nothing changed; the platform's admin is told.
    assert_eq!(app.order_status("pp-forged").await.as_deref(), Some("accepted"));
    assert_eq!(charges(&app).await, 0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.emails().iter().any(|m| {
                m.rcpt_to.iter().any(|r| r == PLATFORM_ADMIN)
                    && m.subject
                        .as_deref()
                        .is_some_and(|s| s.contains("PixelPay callback was rejected"))
            })
        })
        .await
    );
    // The genuine payment still pays the order.
    let paid = app
        .sandbox
        .pixelpay_pay_collection(&collection(PIXELPAY_SANDBOX_KEY_ID, TOTAL_MINOR), &callback)
        .await
        .unwrap();
    assert!(wait_delivery(&app, paid.delivery_id).await.delivered);
    app.wait_for_status("pp-forged", "paid").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_callback_url_is_404_and_keeps_only_a_capped_record() {
    let app = TestApp::spawn().await;
    let big = json!({"uuid": "1dab5ed0", "status": "paid", "pad": "x".repeat(5000)}).to_string();
    let guessed = format!("{}/webhooks/pixelpay/{}", app.verifier_url, "ab".repeat(32));
    let malformed = format!("{}/webhooks/pixelpay/x", app.verifier_url);
    for url in [&guessed, &malformed] {
        let r = app
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{url}");
    }
    let rows: Vec<(String, i32, bool, i32)> = sqlx::query_as(
        "SELECT verdict, length(body), body_truncated, body_size FROM webhook_events WHERE provider = 'pixelpay'",
    )
    .fetch_all(&app.store.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (verdict, kept, truncated, size) in rows {
        assert_eq!(verdict, "rejected");
        assert!(kept <= 1024 && truncated, "capped: {kept}");
        assert_eq!(size as usize, big.len());
    }
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0, "no event, no alert");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_webhook_is_stored_and_the_shops_admin_is_mailed_once() {
    let (app, _, callback) = unpaid_order("pp-error", TestOptions::default(), true).await;
    let message = "Fatal error: Maximum execution time of 30 seconds exceeded";
    let id = app.sandbox.pixelpay_collection_error(&callback, message).await.unwrap();
    let delivery = wait_delivery(&app, id).await;
    assert!(delivery.delivered && delivery.attempts.len() == 1, "{delivery:#?}");
    let (verdict, reason, body): (String, Option<String>, Vec<u8>) =
        sqlx::query_as("SELECT verdict, reason, body FROM webhook_events WHERE provider = 'pixelpay'")
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
    assert_eq!(verdict, "provider_error");
    assert_eq!(reason.as_deref(), Some(message));
    assert_eq!(body, delivery.body.as_bytes(), "kept whole for PixelPay's support");
    let mailed = || async {
        app.sandbox
            .emails()
            .into_iter()
            .filter(|m| {
                m.rcpt_to.iter().any(|r| r == ADMIN)
                    && m.subject
                        .as_deref()
                        .is_some_and(|s| s.contains("Erro na cobrança PixelPay"))
            })
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(10), || async { mailed().await.len() == 1 }).await);
    assert!(payhub_tests::email_text(&mailed().await[0].data).contains("Maximum execution time"));
    // The same error again: acknowledged, stored, no second mail.
    let r = app
        .http
        .post(&callback)
        .header("content-type", "application/json")
        .body(delivery.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mailed().await.len(), 1);
    assert_eq!(app.order_status("pp-error").await.as_deref(), Some("accepted"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixelpay_retries_a_webhook_that_could_not_be_confirmed_yet() {
    let opts = TestOptions {
        pixelpay_webhook_retry_delay: Duration::from_secs(3),
        ..TestOptions::default()
    };
    // charge-creator stays down: the payment cannot be confirmed.
    let (mut app, _, callback) = unpaid_order("pp-retry", opts, false).await;
    let paid = app
        .sandbox
        .pixelpay_pay_collection(&collection(PIXELPAY_SANDBOX_KEY_ID, TOTAL_MINOR), &callback)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .pixelpay_delivery(paid.delivery_id)
                .is_some_and(|d| !d.attempts.is_empty())
        })
        .await
    );
    let first = app.sandbox.pixelpay_delivery(paid.delivery_id).unwrap();
    assert_eq!(first.attempts[0].status, Some(503), "{first:#?}");
    assert_eq!(app.order_status("pp-retry").await.as_deref(), Some("accepted"));
    // charge-creator comes back before PixelPay's next attempt.
    app.start_service("charge-creator").await.unwrap();
    app.wait_ready().await.unwrap();
    let delivery = wait_delivery(&app, paid.delivery_id).await;
    assert!(delivery.delivered, "{delivery:#?}");
    assert!(delivery.attempts.len() >= 2, "{delivery:#?}");
    assert_eq!(delivery.attempts.last().unwrap().status, Some(200));
    app.wait_for_status("pp-retry", "paid").await;
    let seen: Vec<String> = verdicts(&app).await.into_iter().map(|(v, _)| v).collect();
    assert_eq!(seen.first().map(String::as_str), Some("unconfirmed"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("accepted"), "{seen:?}");
    app.stop().await;
}
