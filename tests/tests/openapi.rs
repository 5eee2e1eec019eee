//! docs/openapi.yaml against the running services: every documented
//! operation is called, every status the test can provoke is provoked, each
//! answer is recorded, and tests/python/check_openapi.py validates the
//! recordings against the document (and fails on an operation or a shop
//! webhook no recording covered).

use payhub_tests::{TestApp, eventually, sample_order};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const INGRESS: &str = "ingress";
const VERIFIER: &str = "webhook-verifier";
const REPORTER: &str = "reporter";

/// The recorded answers, in check_openapi.py's sample format.
#[derive(Default)]
struct Samples(Vec<Value>);

impl Samples {
    /// Records one answer; panics unless it has the status the step meant
    /// to provoke. Returns the body (JSON when the content type says so).
    async fn record(
        &mut self,
        name: &str,
        service: &str,
        method: &str,
        path_template: &str,
        expected: u16,
        resp: reqwest::Response,
    ) -> Value {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("the body is readable");
        assert_eq!(
            status, expected,
            "{name}: {method} {path_template} on {service} answered {status} ({content_type}): {text}"
        );
        let body = if content_type.contains("json") {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        self.0.push(json!({
            "name": name,
            "service": service,
            "method": method,
            "path_template": path_template,
            "status": status,
            "content_type": content_type,
            "body": body,
        }));
        body
    }

    /// Attaches the request body of the last recording (validated against
    /// the operation's request schema).
    fn with_request(&mut self, request: &Value) {
        self.0.last_mut().expect("a recording")["request"] = request.clone();
    }
}

fn fixture(path: &str) -> Value {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path);
    serde_json::from_str(&std::fs::read_to_string(&file).expect("fixture readable")).expect("fixture JSON")
}

async fn post_webhook(app: &TestApp, body: &[u8], signature: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/webhooks/openpix", app.verifier_url))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-webhook-signature", sig);
    }
    req.send().await.expect("webhook-verifier answers")
}

async fn wake(app: &TestApp, path: &str, secret: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/wake/{path}", app.ingress_url))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .expect("ingress answers")
}

/// OpenPix's CHARGE_COMPLETED for an order, signed by the sandbox's key.
/// The buyer pays at the sandbox; its signed webhook is kept to post by hand.
async fn payment_webhook(app: &TestApp, order: &Value) -> (Vec<u8>, String) {
    app.sandbox.hold_webhooks(true);
    app.sandbox.pay(order["id"].as_str().unwrap()).await.unwrap();
    app.sandbox.hold_webhooks(false);
    app.sandbox
        .take_held_webhooks()
        .pop()
        .expect("the held payment webhook")
}

