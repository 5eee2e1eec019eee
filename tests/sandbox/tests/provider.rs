//! The OpenPix-compatible provider: charges, auth, validation, idempotency,
//! signed webhooks, control routes.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{APP_ID, Receiver, TestSandbox, verify_openpix_signature};
use payhub_sandbox::FIXTURE_PUBLIC_KEY_PEM;
use serde_json::{Value, json};

#[tokio::test]
async fn creating_a_charge_returns_a_valid_br_code() {
    let t = TestSandbox::start().await;
    let (status, body) = t
        .create_charge(json!({
            "correlationID": "order-1", "value": 1234, "comment": "Pedido 1",
            "customer": {"name": "Dan", "taxID": "313.242.270-36", "email": "dan@example.com", "phone": "5511999999999"},
            "additionalInfo": [{"key": "Order", "value": "1"}]
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    let charge = &body["charge"];
    assert_eq!(charge["status"], "ACTIVE");
    assert_eq!(charge["correlationID"], "order-1");
    assert_eq!(charge["value"], 1234);
    assert_eq!(charge["expiresIn"], 86400);
    assert_eq!(charge["type"], "DYNAMIC");
    assert_eq!(
        charge["customer"]["taxID"],
        json!({"taxID": "31324227036", "type": "BR:CPF"})
    );
    assert_eq!(body["correlationID"], "order-1");
    assert_eq!(body["brCode"], charge["brCode"]);
    let br_code = charge["brCode"].as_str().expect("brCode");
    assert!(payhub_core::brcode::is_valid(br_code), "{br_code}");
    assert!(br_code.contains("540512.34"), "{br_code}");
    let txid = charge["transactionID"].as_str().expect("transactionID");
    assert_eq!(txid.len(), 32);
    assert!(txid.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(charge["identifier"], txid);
    assert!(
        charge["paymentLinkUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with(&t.sandbox.provider_url()))
    );
    assert!(charge["expiresDate"].as_str().is_some_and(|d| d.ends_with('Z')));

    // The sandbox's own record matches.
    let stored = t.sandbox.charge("order-1").expect("stored");
    assert_eq!(stored.br_code, br_code);
    assert_eq!(stored.transaction_id, txid);
    assert_eq!(t.sandbox.charges().len(), 1);

    // GET by correlationID and by transactionID.
    for id in ["order-1", txid] {
        let (status, got) = t.get_charge(id, Some(APP_ID)).await;
        assert_eq!(status, 200);
        assert_eq!(got["charge"]["transactionID"], txid);
    }
    let (status, got) = t.get_charge("nope", Some(APP_ID)).await;
    assert_eq!(status, 404);
    assert!(got["error"].is_string());

    // The payment page and QR image the charge points at are served.
    let page = t
        .http
        .get(charge["paymentLinkUrl"].as_str().expect("url"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains(br_code));
    let image = t
        .http
        .get(charge["qrCodeImage"].as_str().expect("url"))
        .send()
        .await
        .expect("image");
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
}

#[tokio::test]
async fn wrong_or_missing_app_id_is_refused() {
    let t = TestSandbox::start().await;
    let url = format!("{}/api/v1/charge", t.sandbox.provider_url());
    let body = json!({"correlationID": "a", "value": 100});
    for auth in [None, Some("wrong"), Some("Bearer sandbox-test-app")] {
        let mut req = t.http.post(&url).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("reply");
        assert_eq!(resp.status(), 401, "{auth:?}");
        let json: Value = resp.json().await.expect("json");
        assert!(json["error"].is_string());
    }
    let (status, _) = t.get_charge("a", None).await;
    assert_eq!(status, 401);
    assert!(t.sandbox.charges().is_empty());
    assert_eq!(t.sandbox.charge_requests(), 3);
}

#[tokio::test]
async fn invalid_bodies_get_400() {
    let t = TestSandbox::start().await;
    for body in [
        json!({"value": 100}),
        json!({"correlationID": "a"}),
        json!({"correlationID": "a", "value": 0}),
        json!({"correlationID": "a", "value": 10.5}),
        json!({"correlationID": "a", "value": 100, "expiresIn": 60}),
        json!({"correlationID": "a", "value": 100, "customer": {"name": "Dan"}}),
        json!({"correlationID": "a", "value": 100, "customer": {"name": "Dan", "taxID": "12345678976"}}),
    ] {
        let (status, reply) = t.create_charge(body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let resp = t
        .http
        .post(format!("{}/api/v1/charge", t.sandbox.provider_url()))
        .header("authorization", APP_ID)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 400);
    assert!(t.sandbox.charges().is_empty());
}

#[tokio::test]
async fn repeated_correlation_ids() {
    let t = TestSandbox::start().await;
    let body = json!({"correlationID": "order-7", "value": 500});
    let (status, first) = t.create_charge(body.clone()).await;
    assert_eq!(status, 200);

    let (status, repeat) = t.create_charge(body.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(repeat["error"], "correlationID already exists");

    let resp = t
        .http
        .post(format!(
            "{}/api/v1/charge?return_existing=true",
            t.sandbox.provider_url()
        ))
        .header("authorization", APP_ID)
        .json(&json!({"correlationID": "order-7", "value": 999}))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    let existing: Value = resp.json().await.expect("json");
    assert_eq!(existing["charge"]["transactionID"], first["charge"]["transactionID"]);
    assert_eq!(existing["charge"]["value"], 500);

    assert_eq!(t.sandbox.charges().len(), 1);
    assert_eq!(t.sandbox.charge_requests(), 3);
}

#[tokio::test]
async fn paying_sends_a_signed_webhook() {
    let t = TestSandbox::start().await;
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    t.create_charge(json!({"correlationID": "order-9", "value": 2500,
        "customer": {"name": "ACME", "taxID": "44720743000101"}}))
        .await;

    let attempt = t.sandbox.pay("order-9").await.expect("delivered");
    assert_eq!(attempt.status, 200);
    assert_eq!(attempt.body, "ok");

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let hook = &got[0];
    assert_eq!(hook.header("content-type"), "application/json");
    assert_eq!(hook.header("user-agent"), "node-fetch");
    let signature = hook.header("x-webhook-signature");
    assert!(verify_openpix_signature(FIXTURE_PUBLIC_KEY_PEM, &hook.body, &signature));
    assert_eq!(t.sandbox.sign(&hook.body), signature);

    let event: Value = serde_json::from_slice(&hook.body).expect("json");
    assert_eq!(event["event"], "OPENPIX:CHARGE_COMPLETED");
    assert_eq!(event["charge"]["status"], "COMPLETED");
    assert_eq!(event["charge"]["correlationID"], "order-9");
    assert_eq!(event["charge"]["value"], 2500);
    assert!(event["charge"]["paidAt"].is_string());
    assert_eq!(event["charge"]["customer"]["taxID"]["type"], "BR:CNPJ");
    assert_eq!(event["pix"]["value"], 2500);
    assert_eq!(event["pix"]["status"], "CONFIRMED");
    assert_eq!(event["pix"]["type"], "PAYMENT");
    assert_eq!(event["pix"]["transactionID"], event["charge"]["transactionID"]);
    let e2e = event["pix"]["endToEndId"].as_str().expect("endToEndId");
    assert_eq!(e2e.len(), 32);
    assert!(
        e2e.starts_with('E') && e2e[1..21].chars().all(|c| c.is_ascii_digit()),
        "{e2e}"
    );
    assert_eq!(event["account"]["environment"], "TESTING");

    let stored = t.sandbox.charge("order-9").expect("stored");
    assert_eq!(stored.status, "COMPLETED");
    assert_eq!(stored.paid_value, Some(2500));
    assert_eq!(stored.end_to_end_id.as_deref(), Some(e2e));
    let (_, got_charge) = t.get_charge("order-9", Some(APP_ID)).await;
    assert_eq!(got_charge["charge"]["status"], "COMPLETED");

    // Paying twice is refused; the duplicate is resent byte for byte.
    assert!(t.sandbox.pay("order-9").await.is_err());
    let again = t.sandbox.resend_last_webhook("order-9").await.expect("resent");
    assert_eq!(again.status, 200);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, got[0].body);
    assert_eq!(got[1].header("x-webhook-signature"), signature);
    assert_eq!(t.sandbox.charge("order-9").expect("stored").webhooks_sent, 2);

    // A tampered body with the old signature does not verify.
    let tampered = String::from_utf8(hook.body.clone())
        .expect("utf8")
        .replace("2500", "9999");
    t.sandbox
        .send_raw_webhook(tampered.as_bytes(), Some(&signature))
        .await
        .expect("sent");
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(!verify_openpix_signature(
        FIXTURE_PUBLIC_KEY_PEM,
        &got[2].body,
        &got[2].header("x-webhook-signature")
    ));
    // ... and an unsigned one has no header at all.
    t.sandbox.send_raw_webhook(b"{}", None).await.expect("sent");
    assert!(receiver.received()[3].headers.get("x-webhook-signature").is_none());
}

#[tokio::test]
async fn paying_a_different_amount_and_expiring() {
    let t = TestSandbox::start().await;
    let receiver = Receiver::start(500).await;
    t.sandbox.set_webhook_target(&receiver.url);
    t.create_charge(json!({"correlationID": "under", "value": 1000})).await;
    t.create_charge(json!({"correlationID": "late", "value": 1000})).await;

    // The target's status comes back as is, even an error.
    let attempt = t.sandbox.pay_with_value("under", 900).await.expect("delivered");
    assert_eq!(attempt.status, 500);
    let event: Value = serde_json::from_slice(&receiver.received()[0].body).expect("json");
    assert_eq!(event["charge"]["value"], 1000);
    assert_eq!(event["pix"]["value"], 900);
    assert_eq!(t.sandbox.charge("under").expect("stored").paid_value, Some(900));
    assert!(t.sandbox.pay_with_value("late", 0).await.is_err());

    t.sandbox.expire("late").await.expect("delivered");
    let hook = &receiver.received()[1];
    assert!(verify_openpix_signature(
        FIXTURE_PUBLIC_KEY_PEM,
        &hook.body,
        &hook.header("x-webhook-signature")
    ));
    let event: Value = serde_json::from_slice(&hook.body).expect("json");
    assert_eq!(event["event"], "OPENPIX:CHARGE_EXPIRED");
    assert_eq!(event["charge"]["status"], "EXPIRED");
    assert!(event.get("pix").is_none());
    assert_eq!(t.sandbox.charge("late").expect("stored").status, "EXPIRED");
    assert!(t.sandbox.pay("late").await.is_err());
    assert!(t.sandbox.expire("late").await.is_err());
    assert!(t.sandbox.pay("unknown").await.is_err());
    assert!(t.sandbox.resend_last_webhook("unknown").await.is_err());
}

#[tokio::test]
async fn delivery_failures_are_errors_but_the_payment_stands() {
    let t = TestSandbox::start().await;
    t.create_charge(json!({"correlationID": "a", "value": 100})).await;
    t.create_charge(json!({"correlationID": "b", "value": 100})).await;

    // No target configured.
    assert!(t.sandbox.pay("a").await.is_err());
    assert_eq!(t.sandbox.charge("a").expect("stored").status, "COMPLETED");

    // A target nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    t.sandbox
        .set_webhook_target(&format!("http://{closed}/webhooks/openpix"));
    assert!(t.sandbox.pay("b").await.is_err());
    assert_eq!(t.sandbox.charge("b").expect("stored").status, "COMPLETED");

    // Once the target is back, the stored webhook can be resent.
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    assert_eq!(t.sandbox.resend_last_webhook("b").await.expect("resent").status, 200);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn control_routes() {
    let t = TestSandbox::start().await;
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    t.create_charge(json!({"correlationID": "c/1 x", "value": 700})).await;
    let base = t.sandbox.provider_url();

    let resp = t
        .http
        .post(format!("{base}/sandbox/charges/c%2F1%20x/pay"))
        .json(&json!({"value": 650}))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.expect("json");
    assert_eq!(reply["webhook"]["status"], 200);
    assert_eq!(reply["charge"]["status"], "COMPLETED");
    assert_eq!(reply["charge"]["paid_value"], 650);

    let resp = t
        .http
        .post(format!("{base}/sandbox/charges/c%2F1%20x/pay"))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 409);
    let resp = t
        .http
        .post(format!("{base}/sandbox/charges/missing/expire"))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 404);
    let resp = t
        .http
        .post(format!("{base}/sandbox/charges/c%2F1%20x/resend"))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    assert_eq!(receiver.received().len(), 2);

    let list: Value = t
        .http
        .get(format!("{base}/sandbox/charges"))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(list["charges"].as_array().map(Vec::len), Some(1));
    let emails: Value = t
        .http
        .get(format!("{base}/sandbox/emails"))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(emails["emails"], json!([]));

    // The webhook target can be changed at run time.
    let resp = t
        .http
        .put(format!("{base}/sandbox/webhook-target"))
        .json(&json!({"url": "not a url"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 400);

    let resp = t.http.get(format!("{base}/no/such/route")).send().await.expect("reply");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn public_keys_are_published() {
    let t = TestSandbox::start().await;
    let resp = t
        .http
        .get(format!("{}/api/v1/webhook/public-keys", t.sandbox.provider_url()))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=3600");
    let body: Value = resp.json().await.expect("json");
    let key = &body["public_keys"][0];
    assert_eq!(key["is_current"], true);
    assert_eq!(key["key"].as_str().map(str::trim), Some(FIXTURE_PUBLIC_KEY_PEM.trim()));
    let der = common::pem_body(FIXTURE_PUBLIC_KEY_PEM);
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(key["key_identifier"], hex);
    assert_eq!(t.sandbox.public_key_pem().trim(), FIXTURE_PUBLIC_KEY_PEM.trim());

    // The signature also verifies with the key pair's own public key bytes.
    let body = br#"{"event":"x"}"#;
    let sig = STANDARD.decode(t.sandbox.sign(body)).expect("base64");
    let pk = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        t.sandbox.public_key_pkcs1_der(),
    );
    assert!(pk.verify(body, &sig).is_ok());
}
