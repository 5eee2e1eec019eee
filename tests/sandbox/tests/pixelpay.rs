//! The PixelPay-compatible simulator: auth, the sandbox amount table, card
//! checks, auth/capture/void/status, per-merchant isolation, faults, and the
//! QuickPay collection webhooks with their retries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use payhub_sandbox::{
    PIXELPAY_OTHER_KEY_ID, PIXELPAY_OTHER_SECRET_KEY, PIXELPAY_SANDBOX_AUTH_HASH, PIXELPAY_SANDBOX_CARD_TOKEN,
    PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY, PIXELPAY_TEST_MASTERCARD, PIXELPAY_TEST_VISA,
    PIXELPAY_WEBHOOK_ATTEMPTS, PixelPayCollection, PixelPayFault, Sandbox, SandboxConfig, md5_hex,
    pixelpay_payment_hash,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const RETRY_DELAY: Duration = Duration::from_millis(200);

/// A sandbox whose collection webhooks retry after 200 ms; stops when dropped.
struct PixelPaySandbox {
    sandbox: Sandbox,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for PixelPaySandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The credentials one call is made with.
#[derive(Clone, Copy)]
struct Merchant {
    key: &'static str,
    secret: &'static str,
}

const SANDBOX: Merchant = Merchant {
    key: PIXELPAY_SANDBOX_KEY_ID,
    secret: PIXELPAY_SANDBOX_SECRET_KEY,
};
const OTHER: Merchant = Merchant {
    key: PIXELPAY_OTHER_KEY_ID,
    secret: PIXELPAY_OTHER_SECRET_KEY,
};

impl PixelPaySandbox {
    async fn start() -> PixelPaySandbox {
        let shutdown = CancellationToken::new();
        let mut cfg = SandboxConfig::local_ephemeral("sandbox-test-app");
        cfg.pixelpay_webhook_retry_delay = RETRY_DELAY;
        let sandbox = Sandbox::start(cfg, shutdown.clone()).await.expect("the sandbox starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        PixelPaySandbox {
            sandbox,
            http,
            shutdown,
        }
    }

    fn url(&self, op: &str) -> String {
        format!("{}/api/v2/transaction/{op}", self.sandbox.provider_url())
    }

    /// POSTs `body` to `op` as `merchant`: (status, envelope).
    async fn call(&self, merchant: Merchant, op: &str, body: &Value) -> (u16, Value) {
        self.call_with(&self.http, merchant, op, body)
            .await
            .expect("the simulator answers")
    }

    async fn call_with(
        &self,
        client: &reqwest::Client,
        merchant: Merchant,
        op: &str,
        body: &Value,
    ) -> reqwest::Result<(u16, Value)> {
        let resp = client
            .post(self.url(op))
            .header("x-auth-key", merchant.key)
            .header("x-auth-hash", md5_hex(merchant.secret))
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    async fn sale(&self, merchant: Merchant, amount: &str) -> (u16, Value) {
        self.call(merchant, "sale", &sale_body("order-1", amount)).await
    }

    async fn status(&self, merchant: Merchant, uuid: &str) -> (u16, Value) {
        self.call(merchant, "status", &json!({ "payment_uuid": uuid })).await
    }
}

fn sale_body(order_id: &str, amount: &str) -> Value {
    json!({
        "order_id": order_id,
        "order_currency": "HNL",
        "order_amount": amount,
        "order_content": [{"title": "Camiseta Roja", "price": 1.0, "qty": 1, "total": 1.0}],
        "customer_name": "Pedro Perez",
        "customer_email": "pedro.perez@example.com",
        "billing_address": "Col. Palmira, Av. República de Chile",
        "billing_country": "HN",
        "billing_state": "HN-FM",
        "billing_city": "Tegucigalpa",
        "billing_phone": "+50499999999",
        "card_number": PIXELPAY_TEST_VISA,
        "card_cvv": "300",
        "card_expire": "3012",
        "card_holder": "Pedro Perez",
    })
}

#[tokio::test]
async fn an_approved_sale_carries_a_verifiable_hash_and_stores_no_card_data() {
    let t = PixelPaySandbox::start().await;
    let (status, reply) = t.sale(SANDBOX, "1.00").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["success"], true);
    assert!(reply["errors"].is_null());
    let data = &reply["data"];
    assert_eq!(data["transaction_type"], "sale");
    assert_eq!(data["response_approved"], true);
    assert_eq!(data["transaction_approved_amount"], json!(1.0));
    assert_eq!(
        data["payment_hash"],
        pixelpay_payment_hash("order-1", PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY)
    );
    for field in ["payment_uuid", "transaction_id", "transaction_auth"] {
        assert!(data[field].as_str().is_some_and(|s| !s.is_empty()), "{field}: {data}");
    }
    assert!(data["payment_uuid"].as_str().unwrap().starts_with("P-"));

