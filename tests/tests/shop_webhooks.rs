//! What shop webhooks carry (issue 10 §5), over the real broker and
//! database: items, tax, buyer, times, the provider's ids, the masked card,
//! the payment link and the shop's own `extra`, unchanged; and, for shops
//! that chose it, PixelPay's own success and error webhook bodies, still
//! signed per Standard Webhooks.

use payhub_sandbox::PIXELPAY_TEST_VISA;
use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

fn card_order(cid: &str, total: &str) -> Value {
    json!({
        "correlationID": cid,
        "provider": "pixelpay",
        "currency": "USD",
        "items": [{"code": "0000123", "title": "Camiseta Roja", "description": "Talla: XS", "price": total,
                   "qty": 1, "total": total}],
        "total": total,
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "extra": {"erp": "ERP-0006350867", "canal": "loja física"},
        "card": {
            "number": PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    })
}

async fn hook(app: &TestApp, cid: &str, status: &str) -> payhub_sandbox::ReceivedWebhook {
    assert!(
        eventually(Duration::from_secs(10), || async {
            !app.shop_hooks_for(cid, status).is_empty()
        })
        .await,
        "no {status} webhook for {cid}"
    );
    app.shop_hooks_for(cid, status).remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pix_webhook_carries_items_buyer_times_ids_link_and_extra() {
    let app = TestApp::spawn().await;
    let mut order = sample_order("hook-pix");
    order["extra"] = json!({"erp": "ERP-77", "note": "portão azul"});
    assert_eq!(app.post_order(&order).await.status(), 201);
    let view = app.wait_for_status("hook-pix", "awaiting_payment").await;
    let waiting: Value = serde_json::from_str(&hook(&app, "hook-pix", "awaiting_payment").await.body).unwrap();
    let d = &waiting["data"];
    assert_eq!(d["extra"], json!({"erp": "ERP-77", "note": "portão azul"}), "{d:#}");
    assert!(d["paymentLinkUrl"].is_string(), "{d:#}");
    assert_eq!(
        d["items"].as_array().unwrap().len(),
        order["items"].as_array().unwrap().len()
    );
    assert_eq!(d["customer"]["email"], order["customer"]["email"]);
    assert!(d["createdAt"].is_string() && d["paidAt"].is_null(), "{d:#}");

    app.sandbox.pay(view["id"].as_str().unwrap()).await.unwrap();
    let paid = hook(&app, "hook-pix", "paid").await;
    assert!(paid.verified);
    let paid: Value = serde_json::from_str(&paid.body).unwrap();
    let d = &paid["data"];
    assert!(d["paidAt"].is_string(), "{d:#}");
    assert!(d["transaction"]["providerChargeId"].is_string(), "{d:#}");
    assert_eq!(d["extra"]["erp"], "ERP-77");
    assert!(d["card"].is_null());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_webhook_carries_the_masked_card_and_the_authorisation() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    assert_eq!(app.post_order(&card_order("hook-card", "99.99")).await.status(), 201);
    let paid: Value = serde_json::from_str(&hook(&app, "hook-card", "paid").await.body).unwrap();
    let d = &paid["data"];
    assert_eq!(d["card"]["masked"], "4111 •••• •••• 1111", "{d:#}");
    assert_eq!(d["card"]["brand"], "visa");
    assert!(d["transaction"]["authorizationCode"].is_string(), "{d:#}");
    assert!(d["transaction"]["transactionId"].is_string(), "{d:#}");
    assert_eq!(d["items"][0]["title"], "Camiseta Roja");
    assert_eq!(d["amount"]["currency"], "USD");
    assert_eq!(d["extra"]["canal"], "loja física");
    assert!(!paid.to_string().contains(PIXELPAY_TEST_VISA));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_may_choose_pixelpays_own_success_and_error_webhooks() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let out = app.payhubctl(&["shop", "set-webhook-format", &app.shop.shop.id.to_string(), "pixelpay"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = app.payhubctl(&["shop", "set-webhook-format", &app.shop.shop.id.to_string(), "xml"]);
    assert!(!bad.status.success());

    assert_eq!(app.post_order(&card_order("pp-ok", "99.99")).await.status(), 201);
    app.wait_for_status("pp-ok", "paid").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("\"ref\":\"pp-ok\""))
        })
        .await
    );
    let got = app
        .sandbox
        .shop_webhooks()
        .into_iter()
        .find(|h| h.body.contains("\"ref\":\"pp-ok\""))
        .unwrap();
    assert!(got.verified, "still signed per Standard Webhooks");
    let body: Value = serde_json::from_str(&got.body).unwrap();
    // The seed 003 success webhook's shape.
    assert_eq!(body["status"], "paid");
    assert_eq!(body["currency"], "USD");
    assert_eq!(body["amount"], json!(99.99));
    assert_eq!(body["items"][0]["code"], "0000123");
    assert_eq!(body["items"][0]["price"], json!(99.99));
    assert_eq!(body["customer_name"], "Pedro Perez");
    assert_eq!(body["extra"]["erp"], "ERP-0006350867");
    assert!(body["uuid"].is_string() && body["paid_at"].is_string() && body["created_at"].is_string());
    assert_eq!(body["card_account"], "4111 •••• •••• 1111");
    assert_eq!(body["card_brand"], "visa");
    assert!(body["transaction_id"].is_string(), "{body:#}");
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/pixelpay/success-webhook.json")).unwrap();
    for key in fixture.as_object().unwrap().keys() {
        assert!(
            body.get(key).is_some(),
            "the PixelPay success webhook has {key}: {body:#}"
        );
    }

    // A decline: PixelPay's error webhook.
    assert_eq!(app.post_order(&card_order("pp-no", "2.00")).await.status(), 201);
    app.wait_for_status("pp-no", "failed").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("\"success\":false") && h.body.contains("denegada"))
        })
        .await,
        "{:?}",
        app.sandbox
            .shop_webhooks()
            .iter()
            .map(|h| h.body.clone())
            .collect::<Vec<_>>()
    );
    // Nothing else was sent (no PixelPay counterpart for other statuses).
    assert_eq!(app.sandbox.shop_webhooks().len(), 2);
    app.stop().await;
}
