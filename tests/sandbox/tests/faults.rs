//! Fault injection: a failing or hanging shop, a failing or slow provider,
//! held and reordered webhooks, the doubled CHARGE_COMPLETED /
//! TRANSACTION_RECEIVED report, and the control routes for all of them.

mod common;

use std::time::{Duration, Instant};

use common::{APP_ID, Receiver, TestSandbox, verify_openpix_signature};
use payhub_core::standard_webhooks::WebhookSecret;
use payhub_sandbox::{FIXTURE_PUBLIC_KEY_PEM, ProviderFault, ShopFault, WebhookAttempt};
use serde_json::{Value, json};

/// A client that gives up after 300 ms and never follows redirects.
fn impatient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// POSTs a correctly signed Standard Webhook to the shop endpoint.
async fn post_to_shop(
    t: &TestSandbox,
    client: &reqwest::Client,
    secret: &WebhookSecret,
    id: &str,
) -> reqwest::Result<reqwest::Response> {
    let body = format!(r#"{{"type":"order.paid","data":{{"id":"{id}"}}}}"#);
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    client
        .post(t.sandbox.shop_webhook_url())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", secret.sign(id, ts, body.as_bytes()))
        .body(body)
        .send()
        .await
}

fn shop_with_secret(t: &TestSandbox) -> WebhookSecret {
    let secret = WebhookSecret::generate();
    t.sandbox.add_shop_secret(&secret.expose());
    secret
}

#[tokio::test]
async fn shop_fails_the_next_two_then_accepts() {
    let t = TestSandbox::start().await;
    let secret = shop_with_secret(&t);
    t.sandbox.shop_fail_next(2, ShopFault::Status(500));

    let mut statuses = Vec::new();
    for i in 1..=3 {
        let resp = post_to_shop(&t, &t.http, &secret, &format!("msg_{i}"))
            .await
            .expect("the shop answers");
        statuses.push(resp.status().as_u16());
        if i < 3 {
            let reply: Value = resp.json().await.expect("json");
            assert!(reply["error"].is_string(), "{reply}");
        }
    }
    assert_eq!(statuses, [500, 500, 200]);

    let records = t.sandbox.shop_webhooks();
    let ids: Vec<&str> = records.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["msg_1", "msg_2", "msg_3"]);
    let answered: Vec<Option<u16>> = records.iter().map(|w| w.answered).collect();
    assert_eq!(answered, [Some(500), Some(500), Some(200)]);
    // A faulted request is still verified.
    assert!(records.iter().all(|w| w.verified));
}

#[tokio::test]
async fn shop_redirects_always_until_recovered() {
    let t = TestSandbox::start().await;
    let secret = shop_with_secret(&t);
    let strict = impatient_client();
    t.sandbox.shop_fail_always(ShopFault::Status(302));

    for id in ["r1", "r2"] {
        let resp = post_to_shop(&t, &strict, &secret, id).await.expect("answer");
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "/shop/webhooks/redirected");
    }
    // A sender that follows redirects ends on a 200 that records nothing.
    let followed = post_to_shop(&t, &t.http, &secret, "r3").await.expect("answer");
    assert_eq!(followed.status(), 200);

    t.sandbox.shop_recover();
    let resp = post_to_shop(&t, &strict, &secret, "ok").await.expect("answer");
    assert_eq!(resp.status(), 200);

    let answered: Vec<(String, Option<u16>)> = t
        .sandbox
        .shop_webhooks()
        .into_iter()
        .map(|w| (w.id, w.answered))
        .collect();
    assert_eq!(
        answered,
        [
            ("r1".to_string(), Some(302)),
            ("r2".to_string(), Some(302)),
            ("r3".to_string(), Some(302)),
            ("ok".to_string(), Some(200)),
        ]
    );
}

#[tokio::test]
async fn a_hanging_shop_times_clients_out_without_blocking_others_or_shutdown() {
    let t = TestSandbox::start().await;
    let secret = shop_with_secret(&t);
    t.sandbox.shop_fail_next(2, ShopFault::Hang);

    // The first caller gives up after 300 ms.
    let started = Instant::now();
    let err = post_to_shop(&t, &impatient_client(), &secret, "hang_1")
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The second waits without a deadline, held while the sandbox runs.
    let patient = {
        let http = t.http.clone();
        let url = t.sandbox.shop_webhook_url();
        tokio::spawn(async move { http.post(url).body("{}").send().await })
    };
    while t.sandbox.shop_webhooks().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Others are served meanwhile.
    let resp = post_to_shop(&t, &impatient_client(), &secret, "after")
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);

    let answered: Vec<Option<u16>> = t.sandbox.shop_webhooks().iter().map(|w| w.answered).collect();
    assert_eq!(answered, [None, None, Some(200)]);
    assert!(!patient.is_finished());

    // Stopping the sandbox ends the held request promptly.
    let started = Instant::now();
    t.stop_within(Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let held = tokio::time::timeout(Duration::from_secs(2), patient)
        .await
        .expect("the held request ends")
        .expect("task");
    if let Ok(resp) = held {
        assert_eq!(resp.status(), 503);
    }
}

