//! The Wake Commerce connector, end to end: Wake's payloads exactly as
//! documented, the statusId answers, the postback, and card data that never
//! lands in the database or the logs.

use payhub_tests::{TestApp, email_text, eventually};
use serde_json::{Value, json};
use std::time::Duration;

use payhub_tests::leaks::{database_text, logs};

const CARD: &str = "5555550000005554";
const CVC: &str = "739";

/// What of the card block would show if it had been kept: its keys and its
/// values (a bare "cvc" could occur by chance inside random base64, so the
/// JSON key is searched with its quotes).
fn card_traces() -> Vec<String> {
    vec![
        CARD.into(),
        format!("\"{CVC}\""),
        "\"cvc\"".into(),
        "TESTE TESTE TESTE".into(),
        "03/2030".into(),
        "\"form\"".into(),
    ]
}

fn payment() -> Value {
    let mut v: Value = serde_json::from_str(include_str!("../fixtures/wake/payment.json")).unwrap();
    v["pagamento"]["form"]["cvc"] = json!(CVC);
    v
}

async fn call(app: &TestApp, path: &str, secret: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/wake/{path}", app.ingress_url))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn pascal(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let mut c = k.chars();
                    (
                        c.next()
                            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default(),
                        pascal(v),
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(pascal).collect()),
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_payment_is_accepted_paid_and_posted_back_without_keeping_the_card() {
    let logs = logs();
    let app = TestApp::spawn().await;
    let secret = payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap();

    // The seed's payment example, exactly as Wake sends it.
    let (status, answer) = call(&app, "payment", &secret, &payment()).await;
    assert_eq!((status, answer["statusId"].as_u64()), (200, Some(1)), "{answer}");
    let chave = "fe31c0e6-b625-4772-8890-dd7a89053d05";
    let order = app.wait_for_status(chave, "awaiting_payment").await;
    assert_eq!(order["amounts"]["total"], "300.00");

    // The buyer gets the PIX code by e-mail (Wake's answer carries only a status).
    let br_code = order["charge"]["brCode"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.emails().iter().any(|m| {
                email_text(&m.data).contains(&br_code)
                    && m.rcpt_to.iter().any(|r| r.contains("daniel.teste@example.com"))
            })
        })
        .await
    );

    // Paid: Wake hears it through its postback, status 3 with the TID.
    app.sandbox.pay(order["id"].as_str().unwrap()).await.unwrap();
    app.wait_for_status(chave, "paid").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !app.sandbox.wake_postbacks().is_empty()
        })
        .await
    );
    let postbacks = app.sandbox.wake_postbacks();
    assert_eq!(postbacks.len(), 1);
    assert_eq!(postbacks[0].chave, chave);
    assert_eq!(postbacks[0].body["status"], 3);
    let info = postbacks[0].body["informacoesAdicionais"].as_array().unwrap();
    assert!(
        info.iter()
            .any(|i| i["Nome"] == "TID" && i["Valor"].as_str().unwrap().starts_with('E')),
        "{info:?}"
    );

    // The same call again is the same order.
    let (_, again) = call(&app, "payment", &secret, &payment()).await;
    assert_eq!(again["statusId"], 1);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 1);

    // The card never reached the database or the logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = database_text(&app).await;
    assert!(!db.contains(CARD), "the card number is in the database");
    for trace in card_traces() {
        assert!(!db.contains(&trace), "{trace} is in the database");
    }
    let logged = logs.text();
    assert!(logged.len() > 10_000, "the log capture works ({} bytes)", logged.len());
    assert!(logged.contains(chave), "the logs do carry the order");
    for trace in card_traces() {
        // Logs are JSON: a quoted value appears with escaped quotes.
        let escaped = trace.replace('"', "\\\"");
        assert!(
            !logged.contains(&trace) && !logged.contains(&escaped),
            "{trace} is in the logs"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_authorize_capture_pascal_case_and_bad_credentials() {
    logs();
    let app = TestApp::spawn().await;
    let secret = payhub_store::shops::set_wake_secret(&app.store, app.shop.shop.id, "pagamentos")
        .await
        .unwrap();

    // A wrong secret: 401 and nothing stored.
    let (status, answer) = call(&app, "payment", "not-the-secret", &payment()).await;
    assert_eq!((status, answer["statusId"].as_u64()), (401, Some(2)));
    let no_secret = app
        .http
        .post(format!("{}/wake/payment", app.ingress_url))
        .json(&payment())
        .send()
        .await
        .unwrap();
    assert_eq!(no_secret.status(), 401);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // /authorize arrives wrapped in an array: 4 (authorised, PIX pending).
    let authorize: Value = serde_json::from_str(include_str!("../fixtures/wake/authorize.json")).unwrap();
    let (status, answer) = call(&app, "authorize", &secret, &authorize).await;
    assert_eq!((status, answer["statusId"].as_u64()), (200, Some(4)), "{answer}");
    let chave = authorize[0]["chave"].as_str().unwrap();
    let order = app.wait_for_status(chave, "awaiting_payment").await;
    assert_eq!(order["amounts"]["discount"], "22.90");

    // /capture before the payment: still waiting; after it: 3.
    let capture = json!({"Id": 1356051, "Loja": "pagamentos", "Chave": chave, "Pedido": 108648, "CarrinhoId": "d1e3bf62-795b-4b77-82ac-c81867ad9c1a"});
    assert_eq!(call(&app, "capture", &secret, &capture).await.1["statusId"], 1);
    app.sandbox.pay(order["id"].as_str().unwrap()).await.unwrap();
    app.wait_for_status(chave, "paid").await;
    assert_eq!(call(&app, "capture", &secret, &capture).await.1["statusId"], 3);

    // Older stores send PascalCase keys, cep as a string, saveCard as a boolean.
    let mut old = payment();
    old["chave"] = json!("0b7c2f1e-6a8d-4c55-9e21-3d4f5a6b7c8d");
    old["usuario"]["endereco"]["cep"] = json!("85920-970");
    old["pagamento"]["form"]["saveCard"] = json!(true);
    let (status, answer) = call(&app, "payment", &secret, &pascal(old)).await;
    assert_eq!((status, answer["statusId"].as_u64()), (200, Some(1)), "{answer}");
    app.wait_for_status("0b7c2f1e-6a8d-4c55-9e21-3d4f5a6b7c8d", "awaiting_payment")
        .await;

    // An invalid cart: 2 with the reason, nothing stored.
    let mut bad = payment();
    bad["chave"] = json!("1c1c1c1c-0000-4000-8000-000000000001");
    bad["total"] = json!(299.99);
    let (_, answer) = call(&app, "payment", &secret, &bad).await;
    assert_eq!(answer["statusId"], 2);
    assert!(answer["message"].as_str().unwrap().contains("total"), "{answer}");
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE correlation_id = '1c1c1c1c-0000-4000-8000-000000000001'")
            .await,
        0
    );
    app.stop().await;
}
