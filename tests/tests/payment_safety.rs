//! A payment counts only when payhub has confirmed, with the provider and
//! under payhub's own credentials, that it is payhub's own charge for that
//! order, for that amount (issue "Safe with money", §1). Over the real
//! RabbitMQ and PostgreSQL, with the sandbox as OpenPix: a second merchant
//! account stands for a buyer who has an OpenPix account of their own.

use payhub_sandbox::{OTHER_MERCHANT_APP_ID, ProviderFault};
use payhub_tests::{PLATFORM_ADMIN, TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn awaiting(app: &TestApp, cid: &str) -> (String, Value) {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    (order["id"].as_str().unwrap().to_string(), order)
}

/// Signs `body` with the sandbox's (trusted) key, as anyone holding a
/// trusted key could, and posts it to webhook-verifier.
async fn post_signed(app: &TestApp, body: &Value) -> payhub_sandbox::WebhookAttempt {
    let body = serde_json::to_vec(body).unwrap();
    app.sandbox
        .send_raw_webhook(&body, Some(&app.sandbox.sign(&body)))
        .await
        .unwrap()
}

fn ack(attempt: &payhub_sandbox::WebhookAttempt) -> Value {
    serde_json::from_str(&attempt.body).unwrap_or(Value::Null)
}

async fn verdicts(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT verdict, reason FROM webhook_events ORDER BY received_at")
        .fetch_all(&app.store.pool)
        .await
        .unwrap()
}

/// The platform admin got an alert whose subject contains `needle`.
async fn platform_alerted(app: &TestApp, needle: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        app.sandbox.emails().iter().any(|m| {
            m.rcpt_to.iter().any(|t| t.contains(PLATFORM_ADMIN))
                && m.subject.as_deref().is_some_and(|s| s.contains(needle))
        })
    })
    .await
}