#[tokio::test]
async fn provider_fails_once_then_creates() {
    let t = TestSandbox::start().await;
    t.sandbox.provider_fail_next(1, ProviderFault::Status(503));
    let body = json!({"correlationID": "order-1", "value": 1000});

    let (status, reply) = t.create_charge(body.clone()).await;
    assert_eq!(status, 503);
    assert!(reply["error"].is_string(), "{reply}");
    assert!(t.sandbox.charges().is_empty());
    assert!(t.sandbox.charge("order-1").is_none());

    // The retry with the same correlationID creates the charge.
    let (status, reply) = t.create_charge(body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["charge"]["correlationID"], "order-1");
    assert_eq!(t.sandbox.charges().len(), 1);
    assert_eq!(t.sandbox.charge_requests(), 2);

    // Always failing, other routes unaffected, then recovered.
    t.sandbox.provider_fail_always(ProviderFault::Status(429));
    for id in ["order-2", "order-2"] {
        let (status, _) = t.create_charge(json!({"correlationID": id, "value": 100})).await;
        assert_eq!(status, 429);
    }
    let (status, _) = t.get_charge("order-1", Some(APP_ID)).await;
    assert_eq!(status, 200);
    t.sandbox.provider_recover();
    let (status, _) = t.create_charge(json!({"correlationID": "order-2", "value": 100})).await;
    assert_eq!(status, 200);
    assert_eq!(t.sandbox.charges().len(), 2);
    assert_eq!(t.sandbox.charge_requests(), 5);
}

#[tokio::test]
async fn a_provider_timeout_times_the_client_out() {
    let t = TestSandbox::start().await;
    t.sandbox.provider_fail_next(1, ProviderFault::Timeout);
    let url = format!("{}/api/v1/charge", t.sandbox.provider_url());
    let body = json!({"correlationID": "slow", "value": 100});

    let started = Instant::now();
    let err = impatient_client()
        .post(&url)
        .header("authorization", APP_ID)
        .json(&body)
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(t.sandbox.charges().is_empty());

    let (status, _) = t.create_charge(body).await;
    assert_eq!(status, 200);
    assert_eq!(t.sandbox.charges().len(), 1);
    assert_eq!(t.sandbox.charge_requests(), 2);

    // A charge request held at shutdown does not delay the stop.
    t.sandbox.provider_fail_always(ProviderFault::Timeout);
    let held = {
        let http = t.http.clone();
        tokio::spawn(async move {
            http.post(url)
                .header("authorization", APP_ID)
                .json(&json!({"correlationID": "held", "value": 100}))
                .send()
                .await
        })
    };
    while t.sandbox.charge_requests() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.stop_within(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .expect("the held request ends");
    assert!(t.sandbox.charge("held").is_none());
}

fn event_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("json")
}

#[tokio::test]
async fn held_webhooks_are_released_in_reverse() {
    let t = TestSandbox::start().await;
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    for id in ["paid", "late"] {
        t.create_charge(json!({"correlationID": id, "value": 100})).await;
    }

    t.sandbox.hold_webhooks(true);
    let held = WebhookAttempt {
        status: 0,
        body: "held".into(),
    };
    assert_eq!(t.sandbox.pay("paid").await.expect("held"), held);
    assert_eq!(t.sandbox.expire("late").await.expect("held"), held);
    // State changes happen at once; deliveries wait.
    assert_eq!(t.sandbox.charge("paid").expect("stored").status, "COMPLETED");
    assert_eq!(t.sandbox.charge("late").expect("stored").status, "EXPIRED");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(receiver.received().is_empty());

    let attempts = t.sandbox.release_held_webhooks(true).await.expect("released");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.status == 200));

    let got = receiver.received();
    let order: Vec<(String, String)> = got
        .iter()
        .map(|h| {
            let e = event_of(&h.body);
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["charge"]["correlationID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("OPENPIX:CHARGE_EXPIRED".to_string(), "late".to_string()),
            ("OPENPIX:CHARGE_COMPLETED".to_string(), "paid".to_string()),
        ]
    );
    for hook in &got {
        assert!(verify_openpix_signature(
            FIXTURE_PUBLIC_KEY_PEM,
            &hook.body,
            &hook.header("x-webhook-signature")
        ));
    }

    // Still holding: a resend queues too; releasing in order sends it.
    assert_eq!(t.sandbox.resend_last_webhook("paid").await.expect("held"), held);
    assert_eq!(receiver.received().len(), 2);
    t.sandbox.hold_webhooks(false);
    let attempts = t.sandbox.release_held_webhooks(false).await.expect("released");
    assert_eq!(attempts.len(), 1);
    assert_eq!(receiver.received()[2].body, got[1].body);
    // Nothing left.
    assert!(t.sandbox.release_held_webhooks(false).await.expect("empty").is_empty());
}

