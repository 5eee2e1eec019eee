//! Each shop's own provider accounts (issue 10 §1), over the real RabbitMQ
//! and PostgreSQL with the sandbox as OpenPix: the sandbox's second merchant
//! account ([`OTHER_MERCHANT_APP_ID`]) is the shop's own OpenPix account,
//! the sandbox's first the platform's.

use payhub_sandbox::OTHER_MERCHANT_APP_ID;
use payhub_tests::{APP_ID, TestApp, sample_order};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// `payhubctl shop set-provider <shop> openpix` with the AppID in a file.
fn set_openpix(app: &TestApp, shop: &str, app_id: &str) -> Value {
    let mut file = tempfile_in_target();
    file.1.write_all(format!("{app_id}\n").as_bytes()).unwrap();
    let out = app.payhubctl(&[
        "shop",
        "set-provider",
        shop,
        "openpix",
        "--secret-file",
        file.0.to_str().unwrap(),
        "--json",
    ]);
    let _ = std::fs::remove_file(&file.0);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(app_id), "the AppID is never printed back: {text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tempfile_in_target() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("payhub-secret-{}", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

async fn charge_account(app: &TestApp, order_id: &str) -> String {
    let (account,): (String,) = sqlx::query_as("SELECT provider_account FROM charges WHERE order_id = $1::uuid")
        .bind(order_id)
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_with_its_own_openpix_account_is_charged_confirmed_and_paid_there() {
    let app = TestApp::spawn().await;
    let shop = app.shop.shop.id.to_string();
    let set = set_openpix(&app, &shop, OTHER_MERCHANT_APP_ID);
    let account = set["account"].as_str().unwrap().to_string();
    assert_eq!(set["provider"], "openpix");

    // Sealed at rest: the AppID's bytes are nowhere in the row.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT credentials_enc FROM provider_accounts WHERE shop_id = $1")
        .bind(app.shop.shop.id)
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert!(
        !sealed
            .windows(OTHER_MERCHANT_APP_ID.len())
            .any(|w| w == OTHER_MERCHANT_APP_ID.as_bytes())
    );

    // Listed without the secret.
    let listed = app.payhubctl(&["shop", "providers", &shop, "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains(OTHER_MERCHANT_APP_ID), "{text}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], json!(account));
    assert_eq!(listed[0]["provider"], "openpix");

    // The charge is created in the shop's account, not the platform's.
    assert_eq!(app.post_order(&sample_order("own-1")).await.status(), 201);
    let order = app.wait_for_status("own-1", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    assert!(
        app.sandbox
            .other_account_charges()
            .iter()
            .any(|c| c.correlation_id == order_id)
    );
    assert!(
        app.sandbox.charge(&order_id).is_none(),
        "nothing at the platform's account"
    );
    assert_eq!(charge_account(&app, &order_id).await, account);
    // The order view says which account and method take the money.
    let view: Value = app.get_order("own-1").await.json().await.unwrap();
    assert_eq!(
        view["payment"],
        json!({"provider": "openpix", "method": "pix", "account": account})
    );
    // Seed 000: the buyer's birth date the shop sent is kept and shown.
    assert_eq!(view["customer"]["birthDate"], "1988-03-14", "{view:#}");

    // Paid in the shop's account: confirmed under the same account, paid once.
    let attempt = app.sandbox.pay_in_other_account(&order_id).await.unwrap();
    assert_eq!(attempt.status, 200, "{}", attempt.body);
    let paid = app.wait_for_status("own-1", "paid").await;
    assert_eq!(paid["status"], "paid");
    let (body,): (Vec<u8>,) = sqlx::query_as("SELECT body FROM outbox WHERE routing_key = 'payment.reported'")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains(&format!("\"account\":\"{account}\"")),
        "confirmed under the charge's account: {text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_the_platform_account_does_not_pay_a_shop_charged_in_its_own() {
    let app = TestApp::spawn().await;
    let shop = app.shop.shop.id.to_string();
    set_openpix(&app, &shop, OTHER_MERCHANT_APP_ID);
    assert_eq!(app.post_order(&sample_order("own-2")).await.status(), 201);
    let order = app.wait_for_status("own-2", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let total = order["amounts"]["totalMinor"].as_i64().unwrap();

    // Someone creates a charge with the order's id in the platform's
    // account (payhub's first AppID) and pays it: genuinely signed, but not
    // the charge payhub created for this shop's order.
    let created = app
        .http
        .post(format!("{}/api/v1/charge", app.sandbox.provider_url()))
        .header("Authorization", APP_ID)
        .json(&json!({"correlationID": order_id, "value": total, "comment": "not the shop's"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let attempt = app.sandbox.pay(&order_id).await.unwrap();
    assert_eq!(attempt.status, 200, "{}", attempt.body);
    let ack: Value = serde_json::from_str(&attempt.body).unwrap();
    assert_eq!(ack["status"], "rejected", "{ack}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.order_status("own-2").await.as_deref(), Some("awaiting_payment"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_account_keeps_its_id_and_its_new_credentials_take_effect() {
    let app = TestApp::spawn().await;
    let shop = app.shop.shop.id.to_string();
    let first = set_openpix(&app, &shop, "an-appid-openpix-does-not-know");
    // Refused by the provider: the order is blocked, nothing is charged
    // under the platform's account instead.
    assert_eq!(app.post_order(&sample_order("rot-1")).await.status(), 201);
    let blocked = app.wait_for_status("rot-1", "failed").await;
    assert!(app.sandbox.charges().is_empty(), "{blocked}");

    let second = set_openpix(&app, &shop, OTHER_MERCHANT_APP_ID);
    assert_eq!(first["account"], second["account"], "rotation keeps the account");
    tokio::time::sleep(Duration::from_millis(400)).await; // the account cache's TTL in tests
    assert_eq!(app.post_order(&sample_order("rot-2")).await.status(), 201);
    let order = app.wait_for_status("rot-2", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap();
    assert!(
        app.sandbox
            .other_account_charges()
            .iter()
            .any(|c| c.correlation_id == order_id)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_provider_refuses_bad_input_field_by_field_and_never_takes_the_secret_as_an_argument() {
    let app = TestApp::spawn().await;
    let shop = app.shop.shop.id.to_string();
    let (path, mut file) = tempfile_in_target();
    file.write_all(b"s3cr3t\n").unwrap();
    let p = path.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["pixelpay", "--secret-file", p], "--key-id"),
        (&["pixelpay", "--secret-file", p, "--key-id", "abc"], "key_id"),
        (
            &["openpix", "--secret-file", p, "--key-id", "1"],
            "--key-id does not apply",
        ),
        (&["stripe", "--secret-file", p], "unknown provider"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["shop", "set-provider", shop.as_str()];
        all.extend_from_slice(args);
        let out = app.payhubctl(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t"));
    }
    // PixelPay with a bank's white-label endpoint.
    let out = app.payhubctl(&[
        "shop",
        "set-provider",
        &shop,
        "pixelpay",
        "--secret-file",
        p,
        "--key-id",
        "1234567890",
        "--endpoint",
        "https://ficohsa.pixelpay.app/",
        "--allow",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["publicId"], "1234567890");
    assert_eq!(set["endpoint"], "https://ficohsa.pixelpay.app");
    assert_eq!(set["allowed"], true);
    let (allowed,): (Vec<String>,) = sqlx::query_as("SELECT allowed_providers FROM shops WHERE id = $1")
        .bind(app.shop.shop.id)
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert!(allowed.contains(&"pixelpay".to_string()), "{allowed:?}");
    let _ = std::fs::remove_file(&path);
    app.stop().await;
}