/// The shop's own PixelPay account: the sandbox's public merchant.
fn set_pixelpay(app: &TestApp) {
    app.use_sandbox_pixelpay();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_docs_openapi_yaml_says() {
    let app = TestApp::spawn().await;
    let mut s = Samples::default();
    let orders_url = format!("{}/v1/orders", app.ingress_url);
    let key = app.api_key().to_string();

    // --- POST /v1/orders -------------------------------------------------
    let order = sample_order("oa-1");
    s.record(
        "created",
        INGRESS,
        "POST",
        "/v1/orders",
        201,
        app.post_order(&order).await,
    )
    .await;
    s.with_request(&order);
    let replay = app.post_order(&order).await;
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    s.record("idempotent replay", INGRESS, "POST", "/v1/orders", 200, replay)
        .await;
    let mut changed = order.clone();
    changed["freight"] = json!(16.00);
    changed["total"] = json!(228.79);
    s.record(
        "conflicting replay",
        INGRESS,
        "POST",
        "/v1/orders",
        409,
        app.post_order(&changed).await,
    )
    .await;
    s.with_request(&changed);
    let mut invalid = sample_order("oa-invalid");
    invalid["items"][0]["total"] = json!(9.99);
    invalid["customer"]["taxID"] = json!("111.111.111-12");
    let problem = s
        .record(
            "invalid",
            INGRESS,
            "POST",
            "/v1/orders",
            422,
            app.post_order(&invalid).await,
        )
        .await;
    assert!(problem["errors"].as_array().is_some_and(|e| e.len() >= 2), "{problem}");
    let not_json = app
        .http
        .post(&orders_url)
        .bearer_auth(&key)
        .header(CONTENT_TYPE, "application/json")
        .body("{\"correlationID\": ")
        .send()
        .await
        .unwrap();
    s.record("not JSON", INGRESS, "POST", "/v1/orders", 400, not_json).await;
    let no_key = app.http.post(&orders_url).json(&order).send().await.unwrap();
    s.record("no API key", INGRESS, "POST", "/v1/orders", 401, no_key).await;
    let bad_key = app.post_order_as(&order, "not-a-key").await;
    s.record("wrong API key", INGRESS, "POST", "/v1/orders", 401, bad_key)
        .await;
    let by_header = app
        .http
        .post(&orders_url)
        .header("x-api-key", &key)
        .json(&sample_order("oa-2"))
        .send()
        .await
        .unwrap();
    s.record("X-Api-Key", INGRESS, "POST", "/v1/orders", 201, by_header)
        .await;
    let too_large = app
        .http
        .post(&orders_url)
        .bearer_auth(&key)
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    s.record("too large", INGRESS, "POST", "/v1/orders", 413, too_large)
        .await;

    // --- GET /v1/orders/{correlationID} ------------------------------------
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let theirs = app.post_order_as(&sample_order("oa-other"), &other.api_key).await;
    s.record("another shop's order", INGRESS, "POST", "/v1/orders", 201, theirs)
        .await;
    let path = "/v1/orders/{correlationID}";
    s.record(
        "another shop's order",
        INGRESS,
        "GET",
        path,
        404,
        app.get_order("oa-other").await,
    )
    .await;
    s.record(
        "missing order",
        INGRESS,
        "GET",
        path,
        404,
        app.get_order("oa-none").await,
    )
    .await;
    let no_key = app.http.get(format!("{orders_url}/oa-1")).send().await.unwrap();
    s.record("no API key", INGRESS, "GET", path, 401, no_key).await;
    s.record("as accepted", INGRESS, "GET", path, 200, app.get_order("oa-2").await)
        .await;
    let awaiting = app.wait_for_status("oa-1", "awaiting_payment").await;
    let view = s
        .record(
            "with its charge",
            INGRESS,
            "GET",
            path,
            200,
            app.get_order("oa-1").await,
        )
        .await;

    // --- GET /my/orders/{orderId}/{token}.json (issue 11 §3) ------------------
    let my = "/my/orders/{orderId}/{token}.json";
    let my_url = view["myOrdersUrl"]
        .as_str()
        .expect("the order's myOrdersUrl")
        .to_string();
    s.record(
        "the buyer's order",
        INGRESS,
        "GET",
        my,
        200,
        app.http.get(format!("{my_url}.json")).send().await.unwrap(),
    )
    .await;
    let wrong = format!(
        "{}/my/orders/{}/{}.json",
        app.ingress_url,
        uuid::Uuid::new_v4(),
        "0".repeat(64)
    );
    s.record(
        "no such order",
        INGRESS,
        "GET",
        my,
        404,
        app.http.get(wrong).send().await.unwrap(),
    )
    .await;
    assert!(view["charge"]["brCode"].is_string(), "{view}");

    // --- POST /webhooks/openpix --------------------------------------------
    let hooks = "/webhooks/openpix";
    let test_call = serde_json::to_vec(&fixture("openpix/webhook-test-call.json")).unwrap();
    let ack = s
        .record(
            "test call",
            VERIFIER,
            "POST",
            hooks,
            200,
            post_webhook(&app, &test_call, Some(&app.sandbox.sign(&test_call))).await,
        )
        .await;
    assert_eq!(ack["status"], "ok");
    let other_event = br#"{"event":"OPENPIX:MOVEMENT_CONFIRMED"}"#;
    let ack = s
        .record(
            "no action needed",
            VERIFIER,
            "POST",
            hooks,
            200,
            post_webhook(&app, other_event, Some(&app.sandbox.sign(other_event))).await,
        )
        .await;
    assert_eq!(ack["status"], "ignored");
    let (payment, signature) = payment_webhook(&app, &awaiting).await;
    let forged = app.sandbox.sign(b"another body");
    s.record(
        "forged signature",
        VERIFIER,
        "POST",
        hooks,
        401,
        post_webhook(&app, &payment, Some(&forged)).await,
    )
    .await;
    s.record(
        "no signature",
        VERIFIER,
        "POST",
        hooks,
        401,
        post_webhook(&app, &payment, None).await,
    )
    .await;
    let garbage = b"not json at all";
    s.record(
        "signed but unreadable",
        VERIFIER,
        "POST",
        hooks,
        400,
        post_webhook(&app, garbage, Some(&app.sandbox.sign(garbage))).await,
    )
    .await;
    let big = vec![b' '; 1024 * 1024 + 1];
    s.record(
        "too large",
        VERIFIER,
        "POST",
        hooks,
        413,
        post_webhook(&app, &big, Some("x")).await,
    )
    .await;
    let ack = s
        .record(
            "payment",
            VERIFIER,
            "POST",
            hooks,
            200,
            post_webhook(&app, &payment, Some(&signature)).await,
        )
        .await;
    assert_eq!(ack["status"], "accepted");
    app.wait_for_status("oa-1", "paid").await;
    let view = s
        .record("paid", INGRESS, "GET", path, 200, app.get_order("oa-1").await)
        .await;
    assert!(view["endToEndId"].is_string() && view["paidAt"].is_string(), "{view}");

    // --- POST /v1/orders/{correlationID}/refunds ----------------------------
    let refunds = "/v1/orders/{correlationID}/refunds";
    let refund_url = format!("{orders_url}/oa-1/refunds");
    let post_refund = |url: String, body: Value| app.http.post(url).bearer_auth(&key).json(&body).send();
    let partial = json!({"idempotencyKey": "oa-refund-1", "amount": "27.79", "reason": "produto com defeito"});
    let refunded = s
        .record(
            "partial refund",
            INGRESS,
            "POST",
            refunds,
            201,
            post_refund(refund_url.clone(), partial.clone()).await.unwrap(),
        )
        .await;
    s.with_request(&partial);
    assert_eq!(refunded["status"], "confirmed", "{refunded}");
    s.record(
        "the same key again",
        INGRESS,
        "POST",
        refunds,
        200,
        post_refund(refund_url.clone(), partial.clone()).await.unwrap(),
    )
    .await;
    let too_much = json!({"idempotencyKey": "oa-refund-2", "amount": "1000.00"});
    s.record(
        "more than remains",
        INGRESS,
        "POST",
        refunds,
        409,
        post_refund(refund_url.clone(), too_much.clone()).await.unwrap(),
    )
    .await;
    s.with_request(&too_much);
    s.record(
        "invalid",
        INGRESS,
        "POST",
        refunds,
        422,
        post_refund(refund_url.clone(), json!({"amount": "1.001"}))
            .await
            .unwrap(),
    )
    .await;
    s.record(
        "another shop's order",
        INGRESS,
        "POST",
        refunds,
        404,
        post_refund(format!("{orders_url}/oa-other/refunds"), partial.clone())
            .await
            .unwrap(),
    )
    .await;
    let no_key = app.http.post(&refund_url).json(&partial).send().await.unwrap();
    s.record("no API key", INGRESS, "POST", refunds, 401, no_key).await;
    app.wait_for_status("oa-1", "partially_refunded").await;
    s.record(
        "partially refunded",
        INGRESS,
        "GET",
        path,
        200,
        app.get_order("oa-1").await,
    )
    .await;

    // --- POST /wake/payment, /wake/authorize, /wake/capture ------------------
    let secret = payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap();
    let cart = fixture("wake/payment.json");
    let chave = cart["chave"].as_str().unwrap().to_string();
    let reply = s
        .record(
            "awaiting payment",
            INGRESS,
            "POST",
            "/wake/payment",
            200,
            wake(&app, "payment", &secret, &cart).await,
        )
        .await;
    s.with_request(&cart);
    assert_eq!(reply["statusId"], 1, "{reply}");
    let mut bad_cart = cart.clone();
    bad_cart["chave"] = json!("1c1c1c1c-0000-4000-8000-000000000001");
    bad_cart["total"] = json!(299.99);
    let reply = s
        .record(
            "invalid cart",
            INGRESS,
            "POST",
            "/wake/payment",
            200,
            wake(&app, "payment", &secret, &bad_cart).await,
        )
        .await;
    assert_eq!(reply["statusId"], 2, "{reply}");
    s.record(
        "wrong secret",
        INGRESS,
        "POST",
        "/wake/payment",
        401,
        wake(&app, "payment", "not-the-secret", &cart).await,
    )
    .await;
    let not_json = app
        .http
        .post(format!("{}/wake/payment", app.ingress_url))
        .bearer_auth(&secret)
        .header(CONTENT_TYPE, "application/json")
        .body("[{")
        .send()
        .await
        .unwrap();
    s.record("not JSON", INGRESS, "POST", "/wake/payment", 400, not_json)
        .await;

    let mut authorize = fixture("wake/authorize.json");
    authorize[0]["chave"] = json!("0b7c2f1e-6a8d-4c55-9e21-3d4f5a6b7c8d");
    let reply = s
        .record(
            "authorised",
            INGRESS,
            "POST",
            "/wake/authorize",
            200,
            wake(&app, "authorize", &secret, &authorize).await,
        )
        .await;
    s.with_request(&authorize);
    assert_eq!(reply["statusId"], 4, "{reply}");
    let no_secret = app
        .http
        .post(format!("{}/wake/authorize", app.ingress_url))
        .json(&authorize)
        .send()
        .await
        .unwrap();
    s.record("no secret", INGRESS, "POST", "/wake/authorize", 401, no_secret)
        .await;
    for (route, template) in [("authorize", "/wake/authorize"), ("capture", "/wake/capture")] {
        let not_json = app
            .http
            .post(format!("{}/wake/{route}", app.ingress_url))
            .bearer_auth(&secret)
            .header(CONTENT_TYPE, "application/json")
            .body("not json")
            .send()
            .await
            .unwrap();
        s.record("not JSON", INGRESS, "POST", template, 400, not_json).await;
    }

    let wake_order = app.wait_for_status(&chave, "awaiting_payment").await;
    let capture = json!({"Id": 1356051, "Loja": "pagamentos", "Chave": chave, "Pedido": 108648,
                         "CarrinhoId": "d1e3bf62-795b-4b77-82ac-c81867ad9c1a"});
    let pending = app
        .http
        .post(format!("{}/wake/capture", app.ingress_url))
        .header("x-payhub-wake-secret", &secret)
        .json(&capture)
        .send()
        .await
        .unwrap();
    let reply = s
        .record("pending", INGRESS, "POST", "/wake/capture", 200, pending)
        .await;
    s.with_request(&capture);
    assert_eq!(reply["statusId"], 1, "{reply}");
    let unknown = fixture("wake/capture.json");
    let reply = s
        .record(
            "unknown order",
            INGRESS,
            "POST",
            "/wake/capture",
            200,
            wake(&app, "capture", &secret, &unknown).await,
        )
        .await;
    s.with_request(&unknown);
    assert_eq!(reply["statusId"], 2, "{reply}");
    s.record(
        "wrong secret",
        INGRESS,
        "POST",
        "/wake/capture",
        401,
        wake(&app, "capture", "not-the-secret", &capture).await,
    )
    .await;
    app.sandbox.pay(wake_order["id"].as_str().unwrap()).await.unwrap();
    app.wait_for_status(&chave, "paid").await;
    let reply = s
        .record(
            "paid",
            INGRESS,
            "POST",
            "/wake/capture",
            200,
            wake(&app, "capture", &secret, &capture).await,
        )
        .await;
    assert_eq!(reply["statusId"], 3, "{reply}");

    // --- GET /v1/orders/{correlationID}/receipt (issue 12) ------------------
    let receipt = "/v1/orders/{correlationID}/receipt";
    let get_receipt = |cid: &str, query: &str| {
        app.http
            .get(format!("{orders_url}/{cid}/receipt{query}"))
            .bearer_auth(&key)
            .send()
    };
    s.record(
        "A4",
        INGRESS,
        "GET",
        receipt,
        200,
        get_receipt("oa-1", "").await.unwrap(),
    )
    .await;
    s.record(
        "80 mm",
        INGRESS,
        "GET",
        receipt,
        200,
        get_receipt("oa-1", "?layout=80mm").await.unwrap(),
    )
    .await;
    s.record(
        "not paid",
        INGRESS,
        "GET",
        receipt,
        409,
        get_receipt("oa-2", "").await.unwrap(),
    )
    .await;
    s.record(
        "bad layout",
        INGRESS,
        "GET",
        receipt,
        422,
        get_receipt("oa-1", "?layout=letter").await.unwrap(),
    )
    .await;
    s.record(
        "another shop's order",
        INGRESS,
        "GET",
        receipt,
        404,
        get_receipt("oa-other", "").await.unwrap(),
    )
    .await;
    let no_key = app.http.get(format!("{orders_url}/oa-1/receipt")).send().await.unwrap();
    s.record("no API key", INGRESS, "GET", receipt, 401, no_key).await;

    // --- POST /v1/orders/{correlationID}/fulfilment (issue 12) ---------------
    // The paid Wake order is shipped and delivered; the refunded one cannot be.
    let fulfilment = "/v1/orders/{correlationID}/fulfilment";
    let post_fulfilment = |cid: &str, body: &Value| {
        app.http
            .post(format!("{orders_url}/{cid}/fulfilment"))
            .bearer_auth(&key)
            .json(body)
            .send()
    };
    let ship = json!({"status": "shipped", "carrier": "Correios", "trackingCode": "QB123456789BR",
                      "trackingUrl": "https://rastreamento.example.com/QB123456789BR", "by": "joao"});
    s.record(
        "shipped",
        INGRESS,
        "POST",
        fulfilment,
        202,
        post_fulfilment(&chave, &ship).await.unwrap(),
    )
    .await;
    s.with_request(&ship);
    app.wait_for_status(&chave, "shipped").await;
    s.record(
        "the same report again",
        INGRESS,
        "POST",
        fulfilment,
        200,
        post_fulfilment(&chave, &ship).await.unwrap(),
    )
    .await;
    s.record(
        "illegal move",
        INGRESS,
        "POST",
        fulfilment,
        409,
        post_fulfilment("oa-1", &ship).await.unwrap(),
    )
    .await;
    s.record(
        "invalid",
        INGRESS,
        "POST",
        fulfilment,
        422,
        post_fulfilment(&chave, &json!({"status": "shipped"})).await.unwrap(),
    )
    .await;
    s.record(
        "another shop's order",
        INGRESS,
        "POST",
        fulfilment,
        404,
        post_fulfilment("oa-other", &ship).await.unwrap(),
    )
    .await;
    let no_key = app
        .http
        .post(format!("{orders_url}/{chave}/fulfilment"))
        .json(&ship)
        .send()
        .await
        .unwrap();
    s.record("no API key", INGRESS, "POST", fulfilment, 401, no_key).await;
    s.record("shipped", INGRESS, "GET", path, 200, app.get_order(&chave).await)
        .await;

    // --- GET, POST /survey/{token} (issue 12) --------------------------------
    // The Wake order is delivered; its buyer's invitation links the survey.
    s.record(
        "delivered",
        INGRESS,
        "POST",
        fulfilment,
        202,
        post_fulfilment(&chave, &json!({"status": "delivered"})).await.unwrap(),
    )
    .await;
    app.wait_for_status(&chave, "delivered").await;
    let invitation = || {
        app.sandbox.emails().into_iter().find(|m| {
            m.subject
                .as_deref()
                .is_some_and(|s| s.contains("Como foi o seu pedido") && s.contains(chave.as_str()))
        })
    };
    assert!(eventually(Duration::from_secs(20), || async { invitation().is_some() }).await);
    let text = payhub_tests::email_text(&invitation().unwrap().data);
    let link = text[text.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let survey = "/survey/{token}";
    let form = |body: &'static str| {
        app.http
            .post(&link)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    s.record(
        "the form",
        INGRESS,
        "GET",
        survey,
        200,
        app.http.get(&link).send().await.unwrap(),
    )
    .await;
    s.record(
        "no score",
        INGRESS,
        "POST",
        survey,
        422,
        form("comment=x").await.unwrap(),
    )
    .await;
    s.record(
        "answered",
        INGRESS,
        "POST",
        survey,
        200,
        form("score=10&comment=Muito+bom").await.unwrap(),
    )
    .await;
    s.record("again", INGRESS, "POST", survey, 409, form("score=1").await.unwrap())
        .await;
    s.record(
        "answered already",
        INGRESS,
        "GET",
        survey,
        409,
        app.http.get(&link).send().await.unwrap(),
    )
    .await;
    let unknown = format!("{}/survey/{}", app.ingress_url, "0".repeat(64));
    s.record(
        "unknown",
        INGRESS,
        "GET",
        survey,
        404,
        app.http.get(&unknown).send().await.unwrap(),
    )
    .await;
    s.record(
        "unknown",
        INGRESS,
        "POST",
        survey,
        404,
        app.http
            .post(&unknown)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("score=5")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| h.body.contains("survey.answered"))
        })
        .await,
        "the shop hears of the answer"
    );

    // --- GET /v1/reports/survey (issue 12) -----------------------------------
    let survey_report = "/v1/reports/survey";
    let survey_url = format!("{}/v1/reports/survey", app.reporter_url);
    let results = s
        .record(
            "all time",
            REPORTER,
            "GET",
            survey_report,
            200,
            app.http.get(&survey_url).bearer_auth(&key).send().await.unwrap(),
        )
        .await;
    assert_eq!(results["nps"], 100, "{results}");
    s.record(
        "bad date",
        REPORTER,
        "GET",
        survey_report,
        422,
        app.http
            .get(format!("{survey_url}?from=yesterday"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    s.record(
        "no API key",
        REPORTER,
        "GET",
        survey_report,
        401,
        app.http.get(&survey_url).send().await.unwrap(),
    )
    .await;

    // --- GET /v1/reports/deliveries (issue 12) -------------------------------
    let deliveries = "/v1/reports/deliveries";
    let deliveries_url = format!("{}/v1/reports/deliveries", app.reporter_url);
    s.record(
        "all time",
        REPORTER,
        "GET",
        deliveries,
        200,
        app.http.get(&deliveries_url).bearer_auth(&key).send().await.unwrap(),
    )
    .await;
    s.record(
        "bad range",
        REPORTER,
        "GET",
        deliveries,
        422,
        app.http
            .get(format!("{deliveries_url}?from=2026-12-02&to=2026-12-01"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    s.record(
        "no API key",
        REPORTER,
        "GET",
        deliveries,
        401,
        app.http.get(&deliveries_url).send().await.unwrap(),
    )
    .await;

    // --- GET /v1/reports/daily ----------------------------------------------
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let report_url = format!("{}/v1/reports/daily", app.reporter_url);
    let report = "/v1/reports/daily";
    let has_rows = eventually(Duration::from_secs(20), || async {
        let r = app
            .http
            .get(format!("{report_url}?date={today}"))
            .bearer_auth(&key)
            .send()
            .await;
        match r {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| {
                v["rows"]
                    .as_array()
                    .is_some_and(|rows| rows.iter().any(|r| r["status"] == "paid"))
            }),
            Err(_) => false,
        }
    })
    .await;
    assert!(has_rows, "the reporter counted the day's orders");
    let get_report = |query: &str| app.http.get(format!("{report_url}?{query}")).bearer_auth(&key).send();
    let day = s
        .record(
            "JSON",
            REPORTER,
            "GET",
            report,
            200,
            get_report(&format!("date={today}")).await.unwrap(),
        )
        .await;
    assert!(!day["rows"].as_array().unwrap().is_empty(), "{day}");
    let csv = s
        .record(
            "format=csv",
            REPORTER,
            "GET",
            report,
            200,
            get_report(&format!("date={today}&format=csv")).await.unwrap(),
        )
        .await;
    assert!(
        csv.as_str()
            .unwrap()
            .starts_with("date,shop_id,provider,status,currency,orders,amount\n")
    );
    let by_accept = app
        .http
        .get(format!("{report_url}?date={today}"))
        .bearer_auth(&key)
        .header(ACCEPT, "text/csv")
        .send()
        .await
        .unwrap();
    s.record("Accept: text/csv", REPORTER, "GET", report, 200, by_accept)
        .await;
    s.record(
        "bad date",
        REPORTER,
        "GET",
        report,
        422,
        get_report("date=2026-13-45").await.unwrap(),
    )
    .await;
    s.record(
        "no date, unknown format",
        REPORTER,
        "GET",
        report,
        422,
        get_report("format=xml").await.unwrap(),
    )
    .await;
    let no_key = app.http.get(format!("{report_url}?date={today}")).send().await.unwrap();
    s.record("no API key", REPORTER, "GET", report, 401, no_key).await;

    // --- /v1/settlement/exports ----------------------------------------------
    let exports_url = format!("{}/v1/settlement/exports", app.reporter_url);
    let exports = "/v1/settlement/exports";
    let has_lines = eventually(Duration::from_secs(20), || async {
        app.count("SELECT count(*) FROM ledger_lines").await > 0
    })
    .await;
    assert!(has_lines, "the reporter wrote the day's ledger lines");
    let range = json!({"from": today, "to": today});
    let post_export = |body: Value, idempotency: Option<&'static str>| {
        let mut r = app.http.post(&exports_url).bearer_auth(&key).json(&body);
        if let Some(k) = idempotency {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };
    let created = s
        .record(
            "new export",
            REPORTER,
            "POST",
            exports,
            201,
            post_export(range.clone(), Some("oa-export")).await.unwrap(),
        )
        .await;
    s.with_request(&range);
    let export_id = created["id"].as_str().unwrap().to_string();
    s.record(
        "same key",
        REPORTER,
        "POST",
        exports,
        200,
        post_export(range.clone(), Some("oa-export")).await.unwrap(),
    )
    .await;
    s.with_request(&range);
    s.record(
        "nothing left",
        REPORTER,
        "POST",
        exports,
        200,
        post_export(range.clone(), None).await.unwrap(),
    )
    .await;
    s.with_request(&range);
    let bad_range = json!({"from": today, "to": "2020-01-01"});
    s.record(
        "to before from",
        REPORTER,
        "POST",
        exports,
        422,
        post_export(bad_range.clone(), None).await.unwrap(),
    )
    .await;
    s.with_request(&bad_range);
    let no_key = app.http.post(&exports_url).json(&range).send().await.unwrap();
    s.record("no API key", REPORTER, "POST", exports, 401, no_key).await;
    let listed = app.http.get(&exports_url).bearer_auth(&key).send().await.unwrap();
    s.record("list", REPORTER, "GET", exports, 200, listed).await;
    let one = "/v1/settlement/exports/{exportId}";
    let get_one = |query: String| app.http.get(format!("{exports_url}/{query}")).bearer_auth(&key).send();
    s.record(
        "JSON",
        REPORTER,
        "GET",
        one,
        200,
        get_one(export_id.clone()).await.unwrap(),
    )
    .await;
    s.record(
        "CSV",
        REPORTER,
        "GET",
        one,
        200,
        get_one(format!("{export_id}?format=csv")).await.unwrap(),
    )
    .await;
    s.record(
        "unknown format",
        REPORTER,
        "GET",
        one,
        422,
        get_one(format!("{export_id}?format=xml")).await.unwrap(),
    )
    .await;
    s.record(
        "unknown export",
        REPORTER,
        "GET",
        one,
        404,
        get_one(uuid::Uuid::now_v7().to_string()).await.unwrap(),
    )
    .await;

    // --- /v1/reports/management (issue 13 §3) ----------------------------------
    let made: Value = app
        .http
        .post(format!("{}/internal/v1/reports", app.reporter_url))
        .bearer_auth(payhub_service::internal::DEVELOPMENT_TOKEN)
        .json(&json!({"period": "daily", "date": today, "shopId": app.shop.shop.id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report_id = made["id"].as_str().expect("a report made").to_string();
    let reports = "/v1/reports/management";
    let reports_url = format!("{}{reports}", app.reporter_url);
    let listed = app.http.get(&reports_url).bearer_auth(&key).send().await.unwrap();
    s.record("list", REPORTER, "GET", reports, 200, listed).await;
    let no_key = app.http.get(&reports_url).send().await.unwrap();
    s.record("no API key", REPORTER, "GET", reports, 401, no_key).await;
    let one_report = "/v1/reports/management/{reportId}";
    let get_report = |query: String| app.http.get(format!("{reports_url}/{query}")).bearer_auth(&key).send();
    for (name, query, status) in [
        ("PDF", report_id.clone(), 200),
        ("CSV", format!("{report_id}?format=csv"), 200),
        ("HTML", format!("{report_id}?format=html"), 200),
        ("unknown format", format!("{report_id}?format=xml"), 422),
        ("unknown report", uuid::Uuid::now_v7().to_string(), 404),
    ] {
        let r = get_report(query).await.unwrap();
        s.record(name, REPORTER, "GET", one_report, status, r).await;
    }
    let no_key = app.http.get(format!("{reports_url}/{report_id}")).send().await.unwrap();
    s.record("no API key", REPORTER, "GET", one_report, 401, no_key).await;

    // --- /v1/reconciliation/runs, /discrepancies (issue 13 §1) ----------------
    let reconciled = app
        .http
        .post(format!("{}/internal/v1/reconcile", app.reporter_url))
        .bearer_auth(payhub_service::internal::DEVELOPMENT_TOKEN)
        .json(&json!({"date": today}))
        .send()
        .await
        .unwrap();
    assert!(reconciled.status().is_success());
    for (name, path, query, status, with_key) in [
        ("runs", "/v1/reconciliation/runs", format!("?from={today}"), 200, true),
        (
            "bad range",
            "/v1/reconciliation/runs",
            "?from=2026-12-02&to=2026-12-01".to_string(),
            422,
            true,
        ),
        ("no API key", "/v1/reconciliation/runs", String::new(), 401, false),
        ("all", "/v1/reconciliation/discrepancies", String::new(), 200, true),
        (
            "bad resolution",
            "/v1/reconciliation/discrepancies",
            "?resolution=maybe".to_string(),
            422,
            true,
        ),
        (
            "no API key",
            "/v1/reconciliation/discrepancies",
            String::new(),
            401,
            false,
        ),
    ] {
        let mut req = app.http.get(format!("{}{path}{query}", app.reporter_url));
        if with_key {
            req = req.bearer_auth(&key);
        }
        s.record(name, REPORTER, "GET", path, status, req.send().await.unwrap())
            .await;
    }

    // --- POST /webhooks/pixelpay/{token} ------------------------------------
    // A PixelPay card order, paid by its sale; PixelPay's callbacks for it
    // arrive at the order's own URL.
    let callbacks = "/webhooks/pixelpay/{token}";
    set_pixelpay(&app);
    let card_order = json!({
        "correlationID": "oa-card",
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"title": "Camiseta Roja", "price": "150.00", "qty": 1, "total": "150.00"}],
        "total": "150.00",
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {"number": payhub_sandbox::PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
                 "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}}
    });
    let sold: Value = app.post_order(&card_order).await.json().await.unwrap();
    assert_eq!(sold["cardPayment"]["outcome"], "approved", "{sold}");
    app.wait_for_status("oa-card", "paid").await;
    let card_view = s
        .record(
            "a PixelPay order",
            INGRESS,
            "GET",
            path,
            200,
            app.get_order("oa-card").await,
        )
        .await;
    let callback = card_view["payment"]["callbackUrl"].as_str().unwrap().to_string();
    let post_callback = |url: String, body: Vec<u8>| {
        app.http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };
    let sale = json!({"uuid": sold["cardPayment"]["paymentUuid"], "status": "paid", "currency": "HNL",
                      "amount": 150.00})
    .to_string()
    .into_bytes();
    for (name, expected) in [
        ("the sale's own payment", "accepted"),
        ("the same payment again", "duplicate"),
    ] {
        let ack = s
            .record(
                name,
                VERIFIER,
                "POST",
                callbacks,
                200,
                post_callback(callback.clone(), sale.clone()).await.unwrap(),
            )
            .await;
        assert_eq!(ack["status"], expected, "{ack}");
    }
    let forged = br#"{"uuid": "1dab5ed0", "ref": "REF-0001-0006350867", "status": "paid"}"#.to_vec();
    let ack = s
        .record(
            "a payment PixelPay does not confirm",
            VERIFIER,
            "POST",
            callbacks,
            200,
            post_callback(callback.clone(), forged).await.unwrap(),
        )
        .await;
    assert_eq!(ack["status"], "rejected", "{ack}");
    let error = serde_json::to_vec(&fixture("pixelpay/error-webhook.json")).unwrap();
    let ack = s
        .record(
            "the error webhook",
            VERIFIER,
            "POST",
            callbacks,
            200,
            post_callback(callback.clone(), error).await.unwrap(),
        )
        .await;
    assert_eq!(ack["status"], "stored", "{ack}");
    s.record(
        "not JSON",
        VERIFIER,
        "POST",
        callbacks,
        400,
        post_callback(callback.clone(), b"not json".to_vec()).await.unwrap(),
    )
    .await;
    let unknown = format!("{}/webhooks/pixelpay/{}", app.verifier_url, "ab".repeat(32));
    s.record(
        "an unknown callback URL",
        VERIFIER,
        "POST",
        callbacks,
        404,
        post_callback(unknown, sale.clone()).await.unwrap(),
    )
    .await;

    // --- GET|POST /returns/pagoseguro/{token} -------------------------------
    let returns = "/returns/pagoseguro/{token}";
    let unknown = format!("{}/returns/pagoseguro/{}", app.verifier_url, "ab".repeat(32));
    s.record(
        "a Pago Seguro return about no known order",
        VERIFIER,
        "GET",
        returns,
        200,
        app.http
            .get(format!("{unknown}?orderReference=x&value=1&status=22&sign=00"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    s.record(
        "the same, posted as a form",
        VERIFIER,
        "POST",
        returns,
        200,
        app.http
            .post(&unknown)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("orderReference=x&value=1&status=22&sign=00")
            .send()
            .await
            .unwrap(),
    )
    .await;

    // --- /metrics, /healthz, /readyz on every service ------------------------
    for (service, base) in &app.ops_urls {
        for route in ["/metrics", "/healthz", "/readyz"] {
            let r = app.http.get(format!("{base}{route}")).send().await.unwrap();
            s.record("operations", service, "GET", route, 200, r).await;
        }
    }

    // --- Shop webhooks: order.status_changed, and order.rejected for an
    // invalid order message published over AMQP as the shop's RabbitMQ user.
    // The shop's own broker user: payhub's user is never a shop's.
    let shop_user = app.amqp_user_for(app.shop.shop.id).await;
    let (amqp_url, amqp_user) = (shop_user.url.clone(), shop_user.user.clone());
    let conn = lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut message = sample_order("oa-amqp-invalid");
    message["total"] = json!(1.00);
    let props = lapin::BasicProperties::default()
        .with_user_id(amqp_user.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    ch.basic_publish(
        app.topology.orders_exchange.as_str().into(),
        "orders.openapi".into(),
        Default::default(),
        message.to_string().as_bytes(),
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.sandbox
                .shop_webhooks()
                .iter()
                .any(|h| serde_json::from_str::<Value>(&h.body).is_ok_and(|b| b["type"] == "order.rejected"))
        })
        .await,
        "the shop hears of the refused message"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            !app.shop_hooks_for("oa-1", "paid").is_empty()
        })
        .await,
        "the shop hears of the payment"
    );
    for hook in app.sandbox.shop_webhooks() {
        assert!(
            hook.verified,
            "a shop webhook failed its signature check: {:?}",
            hook.verify_error
        );
        let body: Value = serde_json::from_str(&hook.body).expect("shop webhooks are JSON");
        s.0.push(json!({
            "webhook": body["type"],
            "name": format!("{} {}", body["data"]["correlationID"], body["data"]["status"]),
            "headers": {
                "webhook-id": hook.id,
                "webhook-timestamp": hook.timestamp,
                "webhook-signature": hook.signature,
            },
            "body": body,
        }));
    }

    app.stop().await;

    // --- The recordings against the document ---------------------------------
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    // PAYHUB_OPENAPI_SAMPLES=<file> keeps the recordings there (to run the
    // checker by hand); otherwise they go to a temporary file, removed on success.
    let keep = std::env::var_os("PAYHUB_OPENAPI_SAMPLES").map(PathBuf::from);
    let samples = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("payhub-openapi-samples-{}.json", std::process::id())));
    std::fs::write(&samples, serde_json::to_vec_pretty(&s.0).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/python/check_openapi.py"))
        .arg(root.join("docs/openapi.yaml"))
        .arg(&samples)
        .output()
        .expect("python3 runs (pip install openapi-spec-validator pyyaml jsonschema)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the services' answers do not match docs/openapi.yaml (samples kept in {}):\n{report}",
        samples.display()
    );
    println!("{report}");
    if keep.is_none() {
        let _ = std::fs::remove_file(&samples);
    }
}