    let txs = t.sandbox.pixelpay_transactions();
    assert_eq!(txs.len(), 1);
    let tx = &txs[0];
    assert_eq!(tx.payment_uuid, data["payment_uuid"]);
    assert_eq!(
        (tx.approved, tx.amount_minor, tx.card_last4.as_str()),
        (true, 100, "1111")
    );
    assert_eq!(tx.card_brand, "visa");
    assert_eq!(tx.answered, Some(200));
    let stored = format!("{txs:?} {}", serde_json::to_string(&txs).unwrap());
    assert!(
        !stored.contains(PIXELPAY_TEST_VISA) && !stored.contains("Pedro"),
        "{stored}"
    );
    // The CVV's digits may turn up inside random ids; as a value of its own, never.
    assert!(
        !stored.contains("\"300\"") && !stored.to_lowercase().contains("cvv"),
        "{stored}"
    );
    assert_eq!(t.sandbox.pixelpay_requests(), 1);
    assert_eq!(md5_hex(PIXELPAY_SANDBOX_SECRET_KEY), PIXELPAY_SANDBOX_AUTH_HASH);
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let t = PixelPaySandbox::start().await;
    let body = sale_body("order-1", "1.00");
    let cases: [(Option<&str>, Option<String>); 5] = [
        (None, None),
        (Some(PIXELPAY_SANDBOX_KEY_ID), None),
        (Some(PIXELPAY_SANDBOX_KEY_ID), Some(md5_hex(PIXELPAY_OTHER_SECRET_KEY))),
        (
            Some(PIXELPAY_SANDBOX_KEY_ID),
            Some(PIXELPAY_SANDBOX_AUTH_HASH.to_uppercase()),
        ),
        (Some("999"), Some(PIXELPAY_SANDBOX_AUTH_HASH.to_string())),
    ];
    for (key, hash) in cases {
        let mut req = t.http.post(t.url("sale")).json(&body);
        if let Some(k) = key {
            req = req.header("x-auth-key", k);
        }
        if let Some(h) = &hash {
            req = req.header("x-auth-hash", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{key:?} {hash:?}");
        let reply: Value = resp.json().await.unwrap();
        assert_eq!(reply["success"], false);
        assert!(reply["message"].is_string());
    }
    assert!(t.sandbox.pixelpay_transactions().is_empty());
    assert_eq!(t.sandbox.pixelpay_requests(), 5);
}

#[tokio::test]
async fn amounts_force_the_documented_outcomes() {
    let t = PixelPaySandbox::start().await;
    let cases = [
        ("2.00", 402, "Transacción denegada"),
        ("3.00", 400, "Configuración de comercio inválida"),
        ("4.00", 402, "Tarjeta con reporte de robo o extravío"),
        ("5.00", 406, "Error al encontrar el cobro"),
        ("6.00", 412, "El límite de intentos para esta tarjeta ha sido superado"),
        ("7.00", 500, "Error general del sistema"),
        ("9.00", 412, "excede el máximo permitido"),
        ("10.00", 412, "límite de transacciones"),
        ("11.00", 412, "límite de ventas"),
        ("12.00", 412, "emisor"),
        ("13.00", 412, "tipo"),
        ("14.00", 412, "país o región"),
        ("15.00", 200, ""),
        ("1.01", 200, ""),
    ];
    for (amount, expected, message) in cases {
        let (status, reply) = t.sale(SANDBOX, amount).await;
        assert_eq!(status, expected, "{amount}: {reply}");
        assert_eq!(reply["success"], expected == 200, "{amount}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(message),
            "{amount}: {reply}"
        );
        if expected == 402 {
            assert_eq!(reply["data"]["response_approved"], false, "{reply}");
            assert!(reply["data"]["payment_hash"].is_null(), "{reply}");
        }
    }
    // Declines are recorded (the dashboard shows them); refusals are not.
    let txs = t.sandbox.pixelpay_transactions();
    let summary: Vec<(i64, bool)> = txs.iter().map(|t| (t.amount_minor, t.approved)).collect();
    assert_eq!(summary, [(200, false), (400, false), (1500, true), (101, true)]);
}

#[tokio::test]
async fn a_408_after_approval_is_settled_by_status() {
    let t = PixelPaySandbox::start().await;
    let (status, reply) = t.sale(SANDBOX, "8.00").await;
    assert_eq!(status, 408, "{reply}");
    assert_eq!(reply["success"], false);
    let uuid = reply["data"]["payment_uuid"]
        .as_str()
        .expect("the 408 names the payment")
        .to_string();
    assert!(reply["data"].get("response_approved").is_none(), "{reply}");

    let tx = t.sandbox.pixelpay_transaction(&uuid).expect("recorded");
    assert!(tx.approved);
    assert_eq!(tx.answered, Some(408));

    let (status, reply) = t.status(SANDBOX, &uuid).await;
    assert_eq!(status, 200, "{reply}");
    let data = &reply["data"];
    assert_eq!(data["response_approved"], true);
    assert_eq!(data["transaction_approved_amount"], json!(8.0));
    assert_eq!(data["order_id"], "order-1");
    assert_eq!(data["order_currency"], "HNL");
    assert_eq!(
        data["payment_hash"],
        pixelpay_payment_hash("order-1", PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY)
    );
}

#[tokio::test]
async fn missing_and_malformed_fields_are_422_per_field() {
    let t = PixelPaySandbox::start().await;
    let (status, reply) = t.call(SANDBOX, "sale", &json!({})).await;
    assert_eq!(status, 422, "{reply}");
    let errors = reply["errors"].as_object().expect("errors by field");
    for field in [
        "order_id",
        "order_currency",
        "order_amount",
        "customer_name",
        "customer_email",
        "card_number",
        "card_cvv",
        "card_expire",
        "card_holder",
        "billing_address",
        "billing_city",
        "billing_state",
        "billing_country",
        "billing_phone",
    ] {
        assert!(
            errors[field].as_array().is_some_and(|m| !m.is_empty()),
            "{field}: {reply}"
        );
    }

    let mut body = sale_body("order-1", "1.00");
    body["order_amount"] = json!(1.0);
    body["order_currency"] = json!("BRL");
    body["card_expire"] = json!("12/30");
    body["billing_country"] = json!("Honduras");
    body["customer_email"] = json!("pedro");
    body["order_content"] = json!([{"title": "ab", "price": 1, "qty": 0, "total": 1}]);
    let (status, reply) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 422, "{reply}");
    let fields: Vec<&String> = reply["errors"].as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "billing_country",
            "card_expire",
            "customer_email",
            "order_amount",
            "order_content",
            "order_currency"
        ]
    );
    for bad in ["1", "1.0", "1.000"] {
        let (status, _) = t.sale(SANDBOX, bad).await;
        assert_eq!(status, 422, "{bad}");
    }
    let (status, reply) = t.call(SANDBOX, "refund", &json!({})).await;
    assert_eq!(status, 404, "{reply}");
    assert!(t.sandbox.pixelpay_transactions().is_empty());
}

