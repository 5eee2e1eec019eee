//! The invoice ("nota fiscal", issue 12 §3) and the survey after payment
//! (§4), over the real RabbitMQ, PostgreSQL and SMTP with the sandbox as
//! OpenPix, the shop, the mail server and Focus NFe (homologation): a paid
//! order's NF-e is asked of the shop's Focus NFe account and issued once;
//! the service down then back is retried through the queue and issues
//! once; an answer lost after the service received the request is read
//! back, never sent twice; SEFAZ's rejection fails the invoice with the
//! reason and alerts the shop's admin once; a shop with invoicing off gets
//! none; a shop that reports no shipping has its buyers invited to the
//! survey N days after payment, once.

use payhub_sandbox::{FocusNfeFault, HOMOLOGATION_NAME};
use payhub_tests::{TestApp, TestOptions, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const BUYER: &str = "maria@example.com";
const ADMIN: &str = "admin@loja.example.com";

/// The shop sells from Santa Catarina; the sample buyer is in Paraná.
fn profile() -> Value {
    json!({
        "cnpj": "11.222.333/0001-81", "name": "Loja Teste Ltda", "stateRegistration": "9044016688",
        "state": "SC", "taxRegime": 1, "cfopInternal": "5102", "cfopInterstate": "6102",
        "defaultNcm": "61159500", "ncmByCode": {"0000123": "61091000"},
        "icmsSituation": "102", "pisSituation": "07", "cofinsSituation": "07",
        "environment": "homologacao"
    })
}

async fn invoicing_on(app: &TestApp) {
    let out = app.set_invoicing(&profile(), &["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(payhub_sandbox::FOCUSNFE_SANDBOX_TOKEN),
        "the token is never printed"
    );
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["invoicing"], true, "{v}");
    assert_eq!(v["hasAccount"], true, "{v}");
}

async fn invoice_of(app: &TestApp, cid: &str) -> Value {
    app.get_order(cid).await.json::<Value>().await.expect("order JSON")["invoice"].clone()
}

async fn wait_invoice(app: &TestApp, cid: &str, status: &str) -> Value {
    let ok = eventually(Duration::from_secs(30), || async {
        invoice_of(app, cid).await["status"] == status
    })
    .await;
    let last = invoice_of(app, cid).await;
    assert!(ok, "the invoice of {cid} never became {status}: {last}");
    last
}

#[tokio::test]
async fn a_paid_order_is_invoiced_once_and_the_buyer_gets_the_links() {
    let app = TestApp::spawn().await;
    invoicing_on(&app).await;
    let order_id = app.sample_paid_order("nf-1").await;

    let invoice = wait_invoice(&app, "nf-1", "issued").await;
    assert_eq!(invoice["service"], "focusnfe");
    assert_eq!(invoice["reference"], order_id.replace('-', ""));
    assert_eq!(invoice["number"], "1");
    assert_eq!(invoice["series"], "1");
    assert_eq!(invoice["accessKey"].as_str().map(str::len), Some(44), "{invoice}");
    let pdf = invoice["pdfUrl"].as_str().expect("a DANFE link").to_string();
    let xml = invoice["xmlUrl"].as_str().expect("an XML link").to_string();
    assert!(pdf.starts_with(&app.sandbox.focusnfe_url()), "{pdf}");
    let danfe = app.http.get(&pdf).send().await.unwrap();
    assert_eq!(danfe.status(), 200);
    assert!(danfe.bytes().await.unwrap().starts_with(b"%PDF"));
    let xml_text = app.http.get(&xml).send().await.unwrap().text().await.unwrap();
    assert!(xml_text.contains(invoice["accessKey"].as_str().unwrap()), "{xml_text}");

    // What Focus NFe received: the documented NF-e body, from the order.
    let sent = app.sandbox.invoices();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].requests, 1);
    assert_eq!(app.sandbox.invoice_requests(), 1);
    let body = &sent[0].request;
    assert_eq!(body["cnpj_emitente"], "11222333000181");
    assert_eq!(body["cpf_destinatario"], "47043622050");
    assert_eq!(body["nome_destinatario"], HOMOLOGATION_NAME);
    assert_eq!(body["bairro_destinatario"], "Centro");
    assert_eq!(body["uf_destinatario"], "PR");
    assert_eq!(body["cep_destinatario"], "85920970");
    assert_eq!(body["local_destino"], 2);
    assert_eq!(body["items"][0]["codigo_produto"], "0000123");
    assert_eq!(body["items"][0]["codigo_ncm"], "61091000");
    assert_eq!(body["items"][0]["cfop"], "6102");
    assert_eq!(body["items"][0]["valor_bruto"], "199.80");
    assert_eq!(body["items"][0]["valor_total_tributos"], "3.00");
    assert_eq!(body["valor_frete"], "15.00");
    assert_eq!(body["valor_desconto"], "10.00");
    assert_eq!(body["valor_total"], "227.79");
    assert_eq!(body["formas_pagamento"][0]["forma_pagamento"], "17");

    // The buyer gets the number and the links, once.
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(BUYER, "Nota fiscal do pedido nf-1").is_empty()
        })
        .await
    );
    let mail = &app.mails_to(BUYER, "Nota fiscal do pedido nf-1")[0];
    assert!(mail.contains("NF-e nº 1"), "{mail}");
    assert!(mail.contains(&pdf) && mail.contains(&xml), "{mail}");
    // And the order's own page ("my orders"), as every buyer e-mail.
    let view: Value = app.get_order("nf-1").await.json().await.unwrap();
    assert!(
        mail.contains(&format!(
            "{}/my/orders/{}/",
            app.ingress_url,
            view["id"].as_str().unwrap()
        )),
        "{mail}"
    );

    // Settled once: one invoice.updated, nothing asked again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.sandbox.invoice_requests(), 1);
    assert_eq!(app.mails_to(BUYER, "Nota fiscal do pedido nf-1").len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'invoice.updated'")
            .await,
        1
    );
    // Issue 14: charge-creator got the order and its one invoice request,
    // none of its status changes.
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "order.accepted"),
        1
    );
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "invoice.requested"),
        1
    );
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "order.status_changed"),
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'invoice.requested'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invoicing_service_down_then_back_is_retried_and_issues_once() {
    // Retries 300 ms apart, 5 attempts: the outage outlasts the first ones.
    let app = TestApp::spawn_with(TestOptions {
        max_attempts: 5,
        ..TestOptions::default()
    })
    .await;
    invoicing_on(&app).await;
    app.sandbox.set_outage("focusnfe", true);
    app.sample_paid_order("nf-down").await;

    // Asked, refused by the outage, retried: requested and counting.
    let ok = eventually(Duration::from_secs(20), || async {
        let i = invoice_of(&app, "nf-down").await;
        i["status"] == "requested" && i["attempts"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    assert!(ok, "{}", invoice_of(&app, "nf-down").await);
    assert_eq!(app.sandbox.invoice_requests(), 0, "nothing reached the service");

    app.sandbox.set_outage("focusnfe", false);
    let invoice = wait_invoice(&app, "nf-down", "issued").await;
    assert!(invoice["attempts"].as_i64().unwrap() >= 3, "{invoice}");
    assert_eq!(app.sandbox.invoice_requests(), 1);
    assert_eq!(app.sandbox.invoices().len(), 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(BUYER, "Nota fiscal do pedido nf-down").len() == 1
        })
        .await
    );
    assert!(app.mails_to(ADMIN, "Nota fiscal não emitida").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_answer_lost_after_the_service_received_the_request_is_read_back_never_sent_twice() {
    let app = TestApp::spawn().await;
    invoicing_on(&app).await;
    // Focus NFe queues the invoice and the answer never comes (charge-creator's
    // client gives up after its timeout): the next attempt reads it back.
    app.sandbox.focusnfe_fault_next(FocusNfeFault::ReceiveThenHang);
    app.sample_paid_order("nf-lost").await;

    let invoice = wait_invoice(&app, "nf-lost", "issued").await;
    assert_eq!(invoice["attempts"], 2, "{invoice}");
    let sent = app.sandbox.invoices();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].requests, 1, "queued once");
    assert_eq!(app.sandbox.invoice_requests(), 1, "asked once");
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(BUYER, "Nota fiscal do pedido nf-lost").len() == 1
        })
        .await
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_invoice_fails_with_the_reason_and_alerts_the_admin_once() {
    let app = TestApp::spawn().await;
    invoicing_on(&app).await;
    app.sandbox
        .focusnfe_fault_next(FocusNfeFault::Reject("Rejeicao: NCM inexistente".into()));
    app.sample_paid_order("nf-bad").await;

    let invoice = wait_invoice(&app, "nf-bad", "failed").await;
    let reason = invoice["reason"].as_str().unwrap();
    assert!(reason.contains("Rejeicao: NCM inexistente"), "{reason}");
    assert!(invoice["number"].is_null() && invoice["pdfUrl"].is_null());
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(ADMIN, "Nota fiscal não emitida: pedido nf-bad").is_empty()
        })
        .await
    );
    let alert = &app.mails_to(ADMIN, "Nota fiscal não emitida: pedido nf-bad")[0];
    assert!(alert.contains("Rejeicao: NCM inexistente"), "{alert}");
    // The order stays paid; nothing is asked again; one alert; no buyer mail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.order_status("nf-bad").await.as_deref(), Some("paid"));
    assert_eq!(app.sandbox.invoice_requests(), 1);
    assert_eq!(app.mails_to(ADMIN, "Nota fiscal não emitida").len(), 1);
    assert!(app.mails_to(BUYER, "Nota fiscal do pedido").is_empty());

    // SEFAZ's own rule in homologation: a production profile against the
    // homologation service is rejected (598) with SEFAZ's message.
    let mut production = profile();
    production["environment"] = json!("producao");
    assert!(app.set_invoicing(&production, &[]).status.success());
    app.sample_paid_order("nf-598").await;
    let invoice = wait_invoice(&app, "nf-598", "failed").await;
    assert!(
        invoice["reason"].as_str().unwrap().starts_with("SEFAZ 598: "),
        "{invoice}"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(ADMIN, "Nota fiscal não emitida").len() == 2
        })
        .await
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shop_with_invoicing_off_gets_no_invoice_and_a_bad_profile_is_refused_by_field() {
    let app = TestApp::spawn().await;
    // A profile with a wrong CNPJ and NCM is refused, naming the fields.
    let mut bad = profile();
    bad["cnpj"] = json!("11.222.333/0001-82");
    bad["defaultNcm"] = json!("6115");
    let out = app.set_invoicing(&bad, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cnpj") && err.contains("defaultNcm"), "{err}");

    invoicing_on(&app).await;
    let shop = app.shop.shop.id.to_string();
    let out = app.payhubctl(&["shop", "set-invoicing", &shop, "--off", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["invoicing"], false);

    app.sample_paid_order("nf-off").await;
    // The confirmation (with its receipt) goes out; no invoice is asked for.
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(BUYER, "Pagamento confirmado").is_empty()
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(invoice_of(&app, "nf-off").await.is_null());
    assert_eq!(app.sandbox.invoice_requests(), 0);
    assert_eq!(app.count("SELECT count(*) FROM invoices").await, 0);
    // Issue 14: nothing was asked of charge-creator beyond the charge: no
    // invoice request published, no status change delivered to its queue
    // (accepted -> awaiting_payment -> paid went to notifier and reporter only).
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'invoice.requested'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'order.status_changed'")
            .await,
        2
    );
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "order.accepted"),
        1
    );
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "order.status_changed"),
        0
    );
    assert_eq!(
        app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "invoice.requested"),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shop_that_reports_no_shipping_has_its_buyers_invited_n_days_after_payment_once() {
    let app = TestApp::spawn_with(TestOptions {
        sweep: reporter::sweeper::SweepConfig {
            interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..TestOptions::default()
    })
    .await;
    let shop = app.shop.shop.id.to_string();
    let out = app.payhubctl(&["shop", "set-survey", &shop, "--after-payment-days", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let early = app.sample_paid_order("sv-early").await;
    let due = app.sample_paid_order("sv-due").await;
    // Paid four days ago (the clock is moved, not waited for).
    sqlx::query("UPDATE orders SET paid_at = now() - interval '4 days' WHERE id = $1::uuid")
        .bind(&due)
        .execute(&app.store.pool)
        .await
        .unwrap();

    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(BUYER, "Como foi o seu pedido sv-due?").is_empty()
        })
        .await
    );
    let mail = &app.mails_to(BUYER, "Como foi o seu pedido sv-due?")[0];
    assert!(mail.contains("foi pago há 3 dias"), "{mail}");
    assert!(mail.contains("/survey/"), "{mail}");
    // Several sweeps later: still one invitation, none for the order paid today.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.mails_to(BUYER, "Como foi o seu pedido sv-due?").len(), 1);
    assert!(app.mails_to(BUYER, "Como foi o seu pedido sv-early?").is_empty());
    assert_eq!(app.count("SELECT count(*) FROM survey_due").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM survey_invitations").await, 1);
    let _ = early;

    // The link works: the survey page answers.
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/survey/"))
        .unwrap()
        .to_string();
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);

    // Back to "after delivery": nothing more is asked after payment.
    let out = app.payhubctl(&["shop", "set-survey", &shop, "--after-delivery"]);
    assert!(out.status.success());
    sqlx::query("UPDATE orders SET paid_at = now() - interval '10 days' WHERE id = $1::uuid")
        .bind(&early)
        .execute(&app.store.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(app.mails_to(BUYER, "Como foi o seu pedido sv-early?").is_empty());
    app.stop().await;
}

async fn refund_all(app: &TestApp, cid: &str, key: &str, amount: Option<&str>) {
    let mut body = json!({"idempotencyKey": key, "reason": "produto com defeito"});
    if let Some(a) = amount {
        body["amount"] = json!(a);
    }
    let r = app
        .http
        .post(format!("{}/v1/orders/{cid}/refunds", app.ingress_url))
        .bearer_auth(app.api_key())
        .json(&body)
        .send()
        .await
        .expect("ingress answers");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["status"], "confirmed", "{v}");
}

