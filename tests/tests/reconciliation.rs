//! Reconciliation with the providers (issue 13 §1): the sandbox makes its
//! listing disagree with payhub in each way; `payhubctl reconcile --date`
//! finds each discrepancy, settles the payment payhub had missed (re-queried
//! and confirmed), alerts on the rest once, and resolves them when a later
//! run no longer finds them. PixelPay, which has no listing, is reconciled
//! from payhub's own orders, each payment re-queried with `status` (the
//! sandbox's `status` disagrees in each way on request); Pago Seguro, which
//! offers no query at all, is said not compared.

use payhub_tests::{TestApp, card_order, eventually, sample_order};
use serde_json::{Value, json};
use std::time::Duration;

async fn order(app: &TestApp, cid: &str, pay: bool) -> String {
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let o = app.wait_for_status(cid, "awaiting_payment").await;
    let id = o["id"].as_str().unwrap().to_string();
    if pay {
        app.pay_until_acknowledged(&id).await;
        app.wait_for_status(cid, "paid").await;
    }
    id
}

fn reconcile(app: &TestApp, date: &str) -> (bool, Value) {
    let out = app.payhubctl_with_env(
        &["reconcile", "--date", date],
        &[("PAYHUB_REPORTER_URL", app.reporter_url.as_str())],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "payhubctl reconcile printed {text:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

async fn shop_get(app: &TestApp, path: &str, key: &str) -> Value {
    let r = app
        .http
        .get(format!("{}{path}", app.reporter_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn kinds(run: &Value) -> Vec<(String, String, String)> {
    let mut k: Vec<(String, String, String)> = run["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["reference"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
                d["resolution"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_kind_of_discrepancy_is_found_settled_or_alerted_and_resolved() {
    let app = TestApp::spawn().await;
    let today = time::OffsetDateTime::now_utc().date().to_string();

    // A clean day first.
    let clean = order(&app, "rec-clean", true).await;
    let (ok, run) = reconcile(&app, &today);
    assert!(ok, "{run}");
    assert_eq!(run["status"], "clean", "{run}");
    assert_eq!(run["checked"], 1);
    assert_eq!(
        run["notCompared"],
        serde_json::json!([]),
        "only OpenPix charges that day"
    );

    // Paid at the provider, but its webhook never reached payhub.
    let missed = order(&app, "rec-missed", false).await;
    app.sandbox.hold_webhooks(true);
    app.sandbox.pay(&missed).await.unwrap();
    // payhub created a charge the provider does not list; the provider lists
    // another value; lists one twice; lists a paid one as unpaid.
    let hidden = order(&app, "rec-hidden", false).await;
    let mismatch = order(&app, "rec-mismatch", false).await;
    let twice = order(&app, "rec-twice", false).await;
    app.sandbox.hold_webhooks(false);
    let unpaid = order(&app, "rec-unpaid", true).await;
    app.sandbox.set_listing_fault(&hidden, "hide", None).unwrap();
    app.sandbox.set_listing_fault(&mismatch, "value", Some(1)).unwrap();
    app.sandbox.set_listing_fault(&twice, "duplicate", None).unwrap();
    app.sandbox.set_listing_fault(&unpaid, "unpaid", None).unwrap();
    assert_eq!(
        app.order_status("rec-missed").await.as_deref(),
        Some("awaiting_payment")
    );

    let (ok, run) = reconcile(&app, &today);
    assert!(!ok, "open discrepancies make payhubctl exit 1: {run}");
    assert_eq!(run["status"], "discrepancies");
    assert_eq!(run["checked"], 6);
    let mut expected = vec![
        (
            missed.clone(),
            "paid_at_provider_only".to_string(),
            "settled".to_string(),
        ),
        (hidden.clone(), "unknown_at_provider".into(), "open".into()),
        (mismatch.clone(), "amount_mismatch".into(), "open".into()),
        (twice.clone(), "duplicate".into(), "open".into()),
        (unpaid.clone(), "not_paid_at_provider".into(), "open".into()),
    ];
    expected.sort();
    assert_eq!(kinds(&run), expected, "{run}");
    assert!(!kinds(&run).iter().any(|(r, _, _)| r == &clean));
    // The missed payment is applied (confirmed with the provider first).
    app.wait_for_status("rec-missed", "paid").await;
    // Each open one alerts the shop's admin and the platform, once.
    let alerts = || async {
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'alert.raised' AND convert_from(body, 'UTF8') LIKE '%reconciliation_discrepancy%'")
            .await
    };
    assert_eq!(alerts().await, 8, "4 open discrepancies x (shop, platform)");
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.sandbox
                .emails()
                .iter()
                .filter(|m| m.subject.as_deref().is_some_and(|s| s.contains("Reconciliation")))
                .count()
                >= 5
        })
        .await,
        "the alerts were never e-mailed"
    );
    // Stored with the run.
    assert_eq!(
        app.count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'open'")
            .await,
        4
    );
    assert_eq!(
        app.count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'settled'")
            .await,
        1
    );

    // The shop sees its own discrepancies and the day's runs over the API.
    let open = shop_get(
        &app,
        &format!("/v1/reconciliation/discrepancies?from={today}&to={today}&resolution=open"),
        app.api_key(),
    )
    .await;
    let mut open_kinds: Vec<&str> = open["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    open_kinds.sort();
    assert_eq!(
        open_kinds,
        [
            "amount_mismatch",
            "duplicate",
            "not_paid_at_provider",
            "unknown_at_provider"
        ],
        "{open}"
    );
    assert_eq!(open["discrepancies"][0]["provider"], "openpix");
    let settled = shop_get(
        &app,
        "/v1/reconciliation/discrepancies?resolution=settled",
        app.api_key(),
    )
    .await;
    assert_eq!(settled["discrepancies"][0]["correlationID"], "rec-missed", "{settled}");
    let runs = shop_get(&app, &format!("/v1/reconciliation/runs?from={today}"), app.api_key()).await;
    assert_eq!(runs["runs"][0]["status"], "discrepancies", "{runs}");
    assert_eq!(runs["runs"][0]["openForShop"], 4);
    let stranger = payhub_store::shops::create(&app.store, "Outra Loja", None, None)
        .await
        .unwrap();
    let theirs = shop_get(&app, "/v1/reconciliation/discrepancies", &stranger.api_key).await;
    assert_eq!(
        theirs["discrepancies"],
        serde_json::json!([]),
        "another shop sees none of them"
    );
    let bad = app
        .http
        .get(format!(
            "{}/v1/reconciliation/discrepancies?resolution=maybe",
            app.reporter_url
        ))
        .bearer_auth(app.api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    // The same run again alerts nobody twice.
    let (_, again) = reconcile(&app, &today);
    assert_eq!(again["open"], 4, "{again}");
    assert_eq!(alerts().await, 8);

    // The provider's listing agrees again: every discrepancy is resolved,
    // the day reconciles clean, and nothing is paid twice.
    app.sandbox.clear_listing_faults();
    let (ok, run) = reconcile(&app, &today);
    assert!(ok, "{run}");
    assert_eq!(run["status"], "clean", "{run}");
    assert_eq!(
        app.count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'open'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'resolved'")
            .await,
        4
    );
    assert_eq!(
        app.count("SELECT count(*) FROM order_history h JOIN orders o ON o.id = h.order_id WHERE o.correlation_id = 'rec-missed' AND h.to_status = 'paid'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM reconciliation_runs").await, 4);
    // A bad date is refused.
    let out = app.payhubctl_with_env(
        &["reconcile", "--date", "2026-13-01"],
        &[("PAYHUB_REPORTER_URL", app.reporter_url.as_str())],
    );
    assert!(!out.status.success());
    app.stop().await;
}

/// A card order; its id once it reached `status`.
async fn card(app: &TestApp, cid: &str, total: &str, status: &str) -> String {
    let r = app.post_order(&card_order(cid, total)).await;
    assert_eq!(r.status(), 201, "{cid}");
    app.wait_for_status(cid, status).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn count_of(app: &TestApp, sql: &'static str, arg: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(&app.store.pool)
        .await
        .unwrap()
}

fn by_provider<'a>(run: &'a Value, provider: &str) -> Vec<&'a Value> {
    run["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["provider"] == provider)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pixelpay_payments_are_re_queried_one_by_one_and_each_kind_is_found_settled_once_and_resolved() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let today = time::OffsetDateTime::now_utc().date().to_string();

    let clean = card(&app, "pp-rec-clean", "150.00", "paid").await;
    let (ok, run) = reconcile(&app, &today);
    assert!(ok, "{run}");
    assert_eq!(run["status"], "clean", "{run}");
    assert_eq!(run["checked"], 1, "{run}");
    assert_eq!(run["notCompared"], json!([]), "{run}");
    let pixelpay_source = run["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["provider"] == "pixelpay")
        .cloned()
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        pixelpay_source["source"]
            .as_str()
            .unwrap()
            .contains("payhub's own PixelPay orders"),
        "the run says where PixelPay's side came from: {run}"
    );

    // Paid at PixelPay, not at payhub: the sale is answered 408 after
    // charging, and PixelPay's status cannot be read just then.
    app.sandbox.pixelpay_set_status_fault("*", "unavailable", None).unwrap();
    let missed = card(&app, "pp-rec-missed", "8.00", "failed").await;
    app.sandbox.pixelpay_clear_status_faults();
    // Paid at payhub; PixelPay knows no such payment, says another amount,
    // or has it voided.
    let hidden = card(&app, "pp-rec-hidden", "151.00", "paid").await;
    let mismatch = card(&app, "pp-rec-mismatch", "152.00", "paid").await;
    let unpaid = card(&app, "pp-rec-unpaid", "153.00", "paid").await;
    app.sandbox.pixelpay_set_status_fault(&hidden, "hide", None).unwrap();
    app.sandbox
        .pixelpay_set_status_fault(&mismatch, "value", Some(15_000))
        .unwrap();
    app.sandbox.pixelpay_set_status_fault(&unpaid, "unpaid", None).unwrap();
    let reported = || async {
        count_of(
            &app,
            "SELECT count(*) FROM outbox WHERE routing_key = 'payment.reported' AND position($1 in convert_from(body, 'UTF8')) > 0",
            &missed,
        )
        .await
    };
    assert_eq!(reported().await, 0, "payhub never heard of the missed payment");

    let before = app.sandbox.pixelpay_requests();
    let (ok, run) = reconcile(&app, &today);
    assert!(!ok, "{run}");
    assert_eq!(run["status"], "discrepancies", "{run}");
    assert_eq!(run["checked"], 5, "{run}");
    let mut expected = vec![
        (
            missed.clone(),
            "paid_at_provider_only".to_string(),
            "settled".to_string(),
        ),
        (hidden.clone(), "unknown_at_provider".into(), "open".into()),
        (mismatch.clone(), "amount_mismatch".into(), "open".into()),
        (unpaid.clone(), "not_paid_at_provider".into(), "open".into()),
    ];
    expected.sort();
    assert_eq!(kinds(&run), expected, "{run}");
    assert_eq!(by_provider(&run, "pixelpay").len(), 4, "{run}");
    assert!(!kinds(&run).iter().any(|(r, _, _)| r == &clean));
    // One status call per payment, and the confirmation's for the missed one.
    assert_eq!(app.sandbox.pixelpay_requests() - before, 6);
    // The missed payment is reported once, through the confirmation; its
    // order had been failed, so a person reviews it (money is never lost).
    assert_eq!(reported().await, 1);
    app.wait_for_status("pp-rec-missed", "under_review").await;
    assert_eq!(
        count_of(
            &app,
            "SELECT count(*) FROM charges WHERE order_id::text = $1 AND provider = 'pixelpay'",
            &missed
        )
        .await,
        1,
        "the payment is recorded as the order's charge"
    );
    let alerts = || async {
        app.count("SELECT count(*) FROM outbox WHERE routing_key = 'alert.raised' AND convert_from(body, 'UTF8') LIKE '%reconciliation_discrepancy%'")
            .await
    };
    assert_eq!(alerts().await, 6, "3 open discrepancies x (shop, platform)");
    let open = shop_get(
        &app,
        &format!("/v1/reconciliation/discrepancies?from={today}&resolution=open"),
        app.api_key(),
    )
    .await;
    assert!(
        open["discrepancies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["provider"] == "pixelpay"),
        "{open}"
    );

    // Again: nobody alerted twice, nothing reported twice.
    let (_, again) = reconcile(&app, &today);
    assert_eq!(again["open"], 3, "{again}");
    assert_eq!(alerts().await, 6);
    assert_eq!(reported().await, 1);

    // PixelPay agrees again: resolved, and the missed payment stays settled once.
    app.sandbox.pixelpay_clear_status_faults();
    let (ok, run) = reconcile(&app, &today);
    assert!(ok, "{run}");
    assert_eq!(run["status"], "clean", "{run}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'resolved' AND provider = 'pixelpay'"
        )
        .await,
        3
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'settled' AND provider = 'pixelpay'"
        )
        .await,
        1
    );
    assert_eq!(reported().await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM order_history h JOIN orders o ON o.id = h.order_id WHERE o.correlation_id = 'pp-rec-missed' AND h.to_status = 'under_review'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_pixelpay_day_is_asked_a_few_at_a_time_up_to_the_runs_cap() {
    let app = TestApp::spawn_with(payhub_tests::TestOptions {
        reconcile: reporter::reconcile::ReconcileConfig {
            pixelpay_concurrency: 2,
            pixelpay_max_per_run: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    app.use_sandbox_pixelpay();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let mut ids = Vec::new();
    for (i, total) in ["150.00", "151.00", "152.00"].iter().enumerate() {
        ids.push(card(&app, &format!("pp-cap-{i}"), total, "paid").await);
    }
    // One of them disagrees; whichever the cap leaves out stays as it was.
    app.sandbox.pixelpay_set_status_fault("*", "hide", None).unwrap();
    let before = app.sandbox.pixelpay_requests();
    let (_, run) = reconcile(&app, &today);
    assert_eq!(app.sandbox.pixelpay_requests() - before, 2, "at most the cap: {run}");
    assert_eq!(run["checked"], 2, "{run}");
    assert_eq!(by_provider(&run, "pixelpay").len(), 2, "{run}");
    let nc = run["notCompared"].as_array().unwrap();
    assert_eq!(nc.len(), 1, "{run}");
    assert_eq!(nc[0]["provider"], "pixelpay");
    assert_eq!(nc[0]["orders"], 1);
    assert!(nc[0]["reason"].as_str().unwrap().contains("cap of 2"), "{run}");
    // A later run, PixelPay agreeing again: what it asked about is
    // resolved; nothing it did not ask about is called resolved.
    app.sandbox.pixelpay_clear_status_faults();
    let (_, run) = reconcile(&app, &today);
    assert_eq!(run["checked"], 2, "{run}");
    assert_eq!(
        app.count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'open'")
            .await
            + app
                .count("SELECT count(*) FROM reconciliation_discrepancies WHERE resolution = 'resolved'")
                .await,
        2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_with_a_pago_seguro_order_says_it_was_not_compared_and_why() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pagoseguro();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let base = app.sandbox.shop_webhook_url().replace("/shop/webhooks", "");
    let r = app
        .post_order(&json!({
            "checkout": {
                "returnUrl": format!("{base}/shop/checkout/return?ref=abc"),
                "cancelUrl": format!("{base}/shop/checkout/cancel"),
            },
            "correlationID": "ps-rec-1",
            "provider": "pagoseguro",
            "currency": "COP",
            "items": [{"title": "Camiseta Roja", "price": "75000.00", "qty": 1, "total": "75000.00"}],
            "total": "75000.00",
            "customer": {"name": "Pedro Pérez", "email": "pedro.perez@example.com"},
        }))
        .await;
    assert_eq!(r.status(), 201);
    let (ok, run) = reconcile(&app, &today);
    assert!(ok, "nothing to find is not a discrepancy: {run}");
    let nc = run["notCompared"].as_array().unwrap();
    assert!(!nc.is_empty(), "{run}");
    assert_eq!(nc[0]["provider"], "pagoseguro", "{run}");
    assert_eq!(nc[0]["orders"], 1, "{run}");
    assert!(
        nc[0]["reason"].as_str().unwrap().contains("no listing or status query"),
        "{run}"
    );
    let stored: Value =
        sqlx::query_scalar("SELECT not_compared FROM reconciliation_runs ORDER BY finished_at DESC LIMIT 1")
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
    assert_eq!(stored, run["notCompared"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn days_missed_while_reporter_was_down_are_run_when_it_comes_back_once() {
    let mut app = TestApp::spawn_with(payhub_tests::TestOptions {
        deferred: vec!["reporter"],
        reconcile: reporter::reconcile::ReconcileConfig {
            backfill_days: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    app.wait_ready().await.unwrap();
    // Orders of two and of five days ago (outside the lookback), and of today.
    let recent = order(&app, "bf-recent", false).await;
    let old = order(&app, "bf-old", false).await;
    order(&app, "bf-today", false).await;
    for (id, days) in [(&recent, 2), (&old, 5)] {
        for table in ["orders", "charges"] {
            let column = if table == "orders" { "id" } else { "order_id" };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET created_at = created_at - make_interval(days => $2) WHERE {column}::text = $1"
            )))
            .bind(id)
            .bind(days)
            .execute(&app.store.pool)
            .await
            .unwrap();
        }
    }
    let two_days_ago = time::OffsetDateTime::now_utc().date() - time::Duration::days(2);
    let store = app.store.clone();
    let backfilled = || async {
        sqlx::query_as::<_, (time::Date, String)>(
            "SELECT day, trigger FROM reconciliation_runs WHERE trigger = 'backfill' ORDER BY day",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap()
    };
    // reporter comes back: the missed day within the lookback is run.
    app.start_service("reporter").await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { !backfilled().await.is_empty() }).await,
        "the missed day was never run"
    );
    assert_eq!(backfilled().await, vec![(two_days_ago, "backfill".to_string())]);
    let (checked,): (i32,) = sqlx::query_as("SELECT checked FROM reconciliation_runs WHERE trigger = 'backfill'")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(checked, 1, "the day's order was compared");
    // Another reporter starting (a restart, a second replica): the day was
    // run, so it is not run again.
    app.start_service("reporter").await.unwrap();
    app.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(backfilled().await.len(), 1);
    assert_eq!(app.count("SELECT count(*) FROM reconciliation_runs").await, 1);
    app.stop().await;
}
