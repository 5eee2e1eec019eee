//! Wake card checkout (issue 10 §4), end to end over the real broker and
//! database: a card typed into Wake's checkout is charged through the
//! shop's own PixelPay account while Wake waits (`/payment` 3 or 2,
//! `/authorize` 4 then `/capture` 3), the postback carries TID, NSU and the
//! authorisation code, and the card is nowhere afterwards. A provider that
//! cannot settle the cart's currency for the shop is a clear refusal at the
//! door, before anything is stored.

use payhub_tests::leaks::{assert_nowhere, logs};
use payhub_tests::{TestApp, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const VISA: &str = "4111111111111111";
const CVC: &str = "739";

/// The seed's `/payment` cart (tests/fixtures/wake/payment.json), paid with
/// `number` instead of the seed's card.
fn payment(chave: &str, number: &str) -> Value {
    let mut v: Value = serde_json::from_str(include_str!("../fixtures/wake/payment.json")).unwrap();
    v["chave"] = json!(chave);
    v["pagamento"]["form"]["number"] = json!(number);
    v["pagamento"]["form"]["cvc"] = json!(CVC);
    v
}

async fn call(app: &TestApp, path: &str, secret: &str, body: &Value) -> Value {
    let r = app
        .http
        .post(format!("{}/wake/{path}", app.ingress_url))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A shop on Wake whose PixelPay account is a white-label one that settles
/// BRL (the sandbox's third merchant). Returns the Wake secret.
async fn wake_shop_with_cards(app: &TestApp) -> String {
    let endpoint = app.sandbox.provider_url();
    let out = app.set_provider(
        "pixelpay",
        payhub_sandbox::PIXELPAY_BRL_SECRET_KEY,
        &[
            "--key-id",
            payhub_sandbox::PIXELPAY_BRL_KEY_ID,
            "--endpoint",
            &endpoint,
            "--currencies",
            "BRL",
            "--allow",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["currencies"], json!(["BRL"]));
    payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap()
}

async fn postbacks_for(app: &TestApp, chave: &str, n: usize) -> Vec<Value> {
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.sandbox.wake_postbacks().iter().filter(|p| p.chave == chave).count() >= n
        })
        .await,
        "{n} postback(s) for {chave}"
    );
    app.sandbox
        .wake_postbacks()
        .into_iter()
        .filter(|p| p.chave == chave)
        .map(|p| p.body)
        .collect()
}

