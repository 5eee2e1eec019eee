//! The shop endpoint records payhub's webhooks and checks their Standard
//! Webhooks signatures.

mod common;

use common::TestSandbox;
use payhub_core::standard_webhooks::WebhookSecret;
use serde_json::{Value, json};

/// POSTs `body` to the shop endpoint with Standard Webhooks headers.
async fn deliver(t: &TestSandbox, id: &str, timestamp: i64, signature: &str, body: &str) -> (u16, Value) {
    let resp = t
        .http
        .post(t.sandbox.shop_webhook_url())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .expect("the shop answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn correctly_signed_webhooks_are_verified_and_others_not() {
    let t = TestSandbox::start().await;
    let old = WebhookSecret::generate();
    let current = WebhookSecret::generate();
    t.sandbox.add_shop_secret(&old.expose());
    t.sandbox.add_shop_secret(&current.expose());
    t.sandbox.add_shop_secret("not a secret"); // logged and ignored
    assert!(t.sandbox.try_add_shop_secret("whsec_!!!").is_err());

    let body = r#"{"type":"order.paid","data":{"correlationID":"order-1"}}"#;
    let ts = now();

    // Signed with the current secret.
    let sig = current.sign("msg_1", ts, body.as_bytes());
    let (status, reply) = deliver(&t, "msg_1", ts, &sig, body).await;
    assert_eq!(status, 200);
    assert_eq!(reply, json!({"received": true}));

    // Signed with an unknown secret.
    let stranger = WebhookSecret::generate().sign("msg_2", ts, body.as_bytes());
    deliver(&t, "msg_2", ts, &stranger, body).await;

    // Signed correctly but too old.
    let stale_ts = ts - 301;
    let stale = old.sign("msg_3", stale_ts, body.as_bytes());
    deliver(&t, "msg_3", stale_ts, &stale, body).await;

    // Body changed after signing.
    let sig4 = old.sign("msg_4", ts, body.as_bytes());
    deliver(&t, "msg_4", ts, &sig4, &body.replace("order-1", "order-2")).await;

    // Several signatures, one of them good (rotation), signed with the old secret.
    let sig5 = format!("v1,AAAA {}", old.sign("msg_5", ts, body.as_bytes()));
    deliver(&t, "msg_5", ts, &sig5, body).await;

    let got = t.sandbox.shop_webhooks();
    let verdicts: Vec<(&str, bool)> = got.iter().map(|w| (w.id.as_str(), w.verified)).collect();
    assert_eq!(
        verdicts,
        [
            ("msg_1", true),
            ("msg_2", false),
            ("msg_3", false),
            ("msg_4", false),
            ("msg_5", true)
        ]
    );
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].timestamp, ts.to_string());
    assert_eq!(got[0].signature, sig);
    assert!(got[2].verify_error.as_deref().is_some_and(|e| e.contains("tolerance")));

    // Missing headers: recorded, not verified, still acknowledged.
    let resp = t
        .http
        .post(t.sandbox.shop_webhook_url())
        .body("{}")
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    let last = t.sandbox.shop_webhooks().pop().expect("recorded");
    assert!(!last.verified && last.id.is_empty());

    // Both listings show the same.
    for url in [
        t.sandbox.shop_webhook_url(),
        format!("{}/sandbox/shop/webhooks", t.sandbox.provider_url()),
    ] {
        let list: Value = t.http.get(url).send().await.expect("reply").json().await.expect("json");
        assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(6));
        assert_eq!(list["webhooks"][0]["verified"], true);
    }
}

#[tokio::test]
async fn secrets_can_be_registered_over_http() {
    let t = TestSandbox::start().await;
    let secret = WebhookSecret::generate();
    let url = format!("{}/sandbox/shop/secrets", t.sandbox.provider_url());

    let resp = t
        .http
        .post(&url)
        .json(&json!({"secret": "whsec_short"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 400);
    let resp = t.http.post(&url).json(&json!({"nope": 1})).send().await.expect("reply");
    assert_eq!(resp.status(), 400);

    // Without any secret nothing verifies.
    let body = r#"{"n":1}"#;
    let ts = now();
    deliver(&t, "m1", ts, &secret.sign("m1", ts, body.as_bytes()), body).await;

    let resp = t
        .http
        .post(&url)
        .json(&json!({"secret": secret.expose()}))
        .send()
        .await
        .expect("reply");
    assert_eq!(resp.status(), 200);
    deliver(&t, "m2", ts, &secret.sign("m2", ts, body.as_bytes()), body).await;

    let got = t.sandbox.shop_webhooks();
    assert!(!got[0].verified);
    assert!(got[1].verified);
}