#[tokio::test]
async fn held_webhooks_stay_queued_until_a_target_answers() {
    let t = TestSandbox::start().await;
    t.create_charge(json!({"correlationID": "a", "value": 100})).await;
    t.sandbox.hold_webhooks(true);
    // Held even without a target.
    assert_eq!(t.sandbox.pay("a").await.expect("held").status, 0);
    assert!(t.sandbox.release_held_webhooks(false).await.is_err());

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    t.sandbox
        .set_webhook_target(&format!("http://{closed}/webhooks/openpix"));
    assert!(t.sandbox.release_held_webhooks(false).await.is_err());

    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    let attempts = t.sandbox.release_held_webhooks(false).await.expect("released");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        event_of(&receiver.received()[0].body)["event"],
        "OPENPIX:CHARGE_COMPLETED"
    );
}

#[tokio::test]
async fn a_payment_is_reported_as_completed_and_as_transaction_received() {
    let t = TestSandbox::start().await;
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    t.create_charge(json!({"correlationID": "order-5", "value": 4200}))
        .await;

    let attempts = t
        .sandbox
        .pay_with_transaction_received("order-5")
        .await
        .expect("delivered");
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.status == 200));

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    for hook in &got {
        assert!(verify_openpix_signature(
            FIXTURE_PUBLIC_KEY_PEM,
            &hook.body,
            &hook.header("x-webhook-signature")
        ));
    }
    let [completed, received] = [&got[0], &got[1]].map(|h| event_of(&h.body));
    assert_eq!(completed["event"], "OPENPIX:CHARGE_COMPLETED");
    assert_eq!(received["event"], "OPENPIX:TRANSACTION_RECEIVED");
    for e in [&completed, &received] {
        assert_eq!(e["charge"]["status"], "COMPLETED");
        assert_eq!(e["charge"]["correlationID"], "order-5");
        assert_eq!(e["pix"]["value"], 4200);
    }
    let e2e = completed["pix"]["endToEndId"].as_str().expect("endToEndId");
    assert_eq!(received["pix"]["endToEndId"], e2e);
    assert_eq!(received["pix"]["globalID"], completed["pix"]["globalID"]);
    let stored = t.sandbox.charge("order-5").expect("stored");
    assert_eq!(stored.end_to_end_id.as_deref(), Some(e2e));
    assert_eq!(stored.webhooks_sent, 2);
    assert!(t.sandbox.pay_with_transaction_received("order-5").await.is_err());
}

/// POSTs JSON to a control route; (status, reply).
async fn control(t: &TestSandbox, path: &str, body: Value) -> (u16, Value) {
    let resp = t
        .http
        .post(format!("{}{path}", t.sandbox.provider_url()))
        .json(&body)
        .send()
        .await
        .expect("reply");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test]
