//! `make demo`: the whole pipeline as separate processes, one PIX order
//! walked from the shop to "paid" and back, each step printed as it happens.
//!
//! Starts the sandbox and the six services from `target/<profile>/`, applies
//! the migrations, onboards a demo shop, submits an order, pays it in the
//! sandbox, checks the shop's webhook signature and the buyer's e-mail, shows
//! each service's counters, and stops everything (SIGTERM) before exiting.
//! Last, a Pago Seguro web checkout: its checkout URL printed for a person
//! to open, then walked in headless Chromium over WebDriver (skipped, and
//! said so, when Debian's chromium or chromium-driver is missing).

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const SERVICES: [(&str, &str); 6] = [
    ("ingress", "127.0.0.1:8080"),
    ("webhook-verifier", "127.0.0.1:8081"),
    ("reporter", "127.0.0.1:8082"),
    ("charge-creator", "127.0.0.1:9101"),
    ("order-updater", "127.0.0.1:9102"),
    ("notifier", "127.0.0.1:9103"),
];
const SANDBOX: &str = "127.0.0.1:8090";
const SHOP: &str = "127.0.0.1:8091";
const SMTP: &str = "127.0.0.1:2525";

struct Procs(Vec<(String, Child)>);

impl Procs {
    async fn stop(&mut self) {
        for (_, child) in &self.0 {
            if let Some(pid) = child.id() {
                // SIGTERM: the services drain and exit cleanly.
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
        }
        for (name, child) in &mut self.0 {
            match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => eprintln!("  {name} exited with {status}"),
                _ => {
                    eprintln!("  {name} did not stop in time; killing it");
                    let _ = child.kill().await;
                }
            }
        }
        self.0.clear();
    }
}

fn step(start: Instant, what: &str) {
    println!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("the demo binary has a directory")?.to_path_buf())
}