#[tokio::test]
async fn luhn_failures_and_expired_cards_are_declined() {
    let t = PixelPaySandbox::start().await;
    let mut body = sale_body("order-1", "1.00");
    body["card_number"] = json!("4111111111111112");
    let (status, reply) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 402, "{reply}");
    assert_eq!(reply["data"]["response_approved"], false);

    let mut body = sale_body("order-2", "1.00");
    body["card_expire"] = json!("2001");
    let (status, reply) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 402, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("vencida"), "{reply}");

    let mut body = sale_body("order-3", "1.00");
    body["card_number"] = json!(PIXELPAY_TEST_MASTERCARD);
    body["card_cvv"] = json!("999");
    let (status, _) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 200);

    let summary: Vec<(String, bool, String, String)> = t
        .sandbox
        .pixelpay_transactions()
        .into_iter()
        .map(|t| (t.order_id, t.approved, t.card_brand, t.card_last4))
        .collect();
    assert_eq!(
        summary,
        [
            ("order-1".into(), false, "visa".into(), "1112".into()),
            ("order-2".into(), false, "visa".into(), "1111".into()),
            ("order-3".into(), true, "mastercard".into(), "4444".into()),
        ]
    );
}

#[tokio::test]
async fn a_saved_card_token_pays() {
    let t = PixelPaySandbox::start().await;
    let mut body = sale_body("order-1", "1.00");
    for field in ["card_number", "card_cvv", "card_expire", "card_holder"] {
        body.as_object_mut().unwrap().remove(field);
    }
    body["card_token"] = json!(PIXELPAY_SANDBOX_CARD_TOKEN);
    let (status, reply) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 200, "{reply}");
    body["card_token"] = json!("T-unknown");
    let (status, reply) = t.call(SANDBOX, "sale", &body).await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply["errors"]["card_token"].is_array());
}

