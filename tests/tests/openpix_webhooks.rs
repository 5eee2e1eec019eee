//! OpenPix webhook registration (issue 10 §1, seed 000 §2.1): once a shop's
//! OpenPix AppID is set, charge-creator registers the webhooks payhub needs
//! at that account, checks they are there, records each event's state, and
//! `payhubctl shop providers` shows it. Over the real RabbitMQ and
//! PostgreSQL, with the sandbox's OpenPix webhook API (the shop's account is
//! the sandbox's second merchant, [`OTHER_MERCHANT_APP_ID`]).

use payhub_sandbox::{OTHER_MERCHANT_APP_ID, ProviderFault};
use payhub_tests::{APP_ID, TestApp, TestOptions, eventually};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

const EVENTS: [&str; 4] = [
    "OPENPIX:CHARGE_COMPLETED",
    "OPENPIX:CHARGE_EXPIRED",
    "PIX_TRANSACTION_REFUND_SENT_CONFIRMED",
    "PIX_TRANSACTION_REFUND_SENT_REJECTED",
];

fn options() -> TestOptions {
    TestOptions {
        webhook_check_interval: Duration::from_millis(300),
        ..TestOptions::default()
    }
}

/// `payhubctl shop set-provider <shop> openpix` with the AppID in a file.
fn set_openpix(app: &TestApp, app_id: &str) -> String {
    let path = std::env::temp_dir().join(format!("payhub-secret-{}", uuid::Uuid::new_v4()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(format!("{app_id}\n").as_bytes())
        .unwrap();
    let out = app.payhubctl(&[
        "shop",
        "set-provider",
        &app.shop.shop.id.to_string(),
        "openpix",
        "--secret-file",
        path.to_str().unwrap(),
        "--json",
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["account"].as_str().unwrap().to_string()
}

/// `payhubctl shop providers <shop> --json`: the account's webhooks.
fn shown(app: &TestApp) -> Vec<Value> {
    let out = app.payhubctl(&["shop", "providers", &app.shop.shop.id.to_string(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains(OTHER_MERCHANT_APP_ID),
        "the AppID is never printed: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    v[0]["webhooks"].as_array().cloned().unwrap_or_default()
}

fn states(app: &TestApp) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = shown(app)
        .iter()
        .map(|w| {
            (
                w["event"].as_str().unwrap_or("").to_string(),
                w["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    s.sort();
    s
}

fn all(state: &str) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = EVENTS.iter().map(|e| (e.to_string(), state.to_string())).collect();
    s.sort();
    s
}

fn registered_at_shop_account(app: &TestApp) -> Vec<payhub_sandbox::RegisteredWebhook> {
    app.sandbox
        .openpix_webhooks()
        .into_iter()
        .filter(|w| w.app_id == OTHER_MERCHANT_APP_ID)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shops_openpix_account_gets_its_webhooks_registered_once_and_shown() {
    let app = TestApp::spawn_with(options()).await;
    let url = format!("{}/webhooks/openpix", app.verifier_url);
    set_openpix(&app, OTHER_MERCHANT_APP_ID);

    assert!(
        eventually(Duration::from_secs(15), || async {
            registered_at_shop_account(&app).len() == EVENTS.len()
        })
        .await,
        "{:#?}",
        app.sandbox.openpix_webhooks()
    );
    let mut events: Vec<String> = registered_at_shop_account(&app)
        .into_iter()
        .map(|w| {
            assert_eq!(w.url, url);
            assert!(w.is_active);
            w.event
        })
        .collect();
    events.sort();
    let mut expected: Vec<String> = EVENTS.iter().map(|e| e.to_string()).collect();
    expected.sort();
    assert_eq!(events, expected);
    // Under the shop's account only, never the platform's.
    assert!(app.sandbox.openpix_webhooks().iter().all(|w| w.app_id != APP_ID));
    // OpenPix's test call before each creation reached webhook-verifier and was answered.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM webhook_events WHERE provider = 'openpix' AND verdict IN ('test_call', 'ignored')"
        )
        .await,
        4
    );

    assert!(
        eventually(Duration::from_secs(10), || async { states(&app) == all("registered") }).await,
        "{:#?}",
        shown(&app)
    );
    for w in shown(&app) {
        assert_eq!(w["url"], url.as_str());
        assert!(w["checkedAt"].is_string());
    }
    // The next checks find them there and register nothing again.
    let requests = app.sandbox.openpix_webhook_requests();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.sandbox.openpix_webhook_requests() >= requests + 3
        })
        .await,
        "checked again"
    );
    assert_eq!(
        registered_at_shop_account(&app).len(),
        EVENTS.len(),
        "not registered twice"
    );
    assert_eq!(states(&app), all("registered"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_recorded_as_an_error_and_tried_again() {
    let app = TestApp::spawn_with(options()).await;
    app.sandbox.openpix_webhook_fail_always(ProviderFault::Status(500));
    set_openpix(&app, OTHER_MERCHANT_APP_ID);

    assert!(
        eventually(Duration::from_secs(15), || async { states(&app) == all("error") }).await,
        "{:#?}",
        shown(&app)
    );
    for w in shown(&app) {
        let detail = w["detail"].as_str().unwrap_or("");
        assert!(detail.contains("500"), "OpenPix's answer is kept: {detail}");
    }
    assert!(registered_at_shop_account(&app).is_empty());

    // OpenPix takes them again: the next check registers them.
    app.sandbox.openpix_webhook_recover();
    assert!(
        eventually(Duration::from_secs(15), || async { states(&app) == all("registered") }).await,
        "{:#?}",
        shown(&app)
    );
    assert_eq!(registered_at_shop_account(&app).len(), EVENTS.len());
    app.stop().await;
}