fn info<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body["informacoesAdicionais"]
        .as_array()?
        .iter()
        .find(|i| i["Nome"] == name)
        .and_then(|i| i["Valor"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_card_sale_is_paid_at_once_declines_say_why_and_the_card_is_nowhere() {
    logs();
    let app = TestApp::spawn().await;
    let secret = wake_shop_with_cards(&app).await;

    // The seed 001 payload byte for byte: its card number fails the Luhn
    // check, so payhub answers 2 with the field at fault, sends nothing to
    // PixelPay and stores nothing.
    let seed: Value = serde_json::from_str(include_str!("../fixtures/wake/payment.json")).unwrap();
    let answer = call(&app, "payment", &secret, &seed).await;
    assert_eq!(answer["statusId"], 2, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("card.number"), "{answer}");
    assert_eq!(app.sandbox.pixelpay_requests(), 0);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // A valid card: charged while Wake waits, statusId 3 with the proof.
    let chave = "2a2a2a2a-0000-4000-8000-000000000001";
    let answer = call(&app, "payment", &secret, &payment(chave, VISA)).await;
    assert_eq!(answer["statusId"], 3, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("TID") && message.contains("autorização"), "{answer}");
    let order = app.wait_for_status(chave, "paid").await;
    assert_eq!(order["payment"]["method"], "card", "{order}");
    let txs = app.sandbox.pixelpay_transactions();
    assert_eq!(txs.len(), 1);
    assert_eq!(
        (
            txs[0].merchant_key_id.as_str(),
            txs[0].currency.as_str(),
            txs[0].amount_minor,
            txs[0].kind.as_str()
        ),
        (payhub_sandbox::PIXELPAY_BRL_KEY_ID, "BRL", 30000, "sale")
    );

    // Wake's postback: 3, with TID, NSU and the authorisation code.
    let body = postbacks_for(&app, chave, 1).await.remove(0);
    assert_eq!(body["status"], 3, "{body}");
    assert_eq!(info(&body, "TID"), txs[0].transaction_id.as_deref(), "{body}");
    assert_eq!(info(&body, "NSU"), Some(txs[0].payment_uuid.as_str()), "{body}");
    assert_eq!(info(&body, "Auth"), txs[0].transaction_auth.as_deref(), "{body}");

    // Wake asking again never charges again.
    let again = call(&app, "payment", &secret, &payment(chave, VISA)).await;
    assert_eq!(again["statusId"], 3, "{again}");
    assert_eq!(app.sandbox.pixelpay_transactions().len(), 1);

    // A declined card (PixelPay's sandbox declines 2.00): 2 with the reason,
    // the order failed, never retried, Wake told by postback too.
    let declined = "2a2a2a2a-0000-4000-8000-000000000002";
    let mut cart = payment(declined, VISA);
    cart["produtos"][0]["valor"] = json!(2.00);
    for k in ["valor", "total"] {
        cart["pagamento"][k] = json!(2.00);
    }
    cart["total"] = json!(2.00);
    let answer = call(&app, "payment", &secret, &cart).await;
    assert_eq!(answer["statusId"], 2, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("Não autorizado: the card was declined"),
        "{answer}"
    );
    app.wait_for_status(declined, "failed").await;
    assert_eq!(postbacks_for(&app, declined, 1).await[0]["status"], 2);
    let again = call(&app, "payment", &secret, &cart).await;
    assert_eq!(again["statusId"], 2);
    assert_eq!(
        app.sandbox.pixelpay_transactions().len(),
        2,
        "a decline is never retried"
    );

    // The card: not in a table, a queue, a log line.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nowhere(
        &app,
        &[
            VISA.to_string(),
            "4111 1111 1111 1111".to_string(),
            format!("\"{CVC}\""),
            "TESTE TESTE TESTE".to_string(),
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_authorisation_holds_the_money_until_its_capture_pays_the_order() {
    logs();
    let app = TestApp::spawn().await;
    let secret = wake_shop_with_cards(&app).await;

    let chave = "3b3b3b3b-0000-4000-8000-000000000001";
    let cart = payment(chave, VISA);
    let answer = call(&app, "authorize", &secret, &json!([cart])).await;
    assert_eq!(answer["statusId"], 4, "{answer}");
    let order = app.wait_for_status(chave, "authorized").await;
    assert_eq!(order["payment"]["method"], "card", "{order}");
    let tx = app.sandbox.pixelpay_transactions().remove(0);
    assert_eq!((tx.kind.as_str(), tx.captured_amount_minor), ("auth", None));
    // An authorisation is not a payment: no paid postback, no buyer e-mail
    // of a payment yet; Wake hears 4.
    let body = postbacks_for(&app, chave, 1).await.remove(0);
    assert_eq!(body["status"], 4, "{body}");
    assert_eq!(info(&body, "Auth"), tx.transaction_auth.as_deref(), "{body}");

    // The capture takes the money: 3, and the order is paid once.
    let capture = json!({"Id": 1356051, "Loja": "pagamentos", "Chave": chave, "Pedido": 108648});
    let answer = call(&app, "capture", &secret, &capture).await;
    assert_eq!(answer["statusId"], 3, "{answer}");
    app.wait_for_status(chave, "paid").await;
    let tx = app.sandbox.pixelpay_transaction(&tx.payment_uuid).unwrap();
    assert_eq!(tx.captured_amount_minor, Some(30000));
    assert_eq!(postbacks_for(&app, chave, 2).await[1]["status"], 3);

    // Capturing again answers 3 and sends nothing.
    let requests = app.sandbox.pixelpay_requests();
    let answer = call(&app, "capture", &secret, &capture).await;
    assert_eq!(answer["statusId"], 3, "{answer}");
    assert_eq!(app.sandbox.pixelpay_requests(), requests);
    assert_eq!(
        app.count("SELECT count(*) FROM order_history h JOIN orders o ON o.id = h.order_id WHERE h.to_status = 'paid'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_the_shops_provider_cannot_settle_is_refused_at_the_door() {
    logs();
    let app = TestApp::spawn().await;
    // PixelPay's public sandbox merchant: HNL, USD and NIO, not BRL.
    app.use_sandbox_pixelpay();
    let secret = payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap();
    let answer = call(
        &app,
        "payment",
        &secret,
        &payment("4c4c4c4c-0000-4000-8000-000000000001", VISA),
    )
    .await;
    assert_eq!(answer["statusId"], 2, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("pixelpay settles HNL, USD, NIO for this shop, not BRL"),
        "{answer}"
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(app.sandbox.pixelpay_requests(), 0);

    // The order API says the same, field by field.
    let r = app
        .http
        .post(format!("{}/v1/orders", app.ingress_url))
        .bearer_auth(app.api_key())
        .json(&json!({
            "correlationID": "brl-card-1", "provider": "pixelpay", "currency": "BRL",
            "items": [{"title": "Camiseta", "price": "10.00", "qty": 1, "total": "10.00"}],
            "total": "10.00",
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "313.242.270-36",
                         "phone": "(11) 99999-9999"},
            "card": {"number": VISA, "cvv": "123", "expire": "12/30", "holder": "Dan Silva",
                     "billing": {"address": "Rua A 1", "state": "SP", "city": "São Paulo"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    let errors = problem["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == "currency" && e["code"] == "unsupported"),
        "{problem}"
    );
    // And PIX takes BRL only.
    let r = app
        .http
        .post(format!("{}/v1/orders", app.ingress_url))
        .bearer_auth(app.api_key())
        .json(&json!({
            "correlationID": "usd-pix-1", "provider": "openpix", "currency": "USD",
            "items": [{"title": "Camiseta", "price": "10.00", "qty": 1, "total": "10.00"}],
            "total": "10.00",
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "313.242.270-36"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "currency" && e["message"].as_str().unwrap().contains("openpix settles BRL")),
        "{problem}"
    );
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    app.stop().await;
}