#[tokio::test]
async fn auth_capture_and_void() {
    let t = PixelPaySandbox::start().await;
    let (status, reply) = t.call(SANDBOX, "auth", &sale_body("order-9", "50.00")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["transaction_type"], "auth");
    let uuid = reply["data"]["payment_uuid"].as_str().unwrap().to_string();

    let capture = |amount: &str| json!({ "payment_uuid": uuid, "transaction_approved_amount": amount });
    let (status, reply) = t.call(SANDBOX, "capture", &capture("50.01")).await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply["errors"]["transaction_approved_amount"].is_array());
    let (status, reply) = t.call(SANDBOX, "capture", &capture("40.00")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["transaction_type"], "capture");
    assert_eq!(reply["data"]["transaction_approved_amount"], json!(40.0));
    assert_eq!(
        reply["data"]["payment_hash"],
        pixelpay_payment_hash("order-9", PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY)
    );
    let (status, _) = t.call(SANDBOX, "capture", &capture("10.00")).await;
    assert_eq!(status, 400, "a second capture is refused");

    let (_, reply) = t.status(SANDBOX, &uuid).await;
    assert_eq!(reply["data"]["transaction_type"], "capture");

    // A sale cannot be captured.
    let (_, sold) = t.sale(SANDBOX, "1.00").await;
    let sold_uuid = sold["data"]["payment_uuid"].as_str().unwrap().to_string();
    let (status, _) = t
        .call(
            SANDBOX,
            "capture",
            &json!({"payment_uuid": sold_uuid, "transaction_approved_amount": "1.00"}),
        )
        .await;
    assert_eq!(status, 400);

    let void = json!({ "payment_uuid": uuid, "void_reason": "buyer cancelled" });
    let (status, reply) = t.call(SANDBOX, "void", &void).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["transaction_type"], "void");
    let (status, _) = t.call(SANDBOX, "void", &void).await;
    assert_eq!(status, 400, "a second void is refused");
    let (_, reply) = t.status(SANDBOX, &uuid).await;
    assert_eq!(reply["data"]["transaction_type"], "void");
    let tx = t.sandbox.pixelpay_transaction(&uuid).unwrap();
    assert!(tx.voided);
    assert_eq!(tx.void_reason.as_deref(), Some("buyer cancelled"));
    assert_eq!(tx.captured_amount_minor, Some(4000));

    let (status, reply) = t.call(SANDBOX, "void", &json!({})).await;
    assert_eq!(status, 422, "{reply}");
    let (status, _) = t.status(SANDBOX, "P-unknown").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn one_merchants_transactions_are_invisible_to_another() {
    let t = PixelPaySandbox::start().await;
    let (_, reply) = t.sale(SANDBOX, "1.00").await;
    let uuid = reply["data"]["payment_uuid"].as_str().unwrap().to_string();

    let (status, _) = t.status(OTHER, &uuid).await;
    assert_eq!(status, 404);
    let (status, _) = t.call(OTHER, "void", &json!({ "payment_uuid": uuid })).await;
    assert_eq!(status, 404);
    assert!(!t.sandbox.pixelpay_transaction(&uuid).unwrap().voided);

    let (status, reply) = t.sale(OTHER, "1.00").await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["data"]["payment_hash"],
        pixelpay_payment_hash("order-1", PIXELPAY_OTHER_KEY_ID, PIXELPAY_OTHER_SECRET_KEY)
    );
    let owners: Vec<String> = t
        .sandbox
        .pixelpay_transactions()
        .into_iter()
        .map(|t| t.merchant_key_id)
        .collect();
    assert_eq!(owners, [PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_OTHER_KEY_ID]);
}

