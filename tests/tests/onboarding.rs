//! Shop onboarding over the real services: credentials issued and rotated
//! through payhubctl, secrets kept hashed or sealed at rest, webhook signing
//! across a secret rotation's overlap, and webhook URLs that are not safe to
//! call refused at registration and at delivery.
//!
//! payhubctl runs as a process: `cargo build --bins` first (make test does).

use payhub_core::standard_webhooks::{HEADER_SIGNATURE, WebhookSecret};
use payhub_queue::Topology;
use payhub_sandbox::{ReceivedWebhook, Sandbox, SandboxConfig};
use payhub_store::shops;
use payhub_tests::{APP_ID, TestApp, amqp_url, delete_topology, eventually, sample_order};
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn payhubctl_with_env(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    app.payhubctl_with_env(args, env)
}

fn ok_json(what: &str, out: Output) -> Value {
    assert!(
        out.status.success(),
        "payhubctl {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "payhubctl {what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The shop webhooks `sandbox` received for one status of one order.
fn hooks_for(sandbox: &Sandbox, correlation_id: &str, status: &str) -> Vec<ReceivedWebhook> {
    sandbox
        .shop_webhooks()
        .into_iter()
        .filter(|h| {
            serde_json::from_str::<Value>(&h.body)
                .is_ok_and(|b| b["data"]["correlationID"] == correlation_id && b["data"]["status"] == status)
        })
        .collect()
}

async fn first_hook(sandbox: &Sandbox, correlation_id: &str, status: &str) -> ReceivedWebhook {
    assert!(
        eventually(Duration::from_secs(20), || async {
            !hooks_for(sandbox, correlation_id, status).is_empty()
        })
        .await,
        "no {status} webhook for {correlation_id}: {:#?}",
        sandbox.shop_webhooks()
    );
    hooks_for(sandbox, correlation_id, status).remove(0)
}

/// Verifies a received webhook with one secret alone.
fn verifies_with(hook: &ReceivedWebhook, secret: &WebhookSecret) -> bool {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    secret
        .verify(
            &hook.id,
            &hook.timestamp,
            &hook.signature,
            hook.body.as_bytes(),
            now,
            300,
        )
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_secret_rotation_keeps_deliveries_verifiable_across_the_overlap() {
    let app = TestApp::spawn().await;
    let shop_id = app.shop.shop.id.to_string();
    let old = app.shop.shop.webhook_secret.clone();

    // Rotate with an hour of overlap. The sandbox shop still knows only the old secret.
    let rotated = ok_json(
        "rotate-webhook-secret",
        app.payhubctl(&[
            "shop",
            "rotate-webhook-secret",
            &shop_id,
            "--overlap-hours",
            "1",
            "--json",
        ]),
    );
    let new = WebhookSecret::parse(rotated["webhookSecret"].as_str().unwrap()).unwrap();
    assert!(rotated["webhookSecret"].as_str().unwrap().starts_with("whsec_"));
    assert_ne!(new.expose(), old.expose());
    assert!(rotated["previousValidUntil"].is_string(), "{rotated}");
    let shop = shops::by_id(&app.store, app.shop.shop.id).await.unwrap().unwrap();
    assert_eq!(shop.webhook_secret.expose(), new.expose());
    assert_eq!(shop.previous_webhook_secret.as_ref().unwrap().expose(), old.expose());

    app.post_order(&sample_order("rotation-1")).await;
    let hook = first_hook(&app.sandbox, "rotation-1", "awaiting_payment").await;
    assert!(
        hook.verified,
        "a shop that only knows the old secret verifies: {hook:#?}"
    );
    let parts: Vec<&str> = hook.signature.split(' ').collect();
    assert_eq!(
        parts.len(),
        2,
        "both signatures in {HEADER_SIGNATURE}: {}",
        hook.signature
    );
    assert!(parts.iter().all(|p| p.starts_with("v1,")));
    assert!(verifies_with(&hook, &old) && verifies_with(&hook, &new));

    // A shop that already switched to the new secret verifies too.
    let stop_new = CancellationToken::new();
    let new_shop = Sandbox::start(SandboxConfig::local_ephemeral(APP_ID), stop_new.clone())
        .await
        .unwrap();
    new_shop.add_shop_secret(&new.expose());
    ok_json(
        "set-webhook-url",
        app.payhubctl(&[
            "shop",
            "set-webhook-url",
            &shop_id,
            &new_shop.shop_webhook_url(),
            "--json",
        ]),
    );
    app.post_order(&sample_order("rotation-2")).await;
    let hook = first_hook(&new_shop, "rotation-2", "awaiting_payment").await;
    assert!(
        hook.verified,
        "a shop that only knows the new secret verifies: {hook:#?}"
    );
    assert!(hook.signature.split(' ').count() == 2);

    // Rotate again with a tiny overlap and let it pass: only the newest secret signs.
    let rotated = ok_json(
        "rotate-webhook-secret",
        app.payhubctl(&[
            "shop",
            "rotate-webhook-secret",
            &shop_id,
            "--overlap-hours",
            "0.0003",
            "--json",
        ]),
    );
    let newest = WebhookSecret::parse(rotated["webhookSecret"].as_str().unwrap()).unwrap();
    new_shop.add_shop_secret(&newest.expose());
    assert!(
        eventually(Duration::from_secs(5), || async {
            shops::by_id(&app.store, app.shop.shop.id)
                .await
                .unwrap()
                .unwrap()
                .previous_webhook_secret
                .is_none()
        })
        .await,
        "the overlap ends"
    );
    app.post_order(&sample_order("rotation-3")).await;
    let hook = first_hook(&new_shop, "rotation-3", "awaiting_payment").await;
    assert!(hook.verified, "{hook:#?}");
    assert!(!hook.signature.contains(' '), "one signature only: {}", hook.signature);
    assert!(verifies_with(&hook, &newest));
    assert!(!verifies_with(&hook, &new), "the previous secret no longer signs");
    assert!(!verifies_with(&hook, &old));

    // Rotating without overlap drops the previous secret at once.
    let rotated = ok_json(
        "rotate-webhook-secret",
        app.payhubctl(&[
            "shop",
            "rotate-webhook-secret",
            &shop_id,
            "--overlap-hours",
            "0",
            "--json",
        ]),
    );
    assert!(rotated["previousValidUntil"].is_null());
    let shop = shops::by_id(&app.store, app.shop.shop.id).await.unwrap().unwrap();
    assert!(shop.previous_webhook_secret.is_none());
    assert_eq!(shop.signing_secrets().len(), 1);

    stop_new.cancel();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_api_key_and_disabling_the_shop_take_effect_at_once() {
    let app = TestApp::spawn().await;
    let shop_id = app.shop.shop.id.to_string();
    let old_key = app.api_key().to_string();

    let rotated = ok_json(
        "rotate-api-key",
        app.payhubctl(&["shop", "rotate-api-key", &shop_id, "--json"]),
    );
    let new_key = rotated["apiKey"].as_str().unwrap().to_string();
    assert!(new_key.starts_with("phk_") && new_key != old_key);

    let refused = app.post_order_as(&sample_order("key-1"), &old_key).await;
    assert_eq!(refused.status(), 401, "the old key stops working at once");
    let accepted = app.post_order_as(&sample_order("key-1"), &new_key).await;
    assert_eq!(accepted.status(), 201, "{}", accepted.text().await.unwrap_or_default());

    // A disabled shop is refused, with any key; enabled again, it is served.
    let disabled = ok_json("disable", app.payhubctl(&["shop", "disable", &shop_id, "--json"]));
    assert_eq!(disabled["active"], false);
    let refused = app.post_order_as(&sample_order("key-2"), &new_key).await;
    assert_eq!(refused.status(), 401);
    let (active, disabled_at): (bool, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT active, disabled_at FROM shops WHERE id = $1")
            .bind(app.shop.shop.id)
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
    assert!(!active && disabled_at.is_some());
    let list = ok_json("list", app.payhubctl(&["shop", "list", "--json"]));
    assert_eq!(list[0]["active"], false);
    ok_json("enable", app.payhubctl(&["shop", "enable", &shop_id, "--json"]));
    let accepted = app.post_order_as(&sample_order("key-2"), &new_key).await;
    assert_eq!(accepted.status(), 201);

    // The Wake connector's secret: issued once, found by hash, refused once replaced or disabled.
    let wake = ok_json(
        "set-wake-secret",
        app.payhubctl(&[
            "shop",
            "set-wake-secret",
            &shop_id,
            "--wake-store",
            "loja-teste",
            "--json",
        ]),
    );
    let wake_secret = wake["wakeSecret"].as_str().unwrap().to_string();
    let found = shops::by_wake_secret(&app.store, &wake_secret).await.unwrap().unwrap();
    assert_eq!(found.id, app.shop.shop.id);
    assert_eq!(found.wake_store.as_deref(), Some("loja-teste"));
    assert!(shops::by_wake_secret(&app.store, "pwk_wrong").await.unwrap().is_none());
    shops::set_active(&app.store, app.shop.shop.id, false).await.unwrap();
    assert!(shops::by_wake_secret(&app.store, &wake_secret).await.unwrap().is_none());
    shops::set_active(&app.store, app.shop.shop.id, true).await.unwrap();
    // Without --wake-store the shop's own store is kept; the old secret stops working.
    let again = ok_json(
        "set-wake-secret",
        app.payhubctl(&["shop", "set-wake-secret", &shop_id, "--json"]),
    );
    assert_eq!(again["wakeStore"], "loja-teste");
    assert!(shops::by_wake_secret(&app.store, &wake_secret).await.unwrap().is_none());
    assert!(
        shops::by_wake_secret(&app.store, again["wakeSecret"].as_str().unwrap())
            .await
            .unwrap()
            .is_some()
    );

    // Unknown shops are reported, not ignored.
    let missing = app.payhubctl(&["shop", "rotate-api-key", &Uuid::now_v7().to_string()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no shop"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_stored_or_listed_in_clear() {
    let app = TestApp::spawn().await;
    let created = ok_json(
        "create",
        app.payhubctl(&[
            "shop",
            "create",
            "--name",
            "Loja Wake",
            "--webhook-url",
            &app.sandbox.shop_webhook_url(),
            "--admin-email",
            "ops@loja-wake.example.com",
            "--allowed-provider",
            "openpix",
            "--wake-store",
            "loja-wake",
            "--json",
        ]),
    );
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let mut secrets = vec![
        app.api_key().to_string(),
        app.shop.shop.webhook_secret.expose(),
        created["apiKey"].as_str().unwrap().to_string(),
        created["webhookSecret"].as_str().unwrap().to_string(),
        created["wakeSecret"].as_str().unwrap().to_string(),
    ];
    let rotated = ok_json(
        "rotate-webhook-secret",
        app.payhubctl(&["shop", "rotate-webhook-secret", &id.to_string(), "--json"]),
    );
    secrets.push(rotated["webhookSecret"].as_str().unwrap().to_string());
    assert_eq!(created["allowedProviders"], json!(["openpix"]));

    // The API key works; what is stored is hashes and ciphertexts.
    let resp = app
        .post_order_as(&sample_order("clear-1"), created["apiKey"].as_str().unwrap())
        .await;
    assert_eq!(resp.status(), 201);
    let rows: Vec<(String,)> = sqlx::query_as("SELECT to_jsonb(s)::text FROM shops s")
        .fetch_all(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (row,) in &rows {
        assert!(!row.contains("whsec_"), "{row}");
        assert!(!row.contains("phk_") && !row.contains("pwk_"), "{row}");
        for secret in &secrets {
            // Neither the text, nor its base64 body, nor its bytes in hex.
            let body = secret.split_once('_').unwrap().1;
            let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !row.contains(body) && !row.contains(&hex),
                "a secret is stored in clear: {row}"
            );
        }
    }
    let (plaintext, sealed_len, wake_hash_len): (i64, i32, Option<i32>) = sqlx::query_as(
        "SELECT count(webhook_secret), min(length(webhook_secret_enc)), max(length(wake_secret_hash)) FROM shops",
    )
    .fetch_one(&app.store.pool)
    .await
    .unwrap();
    assert_eq!(plaintext, 0, "new shops have no plaintext secret");
    assert!(sealed_len >= 12 + 16 + 16);
    assert_eq!(wake_hash_len, Some(32));

    // Listing never shows a secret.
    for args in [&["shop", "list"][..], &["shop", "list", "--json"][..]] {
        let out = app.payhubctl(args);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Loja Wake"), "{text}");
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
        assert!(!text.contains("whsec_"));
    }

    // A shop from before encryption (plaintext column) is still read, and
    // `shop encrypt-secrets` seals it in place.
    let legacy_id = Uuid::now_v7();
    let legacy_secret = WebhookSecret::generate();
    sqlx::query(
        "INSERT INTO shops (id, name, api_key_hash, webhook_url, webhook_secret, admin_email)
         VALUES ($1, 'Loja Antiga', $2, NULL, $3, NULL)",
    )
    .bind(legacy_id)
    .bind(shops::hash_api_key("phk_legacy"))
    .bind(legacy_secret.expose())
    .execute(&app.store.pool)
    .await
    .unwrap();
    let legacy = shops::by_api_key(&app.store, "phk_legacy").await.unwrap().unwrap();
    assert_eq!(legacy.webhook_secret.expose(), legacy_secret.expose());
    assert_eq!(legacy.allowed_providers, ["openpix"]);
    let out = app.payhubctl(&["shop", "encrypt-secrets"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sealed 1 plaintext webhook secret(s)"
    );
    let out = app.payhubctl(&["shop", "encrypt-secrets"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sealed 0 plaintext webhook secret(s)"
    );
    let legacy = shops::by_id(&app.store, legacy_id).await.unwrap().unwrap();
    assert_eq!(legacy.webhook_secret.expose(), legacy_secret.expose());
    let (plaintext,): (Option<String>,) = sqlx::query_as("SELECT webhook_secret FROM shops WHERE id = $1")
        .bind(legacy_id)
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert!(plaintext.is_none());

    // A sealed secret copied onto another shop does not open there.
    sqlx::query(
        "UPDATE shops SET webhook_secret_enc = (SELECT webhook_secret_enc FROM shops WHERE id = $1) WHERE id = $2",
    )
    .bind(id)
    .bind(legacy_id)
    .execute(&app.store.pool)
    .await
    .unwrap();
    let err = shops::by_id(&app.store, legacy_id).await.unwrap_err();
    assert!(err.to_string().contains("cannot be decrypted"), "{err}");

    // The migration may run again harmlessly.
    sqlx::raw_sql(include_str!(
        "../../shared/store/migrations/20261123000002_shop_credentials.sql"
    ))
    .execute(&app.store.pool)
    .await
    .expect("the migration is idempotent");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_to_private_addresses_are_refused_when_private_webhooks_are_off() {
    let app = TestApp::spawn().await;
    let shop_id = app.shop.shop.id.to_string();
    let strict = [("PAYHUB_ALLOW_PRIVATE_WEBHOOKS", "false")];

    // At registration: payhubctl refuses, naming the reason.
    for url in [
        "http://127.0.0.1:8080/hooks",
        "http://10.1.2.3/hooks",
        "http://[::1]/hooks",
        "http://169.254.169.254/latest",
        "http://localhost:8080/hooks",
    ] {
        let out = payhubctl_with_env(&app, &["shop", "set-webhook-url", &shop_id, url], &strict);
        assert!(!out.status.success(), "{url} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--webhook-url is unsafe"), "{url}: {stderr}");
        assert!(stderr.contains("non-public address"), "{url}: {stderr}");
    }
    let out = payhubctl_with_env(
        &app,
        &[
            "shop",
            "create",
            "--name",
            "Loja",
            "--webhook-url",
            "http://192.168.0.10/x",
        ],
        &strict,
    );
    assert!(!out.status.success());
    let out = payhubctl_with_env(
        &app,
        &[
            "shop",
            "create",
            "--name",
            "Loja",
            "--webhook-url",
            "http://loja.example.com/x",
        ],
        &[
            ("PAYHUB_ENV", "production"),
            ("PAYHUB_SECRETS_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("http:// is only allowed"),
        "{stderr}"
    );
    let out = payhubctl_with_env(&app, &["shop", "list"], &[("PAYHUB_ENV", "production")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("bad setting PAYHUB_SECRETS_KEY: is required when PAYHUB_ENV=production"),
        "{stderr}"
    );
    // Allowed (development defaults), the same URL is accepted.
    let out = app.payhubctl(&["shop", "set-webhook-url", &shop_id, &app.sandbox.shop_webhook_url()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // At delivery: a notifier with PAYHUB_ALLOW_PRIVATE_WEBHOOKS=false, on
    // its own exchange and queues so that only it sees these events.
    let topology = Topology {
        exchange: format!("{}.strict", app.topology.exchange),
        prefix: format!("{}strict.", app.topology.prefix),
        ..app.topology.clone()
    };
    let env = payhub_telemetry::Env::from_pairs([
        ("PAYHUB_DATABASE_URL", app.database_url.clone()),
        ("PAYHUB_AMQP_URL", amqp_url()),
        ("PAYHUB_HTTP_ADDR", "127.0.0.1:0".into()),
        ("PAYHUB_EXCHANGE", topology.exchange.clone()),
        ("PAYHUB_QUEUE_PREFIX", topology.prefix.clone()),
        (
            "PAYHUB_ORDERS_EXCHANGE",
            format!("{}.strict-orders", app.topology.exchange),
        ),
        ("PAYHUB_RETRY_DELAY_MS", "300".into()),
        ("PAYHUB_MAX_ATTEMPTS", "3".into()),
        ("PAYHUB_SMTP_URL", format!("smtp://{}", app.sandbox.smtp_addr())),
        ("PAYHUB_WEBHOOK_TIMEOUT_MS", "3000".into()),
        ("PAYHUB_ALLOW_PRIVATE_WEBHOOKS", "false".into()),
    ]);
    let config = notifier::Config::from_env(&env).expect("the notifier config");
    assert!(!config.webhook_urls.allow_private && !config.webhook_urls.require_https);
    let stop = CancellationToken::new();
    let strict_notifier = notifier::Application::build(config, stop.clone()).await.unwrap();
    let ops = format!("http://{}/readyz", strict_notifier.local_addr());
    let running = tokio::spawn(strict_notifier.run_until_stopped());
    assert!(
        eventually(Duration::from_secs(20), || async {
            matches!(app.http.get(&ops).send().await, Ok(r) if r.status().is_success())
        })
        .await
    );

    // One shop's URL is a loopback literal, the other's a name resolving to loopback.
    let port = app.sandbox.shop_webhook_url().rsplit(':').next().unwrap().to_string();
    let mut cases = Vec::new();
    for (n, url) in [app.sandbox.shop_webhook_url(), format!("http://localhost:{port}")]
        .into_iter()
        .enumerate()
    {
        let shop = shops::create(&app.store, &format!("Loja Interna {n}"), Some(&url), None)
            .await
            .unwrap();
        let expected = if n == 0 {
            "unsafe webhook URL: 127.0.0.1 is a non-public address (loopback)".to_string()
        } else {
            "unsafe webhook URL: localhost resolves to".to_string()
        };
        cases.push((shop.shop.id, format!("private-{n}"), expected));
    }
    let broker = payhub_queue::Broker::start(&amqp_url(), "onboarding-test", topology.clone(), stop.clone());
    broker.wait_connected(Duration::from_secs(10)).await.unwrap();
    for (shop_id, correlation_id, _) in &cases {
        let env = status_changed(*shop_id, correlation_id);
        assert!(
            eventually(Duration::from_secs(10), || async { broker.publish(&env).await.is_ok() }).await,
            "the strict notifier's queue takes the event"
        );
    }

    for (shop_id, correlation_id, expected) in &cases {
        assert!(
            eventually(Duration::from_secs(15), || async {
                delivery(&app, *shop_id).await.is_some_and(|d| d.0 == "failed")
            })
            .await,
            "the refused delivery is marked failed: {:?}",
            delivery(&app, *shop_id).await
        );
        let (status, attempts, error) = delivery(&app, *shop_id).await.unwrap();
        assert_eq!((status.as_str(), attempts), ("failed", 1), "no retry: {error:?}");
        let error = error.unwrap();
        assert!(error.starts_with(expected.as_str()), "{error}");
        assert!(error.contains("non-public address (loopback)"), "{error}");
        assert!(
            hooks_for(&app.sandbox, correlation_id, "awaiting_payment").is_empty(),
            "nothing reached the private address"
        );
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
    delete_topology(&topology).await;
    app.stop().await;
}

/// The shop webhook delivery of a shop: (status, attempts, last_error).
async fn delivery(app: &TestApp, shop_id: Uuid) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as("SELECT status, attempts, last_error FROM deliveries WHERE shop_id = $1 AND kind = 'shop_webhook'")
        .bind(shop_id)
        .fetch_optional(&app.store.pool)
        .await
        .unwrap()
}

/// An `order.status_changed` event for an order of `shop_id`, as order-updater publishes it.
fn status_changed(shop_id: Uuid, correlation_id: &str) -> payhub_core::Envelope {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = json!({
        "id": Uuid::now_v7(),
        "schema_version": 1,
        "occurred_at": now,
        "order_id": Uuid::now_v7(),
        "shop_id": shop_id,
        "correlation_id": correlation_id,
        "type": "order.status_changed",
        "data": {
            "provider": "openpix",
            "from": "accepted",
            "to": "awaiting_payment",
            "amount": {"minor": 22779, "currency": "BRL"},
            "customer_name": "Maria Oliveira",
            "customer_email": "maria@example.com",
            "summary": "Pedido de teste",
            "order_created_at": now,
        }
    });
    payhub_core::Envelope::from_json(body.to_string().as_bytes()).expect("a valid envelope")
}
