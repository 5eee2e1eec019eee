//! Reconciliation with the providers (issue 13 §1): the sandbox makes its
//! listing disagree with payhub in each way; `payhubctl reconcile --date`
//! finds each discrepancy, settles the payment payhub had missed (re-queried
//! and confirmed), alerts on the rest once, and resolves them when a later
//! run no longer finds them.

use payhub_tests::{TestApp, eventually, sample_order};
use serde_json::Value;
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