#[tokio::test]
async fn faults_hang_lose_the_answer_or_echo() {
    let t = PixelPaySandbox::start().await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    // Hang: nothing happens, the client gives up.
    t.sandbox.pixelpay_fail_next(2, PixelPayFault::Hang);
    for _ in 0..2 {
        let err = t
            .call_with(&impatient, SANDBOX, "sale", &sale_body("hung", "1.00"))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    assert!(t.sandbox.pixelpay_transactions().is_empty());

    // Approve but answer 500: charged, and the answer names no payment.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::ApproveButAnswer(500));
    let (status, reply) = t.sale(SANDBOX, "1.00").await;
    assert_eq!(status, 500, "{reply}");
    assert!(reply["data"].is_null(), "{reply}");
    let tx = t.sandbox.pixelpay_transactions().pop().unwrap();
    assert!(tx.approved);
    assert_eq!(tx.answered, Some(500));

    // Approve, then hang.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::ApproveThenHang);
    let err = t
        .call_with(&impatient, SANDBOX, "sale", &sale_body("lost", "1.00"))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let tx = t.sandbox.pixelpay_transactions().pop().unwrap();
    assert_eq!((tx.order_id.as_str(), tx.approved, tx.answered), ("lost", true, None));

    // Echo: the message quotes the card and the auth hash.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::EchoRequest(400));
    let (status, reply) = t.sale(SANDBOX, "1.00").await;
    assert_eq!(status, 400);
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains(PIXELPAY_TEST_VISA) && message.contains(PIXELPAY_SANDBOX_AUTH_HASH));

    // A plain status fault, then normal again.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Status(503));
    assert_eq!(t.sale(SANDBOX, "1.00").await.0, 503);
    assert_eq!(t.sale(SANDBOX, "1.00").await.0, 200);
    assert_eq!(t.sandbox.pixelpay_transactions().len(), 3);
    assert_eq!(t.sandbox.pixelpay_requests(), 7);
}

/// A webhook receiver that answers the queued statuses in turn (then 200)
/// and records each body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct ReceiverState {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(State(s): State<ReceiverState>, body: Bytes) -> (StatusCode, &'static str) {
    s.bodies.lock().unwrap().push(body.to_vec());
    let code = s.answers.lock().unwrap().pop_front().unwrap_or(200);
    (StatusCode::from_u16(code).unwrap(), "ok")
}

