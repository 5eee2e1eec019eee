//! Card payments through PixelPay (issue 10 §3), over the real RabbitMQ and
//! PostgreSQL with the sandbox's PixelPay simulator: a sale approved and
//! paid, a decline, a timeout that `status` settles, and card data that
//! comes to rest nowhere (tables, queues, dead letters, logs).

use payhub_sandbox::{PIXELPAY_OTHER_KEY_ID, PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY, PIXELPAY_TEST_VISA};
use payhub_tests::leaks::{assert_nowhere, logs};
use payhub_tests::{CARD_CVV, CARD_EXPIRE, TestApp, card_order, eventually};
use serde_json::{Value, json};
use std::time::Duration;

async fn post(app: &TestApp, body: &Value) -> (u16, Value) {
    let r = app.post_order(body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn card_traces() -> Vec<String> {
    vec![
        PIXELPAY_TEST_VISA.into(),
        format!("\"{CARD_CVV}\""),
        "\"cvv\"".into(),
        format!("\"{CARD_EXPIRE}\""),
        "4111 1111 1111 1111".into(),
        PIXELPAY_SANDBOX_SECRET_KEY.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_sale_is_approved_paid_once_and_the_card_rests_nowhere() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();

    let (status, view) = post(&app, &card_order("card-ok", "150.00")).await;
    assert_eq!(status, 201, "{view:#}");
    let card = &view["cardPayment"];
    assert_eq!(card["outcome"], "approved", "{view:#}");
    assert_eq!(card["card"], "4111 •••• •••• 1111");
    assert_eq!(card["brand"], "visa");
    assert!(card["authorizationCode"].is_string(), "{card}");
    let uuid = card["paymentUuid"].as_str().unwrap().to_string();

    let paid = app.wait_for_status("card-ok", "paid").await;
    assert_eq!(paid["payment"]["method"], "card");
    assert_eq!(paid["amounts"]["total"], "150.00");
    assert_eq!(paid["currency"], "HNL");
    // The sale went to the shop's account, once, for exactly the order's amount.
    let sales: Vec<_> = app
        .sandbox
        .pixelpay_transactions()
        .into_iter()
        .filter(|t| t.payment_uuid == uuid)
        .collect();
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].merchant_key_id, PIXELPAY_SANDBOX_KEY_ID);
    assert_ne!(sales[0].merchant_key_id, PIXELPAY_OTHER_KEY_ID);

    // The shop hears "paid", the buyer gets the confirmation.
    assert!(
        eventually(Duration::from_secs(10), || async {
            !app.shop_hooks_for("card-ok", "paid").is_empty()
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .emails()
                .iter()
                .any(|m| m.subject.as_deref().is_some_and(|s| s.contains("Pagamento confirmado")))
        })
        .await
    );

    // The same request again: the order is replayed, the card is not charged again.
    let before = app.sandbox.pixelpay_requests();
    let (status, again) = post(&app, &card_order("card-ok", "150.00")).await;
    assert_eq!(status, 200, "{again:#}");
    assert_eq!(again["cardPayment"]["replayed"], true);
    assert_eq!(app.sandbox.pixelpay_requests(), before, "no second call to PixelPay");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nowhere(&app, &card_traces()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_the_order_with_the_reason_and_is_never_retried() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    // 2.00: the simulator declines, as PixelPay's sandbox does.
    let (status, view) = post(&app, &card_order("card-no", "2.00")).await;
    assert_eq!(status, 201, "{view:#}");
    assert_eq!(view["cardPayment"]["outcome"], "declined", "{view:#}");
    let failed = app.wait_for_status("card-no", "failed").await;
    let reason = failed["statusReason"].as_str().unwrap();
    assert!(reason.contains("declined") && reason.contains("denegada"), "{reason}");
    // Stored for diagnosis; the buyer is told.
    let (outcome, detail): (String, Option<String>) = sqlx::query_as("SELECT outcome, detail FROM card_attempts")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(outcome, "declined");
    assert!(detail.unwrap().contains("denegada"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .emails()
                .iter()
                .any(|m| m.subject.as_deref().is_some_and(|s| s.contains("cartão recusado")))
        })
        .await
    );
    assert_eq!(app.sandbox.pixelpay_requests(), 1, "a decline is never retried");
    assert_nowhere(&app, &card_traces()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_settled_by_status_and_the_buyer_is_charged_once() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    // 8.00: PixelPay answers 408 after charging; its status says approved.
    let (status, view) = post(&app, &card_order("card-408", "8.00")).await;
    assert_eq!(status, 201, "{view:#}");
    assert_eq!(view["cardPayment"]["outcome"], "approved", "{view:#}");
    app.wait_for_status("card-408", "paid").await;
    let charged = app
        .sandbox
        .pixelpay_transactions()
        .iter()
        .filter(|t| t.kind == "sale")
        .count();
    assert_eq!(charged, 1, "one sale at PixelPay");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_about_a_pixelpay_charge_is_never_sent_to_openpix() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let (status, view) = post(&app, &card_order("card-claim", "150.00")).await;
    assert_eq!(status, 201, "{view:#}");
    let paid = app.wait_for_status("card-claim", "paid").await;
    let order_id: uuid::Uuid = paid["id"].as_str().unwrap().parse().unwrap();
    // A PixelPay payment under the platform's account (a shop without its
    // own): the account name that also stands for the platform's OpenPix.
    sqlx::query("UPDATE charges SET provider_account = 'platform' WHERE order_id = $1")
        .bind(order_id)
        .execute(&app.store.pool)
        .await
        .unwrap();
    let confirm = payhub_connectors::internal::ConfirmClient::new(
        &app.charge_creator_url(),
        payhub_service::internal::DEVELOPMENT_TOKEN.to_string().into(),
        Duration::from_secs(10),
    )
    .unwrap();
    let queries = app.sandbox.queries();
    // The sweeper's question, and an OpenPix-style claim naming no PixelPay payment.
    for claim in [
        payhub_connectors::internal::ClaimKind::Status,
        payhub_connectors::internal::ClaimKind::Paid,
        payhub_connectors::internal::ClaimKind::Expired,
    ] {
        let answer = confirm
            .confirm(&payhub_connectors::internal::ConfirmRequest {
                order_id,
                claim,
                provider_charge_id: None,
                end_to_end_id: None,
                pixelpay: None,
            })
            .await
            .expect("charge-creator answers");
        assert_eq!(
            answer.verdict,
            payhub_connectors::internal::Verdict::Rejected,
            "{claim:?}"
        );
        let reason = answer.reason.unwrap_or_default();
        assert!(reason.contains("PixelPay payment"), "{claim:?}: {reason}");
        assert!(answer.report.is_none() && answer.confirmation.is_none());
    }
    assert_eq!(
        app.sandbox.queries(),
        queries,
        "OpenPix was asked about a PixelPay payment"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_input_is_checked_field_by_field_at_the_door_and_nothing_is_stored() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let mut body = card_order("card-bad", "10.00");
    body["card"]["number"] = json!("4111111111111112");
    body["card"]["expire"] = json!("1901");
    let (status, problem) = post(&app, &body).await;
    assert_eq!(status, 422, "{problem:#}");
    let text = problem.to_string();
    assert!(text.contains("card.number") && text.contains("card.expire"), "{text}");
    assert!(
        !text.contains("4111111111111112"),
        "errors never quote the card: {text}"
    );
    // A PIX order takes no card.
    let mut pix = payhub_tests::sample_order("pix-card");
    pix["card"] = card_order("x", "1.00")["card"].clone();
    let (status, problem) = post(&app, &pix).await;
    assert_eq!(status, 422);
    assert!(problem.to_string().contains("card"), "{problem}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.sandbox.pixelpay_requests(), 0);
    app.stop().await;
}