fn spawn(dir: &Path, bin: &str, envs: &[(&str, String)], log_dir: &Path) -> anyhow::Result<Child> {
    let path = dir.join(bin);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (make demo does)",
        path.display()
    );
    let log = std::fs::File::create(log_dir.join(format!("{bin}.log")))?;
    let mut cmd = Command::new(&path);
    cmd.envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("cannot start {bin}"))
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (20 s at most) until the sandbox's mailbox holds at least two
/// e-mails whose subject names `reference`, and returns them.
async fn two_mails_about(http: &reqwest::Client, what: &str, reference: &str) -> anyhow::Result<Vec<Value>> {
    poll(what, Duration::from_secs(20), || async {
        let mails: Value = http
            .get(format!("http://{SANDBOX}/sandbox/emails"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let mine: Vec<Value> = mails["emails"]
            .as_array()?
            .iter()
            .filter(|m| m["subject"].as_str().is_some_and(|s| s.contains(reference)))
            .cloned()
            .collect();
        (mine.len() >= 2).then_some(mine)
    })
    .await
}

/// One line of the demo's output for an e-mail the sandbox received.
fn mail_line(m: &Value) -> String {
    format!(
        "e-mail delivered to {}: \"{}\"",
        m["rcpt_to"][0].as_str().unwrap_or("?"),
        m["subject"].as_str().unwrap_or("")
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    payhub_telemetry::install_crypto();
    let mut procs = Procs(Vec::new());
    let result = run(&mut procs).await;
    procs.stop().await;
    match result {
        Ok(()) => {
            println!("demo finished: every process stopped cleanly.");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            eprintln!("the services' logs are in .demo/logs/");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(procs: &mut Procs) -> anyhow::Result<()> {
    let start = Instant::now();
    let dir = bin_dir()?;
    let log_dir = PathBuf::from(".demo/logs");
    std::fs::create_dir_all(&log_dir)?;
    let database_url =
        std::env::var("PAYHUB_DATABASE_URL").unwrap_or_else(|_| payhub_service::DEFAULT_DATABASE_URL.into());
    let amqp_url = std::env::var("PAYHUB_AMQP_URL").unwrap_or_else(|_| payhub_service::DEFAULT_AMQP_URL.into());

    // Migrations, exactly as an operator applies them.
    let status = std::process::Command::new(dir.join("payhubctl"))
        .arg("migrate")
        .env("PAYHUB_DATABASE_URL", &database_url)
        .status()?;
    anyhow::ensure!(status.success(), "payhubctl migrate failed");
    step(start, "database migrated (payhubctl migrate)");

    let store = payhub_store::Store::connect_lazy(&database_url, 2)?;
    let shop = payhub_store::shops::create(
        &store,
        "Loja Demo",
        Some(&format!("http://{SHOP}/shop/webhooks")),
        Some("admin@loja-demo.example.com"),
    )
    .await?;
    step(
        start,
        &format!("shop onboarded: {} (API key and webhook secret issued)", shop.shop.id),
    );
    // The shop's own OpenPix account (the sandbox's merchant); the platform's
    // AppID is one the sandbox does not know, so every PIX charge below is
    // made, re-queried and refunded under the shop's own account.
    let key = payhub_store::Secrets::development_of(payhub_store::secrets::KeyKind::Provider);
    let openpix_account = payhub_store::accounts::set(
        &store,
        &key,
        shop.shop.id,
        &payhub_store::accounts::Credentials::Openpix {
            app_id: "sandbox-app-id".to_string().into(),
        },
        None,
    )
    .await?;
    step(
        start,
        &format!("the shop's own OpenPix account set: {openpix_account} (as `payhubctl shop set-provider` does)"),
    );

    let sandbox_env = vec![
        ("SANDBOX_PROVIDER_ADDR", SANDBOX.to_string()),
        ("SANDBOX_SHOP_ADDR", SHOP.to_string()),
        ("SANDBOX_SMTP_ADDR", SMTP.to_string()),
        ("SANDBOX_OPENPIX_APP_ID", "sandbox-app-id".to_string()),
        (
            "SANDBOX_WEBHOOK_TARGET",
            "http://127.0.0.1:8081/webhooks/openpix".to_string(),
        ),
        ("SANDBOX_SHOP_SECRETS", shop.shop.webhook_secret.expose()),
    ];
    procs
        .0
        .push(("sandbox".into(), spawn(&dir, "payhub-sandbox", &sandbox_env, &log_dir)?));
    for (name, addr) in SERVICES {
        let envs = vec![
            ("PAYHUB_DATABASE_URL", database_url.clone()),
            ("PAYHUB_AMQP_URL", amqp_url.clone()),
            ("PAYHUB_HTTP_ADDR", addr.to_string()),
            ("PAYHUB_OPENPIX_BASE_URL", format!("http://{SANDBOX}")),
            (
                "PAYHUB_OPENPIX_APP_ID",
                "platform-app-id-unknown-to-the-sandbox".to_string(),
            ),
            ("PAYHUB_WAKE_POSTBACK_URL", format!("http://{SHOP}")),
            (
                "PAYHUB_OPENPIX_PUBLIC_KEYS",
                payhub_sandbox::FIXTURE_PUBLIC_KEY_PEM.to_string(),
            ),
            ("PAYHUB_SMTP_URL", format!("smtp://{SMTP}")),
            ("PAYHUB_DB_MAX_CONNECTIONS", "4".to_string()),
            ("PAYHUB_LOG_FORMAT", "json".to_string()),
        ];
        let mut envs = envs;
        if name == "ingress" {
            // Pago Seguro's web checkout (issue 11 §2): the signed form goes
            // to the sandbox's Pago Seguro page, which sends the buyer back to
            // webhook-verifier's return door.
            envs.push((
                "PAYHUB_PAGOSEGURO_CHECKOUT_URL",
                format!("http://{SANDBOX}/pagosegurocanal/public/checkoutpay"),
            ));
            envs.push(("PAYHUB_PUBLIC_WEBHOOK_BASE_URL", "http://127.0.0.1:8081".to_string()));
        }
        procs.0.push((
            name.to_string(),
            spawn(&dir, &format!("payhub-{name}"), &envs, &log_dir)?,
        ));
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    for (name, addr) in SERVICES {
        poll(&format!("{name} to be ready"), Duration::from_secs(30), || async {
            http.get(format!("http://{addr}/readyz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await?;
    }
    poll("the sandbox", Duration::from_secs(10), || async {
        http.get(format!("http://{SANDBOX}/sandbox/charges")).send().await.ok()
    })
    .await?;
    step(
        start,
        "sandbox and six services started and ready (each connected to RabbitMQ and PostgreSQL)",
    );

    let correlation_id = format!("demo-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let order = payhub_tests::sample_order(&correlation_id);
    let resp = http
        .post("http://127.0.0.1:8080/v1/orders")
        .bearer_auth(&shop.api_key)
        .json(&order)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().as_u16() == 201,
        "ingress answered {}: {}",
        resp.status(),
        resp.text().await?
    );
    let created: Value = resp.json().await?;
    step(
        start,
        &format!(
            "order {correlation_id} accepted: total R$ {} (status {})",
            created["amounts"]["total"].as_str().unwrap_or("?"),
            created["status"]
        ),
    );

    let get_order = || async {
        let r = http
            .get(format!("http://127.0.0.1:8080/v1/orders/{correlation_id}"))
            .bearer_auth(&shop.api_key)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    };
    let order = poll("the charge", Duration::from_secs(20), || async {
        get_order().await.filter(|o| o["status"] == "awaiting_payment")
    })
    .await?;
    let br_code = order["charge"]["brCode"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(
        payhub_core::brcode::is_valid(&br_code),
        "the brCode's CRC does not check out"
    );
    step(
        start,
        &format!(
            "charge created at the provider; PIX copia e cola (CRC valid):\n          {br_code}\n          payment link: {}",
            order["charge"]["paymentLinkUrl"].as_str().unwrap_or("")
        ),
    );

    let order_id = order["id"].as_str().context("order id")?.to_string();
    let paid = http
        .post(format!("http://{SANDBOX}/sandbox/charges/{order_id}/pay"))
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let paid: Value = paid.json().await?;
    step(
        start,
        &format!(
            "buyer paid in the sandbox; the provider's RSA-signed webhook was answered {} by webhook-verifier (signature verified)",
            paid["webhook"]["status"]
                .as_u64()
                .or_else(|| paid["status"].as_u64())
                .unwrap_or(0)
        ),
    );

    let order = poll("the order to be paid", Duration::from_secs(20), || async {
        get_order().await.filter(|o| o["status"] == "paid")
    })
    .await?;
    let history: Vec<&str> = order["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["to"].as_str()).collect())
        .unwrap_or_default();
    step(
        start,
        &format!(
            "order PAID exactly once (endToEndId {}); history: {}",
            order["endToEndId"].as_str().unwrap_or("?"),
            history.join(" -> ")
        ),
    );

    let hook = poll("the shop's webhook", Duration::from_secs(20), || async {
        let hooks: Value = http
            .get(format!("http://{SANDBOX}/sandbox/shop/webhooks"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        hooks["webhooks"]
            .as_array()?
            .iter()
            .find(|h| {
                h["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(&correlation_id) && b.contains("\"status\":\"paid\""))
            })
            .cloned()
    })
    .await?;
    anyhow::ensure!(
        hook["verified"] == true,
        "the shop could not verify the webhook signature: {hook}"
    );
    step(
        start,
        &format!(
            "shop notified: webhook {} with a valid Standard Webhooks signature",
            hook["id"].as_str().unwrap_or("?")
        ),
    );

    let mails = two_mails_about(&http, "the buyer's e-mails", &correlation_id).await?;
    for m in &mails {
        step(start, &mail_line(m));
    }

    // A partial refund of the PIX order, then the rest.
    for (key, amount) in [("devolucao-1", Some("27.79")), ("devolucao-2", None)] {
        let mut body = serde_json::json!({"idempotencyKey": key, "reason": "produto com defeito"});
        if let Some(a) = amount {
            body["amount"] = serde_json::json!(a);
        }
        let r = http
            .post(format!("http://127.0.0.1:8080/v1/orders/{correlation_id}/refunds"))
            .bearer_auth(&shop.api_key)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await?;
        let code = r.status().as_u16();
        let v: Value = r.json().await?;
        let want = if amount.is_some() {
            "partially_refunded"
        } else {
            "refunded"
        };
        let settled = poll(&format!("the refund {key}"), Duration::from_secs(20), || async {
            get_order().await.filter(|o| o["status"] == want)
        })
        .await?;
        step(
            start,
            &format!(
                "refund {key} ({}): answered {code}, {} -> order {}",
                amount.unwrap_or("the rest"),
                v["status"].as_str().unwrap_or("?"),
                settled["status"].as_str().unwrap_or("?")
            ),
        );
    }

    after_payment(&http, &store, &shop, start).await?;

    // Cards through PixelPay, under the shop's own PixelPay account (the
    // sandbox's PixelPay simulator, PixelPay's public sandbox merchant).
    let account = payhub_store::accounts::set(
        &store,
        &key,
        shop.shop.id,
        &payhub_store::accounts::Credentials::Pixelpay {
            key_id: payhub_sandbox::PIXELPAY_SANDBOX_KEY_ID.into(),
            secret_key: payhub_sandbox::PIXELPAY_SANDBOX_SECRET_KEY.to_string().into(),
            endpoint: format!("http://{SANDBOX}"),
        },
        None,
    )
    .await?;
    sqlx::query("UPDATE shops SET allowed_providers = array_append(allowed_providers, 'pixelpay') WHERE id = $1")
        .bind(shop.shop.id)
        .execute(&store.pool)
        .await?;
    step(
        start,
        &format!("the shop's own PixelPay account set: {account} (as `payhubctl shop set-provider` does)"),
    );
    for (label, total) in [("card sale", "150.00"), ("declined card", "2.00")] {
        let cid = format!("{correlation_id}-{}", total.replace('.', ""));
        let body = serde_json::json!({
            "correlationID": cid, "provider": "pixelpay", "currency": "HNL",
            "items": [{"title": "Camiseta Roja", "price": total, "qty": 1, "total": total}],
            "total": total,
            "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                         "phone": "+504 9999-9999"},
            "card": {"number": payhub_sandbox::PIXELPAY_TEST_VISA, "cvv": "999", "expire": "3012",
                     "holder": "Pedro Perez",
                     "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM",
                                 "city": "Tegucigalpa"}}
        });
        let r = http
            .post("http://127.0.0.1:8080/v1/orders")
            .bearer_auth(&shop.api_key)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await?;
        let v: Value = r.json().await?;
        let card = &v["cardPayment"];
        let want = if total == "2.00" { "failed" } else { "paid" };
        let settled = poll(&format!("the {label} to settle"), Duration::from_secs(20), || async {
            let r = http
                .get(format!("http://127.0.0.1:8080/v1/orders/{cid}"))
                .bearer_auth(&shop.api_key)
                .send()
                .await
                .ok()?;
            r.json::<Value>().await.ok().filter(|o| o["status"] == want)
        })
        .await?;
        step(
            start,
            &format!(
                "{label} L {total}: card {} {} -> {} (authorisation {}; order {}{})",
                card["card"].as_str().unwrap_or("?"),
                card["brand"].as_str().unwrap_or("?"),
                card["outcome"].as_str().unwrap_or("?"),
                card["authorizationCode"].as_str().unwrap_or("-"),
                settled["status"].as_str().unwrap_or("?"),
                settled["statusReason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
            ),
        );
    }

    wake_card_checkout(start, &http, &store, &key).await?;
    day_closed(start, &http, &dir, &database_url, &store, &shop).await?;
    pagoseguro_checkout(start, &http, &store, &key, &shop).await?;

    println!("\nservice counters (/metrics):");
    for (name, addr) in SERVICES {
        let text = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
        let sum = |prefix: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        println!(
            "  {name:<17} http_requests={:<4} published={:<3} consumed={:<3}",
            sum("payhub_http_requests_total{"),
            sum("payhub_messages_published_total{"),
            sum("payhub_messages_consumed_total{")
        );
    }
    step(start, "stopping every process (SIGTERM)");
    Ok(())
}

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Pago Seguro's web checkout end to end (issue 11 §2): a COP order with a
/// `checkout` block under the shop's own Pago Seguro account (the
/// sandbox's), its checkout URL printed for a person to open, then walked
/// in headless Chromium: payhub's page posts the signed form to the
/// sandbox's Pago Seguro page, the buyer pays there, comes back through
/// webhook-verifier's return door (verified, stored, never paying: the
/// page says "being confirmed"), and lands on the shop's `returnUrl`;
/// payhub's own confirmation e-mails follow. Without Chromium the walk is
/// skipped, said so, and the demo goes on.
async fn pagoseguro_checkout(
    start: Instant,
    http: &reqwest::Client,
    store: &payhub_store::Store,
    key: &payhub_store::Secrets,
    shop: &payhub_store::shops::NewShopCredentials,
) -> anyhow::Result<()> {
    let account = payhub_store::accounts::set(
        store,
        key,
        shop.shop.id,
        &payhub_store::accounts::Credentials::Pagoseguro {
            account_id: payhub_sandbox::PAGOSEGURO_SANDBOX_ACCOUNT_ID.into(),
            api_key: payhub_sandbox::PAGOSEGURO_SANDBOX_API_KEY.to_string().into(),
        },
        None,
    )
    .await?;
    sqlx::query("UPDATE shops SET allowed_providers = array_append(allowed_providers, 'pagoseguro') WHERE id = $1")
        .bind(shop.shop.id)
        .execute(&store.pool)
        .await?;
    step(
        start,
        &format!("the shop's own Pago Seguro account set: {account} (as `payhubctl shop set-provider` does)"),
    );
    let cid = format!("ps-demo-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let order = serde_json::json!({
        "correlationID": cid, "provider": "pagoseguro", "currency": "COP",
        "items": [{"title": "Camiseta Roja", "price": "75000.00", "qty": 1, "total": "75000.00"}],
        "total": "75000.00",
        "customer": {"name": "Pedro Pérez", "email": "pedro.perez@example.com"},
        "checkout": {"returnUrl": format!("http://{SHOP}/shop/checkout/return?pedido={cid}"),
                     "cancelUrl": format!("http://{SHOP}/shop/checkout/cancel")},
    });
    // The shop's settings may take a moment to reach ingress's cache.
    let created: Value = poll(
        "the Pago Seguro order to be accepted",
        Duration::from_secs(20),
        || async {
            let r = http
                .post("http://127.0.0.1:8080/v1/orders")
                .bearer_auth(&shop.api_key)
                .json(&order)
                .send()
                .await
                .ok()?;
            if r.status().as_u16() != 201 {
                return None;
            }
            r.json().await.ok()
        },
    )
    .await?;
    let url = created["checkout"]["url"]
        .as_str()
        .context("the answer's checkout.url")?
        .to_string();
    poll("the Pago Seguro reference", Duration::from_secs(20), || async {
        let o: Value = http
            .get(format!("http://127.0.0.1:8080/v1/orders/{cid}"))
            .bearer_auth(&shop.api_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (o["status"] == "awaiting_payment").then_some(())
    })
    .await?;
    step(
        start,
        &format!(
            "Pago Seguro order {cid} (COP 75000.00) on payhub's hosted checkout; open it in a browser while the demo runs:\n          {url}\n          the buyer's \"my orders\" page: {}",
            created["myOrdersUrl"].as_str().unwrap_or("?")
        ),
    );
    if !(Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()) {
        step(
            start,
            &format!(
                "SKIPPED the browser walk of the Pago Seguro checkout: {CHROMIUM} or {CHROMEDRIVER} is missing \
                 (apt-get install chromium chromium-driver)"
            ),
        );
        return Ok(());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut driver = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("chromedriver starts")?;
    let walked = browse_pagoseguro(start, http, &format!("http://127.0.0.1:{port}"), &url, &cid).await;
    let _ = driver.kill();
    let _ = driver.wait();
    walked?;

    let mails = two_mails_about(http, "payhub's Pago Seguro confirmation e-mails", &cid).await?;
    for m in &mails {
        step(start, &mail_line(m));
    }
    Ok(())
}

/// The buyer's walk through the Pago Seguro checkout in headless Chromium.
async fn browse_pagoseguro(
    start: Instant,
    http: &reqwest::Client,
    driver_url: &str,
    url: &str,
    cid: &str,
) -> anyhow::Result<()> {
    poll("chromedriver", Duration::from_secs(15), || async {
        http.get(format!("{driver_url}/status")).send().await.ok()
    })
    .await?;
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=390,1100", "--lang=es-CO"],
            "prefs": {"intl.accept_languages": "es-CO,es"},
        },
    });
    let b = payhub_tests::webdriver::Session::new(driver_url, caps).await?;
    let walked = async {
        b.goto(url).await?;
        // payhub's page posts the signed form to Pago Seguro by itself.
        let pay = poll("Pago Seguro's page", Duration::from_secs(20), || async { b.find("#ps-pay").await.ok() }).await?;
        step(
            start,
            "headless Chromium: payhub's checkout posted the signed form; the buyer is on (the sandbox's) Pago Seguro page",
        );
        b.click(&pay).await?;
        poll("payhub's result page", Duration::from_secs(20), || async {
            b.current_url().await.ok().filter(|u| u.path().ends_with("/done"))
        })
        .await?;
        let page = b.source().await?;
        anyhow::ensure!(
            page.contains("Estamos confirmando el pago"),
            "the result page does not say the payment is being confirmed"
        );
        step(
            start,
            "the buyer paid at Pago Seguro and came back: return verified and stored, order NOT paid (a return's sign does not cover its status); the page says \"Estamos confirmando el pago\"",
        );
        let shot = PathBuf::from(".demo/pagoseguro-result.png");
        b.screenshot(&shot).await?;
        step(start, &format!("screenshot of payhub's result page: {}", shot.display()));
        let landed = poll("the shop's returnUrl", Duration::from_secs(20), || async {
            b.current_url()
                .await
                .ok()
                .filter(|u| u.path() == "/shop/checkout/return")
        })
        .await?;
        let q: std::collections::HashMap<String, String> = landed.query_pairs().into_owned().collect();
        step(
            start,
            &format!(
                "back at the shop's returnUrl: payhub_order={} payhub_status={} (signed: payhub_signature={}…)",
                q.get("payhub_order").map(String::as_str).unwrap_or("?"),
                q.get("payhub_status").map(String::as_str).unwrap_or("?"),
                q.get("payhub_signature").map(|s| &s[..s.len().min(16)]).unwrap_or("?"),
            ),
        );
        anyhow::ensure!(
            q.get("payhub_order").map(String::as_str) == Some(cid),
            "the shop's return names another order: {landed}"
        );
        Ok(())
    }
    .await;
    let _ = b.quit().await;
    walked
}

/// A Wake store paying by card: a second shop whose PixelPay account is a
/// bank's white-label one that settles BRL; Wake's `/payment` with a card
/// (sold while Wake waits), then `/authorize` and `/capture`.
async fn wake_card_checkout(
    start: Instant,
    http: &reqwest::Client,
    store: &payhub_store::Store,
    key: &payhub_store::Secrets,
) -> anyhow::Result<()> {
    let shop = payhub_store::shops::create(
        store,
        "Loja Wake",
        Some(&format!("http://{SHOP}/shop/webhooks")),
        Some("admin@loja-wake.example.com"),
    )
    .await?;
    payhub_store::accounts::set(
        store,
        key,
        shop.shop.id,
        &payhub_store::accounts::Credentials::Pixelpay {
            key_id: payhub_sandbox::PIXELPAY_BRL_KEY_ID.into(),
            secret_key: payhub_sandbox::PIXELPAY_BRL_SECRET_KEY.to_string().into(),
            endpoint: format!("http://{SANDBOX}"),
        },
        Some(&["BRL".to_string()]),
    )
    .await?;
    sqlx::query("UPDATE shops SET allowed_providers = array_append(allowed_providers, 'pixelpay') WHERE id = $1")
        .bind(shop.shop.id)
        .execute(&store.pool)
        .await?;
    let secret = payhub_store::shops::set_wake_secret(store, shop.shop.id, "pagamentos").await?;
    step(
        start,
        "Wake store onboarded: its own PixelPay account settles BRL (--currencies BRL), Wake secret issued",
    );
    let seed: Value = serde_json::from_str(include_str!("../../fixtures/wake/payment.json"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let chave = |n: u32| format!("{:08x}-0000-4000-8000-{:012x}", now as u32, n);
    let wake = |path: &'static str, body: Value| {
        let secret = secret.clone();
        async move {
            let v: Value = http
                .post(format!("http://127.0.0.1:8080/wake/{path}"))
                .bearer_auth(&secret)
                .timeout(Duration::from_secs(5))
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(v)
        }
    };
    let mut cart = seed.clone();
    cart["chave"] = serde_json::json!(chave(1));
    cart["pagamento"]["form"]["number"] = serde_json::json!(payhub_sandbox::PIXELPAY_TEST_VISA);
    let sold = wake("payment", cart.clone()).await?;
    step(
        start,
        &format!(
            "Wake /payment with a card: statusId {} ({})",
            sold["statusId"],
            sold["message"].as_str().unwrap_or("?")
        ),
    );
    cart["chave"] = serde_json::json!(chave(2));
    let authorised = wake("authorize", serde_json::json!([cart])).await?;
    let captured = wake(
        "capture",
        serde_json::json!({"Id": 1, "Loja": "pagamentos", "Chave": chave(2), "Pedido": 108648}),
    )
    .await?;
    step(
        start,
        &format!(
            "Wake /authorize: statusId {} ({}); /capture: statusId {} ({})",
            authorised["statusId"],
            authorised["message"].as_str().unwrap_or("?"),
            captured["statusId"],
            captured["message"].as_str().unwrap_or("?")
        ),
    );
    anyhow::ensure!(
        sold["statusId"] == 3 && authorised["statusId"] == 4 && captured["statusId"] == 3,
        "the Wake card checkout did not go through"
    );
    Ok(())
}

/// Issue 12: a second PIX order walked past payment: a delivery promise
/// from the shop's rule, forwarded, an illegal move refused, shipped with
/// its tracking link e-mailed, delivered on time.
async fn after_payment(
    http: &reqwest::Client,
    store: &payhub_store::Store,
    shop: &payhub_store::shops::NewShopCredentials,
    start: Instant,
) -> anyhow::Result<()> {
    let mut rules = shop.shop.order_rules.clone();
    rules.delivery_time = Some(serde_json::from_value(serde_json::json!({
        "defaultDays": 5, "states": {"PR": 2}
    }))?);
    payhub_store::shops::set_order_rules(store, shop.shop.id, &rules).await?;
    // Issue 12 §3: the shop invoices through payhub, at the sandbox's
    // homologation Focus NFe (as `payhubctl shop set-invoicing` sets it).
    let key = payhub_store::Secrets::development_of(payhub_store::secrets::KeyKind::Provider);
    payhub_store::accounts::set(
        store,
        &key,
        shop.shop.id,
        &payhub_store::accounts::Credentials::Focusnfe {
            token: payhub_sandbox::FOCUSNFE_SANDBOX_TOKEN.to_string().into(),
            endpoint: format!("http://{SANDBOX}"),
        },
        None,
    )
    .await?;
    let profile = payhub_core::invoice::FiscalProfile::parse(
        serde_json::json!({
            "cnpj": payhub_sandbox::FOCUSNFE_SANDBOX_CNPJ, "name": "Loja Demo Ltda", "stateRegistration": "9044016688",
            "state": "SC", "taxRegime": 1, "cfopInternal": "5102", "cfopInterstate": "6102",
            "defaultNcm": "61159500", "ncmByCode": {"0000123": "61091000"},
            "icmsSituation": "102", "pisSituation": "07", "cofinsSituation": "07"
        })
        .to_string()
        .as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("the demo's fiscal profile: {e:?}"))?;
    payhub_store::invoicing::set(store, shop.shop.id, true, Some(&profile)).await?;
    let cid = format!("demo-entrega-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let r = http
        .post("http://127.0.0.1:8080/v1/orders")
        .bearer_auth(&shop.api_key)
        .json(&payhub_tests::sample_order(&cid))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "ingress answered {}", r.status());
    let get_order = || async {
        http.get(format!("http://127.0.0.1:8080/v1/orders/{cid}"))
            .bearer_auth(&shop.api_key)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let wait_for = |status: &'static str| {
        let get_order = &get_order;
        async move {
            poll(&format!("order {status}"), Duration::from_secs(20), || async {
                get_order().await.filter(|o| o["status"] == status)
            })
            .await
        }
    };
    let order = wait_for("awaiting_payment").await?;
    let order_id = order["id"].as_str().context("order id")?.to_string();
    http.post(format!("http://{SANDBOX}/sandbox/charges/{order_id}/pay"))
        .json(&serde_json::json!({}))
        .send()
        .await?;
    let paid = wait_for("paid").await?;
    step(
        start,
        &format!(
            "order {cid} paid; delivery promised by {} (shop rule: 2 business days to PR)",
            paid["shipment"]["promisedDeliveryOn"].as_str().unwrap_or("?")
        ),
    );
    // The receipt: e-mailed with the confirmation, and the same bytes every fetch.
    let fetch_receipt = |layout: &'static str| {
        let cid = cid.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.1:8080/v1/orders/{cid}/receipt?layout={layout}"))
                .bearer_auth(&shop.api_key)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 200, "the receipt answered {}", r.status());
            let sha = r
                .headers()
                .get("x-payhub-receipt-sha256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            anyhow::Ok((r.bytes().await?.to_vec(), sha))
        }
    };
    let confirmation = poll(
        "the confirmation e-mail with its receipt",
        Duration::from_secs(20),
        || async {
            let mails: Value = http
                .get(format!("http://{SANDBOX}/sandbox/emails"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            mails["emails"]
                .as_array()?
                .iter()
                .find(|m| {
                    m["subject"]
                        .as_str()
                        .is_some_and(|s| s.contains(&cid) && s.contains("Pagamento confirmado"))
                })
                .cloned()
        },
    )
    .await?;
    let attached = confirmation["data"]
        .as_str()
        .unwrap_or("")
        .matches("application/pdf")
        .count();
    let (a4, sha) = fetch_receipt("a4").await?;
    let (a4_again, _) = fetch_receipt("a4").await?;
    let (roll, _) = fetch_receipt("80mm").await?;
    anyhow::ensure!(a4 == a4_again, "the receipt changed between two fetches");
    std::fs::write(".demo/comprovante-a4.pdf", &a4)?;
    std::fs::write(".demo/comprovante-80mm.pdf", &roll)?;
    step(
        start,
        &format!(
            "receipt: {attached} PDFs attached to the confirmation; A4 {} bytes (sha256 {}), identical on a second fetch; 80 mm {} bytes (saved in .demo/)",
            a4.len(),
            &sha[..16.min(sha.len())],
            roll.len()
        ),
    );

    // The invoice: issued at the sandbox's Focus NFe, shown in the order, e-mailed.
    let invoiced = poll("the invoice to be issued", Duration::from_secs(20), || async {
        get_order().await.filter(|o| o["invoice"]["status"] == "issued")
    })
    .await?;
    let invoice = &invoiced["invoice"];
    let at_service: Value = http
        .get(format!("http://{SANDBOX}/sandbox/invoices"))
        .send()
        .await?
        .json()
        .await?;
    let held = at_service["invoices"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["reference"] == invoice["reference"]))
        .context("the sandbox's Focus NFe holds the invoice")?;
    anyhow::ensure!(held["status"] == "autorizado", "the sandbox holds {held}");
    let danfe = http
        .get(invoice["pdfUrl"].as_str().context("the DANFE link")?)
        .send()
        .await?;
    anyhow::ensure!(danfe.status().as_u16() == 200, "the DANFE answered {}", danfe.status());
    let mail = poll("the invoice e-mail", Duration::from_secs(20), || async {
        let mails: Value = http
            .get(format!("http://{SANDBOX}/sandbox/emails"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        mails["emails"].as_array()?.iter().find_map(|m| {
            m["subject"]
                .as_str()
                .filter(|s| s.contains(&format!("Nota fiscal do pedido {cid}")))
                .map(str::to_string)
        })
    })
    .await?;
    step(
        start,
        &format!(
            "invoice issued in the sandbox's Focus NFe (homologation): NF-e no. {} series {}, access key {}, ref {} ({} request(s)); DANFE {}; e-mailed: \"{mail}\"",
            invoice["number"].as_str().unwrap_or("?"),
            invoice["series"].as_str().unwrap_or("?"),
            invoice["accessKey"].as_str().unwrap_or("?"),
            invoice["reference"].as_str().unwrap_or("?"),
            held["requests"],
            invoice["pdfUrl"].as_str().unwrap_or("?"),
        ),
    );

    let report = |body: Value| {
        let cid = cid.clone();
        async move {
            let r = http
                .post(format!("http://127.0.0.1:8080/v1/orders/{cid}/fulfilment"))
                .bearer_auth(&shop.api_key)
                .json(&body)
                .send()
                .await?;
            let code = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((code, v))
        }
    };
    let (code, _) = report(serde_json::json!({"status": "fulfilling", "by": "maria@loja-demo.example.com"})).await?;
    anyhow::ensure!(code == 202, "fulfilling answered {code}");
    wait_for("fulfilling").await?;
    step(
        start,
        "forwarded for delivery (fulfilling), by maria@loja-demo.example.com",
    );
    let (code, problem) = report(serde_json::json!({"status": "delivered"})).await?;
    anyhow::ensure!(code == 409, "an illegal move answered {code}");
    step(
        start,
        &format!(
            "an illegal move (fulfilling -> delivered) refused: {code} \"{}\"",
            problem["detail"].as_str().unwrap_or("?")
        ),
    );
    let (code, _) = report(serde_json::json!({
        "status": "shipped", "carrier": "Correios", "trackingCode": "QB123456789BR",
        "trackingUrl": "https://rastreamento.correios.com.br/app/index.php?objetos=QB123456789BR"
    }))
    .await?;
    anyhow::ensure!(code == 202, "shipped answered {code}");
    wait_for("shipped").await?;
    let mail = poll("the tracking e-mail", Duration::from_secs(20), || async {
        let mails: Value = http
            .get(format!("http://{SANDBOX}/sandbox/emails"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        mails["emails"]
            .as_array()?
            .iter()
            .find(|m| {
                m["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains(&cid) && s.contains("enviado"))
            })
            .cloned()
    })
    .await?;
    step(
        start,
        &format!(
            "shipped with Correios QB123456789BR; e-mail to {}: \"{}\" (with the tracking link)",
            mail["rcpt_to"][0].as_str().unwrap_or("?"),
            mail["subject"].as_str().unwrap_or("")
        ),
    );
    let (code, _) = report(serde_json::json!({"status": "delivered"})).await?;
    anyhow::ensure!(code == 202, "delivered answered {code}");
    let delivered = wait_for("delivered").await?;
    let history: Vec<String> = delivered["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    format!(
                        "{} ({})",
                        e["to"].as_str().unwrap_or("?"),
                        e["by"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    step(start, &format!("delivered; history: {}", history.join(" -> ")));
    // The survey: the invitation's link, answered once.
    let invitation = poll("the survey invitation", Duration::from_secs(20), || async {
        let mails: Value = http
            .get(format!("http://{SANDBOX}/sandbox/emails"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        mails["emails"]
            .as_array()?
            .iter()
            .find(|m| {
                m["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains(&cid) && s.contains("Como foi"))
            })
            .cloned()
    })
    .await?;
    let text = payhub_tests::email_text(invitation["data"].as_str().unwrap_or(""));
    let link = text
        .find("http://")
        .and_then(|i| text[i..].split_whitespace().next())
        .context("the survey link")?
        .to_string();
    let page = http.get(&link).send().await?.status().as_u16();
    let answered = http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("score=9&comment=Chegou+antes+do+prazo")
        .send()
        .await?
        .status()
        .as_u16();
    let again = http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("score=2")
        .send()
        .await?
        .status()
        .as_u16();
    let results = poll("the survey results", Duration::from_secs(20), || async {
        let r: Value = http
            .get("http://127.0.0.1:8082/v1/reports/survey")
            .bearer_auth(&shop.api_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r["answered"].as_i64() >= Some(1)).then_some(r)
    })
    .await?;
    step(
        start,
        &format!(
            "survey: invitation e-mailed, page {page}, answer 9 -> {answered}, a second answer -> {again}; NPS {} over {} answer(s)",
            results["nps"], results["answered"]
        ),
    );
    let counts = poll("the deliveries report", Duration::from_secs(20), || async {
        let r: Value = http
            .get("http://127.0.0.1:8082/v1/reports/deliveries")
            .bearer_auth(&shop.api_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r["delivered"].as_i64() >= Some(1)).then_some(r)
    })
    .await?;
    step(
        start,
        &format!(
            "reporter: {} delivered, {} on time, {} late",
            counts["delivered"], counts["onTime"], counts["late"]
        ),
    );
    Ok(())
}

/// The day's close (issue 13): reconciled with the providers, and the
/// shop's daily report made, stored and e-mailed to its management list
/// with its CSV and PDF, as an operator does it with payhubctl.
async fn day_closed(
    start: Instant,
    http: &reqwest::Client,
    dir: &Path,
    database_url: &str,
    store: &payhub_store::Store,
    shop: &payhub_store::shops::NewShopCredentials,
) -> anyhow::Result<()> {
    let ctl = |args: &[&str]| {
        std::process::Command::new(dir.join("payhubctl"))
            .args(args)
            .env("PAYHUB_DATABASE_URL", database_url)
            .env("PAYHUB_REPORTER_URL", "http://127.0.0.1:8082")
            .output()
    };
    let id = shop.shop.id.to_string();
    let out = ctl(&[
        "shop",
        "set-report-emails",
        &id,
        "--email",
        "gerencia@loja-demo.example.com",
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "set-report-emails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The shop's day, in its time zone (its delivery rules').
    let (offset,): (Option<i32>,) =
        sqlx::query_as("SELECT (order_rules->'deliveryTime'->>'utcOffsetHours')::int FROM shops WHERE id = $1")
            .bind(shop.shop.id)
            .fetch_one(&store.pool)
            .await?;
    let offset = time::UtcOffset::from_hms(offset.unwrap_or(0) as i8, 0, 0)?;
    let local_today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    let today = local_today.to_string();
    // Reconciliation compares UTC days (as the providers list them): each
    // UTC day the shop's day touches.
    let first = local_today
        .midnight()
        .assume_offset(offset)
        .to_offset(time::UtcOffset::UTC);
    let last = first + time::Duration::days(1) - time::Duration::seconds(1);
    let mut days = vec![first.date()];
    if last.date() != first.date() {
        days.push(last.date());
    }
    for day in days {
        let day = day.to_string();
        let out = ctl(&["reconcile", "--date", &day])?;
        let run: Value = serde_json::from_slice(&out.stdout).context("payhubctl reconcile prints its run")?;
        step(
            start,
            &format!(
                "reconciled {day} (UTC) with the providers (payhubctl reconcile): {} charge(s) checked, {} ({} open); not compared: {}",
                run["checked"], run["status"], run["open"], run["notCompared"]
            ),
        );
    }
    let out = ctl(&["report", "run", "--period", "daily", "--date", &today, "--shop", &id])?;
    anyhow::ensure!(
        out.status.success(),
        "report run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).context("payhubctl report run prints the report")?;
    let summary = &report["summary"];
    anyhow::ensure!(
        summary["reconciliation"] == "clean",
        "the shop's day is not reconciled clean: {report}"
    );
    let mail = poll("the daily report e-mail", Duration::from_secs(20), || async {
        let mails: Value = http
            .get(format!("http://{SANDBOX}/sandbox/emails"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        mails["emails"]
            .as_array()?
            .iter()
            .find(|m| {
                m["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains("Relatório diário") && s.contains("Loja Demo"))
                    && m["data"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("relatorio-daily-{today}.pdf")))
            })
            .cloned()
    })
    .await?;
    step(
        start,
        &format!(
            "daily report {today} stored (sha256 {}) and e-mailed to {} with its CSV and PDF: {} received, {} paid, conversion {}, p50 to paid {} ms, reconciliation {}",
            report["contentSha256"]
                .as_str()
                .and_then(|h| h.get(..12))
                .unwrap_or("?"),
            mail["rcpt_to"],
            summary["received"],
            summary["paid"],
            summary["conversion"].as_str().unwrap_or("?"),
            summary["timeToPaidP50Ms"],
            summary["reconciliation"].as_str().unwrap_or("?"),
        ),
    );
    Ok(())
}