async fn metric(app: &TestApp, service: &str, line_start: &str) -> f64 {
    let base = &app.ops_urls.iter().find(|(n, _)| *n == service).unwrap().1;
    let text = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuinely_signed_payment_of_someone_elses_charge_pays_nothing() {
    let app = TestApp::spawn().await;
    let (order_id, order) = awaiting(&app, "fraud-1").await;
    let total = order["amounts"]["totalMinor"].as_i64().unwrap();

    // The buyer opens their own OpenPix account, creates a charge there with
    // payhub's order id as correlationID and the same value, and pays it.
    let created = app
        .http
        .post(format!("{}/api/v1/charge", app.sandbox.provider_url()))
        .header("Authorization", OTHER_MERCHANT_APP_ID)
        .json(&json!({"correlationID": order_id, "value": total, "comment": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let attempt = app.sandbox.pay_in_other_account(&order_id).await.unwrap();
    // Genuinely signed, so it is not a 401: it is answered 200 so that the
    // provider stops retrying, and stored as rejected with the reason.
    assert_eq!(attempt.status, 200, "{}", attempt.body);
    assert_eq!(ack(&attempt)["status"], "rejected");
    let (verdict, reason) = verdicts(&app).await.pop().unwrap();
    assert_eq!(verdict, "rejected");
    assert!(reason.unwrap().contains("payhub created charge"));

    // The same kind of webhook, this time naming payhub's own charge but
    // forged by the attacker's account's payment: the provider's answer
    // decides. payhub's charge is still ACTIVE at the provider.
    let mut forged: Value =
        serde_json::from_slice(include_bytes!("../fixtures/openpix/charge-completed.json")).unwrap();
    let charge = app.sandbox.charge(&order_id).unwrap();
    forged["charge"]["correlationID"] = json!(order_id);
    forged["charge"]["transactionID"] = json!(charge.transaction_id);
    forged["charge"]["value"] = json!(total);
    forged["pix"]["value"] = json!(total);
    let attempt = post_signed(&app, &forged).await;
    assert_eq!(attempt.status, 200);
    assert_eq!(ack(&attempt)["status"], "rejected", "{}", attempt.body);

    // Nothing moved: the order waits for its own payment, nobody was told
    // it was paid, and the platform's admin hears of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.order_status("fraud-1").await.as_deref(), Some("awaiting_payment"));
    assert!(app.shop_hooks_for("fraud-1", "paid").is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'payment.reported'")
            .await,
        0
    );
    assert!(
        platform_alerted(&app, "rejected").await,
        "the platform admin is alerted"
    );
    assert_eq!(
        metric(
            &app,
            "webhook-verifier",
            "payhub_provider_webhooks_rejected_total{cause=\"not_ours\""
        )
        .await,
        2.0
    );
    // A rejected webhook keeps a capped prefix of its body, with hash and size.
    let (kept, size, hash): (i32, i32, Vec<u8>) = sqlx::query_as(
        "SELECT length(body), body_size, body_sha256 FROM webhook_events WHERE verdict = 'rejected' LIMIT 1",
    )
    .fetch_one(&app.store.pool)
    .await
    .unwrap();
    assert!(kept <= 1024 && size > kept, "kept {kept} of {size}");
    assert_eq!(hash.len(), 32);

    // The buyer then really pays payhub's charge: that one counts.
    assert_eq!(ack(&app.sandbox.pay(&order_id).await.unwrap())["status"], "accepted");
    app.wait_for_status("fraud-1", "paid").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amount_is_the_providers_not_the_webhooks() {
    let app = TestApp::spawn().await;
    let (order_id, order) = awaiting(&app, "short-1").await;
    let total = order["amounts"]["totalMinor"].as_i64().unwrap();
    // The payer sends one centavo less; the webhook is re-signed claiming
    // the full amount (as anyone holding a trusted key could).
    app.sandbox.hold_webhooks(true);
    app.sandbox.pay_with_value(&order_id, total - 1).await.unwrap();
    app.sandbox.hold_webhooks(false);
    let (body, _) = app.sandbox.take_held_webhooks().pop().unwrap();
    let mut claimed: Value = serde_json::from_slice(&body).unwrap();
    claimed["pix"]["value"] = json!(total);
    let attempt = post_signed(&app, &claimed).await;
    assert_eq!(ack(&attempt)["status"], "accepted", "{}", attempt.body);
    let view = app.wait_for_status("short-1", "under_review").await;
    assert!(view.to_string().contains("amount mismatch"), "{view}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_a_charge_can_never_be_paid_by_a_webhook() {
    let app = TestApp::spawn().await;
    app.sandbox.provider_fail_always(ProviderFault::Status(400));
    assert_eq!(app.post_order(&sample_order("nocharge-1")).await.status(), 201);
    let order = app.wait_for_status("nocharge-1", "failed").await;
    let order_id = order["id"].as_str().unwrap();
    let mut hook: Value = serde_json::from_slice(include_bytes!("../fixtures/openpix/charge-completed.json")).unwrap();
    hook["charge"]["correlationID"] = json!(order_id);
    let attempt = post_signed(&app, &hook).await;
    assert_eq!(ack(&attempt)["status"], "rejected", "{}", attempt.body);
    assert!(ack(&attempt)["reason"].as_str().unwrap().contains("no charge"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.order_status("nocharge-1").await.as_deref(), Some("failed"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_payment_on_a_paid_order_goes_to_review_and_the_shop_admin_hears() {
    let app = TestApp::spawn().await;
    let (order_id, _) = awaiting(&app, "twice-1").await;
    assert_eq!(ack(&app.sandbox.pay(&order_id).await.unwrap())["status"], "accepted");
    app.wait_for_status("twice-1", "paid").await;
    // The very same payment reported again changes nothing...
    assert_eq!(
        ack(&app.sandbox.resend_last_webhook(&order_id).await.unwrap())["status"],
        "duplicate"
    );
    // ... but another payment (another endToEndId) is money received twice.
    let attempt = app.sandbox.pay_again(&order_id).await.unwrap();
    assert_eq!(ack(&attempt)["status"], "accepted", "{}", attempt.body);
    let view = app.wait_for_status("twice-1", "under_review").await;
    assert!(view.to_string().contains("second payment"), "{view}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.emails().iter().any(|m| {
                m.rcpt_to.iter().any(|t| t.contains("admin@loja.example.com"))
                    && m.subject.as_deref().is_some_and(|s| s.contains("under_review"))
            })
        })
        .await,
        "the shop's admin is alerted"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history WHERE to_status = 'paid'")
            .await,
        1,
        "paid exactly once"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_provider_cannot_be_asked_the_webhook_is_answered_503_and_counts_on_retry() {
    let app = TestApp::spawn().await;
    let (order_id, _) = awaiting(&app, "psync-down-1").await;
    app.sandbox.query_fail_next(1, ProviderFault::Status(503));
    let attempt = app.sandbox.pay(&order_id).await.unwrap();
    assert_eq!(attempt.status, 503, "{}", attempt.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.order_status("psync-down-1").await.as_deref(),
        Some("awaiting_payment")
    );
    // OpenPix retries the same webhook: now it is confirmed and counts.
    let attempt = app.sandbox.resend_last_webhook(&order_id).await.unwrap();
    assert_eq!(ack(&attempt)["status"], "accepted", "{}", attempt.body);
    app.wait_for_status("psync-down-1", "paid").await;
    let v = verdicts(&app).await;
    assert!(v.iter().any(|(verdict, _)| verdict == "unconfirmed"), "{v:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_counts_only_when_the_provider_says_expired() {
    let app = TestApp::spawn().await;
    let (order_id, _) = awaiting(&app, "exp-1").await;
    // A genuine-looking expiry for a charge the provider says is ACTIVE.
    let mut hook: Value = serde_json::from_slice(include_bytes!("../fixtures/openpix/charge-expired.json")).unwrap();
    hook["charge"]["correlationID"] = json!(order_id);
    let attempt = post_signed(&app, &hook).await;
    assert_eq!(ack(&attempt)["status"], "rejected", "{}", attempt.body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.order_status("exp-1").await.as_deref(), Some("awaiting_payment"));
    // The real expiry counts.
    assert_eq!(ack(&app.sandbox.expire(&order_id).await.unwrap())["status"], "accepted");
    app.wait_for_status("exp-1", "expired").await;
    app.stop().await;
}
