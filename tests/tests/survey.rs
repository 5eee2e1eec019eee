//! The satisfaction survey (issue 12 §4), over the real RabbitMQ,
//! PostgreSQL and the sandbox: a delivered order's buyer gets one e-mail
//! with a link to ingress's survey page; one answer per order is kept and
//! the shop is told by a signed webhook; an expired link takes no answer;
//! the reporter's API gives the shop's NPS, response rate and comments.

use payhub_tests::{TestApp, email_text, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn delivered_order(app: &TestApp, cid: &str) -> String {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status(cid, "paid").await;
    for body in [
        json!({"status": "shipped", "carrier": "Correios", "trackingCode": "QB1BR"}),
        json!({"status": "delivered"}),
    ] {
        let r = app.post_fulfilment(cid, &body).await;
        assert_eq!(r.status(), 202);
        app.wait_for_status(cid, body["status"].as_str().unwrap()).await;
    }
    order_id
}

/// The survey link in the invitation e-mail of order `cid`.
async fn survey_link(app: &TestApp, cid: &str) -> String {
    let find = || {
        app.sandbox
            .emails()
            .into_iter()
            .filter(|m| {
                m.subject
                    .as_deref()
                    .is_some_and(|s| s.contains("Como foi o seu pedido") && s.contains(cid))
            })
            .map(|m| email_text(&m.data))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(15), || async { !find().is_empty() }).await,
        "the buyer is invited"
    );
    let mails = find();
    assert_eq!(mails.len(), 1, "one invitation");
    let text = &mails[0];
    // After the survey's link, the order's own page ("my orders"), as every buyer e-mail.
    let survey_at = text.find("/survey/").expect("the survey's link");
    let my_orders_at = text
        .find(&format!("{}/my/orders/", app.ingress_url))
        .expect("the my orders link");
    assert!(survey_at < my_orders_at, "{text}");
    let start = text.find("http://").expect("a link");
    text[start..].split_whitespace().next().unwrap().to_string()
}

/// POSTs an HTML form (application/x-www-form-urlencoded), as a browser does.
async fn post_form(app: &TestApp, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    app.http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap()
}

async fn survey_report(app: &TestApp) -> Value {
    app.http
        .get(format!("{}/v1/reports/survey", app.reporter_url))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_orders_buyer_answers_once_the_shop_is_told_and_the_nps_counts_it() {
    let app = TestApp::spawn().await;
    delivered_order(&app, "sv-1").await;
    let link = survey_link(&app, "sv-1").await;
    assert!(link.starts_with(&format!("{}/survey/", app.ingress_url)), "{link}");

    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"pt-BR\">") && html.contains("recomendaria"),
        "{html}"
    );
    assert!(html.contains("sv-1") && html.contains("name=\"score\" value=\"10\""));

    // A bad answer is shown again with the reason; nothing is kept.
    let bad = post_form(&app, &link, &[("score", "11"), ("comment", "x")]).await;
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("Escolha uma nota de 0 a 10"));
    assert_eq!(app.count("SELECT count(*) FROM survey_answers").await, 0);

    let ok = post_form(
        &app,
        &link,
        &[("score", "9"), ("comment", "Entrega rápida <e> bem embalada")],
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("Obrigado"));
    // One answer per order.
    let again = post_form(&app, &link, &[("score", "0")]).await;
    assert_eq!(again.status(), 409);
    assert_eq!(app.http.get(&link).send().await.unwrap().status(), 409);
    let (score, comment): (i16, String) = sqlx::query_as("SELECT score, comment FROM survey_answers")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!((score, comment.as_str()), (9, "Entrega rápida <e> bem embalada"));

    // The shop hears it, signed.
    let hook = || {
        app.sandbox
            .shop_webhooks()
            .into_iter()
            .filter(|h| serde_json::from_str::<Value>(&h.body).is_ok_and(|b| b["type"] == "survey.answered"))
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(10), || async { !hook().is_empty() }).await);
    let h = &hook()[0];
    assert!(h.verified, "{:?}", h.verify_error);
    let body: Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(body["data"]["correlationID"], "sv-1");
    assert_eq!(body["data"]["score"], 9);
    assert_eq!(body["data"]["category"], "promoter");
    assert_eq!(body["data"]["comment"], "Entrega rápida <e> bem embalada");

    // A second delivered order whose link expires unanswered.
    let second = delivered_order(&app, "sv-2").await;
    let expired = survey_link(&app, "sv-2").await;
    sqlx::query("UPDATE survey_invitations SET expires_at = now() - interval '1 second' WHERE order_id = $1::uuid")
        .bind(&second)
        .execute(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(app.http.get(&expired).send().await.unwrap().status(), 410);
    let late = post_form(&app, &expired, &[("score", "3")]).await;
    assert_eq!(late.status(), 410);
    assert!(late.text().await.unwrap().contains("expirou"));
    let unknown = format!("{}/survey/{}", app.ingress_url, "0".repeat(64));
    assert_eq!(app.http.get(&unknown).send().await.unwrap().status(), 404);
    assert_eq!(
        app.http
            .get(format!("{}/survey/not-a-token", app.ingress_url))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let r = survey_report(&app).await;
    assert_eq!(r["invited"], 2, "{r:#}");
    assert_eq!(r["answered"], 1);
    assert_eq!(r["responseRate"], 0.5);
    assert_eq!(r["promoters"], 1);
    assert_eq!(r["nps"], 100);
    assert_eq!(r["comments"][0]["correlationID"], "sv-1");
    assert_eq!(r["comments"][0]["score"], 9);
    app.stop().await;
}