impl Receiver {
    async fn start(answers: &[u16]) -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            bodies: bodies.clone(),
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
        };
        let app = Router::new()
            .route("/webhooks/pixelpay", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver {
            url: format!("http://{addr}/webhooks/pixelpay"),
            bodies,
            shutdown,
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

const FIXTURE: &str = include_str!("../../fixtures/pixelpay/success-webhook.json");
const ERROR_FIXTURE: &str = include_str!("../../fixtures/pixelpay/error-webhook.json");

#[tokio::test]
async fn a_paid_collection_posts_the_documented_success_webhook_once() {
    let t = PixelPaySandbox::start().await;
    let shop = Receiver::start(&[]).await;
    let paid = t
        .sandbox
        .pixelpay_pay_collection(&PixelPayCollection::documented_example(), &shop.url)
        .await
        .unwrap();
    let delivery = t
        .sandbox
        .pixelpay_wait_delivery(paid.delivery_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(delivery.delivered && delivery.done);
    assert_eq!(delivery.kind, "success");
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status, Some(200));

    let bodies = shop.bodies();
    assert_eq!(bodies.len(), 1);
    let got = &bodies[0];
    let documented: Value = serde_json::from_str(FIXTURE).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(got), keys(&documented));
    for same in [
        "status",
        "currency",
        "amount",
        "tax_amount",
        "items",
        "customer_name",
        "extra",
    ] {
        assert_eq!(got[same], documented[same], "{same}");
    }
    assert_eq!(got["uuid"], paid.uuid);
    assert_eq!(got["ref"], paid.reference);
    assert_eq!(got["company_key"], PIXELPAY_SANDBOX_KEY_ID);
    assert_eq!(got["card_account"], "4111 •••• •••• 1111");
    assert_eq!(got, &serde_json::from_str::<Value>(&delivery.body).unwrap());

    // The receiver can re-query the collection with its own credentials.
    let (status, reply) = t.status(SANDBOX, &paid.uuid).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["response_approved"], true);
    assert_eq!(reply["data"]["transaction_approved_amount"], json!(99.99));
    assert_eq!(reply["data"]["order_currency"], "USD");
    assert_eq!(t.status(OTHER, &paid.uuid).await.0, 404);
}

#[tokio::test]
async fn a_failing_receiver_gets_three_attempts_the_retry_delay_apart() {
    let t = PixelPaySandbox::start().await;
    let shop = Receiver::start(&[500, 204]).await;
    let started = Instant::now();
    let paid = t
        .sandbox
        .pixelpay_pay_collection(&PixelPayCollection::documented_example(), &shop.url)
        .await
        .unwrap();
    let delivery = t
        .sandbox
        .pixelpay_wait_delivery(paid.delivery_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(started.elapsed() >= RETRY_DELAY * 2, "{:?}", started.elapsed());
    let statuses: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status).collect();
    // Only exactly 200 counts: a 204 is resent too.
    assert_eq!(statuses, [Some(500), Some(204), Some(200)]);
    assert!(delivery.delivered);
    let bodies = shop.bodies();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every attempt sends the same body"
    );

    let always = Receiver::start(&[503, 503, 503, 503]).await;
    let paid = t
        .sandbox
        .pixelpay_pay_collection(&PixelPayCollection::documented_example(), &always.url)
        .await
        .unwrap();
    let delivery = t
        .sandbox
        .pixelpay_wait_delivery(paid.delivery_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(delivery.attempts.len(), PIXELPAY_WEBHOOK_ATTEMPTS as usize);
    assert!(!delivery.delivered && delivery.done);
    tokio::time::sleep(RETRY_DELAY * 2).await;
    assert_eq!(always.bodies().len(), 3, "no fourth attempt");
}

#[tokio::test]
async fn no_answer_is_retried_and_recorded() {
    let t = PixelPaySandbox::start().await;
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/pixelpay", closed.local_addr().unwrap());
    drop(closed);
    let id = t.sandbox.pixelpay_collection_error(&url, "boom").await.unwrap();
    let delivery = t
        .sandbox
        .pixelpay_wait_delivery(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(delivery.attempts.len(), 3);
    assert!(
        delivery
            .attempts
            .iter()
            .all(|a| a.status.is_none() && !a.answer.is_empty())
    );
    assert!(!delivery.delivered);
}

#[tokio::test]
async fn the_error_webhook_has_the_documented_shape() {
    let t = PixelPaySandbox::start().await;
    let shop = Receiver::start(&[]).await;
    let documented: Value = serde_json::from_str(ERROR_FIXTURE).unwrap();
    let message = documented["message"].as_str().unwrap();
    let id = t.sandbox.pixelpay_collection_error(&shop.url, message).await.unwrap();
    let delivery = t
        .sandbox
        .pixelpay_wait_delivery(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(delivery.delivered);
    assert_eq!(delivery.kind, "error");
    assert_eq!(shop.bodies(), [documented]);
    assert!(t.sandbox.pixelpay_collection_error("not a url", "x").await.is_err());
    assert!(
        t.sandbox
            .pixelpay_wait_delivery(999, Duration::from_millis(10))
            .await
            .is_err()
    );
}
