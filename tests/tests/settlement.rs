//! Settlement (issue 13 §2): every paid order becomes a ledger line (gross,
//! provider fee, net, currency, provider, settlement date), every refund a
//! negative one; an export by date range (API and payhubctl, CSV and JSON)
//! marks its lines processed exactly once, and downloads again byte for byte.

use payhub_core::rules::OrderRules;
use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn paid_order(app: &TestApp, cid: &str) -> String {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&id).await;
    app.wait_for_status(cid, "paid").await;
    id
}

async fn export(app: &TestApp, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut r = app
        .http
        .post(format!("{}/v1/settlement/exports", app.reporter_url))
        .bearer_auth(app.api_key())
        .json(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn download(app: &TestApp, id: &str, format: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = app
        .http
        .get(format!(
            "{}/v1/settlement/exports/{id}?format={format}",
            app.reporter_url
        ))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let hash = r
        .headers()
        .get("x-content-sha256")
        .map(|h| h.to_str().unwrap().to_string());
    (status, hash, r.bytes().await.unwrap().to_vec())
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_orders_and_refunds_become_ledger_lines_exported_once_and_downloaded_byte_for_byte() {
    let app = TestApp::spawn().await;
    let rules: OrderRules =
        serde_json::from_value(json!({"providerFees": {"openpix": {"percentBp": 99, "fixedMinor": 10}}})).unwrap();
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();
    let a = paid_order(&app, "ledger-a").await;
    let _b = paid_order(&app, "ledger-b").await;
    // A partial refund of A.
    let r = app
        .http
        .post(format!("{}/v1/orders/ledger-a/refunds", app.ingress_url))
        .bearer_auth(app.api_key())
        .json(&json!({"amount": "10.00", "idempotencyKey": "ledger-refund-1"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count("SELECT count(*) FROM ledger_lines").await == 3
        })
        .await,
        "the ledger never got its three lines"
    );
    // The lines: gross, the fee kept with the order, net = gross - fee.
    let (fee,): (i64,) = sqlx::query_as("SELECT provider_fee_minor FROM orders WHERE correlation_id = 'ledger-a'")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert!(fee > 0, "the shop's fee rule applied");
    let lines: Vec<(String, String, i64, i64, i64, String, String)> = sqlx::query_as(
        "SELECT kind, correlation_id, gross_minor, fee_minor, net_minor, currency::text, provider
         FROM ledger_lines ORDER BY correlation_id, kind",
    )
    .fetch_all(&app.store.pool)
    .await
    .unwrap();
    assert_eq!(
        lines,
        vec![
            (
                "payment".into(),
                "ledger-a".into(),
                22779,
                fee,
                22779 - fee,
                "BRL".into(),
                "openpix".into()
            ),
            (
                "refund".into(),
                "ledger-a".into(),
                -1000,
                0,
                -1000,
                "BRL".into(),
                "openpix".into()
            ),
            (
                "payment".into(),
                "ledger-b".into(),
                22779,
                fee,
                22779 - fee,
                "BRL".into(),
                "openpix".into()
            ),
        ]
    );
    let today = time::OffsetDateTime::now_utc().date().to_string();

    // Invalid ranges are refused field by field.
    let (status, problem) = export(&app, &json!({"from": "2026-13-01", "to": today}), None).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "from", "{problem}");
    let (status, problem) = export(&app, &json!({"from": today, "to": "2020-01-01"}), None).await;
    assert_eq!(status, 422, "{problem}");

    // The export carries the three lines and marks them processed.
    let range = json!({"from": today, "to": today});
    let (status, first) = export(&app, &range, Some("finance-run-1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["lines"], 3);
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.count("SELECT count(*) FROM ledger_lines WHERE export_id IS NULL")
            .await,
        0,
        "every exported line is processed"
    );
    // The same key again: the same export, nothing new.
    let (status, again) = export(&app, &range, Some("finance-run-1")).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    // Exporting the range again carries nothing twice.
    let (status, nothing) = export(&app, &range, None).await;
    assert_eq!((status, nothing["lines"].as_i64()), (200, Some(0)), "{nothing}");
    assert_eq!(app.count("SELECT count(*) FROM ledger_exports").await, 1);

    // Downloads: byte for byte, with the stored hash, CSV and JSON.
    let (status, hash, csv) = download(&app, &id, "csv").await;
    assert_eq!(status, 200);
    assert_eq!(hash.as_deref(), Some(sha256_hex(&csv).as_str()));
    assert_eq!(first["csvSha256"], sha256_hex(&csv));
    let text = String::from_utf8(csv.clone()).unwrap();
    assert!(text.starts_with(
        "line_id,settlement_date,kind,order_id,correlation_id,provider,method,currency,gross,fee,net,occurred_at\n"
    ));
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.contains(&format!(",payment,{a},ledger-a,openpix,pix,BRL,227.79,")),
        "{text}"
    );
    assert!(
        text.contains(",refund,") && text.contains(",-10.00,0.00,-10.00,"),
        "{text}"
    );
    assert_eq!(download(&app, &id, "csv").await.2, csv, "a re-download is identical");
    let (_, jhash, body) = download(&app, &id, "json").await;
    assert_eq!(jhash.as_deref(), Some(sha256_hex(&body).as_str()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["lines"].as_array().unwrap().len(), 3);
    assert_eq!(v["totals"][0]["grossMinor"], 22779 * 2 - 1000);
    assert_eq!(v["totals"][0]["netMinor"], (22779 - fee) * 2 - 1000);
    assert_eq!(download(&app, &id, "json").await.2, body);
    assert_eq!(download(&app, &id, "xml").await.0, 422);
    // Another shop sees none of it.
    let other = payhub_store::shops::create(&app.store, "Other shop", None, None)
        .await
        .unwrap();
    let r = app
        .http
        .get(format!("{}/v1/settlement/exports/{id}", app.reporter_url))
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A new payment, exported through payhubctl: only the new line, once.
    paid_order(&app, "ledger-c").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count("SELECT count(*) FROM ledger_lines WHERE export_id IS NULL")
                .await
                == 1
        })
        .await
    );
    let shop = app.shop.shop.id.to_string();
    let out = app.payhubctl(&[
        "settlement",
        "export",
        "--shop",
        &shop,
        "--from",
        &today,
        "--to",
        &today,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli_csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(cli_csv.lines().count(), 2, "{cli_csv}");
    assert!(
        cli_csv.contains("ledger-c") && !cli_csv.contains("ledger-a"),
        "{cli_csv}"
    );
    let summary: Value = serde_json::from_slice(out.stderr.trim_ascii()).unwrap();
    let cli_id = summary["id"].as_str().unwrap().to_string();
    let out = app.payhubctl(&[
        "settlement",
        "export",
        "--shop",
        &shop,
        "--from",
        &today,
        "--to",
        &today,
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "nothing left to export");
    // payhubctl downloads the API's export byte for byte, and the API its.
    let out = app.payhubctl(&["settlement", "download", "--shop", &shop, &id, "--format", "csv"]);
    assert_eq!(out.stdout, csv);
    assert_eq!(download(&app, &cli_id, "csv").await.2, cli_csv.as_bytes());
    let listed = app.payhubctl(&["settlement", "list", "--shop", &shop]);
    assert_eq!(String::from_utf8(listed.stdout).unwrap().lines().count(), 2);
    assert_eq!(
        app.count("SELECT count(*) FROM ledger_lines WHERE export_id IS NULL")
            .await,
        0
    );
    app.stop().await;
}