fn sandbox_invoice(app: &TestApp, order_id: &str) -> payhub_sandbox::SandboxInvoice {
    let reference = order_id.replace('-', "");
    app.sandbox
        .invoices()
        .into_iter()
        .find(|i| i.reference == reference)
        .expect("the sandbox holds the invoice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunded_or_cancelled_order_has_its_nfe_cancelled_and_the_buyer_told() {
    let app = TestApp::spawn().await;
    invoicing_on(&app).await;
    let order_id = app.sample_paid_order("nf-rf").await;
    wait_invoice(&app, "nf-rf", "issued").await;

    // A partial refund leaves the NF-e as it is (a return invoice is the shop's).
    refund_all(&app, "nf-rf", "rf-part", Some("27.79")).await;
    app.wait_for_status("nf-rf", "partially_refunded").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sandbox_invoice(&app, &order_id).cancels, 0);
    assert_eq!(invoice_of(&app, "nf-rf").await["status"], "issued");

    // The rest: refunded in full, the NF-e is cancelled with a justification.
    refund_all(&app, "nf-rf", "rf-rest", None).await;
    app.wait_for_status("nf-rf", "refunded").await;
    let invoice = wait_invoice(&app, "nf-rf", "cancelled").await;
    assert!(invoice["cancelledAt"].is_string(), "{invoice}");
    assert!(invoice["cancelError"].is_null(), "{invoice}");
    assert_eq!(invoice["cancelAttempts"], 1, "{invoice}");
    let xml = invoice["cancelXmlUrl"]
        .as_str()
        .expect("the cancellation's XML")
        .to_string();
    assert_eq!(app.http.get(&xml).send().await.unwrap().status(), 200);
    let at_focus = sandbox_invoice(&app, &order_id);
    assert_eq!(at_focus.status, "cancelado");
    assert_eq!(at_focus.cancels, 1);
    let justification = at_focus.cancel_justificativa.expect("a justification");
    assert!(
        (15..=255).contains(&justification.chars().count()) && justification.contains("nf-rf"),
        "{justification}"
    );
    assert_eq!(invoice["cancelReason"], justification.as_str());
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(BUYER, "Nota fiscal do pedido nf-rf cancelada").is_empty()
        })
        .await
    );
    let mail = &app.mails_to(BUYER, "Nota fiscal do pedido nf-rf cancelada")[0];
    assert!(mail.contains("foi cancelada"), "{mail}");
    assert!(mail.contains(&xml), "{mail}");

    // A shop's cancellation of a paid order cancels its NF-e too.
    let other = app.sample_paid_order("nf-cx").await;
    wait_invoice(&app, "nf-cx", "issued").await;
    let r = app
        .post_fulfilment(
            "nf-cx",
            &json!({"status": "cancelled", "note": "cliente desistiu da compra"}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    wait_invoice(&app, "nf-cx", "cancelled").await;
    let at_focus = sandbox_invoice(&app, &other);
    assert!(
        at_focus
            .cancel_justificativa
            .as_deref()
            .is_some_and(|j| j.contains("cliente desistiu da compra")),
        "{at_focus:?}"
    );

    // Once each: two cancellations, one mail each, no admin alert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.mails_to(BUYER, "Nota fiscal do pedido nf-rf cancelada").len(), 1);
    assert!(app.mails_to(ADMIN, "Nota fiscal não").is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'invoice.updated'")
            .await,
        4
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cancellation_keeps_the_nfe_issued_and_alerts_the_admin_and_an_outage_is_retried() {
    let app = TestApp::spawn_with(TestOptions {
        max_attempts: 5,
        ..TestOptions::default()
    })
    .await;
    invoicing_on(&app).await;
    app.sample_paid_order("nf-late").await;
    wait_invoice(&app, "nf-late", "issued").await;
    app.sandbox.focusnfe_fault_next(FocusNfeFault::CancelRefused(
        "Rejeicao: Prazo de Cancelamento Superior ao Previsto na Legislacao".into(),
    ));
    refund_all(&app, "nf-late", "late-1", None).await;
    let ok = eventually(Duration::from_secs(20), || async {
        invoice_of(&app, "nf-late").await["cancelError"].is_string()
    })
    .await;
    let invoice = invoice_of(&app, "nf-late").await;
    assert!(ok, "{invoice}");
    assert_eq!(invoice["status"], "issued", "still valid: {invoice}");
    assert!(
        invoice["cancelError"]
            .as_str()
            .unwrap()
            .contains("SEFAZ 501: Rejeicao: Prazo de Cancelamento"),
        "{invoice}"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.mails_to(ADMIN, "Nota fiscal não cancelada: pedido nf-late")
                .is_empty()
        })
        .await
    );
    let alert = &app.mails_to(ADMIN, "Nota fiscal não cancelada: pedido nf-late")[0];
    assert!(alert.contains("Prazo de Cancelamento"), "{alert}");
    assert!(app.mails_to(BUYER, "cancelada").is_empty());

    // The service down during a cancellation: retried, cancelled once back.
    let order_id = app.sample_paid_order("nf-down-cx").await;
    wait_invoice(&app, "nf-down-cx", "issued").await;
    app.sandbox.set_outage("focusnfe", true);
    refund_all(&app, "nf-down-cx", "down-1", None).await;
    let ok = eventually(Duration::from_secs(20), || async {
        invoice_of(&app, "nf-down-cx").await["cancelAttempts"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert!(ok, "{}", invoice_of(&app, "nf-down-cx").await);
    app.sandbox.set_outage("focusnfe", false);
    wait_invoice(&app, "nf-down-cx", "cancelled").await;
    assert_eq!(sandbox_invoice(&app, &order_id).cancels, 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(BUYER, "Nota fiscal do pedido nf-down-cx cancelada").len() == 1
        })
        .await
    );
    assert_eq!(app.mails_to(ADMIN, "Nota fiscal não cancelada").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_refunded_while_its_invoice_is_still_being_issued_has_it_cancelled_once_issued() {
    // Retries 300 ms apart, 8 attempts. The cancellation finds the invoice
    // `requested` and waits; whichever sees it issued first (a retry of the
    // cancellation, or the issue path reading the order refunded when it
    // settles) cancels it, and the cancellation is recorded once.
    let app = TestApp::spawn_with(TestOptions {
        max_attempts: 8,
        ..TestOptions::default()
    })
    .await;
    invoicing_on(&app).await;
    app.sandbox.set_outage("focusnfe", true);
    let order_id = app.sample_paid_order("nf-race").await;
    let ok = eventually(Duration::from_secs(20), || async {
        invoice_of(&app, "nf-race").await["status"] == "requested"
    })
    .await;
    assert!(ok, "{}", invoice_of(&app, "nf-race").await);
    refund_all(&app, "nf-race", "race-1", None).await;
    app.wait_for_status("nf-race", "refunded").await;
    assert_eq!(invoice_of(&app, "nf-race").await["status"], "requested");
    app.sandbox.set_outage("focusnfe", false);
    let invoice = wait_invoice(&app, "nf-race", "cancelled").await;
    assert!(invoice["number"].is_string(), "issued, then cancelled: {invoice}");
    assert_eq!(sandbox_invoice(&app, &order_id).status, "cancelado");
    assert!(sandbox_invoice(&app, &order_id).cancels >= 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.count(
            r#"SELECT count(*) FROM outbox WHERE routing_key = 'invoice.updated' AND convert_from(body, 'UTF8') LIKE '%"status":"cancelled"%'"#
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sefaz_is_read_again_after_the_last_attempt_before_the_invoice_is_failed() {
    // Two attempts 300 ms apart. Status reads: the first attempt's read
    // after its request (1), the last attempt's read before asking (2) and
    // after (3), then, the service being only slow, one more after a pause (4).
    let app = TestApp::spawn_with(TestOptions {
        max_attempts: 2,
        ..TestOptions::default()
    })
    .await;
    invoicing_on(&app).await;
    // SEFAZ answers at the 4th read: only the final re-check sees it issued.
    app.sandbox.focusnfe_fault_next(FocusNfeFault::SlowSefaz(3));
    app.sample_paid_order("nf-slow").await;
    let invoice = wait_invoice(&app, "nf-slow", "issued").await;
    assert_eq!(invoice["attempts"], 2, "{invoice}");
    assert_eq!(app.sandbox.invoice_requests(), 1, "asked once");
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(BUYER, "Nota fiscal do pedido nf-slow").len() == 1
        })
        .await
    );

    // Slower still: failed with what the final read found, the admin told.
    app.sandbox.focusnfe_fault_next(FocusNfeFault::SlowSefaz(4));
    app.sample_paid_order("nf-slower").await;
    let invoice = wait_invoice(&app, "nf-slower", "failed").await;
    let reason = invoice["reason"].as_str().unwrap();
    assert!(
        reason.contains("still processing the invoice after 2 attempts") && reason.contains("when read again"),
        "{reason}"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.mails_to(ADMIN, "Nota fiscal não emitida: pedido nf-slower").len() == 1
        })
        .await
    );
    assert!(app.mails_to(ADMIN, "nf-slow:").is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_queued_before_the_upgrade_still_invoice_a_paid_order_and_park_nothing() {
    let app = TestApp::spawn().await;
    // Paid while the shop did not invoice: nothing asked.
    let order_id = app.sample_paid_order("nf-legacy").await;
    invoicing_on(&app).await;
    // What an older order-updater left on charge-creator's queue before the
    // binding was retired: the order's two status changes.
    let view: Value = app.get_order("nf-legacy").await.json().await.unwrap();
    let mut queued = Vec::new();
    for (from, to) in [
        (
            payhub_core::OrderStatus::Accepted,
            payhub_core::OrderStatus::AwaitingPayment,
        ),
        (
            payhub_core::OrderStatus::AwaitingPayment,
            payhub_core::OrderStatus::Paid,
        ),
    ] {
        queued.push(payhub_tests::sample_status_change(
            order_id.parse().unwrap(),
            app.shop.shop.id,
            "nf-legacy",
            (from, to),
            (view["customer"]["name"].as_str().unwrap_or("Maria"), BUYER),
        ));
    }
    app.put_on_queue(&payhub_queue::QueueSpec::CHARGE_CREATOR, &queued)
        .await;
    wait_invoice(&app, "nf-legacy", "issued").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.deliveries_taken(&payhub_queue::QueueSpec::CHARGE_CREATOR, "order.status_changed") == 2
        })
        .await
    );
    let dlq = app.dead_letter_admin().await;
    let parked = app.topology.dead_letter_queue(&payhub_queue::QueueSpec::CHARGE_CREATOR);
    assert_eq!(dlq.depth(&parked).await.unwrap(), 0, "nothing parked");
    dlq.close().await;
    app.stop().await;
}
