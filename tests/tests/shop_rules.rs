//! A shop's own rules (seed 004): delivery coverage, item availability from a
//! stock list or the shop's stock service, provider fees; in every door.

use axum::routing::post;
use payhub_core::rules::OrderRules;
use payhub_tests::{TestApp, sample_order};
use serde_json::{Value, json};

async fn set_rules(app: &TestApp, rules: Value) {
    let rules: OrderRules = serde_json::from_value(rules).unwrap();
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();
}

fn field_codes(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap().to_string(),
                        e["code"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_stock_and_fees_apply_to_every_order() {
    let app = TestApp::spawn().await;
    // The sample order ships to PR (CEP 85920-970) and has item 0000123 x2 and an item without code.
    set_rules(
        &app,
        json!({"delivery": {"states": ["SP", "RJ"], "cepRanges": [["01000000", "19999999"]]}}),
    )
    .await;
    let r = app.post_order(&sample_order("fora-da-area")).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        field_codes(&p),
        [("shippingAddress.zipcode".to_string(), "not_covered".to_string())],
        "{p:#}"
    );

    // A stock list: the code-less line must carry a code, and 0000123 has only one left.
    set_rules(
        &app,
        json!({"delivery": {"states": ["PR"]}, "stock": {"kind": "list", "items": {"0000123": 1}}}),
    )
    .await;
    let r = app.post_order(&sample_order("sem-estoque")).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    let codes = field_codes(&p);
    assert!(codes.contains(&("items[0].qty".into(), "unavailable".into())), "{p:#}");
    assert!(codes.contains(&("items[1].code".into(), "required".into())), "{p:#}");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0, "nothing stored");

    // Covered, in stock, and the provider's fee is computed and kept with the order.
    set_rules(
        &app,
        json!({"delivery": {"states": ["PR"]}, "providerFees": {"openpix": {"percentBp": 99, "fixedMinor": 0}}}),
    )
    .await;
    let r = app.post_order(&sample_order("dentro")).await;
    assert_eq!(r.status(), 201);
    let o: Value = r.json().await.unwrap();
    // 0.99% of 227.79 = 2.255... -> 2.26
    assert_eq!(o["amounts"]["providerFee"], "2.26");
    assert_eq!(o["amounts"]["net"], "225.53");
    assert_eq!(o["paymentCode"], o["id"], "the unique payment code is the order's id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shops_stock_service_is_asked_and_its_silence_is_not_a_yes() {
    let app = TestApp::spawn().await;
    // The shop's stock service: 0000123 is out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stock", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let seen = asked.clone();
    let router = axum::Router::new().route(
        "/stock",
        post(move |axum::Json(v): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(v);
                axum::Json(json!({"unavailable": ["0000123"]}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    set_rules(
        &app,
        json!({"stock": {"kind": "callback", "url": url, "timeoutMs": 1000}}),
    )
    .await;
    let r = app.post_order(&sample_order("callback")).await;
    assert_eq!(r.status(), 422);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        field_codes(&p),
        [("items[0].qty".to_string(), "unavailable".to_string())]
    );
    assert_eq!(
        asked.lock().unwrap()[0]["items"][0],
        json!({"code": "0000123", "qty": 2})
    );

    // A stock service that does not answer: 503, try again later; nothing stored.
    set_rules(
        &app,
        json!({"stock": {"kind": "callback", "url": "http://127.0.0.1:9/stock", "timeoutMs": 300}}),
    )
    .await;
    assert_eq!(app.post_order(&sample_order("callback-down")).await.status(), 503);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // The same rules in the Wake door: statusId 2 with the reason.
    set_rules(&app, json!({"delivery": {"states": ["SP"]}})).await;
    let secret = payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap();
    let wake: Value = serde_json::from_str(include_str!("../fixtures/wake/payment.json")).unwrap();
    let answer: Value = app
        .http
        .post(format!("{}/wake/payment", app.ingress_url))
        .bearer_auth(&secret)
        .json(&wake)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["statusId"], 2);
    assert!(
        answer["message"].as_str().unwrap().contains("does not deliver"),
        "{answer}"
    );
    app.stop().await;
}
