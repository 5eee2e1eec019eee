//! The payment receipt (issue 12 §2), over the real RabbitMQ, PostgreSQL and
//! the sandbox's SMTP: when an order is paid the buyer's confirmation
//! carries its receipt (A4 and 80 mm PDFs), recorded by its SHA-256; the
//! order API renders the very same bytes on every fetch and refuses a
//! render that no longer matches; an unpaid order has none.

use payhub_tests::{TestApp, eventually, pdf_attachments, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn fetch(app: &TestApp, cid: &str, layout: Option<&str>, key: &str) -> (u16, Vec<u8>, Option<String>) {
    let url = match layout {
        Some(l) => format!("{}/v1/orders/{cid}/receipt?layout={l}", app.ingress_url),
        None => format!("{}/v1/orders/{cid}/receipt", app.ingress_url),
    };
    let r = app.http.get(url).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    let sha = r
        .headers()
        .get("x-payhub-receipt-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "application/pdf");
    }
    (status, r.bytes().await.unwrap().to_vec(), sha)
}

/// A `receipts` row: layout, SHA-256, stored bytes, renderer.
type Recorded = (String, Vec<u8>, Option<Vec<u8>>, Option<String>);

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_has_one_receipt_emailed_stored_and_served_byte_for_byte() {
    let app = TestApp::spawn().await;
    let cid = "rc-pix";
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();

    // Not paid yet: no receipt.
    let (status, _, _) = fetch(&app, cid, None, app.api_key()).await;
    assert_eq!(status, 409);

    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status(cid, "paid").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.sandbox
                .emails()
                .iter()
                .any(|m| m.subject.as_deref().is_some_and(|s| s.contains("Pagamento confirmado")))
        })
        .await
    );
    let mail = app
        .sandbox
        .emails()
        .into_iter()
        .find(|m| m.subject.as_deref().is_some_and(|s| s.contains("Pagamento confirmado")))
        .unwrap();
    assert!(
        mail.data.contains("multipart/mixed"),
        "{}",
        &mail.data[..mail.data.len().min(600)]
    );
    let attached = pdf_attachments(&mail.data);
    assert_eq!(attached.len(), 2, "A4 and 80 mm");
    assert_eq!(attached[0].0, format!("comprovante-{cid}.pdf"));
    assert_eq!(attached[1].0, format!("comprovante-{cid}-80mm.pdf"));
    let text_part = mail
        .data
        .split("\r\n--")
        .find(|p| p.to_ascii_lowercase().contains("content-type: text/plain"))
        .expect("the text part");
    let text = payhub_tests::email_text(text_part.split_once("\r\n").map_or(text_part, |(_, rest)| rest));
    assert!(text.contains("comprovante de pagamento segue em anexo"), "{text}");

    // Recorded by its hash (the bytes follow from the stored order), served
    // the same every time, and the same as e-mailed.
    let stored: Vec<Recorded> =
        sqlx::query_as("SELECT layout, sha256, pdf, renderer FROM receipts WHERE order_id = $1::uuid ORDER BY layout")
            .bind(&order_id)
            .fetch_all(&app.store.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 2);
    for (layout, sha, pdf, renderer) in &stored {
        assert!(pdf.is_none(), "{layout}: the hash is recorded, not the bytes");
        assert_eq!(renderer.as_deref(), Some(payhub_documents::RENDERER));
        let filename = match layout.as_str() {
            "a4" => format!("comprovante-{cid}.pdf"),
            _ => format!("comprovante-{cid}-80mm.pdf"),
        };
        let sent = attached.iter().find(|a| a.0 == filename).unwrap();
        assert_eq!(sha256_hex(&sent.1), payhub_documents::hex(sha), "{layout}");
    }
    let (status, a4, sha) = fetch(&app, cid, None, app.api_key()).await;
    assert_eq!(status, 200);
    assert!(a4.starts_with(b"%PDF-"));
    assert_eq!(sha.as_deref(), Some(sha256_hex(&a4).as_str()));
    assert_eq!(a4, attached[0].1, "the download is the e-mailed receipt");
    let a4_row = stored.iter().find(|r| r.0 == "a4").unwrap();
    assert_eq!(sha.as_deref(), Some(payhub_documents::hex(&a4_row.1).as_str()));
    for _ in 0..3 {
        assert_eq!(fetch(&app, cid, Some("a4"), app.api_key()).await.1, a4);
    }
    let (status, roll, _) = fetch(&app, cid, Some("80mm"), app.api_key()).await;
    assert_eq!(status, 200);
    assert_eq!(roll, attached[1].1);
    assert_ne!(roll, a4);
    assert_eq!(fetch(&app, cid, Some("80mm"), app.api_key()).await.1, roll);
    // Rendering again from the stored order gives the stored bytes.
    let again = payhub_store::receipts::render(&app.store, order_id.parse().unwrap(), payhub_documents::Layout::A4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.bytes, a4);

    // What the receipt holds: the provider's proof, the amounts, the time zone.
    let receipt = payhub_store::receipts::load(&app.store, order_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let view: Value = app.get_order(cid).await.json().await.unwrap();
    assert_eq!(
        receipt.proof,
        payhub_documents::Proof::Pix {
            end_to_end_id: view["endToEndId"].as_str().map(str::to_string)
        }
    );
    assert_eq!(receipt.total.minor(), 22779);
    assert_eq!(receipt.freight.minor(), 1500);
    assert_eq!(receipt.utc_offset_hours, -3);
    assert!(
        !receipt.customer_tax_id.contains("436"),
        "masked: {}",
        receipt.customer_tax_id
    );

    // Were the stored order to change under an issued receipt, the render
    // no longer matches the recorded hash: refused, never served as it.
    sqlx::query("UPDATE orders SET customer_name = 'Outra Pessoa' WHERE id = $1::uuid")
        .bind(&order_id)
        .execute(&app.store.pool)
        .await
        .unwrap();
    let (status, body, _) = fetch(&app, cid, None, app.api_key()).await;
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(!body.starts_with(b"%PDF-"));
    sqlx::query("UPDATE orders SET customer_name = 'Maria Oliveira' WHERE id = $1::uuid")
        .bind(&order_id)
        .execute(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(fetch(&app, cid, None, app.api_key()).await.1, a4);

    let (status, _, _) = fetch(&app, cid, Some("letter"), app.api_key()).await;
    assert_eq!(status, 422);
    let (status, _, _) = fetch(&app, "rc-none", None, app.api_key()).await;
    assert_eq!(status, 404);
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let (status, _, _) = fetch(&app, cid, None, &other.api_key).await;
    assert_eq!(status, 404, "another shop's order is not found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_receipt_shows_the_masked_card_and_the_authorisation_code() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let cid = "rc-card";
    let order = json!({
        "correlationID": cid,
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"title": "Camiseta Roja", "price": "150.00", "qty": 1, "total": "150.00"}],
        "total": "150.00",
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {
            "number": payhub_sandbox::PIXELPAY_TEST_VISA, "cvv": "739", "expire": "3012", "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    });
    let view: Value = app.post_order(&order).await.json().await.unwrap();
    assert_eq!(view["cardPayment"]["outcome"], "approved", "{view:#}");
    let paid = app.wait_for_status(cid, "paid").await;
    let receipt = payhub_store::receipts::load(&app.store, paid["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    match &receipt.proof {
        payhub_documents::Proof::Card { masked, auth_code, .. } => {
            assert_eq!(masked.as_deref(), view["cardPayment"]["card"].as_str());
            assert_eq!(auth_code.as_deref(), view["cardPayment"]["authorizationCode"].as_str());
            assert!(
                !masked
                    .as_deref()
                    .unwrap()
                    .contains(&payhub_sandbox::PIXELPAY_TEST_VISA[4..12])
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(receipt.utc_offset_hours, -6, "Honduras");
    let (status, pdf, _) = fetch(&app, cid, None, app.api_key()).await;
    assert_eq!(status, 200);
    assert_eq!(fetch(&app, cid, None, app.api_key()).await.1, pdf);
    app.stop().await;
}
