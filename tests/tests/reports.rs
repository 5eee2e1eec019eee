//! Management reports (issue 13 §3): a day's report per shop is made from
//! the stored orders, ledger and reconciliation, stored as an immutable
//! snapshot with its hashes, e-mailed by notifier (HTML, with its CSV and
//! PDF attached) to the shop's management list, and downloaded again byte
//! for byte through the API and payhubctl; with two reporters running, each
//! report is made and sent once, on demand and on the schedule.

use payhub_tests::{TestApp, TestOptions, decode_part, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The attachments of a multipart message: (filename, decoded bytes).
fn attachments(raw: &str) -> Vec<(String, Vec<u8>)> {
    let boundary = raw
        .lines()
        .find_map(|l| l.split("boundary=").nth(1))
        .map(|b| b.trim().trim_matches('"').to_string())
        .expect("a multipart message");
    raw.split(&format!("--{boundary}"))
        .filter(|part| part.contains("filename="))
        .map(|part| {
            let part = part.trim_start_matches("\r\n");
            let (head, bytes) = decode_part(part);
            let name = head
                .split("filename=")
                .nth(1)
                .map(|n| n.lines().next().unwrap_or("").trim().trim_matches('"').to_string())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

async fn download(app: &TestApp, id: &str, format: &str, key: &str) -> (u16, Vec<u8>, Option<String>) {
    let r = app
        .http
        .get(format!(
            "{}/v1/reports/management/{id}?format={format}",
            app.reporter_url
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let hash = r
        .headers()
        .get("x-content-sha256")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.bytes().await.unwrap().to_vec(), hash)
}

async fn run_on(app: &TestApp, reporter_url: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{reporter_url}/internal/v1/reports"))
        .bearer_auth(payhub_service::internal::DEVELOPMENT_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_days_report_is_emailed_with_its_csv_and_pdf_stored_and_downloaded_byte_for_byte() {
    let app = TestApp::spawn().await;
    let shop = app.shop.shop.id.to_string();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let out = app.payhubctl(&[
        "shop",
        "set-report-emails",
        &shop,
        "--email",
        "gerencia@loja.example.com",
        "--email",
        "financeiro@loja.example.com",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Two orders: one paid, one still waiting; the day reconciled clean.
    assert_eq!(app.post_order(&sample_order("rep-paid")).await.status(), 201);
    let paid = app.wait_for_status("rep-paid", "awaiting_payment").await;
    app.pay_until_acknowledged(paid["id"].as_str().unwrap()).await;
    app.wait_for_status("rep-paid", "paid").await;
    assert_eq!(app.post_order(&sample_order("rep-open")).await.status(), 201);
    app.wait_for_status("rep-open", "awaiting_payment").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count("SELECT count(*) FROM ledger_lines").await == 1
        })
        .await,
        "the paid order's ledger line"
    );
    let rec = app.payhubctl_with_env(
        &["reconcile", "--date", &today],
        &[("PAYHUB_REPORTER_URL", app.reporter_url.as_str())],
    );
    assert!(rec.status.success(), "{}", String::from_utf8_lossy(&rec.stdout));

    // Made on demand.
    let out = app.payhubctl_with_env(
        &["report", "run", "--period", "daily", "--date", &today, "--shop", &shop],
        &[("PAYHUB_REPORTER_URL", app.reporter_url.as_str())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["scope"], "shop");
    assert_eq!(made["from"], today.as_str());
    assert_eq!(made["summary"]["received"], 2, "{made}");
    assert_eq!(made["summary"]["paid"], 1);
    assert_eq!(made["summary"]["conversion"], "50.00 %");
    assert_eq!(made["summary"]["reconciliation"], "clean");
    assert!(made["summary"]["timeToPaidP50Ms"].as_i64().is_some());

    // E-mailed once, to both management addresses, as HTML with the CSV and PDF.
    let mails = || {
        app.sandbox
            .emails()
            .into_iter()
            .filter(|m| m.subject.as_deref().is_some_and(|s| s.contains("Relatório diário")))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(20), || async { !mails().is_empty() }).await,
        "the report was never e-mailed"
    );
    let mail = mails().remove(0);
    let mut rcpt = mail.rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["financeiro@loja.example.com", "gerencia@loja.example.com"]);
    assert!(mail.data.contains("multipart/alternative") && mail.data.contains("text/html"));
    let files = attachments(&mail.data);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("relatorio-daily-{today}.csv"),
            format!("relatorio-daily-{today}.pdf")
        ]
    );

    // Downloaded again: the same bytes each time, the e-mailed PDF's, with
    // the stored hash.
    let key = app.api_key().to_string();
    let (status, pdf, hash) = download(&app, &id, "pdf", &key).await;
    assert_eq!(status, 200);
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(pdf, files[1].1, "the PDF downloaded is the PDF e-mailed");
    assert_eq!(hash.as_deref(), Some(sha256_hex(&pdf).as_str()));
    assert_eq!(made["pdfSha256"], sha256_hex(&pdf).as_str());
    assert_eq!(download(&app, &id, "pdf", &key).await.1, pdf);
    let (_, csv, _) = download(&app, &id, "csv", &key).await;
    assert_eq!(download(&app, &id, "csv", &key).await.1, csv);
    assert_eq!(made["csvSha256"], sha256_hex(&csv).as_str());
    let mailed_csv = String::from_utf8(files[0].1.clone()).unwrap().replace("\r\n", "\n");
    assert_eq!(
        mailed_csv.trim_end(),
        String::from_utf8(csv.clone()).unwrap().trim_end()
    );
    let csv = String::from_utf8(csv).unwrap();
    for want in [
        "orders,received,,,,2\n",
        "orders,paid,,,,1\n",
        "money,gross,openpix,pix,BRL,227.79\n",
        "reconciliation,status,,,,clean\n",
    ] {
        assert!(csv.contains(want), "{want:?} missing from\n{csv}");
    }
    let (_, html, _) = download(&app, &id, "html", &key).await;
    assert_eq!(made["htmlSha256"], sha256_hex(&html).as_str());
    // payhubctl hands out the same bytes.
    let out = app.payhubctl(&["report", "download", &id, "--shop", &shop, "--format", "pdf"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, pdf);
    let out = app.payhubctl(&["report", "list", "--shop", &shop]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // Shop-scoped: another shop neither lists nor downloads it.
    let other = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    assert_eq!(download(&app, &id, "pdf", &other.api_key).await.0, 404);
    let r = app
        .http
        .get(format!("{}/v1/reports/management", app.reporter_url))
        .bearer_auth(&other.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["reports"], json!([]));
    let listed: Value = app
        .http
        .get(format!("{}/v1/reports/management", app.reporter_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["reports"][0]["id"], id.as_str());
    assert_eq!(download(&app, &id, "docx", &key).await.0, 422);

    // Asked again: the same snapshot, not sent again; the snapshot cannot change.
    let (status, again) = run_on(
        &app,
        &app.reporter_url,
        &json!({"period": "daily", "date": today, "shopId": shop}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["contentSha256"], made["contentSha256"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mails().len(), 1, "one e-mail per report");
    assert!(
        sqlx::query("UPDATE report_snapshots SET trigger = 'x'")
            .execute(&app.store.pool)
            .await
            .is_err(),
        "snapshots are immutable"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM deliveries WHERE kind = 'management_report' AND status = 'delivered'")
            .await,
        1
    );
    let (status, _) = run_on(&app, &app.reporter_url, &json!({"period": "weekly", "date": "x"})).await;
    assert_eq!(status, 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_reporters_each_report_is_made_and_sent_once() {
    let board = "diretoria@payhub.example.com";
    let mut app = TestApp::spawn_with(TestOptions {
        // Both reporters look for due reports every 300 ms.
        report_interval: Duration::from_millis(300),
        platform_report_emails: vec![board.into()],
        ..Default::default()
    })
    .await;
    let first = app.reporter_url.clone();
    app.start_service("reporter").await.unwrap();
    let second = app.reporter_url.clone();
    assert_ne!(first, second);

    // The schedule: yesterday's and last month's platform reports, made
    // once between the two (the shop, created today, has no closed period).
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count("SELECT count(*) FROM report_snapshots WHERE trigger = 'schedule'")
                .await
                == 2
        })
        .await,
        "the schedule made the platform's daily and monthly reports"
    );
    // On demand, both at once, for the same period.
    let body = json!({"period": "daily", "date": time::OffsetDateTime::now_utc().date().to_string()});
    let (a, b) = tokio::join!(run_on(&app, &first, &body), run_on(&app, &second, &body));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{a:?} {b:?}");
    assert_eq!(a.1["id"], b.1["id"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.count("SELECT count(*) FROM report_snapshots").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM report_snapshots WHERE shop_id IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'report.ready'")
            .await,
        3
    );
    let to_board = || {
        app.sandbox
            .emails()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == board))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(20), || async { to_board() == 3 }).await,
        "three reports, three e-mails to the platform's list ({})",
        to_board()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(to_board(), 3, "none twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_reports_missed_while_reporter_was_down_are_made_when_it_comes_back_once() {
    let mut app = TestApp::spawn_with(TestOptions {
        deferred: vec!["reporter"],
        report_interval: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    app.wait_ready().await.unwrap();
    // The shop has existed for four days; reporter was down all along.
    sqlx::query("UPDATE shops SET created_at = now() - interval '4 days'")
        .execute(&app.store.pool)
        .await
        .unwrap();
    let store = app.store.clone();
    let shop_days = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT period_start) FROM report_snapshots
             WHERE shop_id IS NOT NULL AND period = 'daily' AND trigger = 'schedule'",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap()
    };
    app.start_service("reporter").await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async { shop_days().await >= 3 }).await,
        "the missed days' reports were never made ({})",
        shop_days().await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let made = app.count("SELECT count(*) FROM report_snapshots").await;
    // Another reporter (a restart, a second replica): nothing is made twice.
    app.start_service("reporter").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.count("SELECT count(*) FROM report_snapshots").await, made);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM (SELECT scope_key, period, period_start FROM report_snapshots
             GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    app.stop().await;
}

/// Issue 14: order-updater records a move's figures in the move's own
/// transaction, and the reporter's queue is bound to nothing. What an
/// earlier version left on that queue is still counted, once; and an event
/// the new order-updater already counted (a previous reporter still bound
/// during a rolling upgrade) is not counted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_are_recorded_with_the_move_and_a_queued_status_change_counts_once() {
    let app = TestApp::spawn().await;
    let order_id = app.sample_paid_order("fig-1").await;
    // Counted with the move: visible as soon as the order is paid.
    let paid_rows = || async {
        app.count("SELECT COALESCE(sum(orders), 0)::bigint FROM report_daily WHERE status = 'paid'")
            .await
    };
    assert_eq!(paid_rows().await, 1);
    assert_eq!(app.count("SELECT count(*) FROM ledger_lines").await, 1);
    let (counted_id,): (uuid::Uuid,) = sqlx::query_as("SELECT source_event_id FROM ledger_lines")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    let view: Value = app.get_order("fig-1").await.json().await.unwrap();
    let status_change = |id: uuid::Uuid, to: payhub_core::OrderStatus| {
        let mut env = payhub_tests::sample_status_change(
            order_id.parse().unwrap(),
            app.shop.shop.id,
            "fig-1",
            (payhub_core::OrderStatus::AwaitingPayment, to),
            (
                view["customer"]["name"].as_str().unwrap_or("Maria"),
                "buyer@example.com",
            ),
        );
        env.id = id;
        env
    };
    let legacy = uuid::Uuid::now_v7();
    let queued = [
        // The payment order-updater already counted, routed to a reporter
        // of the previous version as well.
        status_change(counted_id, payhub_core::OrderStatus::Paid),
        // A move an earlier order-updater made and left to the reporter,
        // delivered twice.
        status_change(legacy, payhub_core::OrderStatus::Cancelled),
        status_change(legacy, payhub_core::OrderStatus::Cancelled),
    ];
    app.put_on_queue(&payhub_queue::QueueSpec::REPORTER, &queued).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.deliveries_taken(&payhub_queue::QueueSpec::REPORTER, "order.status_changed") == 3
        })
        .await,
        "the reporter drained its queue"
    );
    assert_eq!(paid_rows().await, 1, "the payment counted once");
    assert_eq!(app.count("SELECT count(*) FROM ledger_lines").await, 1);
    assert_eq!(
        app.count("SELECT COALESCE(sum(orders), 0)::bigint FROM report_daily WHERE status = 'cancelled'")
            .await,
        1,
        "the queued move counted once"
    );
    let dlq = app.dead_letter_admin().await;
    let parked = app.topology.dead_letter_queue(&payhub_queue::QueueSpec::REPORTER);
    assert_eq!(dlq.depth(&parked).await.unwrap(), 0, "nothing parked");
    dlq.close().await;
    app.stop().await;
}