async fn control_routes_drive_every_fault() {
    let t = TestSandbox::start().await;
    let secret = shop_with_secret(&t);
    let strict = impatient_client();

    // Shop: status x2, then hang always, then recover.
    let (status, reply) = control(
        &t,
        "/sandbox/faults/shop",
        json!({"mode": "status", "status": 500, "count": 2}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reply["fault"], json!({"mode": "status", "status": 500, "remaining": 2}));
    for id in ["s1", "s2", "s3"] {
        post_to_shop(&t, &strict, &secret, id).await.expect("answer");
    }
    let (status, reply) = control(&t, "/sandbox/faults/shop", json!({"mode": "hang", "always": true})).await;
    assert_eq!(status, 200);
    assert_eq!(reply["fault"], json!({"mode": "hang", "always": true}));
    assert!(
        post_to_shop(&t, &strict, &secret, "s4")
            .await
            .expect_err("hangs")
            .is_timeout()
    );
    let (_, reply) = control(&t, "/sandbox/faults/shop", json!({"mode": "recover"})).await;
    assert_eq!(reply["fault"], Value::Null);
    post_to_shop(&t, &strict, &secret, "s5").await.expect("answer");
    let answered: Vec<Option<u16>> = t.sandbox.shop_webhooks().iter().map(|w| w.answered).collect();
    assert_eq!(answered, [Some(500), Some(500), Some(200), None, Some(200)]);
    let listed: Value = t
        .http
        .get(format!("{}/sandbox/shop/webhooks", t.sandbox.provider_url()))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["webhooks"][0]["answered"], 500);
    assert_eq!(listed["webhooks"][3]["answered"], Value::Null);

    // Bad bodies.
    for (path, body) in [
        ("/sandbox/faults/shop", json!({"mode": "timeout"})),
        ("/sandbox/faults/shop", json!({"mode": "status"})),
        ("/sandbox/faults/provider", json!({"mode": "hang"})),
        ("/sandbox/faults/provider", json!({"mode": "timeout", "count": 0})),
        ("/sandbox/webhooks/hold", json!({})),
        ("/sandbox/webhooks/release", json!({"reverse": "yes"})),
    ] {
        let (status, reply) = control(&t, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}");
        assert!(reply["error"].is_string());
    }

    // Provider: 503 once, then timeout once, both visible in GET /sandbox/faults.
    let (status, _) = control(&t, "/sandbox/faults/provider", json!({"mode": "status", "status": 503})).await;
    assert_eq!(status, 200);
    let faults: Value = t
        .http
        .get(format!("{}/sandbox/faults", t.sandbox.provider_url()))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(
        faults,
        json!({"shop": null, "provider": {"mode": "status", "status": 503, "remaining": 1}})
    );
    let (status, _) = t.create_charge(json!({"correlationID": "x", "value": 100})).await;
    assert_eq!(status, 503);
    control(&t, "/sandbox/faults/provider", json!({"mode": "timeout", "count": 1})).await;
    let err = strict
        .post(format!("{}/api/v1/charge", t.sandbox.provider_url()))
        .header("authorization", APP_ID)
        .json(&json!({"correlationID": "x", "value": 100}))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout());
    for id in ["x", "y"] {
        let (status, _) = t.create_charge(json!({"correlationID": id, "value": 100})).await;
        assert_eq!(status, 200);
    }

    // Hold, pay both ways, release reversed.
    let receiver = Receiver::start(200).await;
    t.sandbox.set_webhook_target(&receiver.url);
    let (status, reply) = control(&t, "/sandbox/webhooks/hold", json!({"hold": true})).await;
    assert_eq!(status, 200);
    assert_eq!(reply, json!({"hold": true, "queued": []}));
    let (status, reply) = control(&t, "/sandbox/charges/x/pay", json!({"transactionReceived": true})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["webhook"], json!({"status": 0, "body": "held"}));
    assert_eq!(reply["webhooks"].as_array().map(Vec::len), Some(2));
    control(&t, "/sandbox/charges/y/expire", json!({})).await;
    let held: Value = t
        .http
        .get(format!("{}/sandbox/webhooks/held", t.sandbox.provider_url()))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(
        held["queued"],
        json!([
            {"correlationID": "x", "event": "OPENPIX:CHARGE_COMPLETED"},
            {"correlationID": "x", "event": "OPENPIX:TRANSACTION_RECEIVED"},
            {"correlationID": "y", "event": "OPENPIX:CHARGE_EXPIRED"},
        ])
    );
    control(&t, "/sandbox/webhooks/hold", json!({"hold": false})).await;
    let (status, reply) = control(&t, "/sandbox/webhooks/release", json!({"reverse": true})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["webhooks"].as_array().map(Vec::len), Some(3));
    assert_eq!(reply["queued"], json!([]));
    let events: Vec<Value> = receiver
        .received()
        .iter()
        .map(|h| event_of(&h.body)["event"].clone())
        .collect();
    assert_eq!(
        events,
        [
            "OPENPIX:CHARGE_EXPIRED",
            "OPENPIX:TRANSACTION_RECEIVED",
            "OPENPIX:CHARGE_COMPLETED"
        ]
    );
}
