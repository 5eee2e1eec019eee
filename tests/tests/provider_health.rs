//! Provider health (issue 13 §4): charge-creator probes every provider
//! account; when a provider is down payhub says so at once (503 with
//! Retry-After for shops that chose `reject`) or holds the order (the
//! default) and charges it once when the provider is back. Readiness stays
//! about payhub itself. The metrics an SRE needs are there, without shop ids.

use payhub_tests::{TestApp, TestOptions, eventually, sample_order};
use std::time::Duration;

/// Probes four times a second: an outage is seen within a second.
fn options() -> TestOptions {
    TestOptions {
        provider_probe: charge_creator::health::ProbeConfig {
            interval: Duration::from_millis(250),
            down_after: 2,
        },
        ..TestOptions::default()
    }
}

async fn metrics(app: &TestApp) -> String {
    let (_, base) = &app.ops_urls[0];
    app.http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the first sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn health_state(app: &TestApp) -> Option<String> {
    sqlx::query_as::<_, (String,)>("SELECT state FROM provider_health WHERE account = 'platform:openpix'")
        .fetch_optional(&app.store.pool)
        .await
        .expect("provider_health reads")
        .map(|(s,)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_said_at_once_or_held_and_each_held_order_is_charged_once_when_the_provider_is_back() {
    let app = TestApp::spawn_with(options()).await;
    // Arrange: the probes see OpenPix up.
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_state(&app).await.as_deref() == Some("up")
        })
        .await,
        "the platform's OpenPix account was never probed"
    );

    // Act: OpenPix goes down.
    app.sandbox.set_outage("openpix", true);
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_state(&app).await.as_deref() == Some("down")
        })
        .await,
        "the probes never found OpenPix down"
    );
    // Readiness is about payhub itself: every service stays ready.
    for (name, base) in &app.ops_urls {
        let r = app.http.get(format!("{base}/readyz")).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "{name} went not-ready because a provider is down"
        );
    }

    // A shop that holds (the default): the order is accepted and waits,
    // and nothing is sent to the provider.
    let held = app.post_order(&sample_order("held-1")).await;
    assert_eq!(held.status(), 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.order_status("held-1").await.as_deref(), Some("accepted"));
    assert_eq!(app.count("SELECT count(*) FROM charges").await, 0);
    assert!(app.sandbox.charges().is_empty());

    // A shop that rejects: 503 with Retry-After, nothing stored.
    let shop = app.shop.shop.id.to_string();
    let out = app.payhubctl(&["shop", "set-provider-down", &shop, "reject", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = app.payhubctl(&["shop", "set-provider-down", &shop, "sometimes"]);
    assert!(!bad.status.success(), "an unknown policy is refused");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the doors' health cache
    let refused = app.post_order(&sample_order("refused-1")).await;
    assert_eq!(refused.status(), 503);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert!(body["detail"].as_str().unwrap().contains("openpix"), "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE correlation_id = 'refused-1'")
            .await,
        0
    );

    // The provider is back: the held order is charged, once, and paid.
    app.sandbox.set_outage("openpix", false);
    let order = app
        .wait_for_status_within("held-1", "awaiting_payment", Duration::from_secs(30))
        .await;
    assert_eq!(app.sandbox.charges().len(), 1, "one charge for the held order");
    assert_eq!(health_state(&app).await.as_deref(), Some("up"));
    let id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&id).await;
    app.wait_for_status("held-1", "paid").await;
    assert_eq!(app.count("SELECT count(*) FROM charges").await, 1);
    // The refusing shop's order goes through now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.post_order(&sample_order("refused-1")).await.status(), 201);

    // The metrics: probes and real calls per provider, orders by door and
    // outcome, the payment's latencies; no shop id in any label.
    assert!(
        eventually(Duration::from_secs(10), || async {
            sample(
                &metrics(&app).await,
                "payhub_paid_order_notified_seconds_count{outcome=\"delivered\"}",
            )
            .is_some_and(|n| n >= 1.0)
        })
        .await,
        "the paid order's shop webhook was never measured"
    );
    let m = metrics(&app).await;
    for series in [
        "payhub_provider_calls_total{operation=\"probe\",outcome=\"error\",provider=\"openpix\"}",
        "payhub_provider_calls_total{operation=\"probe\",outcome=\"ok\",provider=\"openpix\"}",
        "payhub_provider_calls_total{operation=\"create_charge\",outcome=\"ok\",provider=\"openpix\"}",
        "payhub_provider_call_duration_seconds_count{operation=\"create_charge\",outcome=\"ok\",provider=\"openpix\"}",
        "payhub_orders_received_total{door=\"api\",outcome=\"accepted\"}",
        "payhub_orders_received_total{door=\"api\",outcome=\"provider_down\"}",
        "payhub_order_time_to_paid_seconds_count{provider=\"openpix\"}",
        "payhub_payment_reported_to_paid_seconds_count{provider=\"openpix\"}",
        "payhub_provider_webhooks_total{provider=\"openpix\",verdict=\"accepted\"}",
        "payhub_provider_webhook_lag_seconds_count{provider=\"openpix\"}",
    ] {
        assert!(sample(&m, series).is_some_and(|n| n >= 1.0), "{series} missing or 0");
    }
    assert!(sample(&m, "payhub_outbox_unpublished").is_some());
    assert!(sample(&m, "payhub_provider_accounts{provider=\"openpix\",state=\"up\"}").is_some_and(|n| n >= 1.0));
    assert!(!m.contains(&shop), "a shop id in a metric label");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_is_never_held_while_its_provider_is_down() {
    let app = TestApp::spawn_with(options()).await;
    app.use_sandbox_pixelpay();
    assert!(
        eventually(Duration::from_secs(10), || async {
            sqlx::query_as::<_, (String,)>("SELECT state FROM provider_health WHERE provider = 'pixelpay'")
                .fetch_optional(&app.store.pool)
                .await
                .unwrap()
                .is_some_and(|(s,)| s == "up")
        })
        .await,
        "the shop's PixelPay account was never probed up"
    );
    app.sandbox.set_outage("pixelpay", true);
    assert!(
        eventually(Duration::from_secs(10), || async {
            sqlx::query_as::<_, (String,)>("SELECT state FROM provider_health WHERE provider = 'pixelpay'")
                .fetch_optional(&app.store.pool)
                .await
                .unwrap()
                .is_some_and(|(s,)| s == "down")
        })
        .await,
        "the probes never found PixelPay down"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The shop holds orders, but a card cannot wait: 503, nothing stored.
    let order = serde_json::json!({
        "correlationID": "card-down-1",
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"title": "Camiseta Roja", "price": "10.00", "qty": 1, "total": "10.00"}],
        "total": "10.00",
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {
            "number": payhub_sandbox::PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    });
    let r = app.post_order(&order).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    if status == 422 {
        panic!("the card order itself is invalid for this test: {text}");
    }
    assert_eq!(status, 503, "{text}");
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE correlation_id = 'card-down-1'")
            .await,
        0
    );
    assert!(
        !text.contains(payhub_sandbox::PIXELPAY_TEST_VISA),
        "the card number in an answer"
    );
    app.stop().await;
}
