//! The hosted checkout (issue 11) in a real browser: Debian's Chromium,
//! headless, driven over W3C WebDriver by Debian's chromedriver (the
//! harness's small client, `payhub_tests::webdriver`), against the
//! real services, RabbitMQ and PostgreSQL, with the sandbox standing in for
//! OpenPix, PixelPay and the shop. Each test saves screenshots under
//! `target/tmp/screenshots/`.

use payhub_tests::leaks::{assert_nowhere, logs};
use payhub_tests::webdriver::{Element, Session};
use payhub_tests::{TestApp, eventually, free_addr, sample_order};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser at a time: two cores are shared with the services under test.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Browser {
    driver: Session,
    chromedriver: Child,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

#[derive(Default)]
struct BrowserOptions {
    javascript_off: bool,
    accept_language: Option<&'static str>,
}

impl Browser {
    async fn start(opts: BrowserOptions) -> Browser {
        let turn = ONE_BROWSER.lock().await;
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        );
        let addr = free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let chromedriver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://{addr}");
        let client = reqwest::Client::new();
        assert!(
            eventually(Duration::from_secs(15), || async {
                client.get(format!("{url}/status")).send().await.is_ok()
            })
            .await,
            "chromedriver never listened"
        );
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=390,1100",
        ]
        .map(String::from)
        .to_vec();
        let mut prefs = serde_json::Map::new();
        if opts.javascript_off {
            args.push("--blink-settings=scriptEnabled=false".into());
            prefs.insert("profile.managed_default_content_settings.javascript".into(), json!(2));
        }
        let lang = opts.accept_language.unwrap_or("pt-BR,pt");
        prefs.insert("intl.accept_languages".into(), json!(lang));
        args.push(format!("--lang={}", lang.split(',').next().unwrap()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args, "prefs": prefs},
        });
        let driver = Session::new(&url, caps).await.expect("a Chromium session");
        Browser {
            driver,
            chromedriver,
            _turn: turn,
        }
    }

    fn d(&self) -> &Session {
        &self.driver
    }

    async fn find(&self, id: &str) -> anyhow::Result<Element> {
        self.driver.find(&format!("#{id}")).await
    }

    async fn value(&self, id: &str) -> Option<String> {
        let e = self.find(id).await.ok()?;
        self.driver.prop(&e, "value").await.ok()?.as_str().map(str::to_string)
    }

    async fn href(&self, id: &str) -> String {
        let e = self.find(id).await.expect("the link");
        self.driver.attr(&e, "href").await.unwrap().expect("an href")
    }

    async fn click(&self, id: &str) {
        let e = self.find(id).await.expect("the element");
        self.driver.click(&e).await.unwrap();
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        self.d().screenshot(&path).await.expect("a screenshot");
        path
    }

    async fn text(&self, id: &str) -> String {
        match self.find(id).await {
            Ok(e) => self.driver.text(&e).await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the element `id` shows `want` (the page changing by itself).
    async fn wait_text(&self, id: &str, want: &str, timeout: Duration) -> bool {
        eventually(timeout, || async { self.text(id).await.contains(want) }).await
    }

    async fn fill(&self, id: &str, value: &str) {
        let e = self.find(id).await.unwrap();
        self.driver.clear(&e).await.unwrap();
        self.driver.send_keys(&e, value).await.unwrap();
    }

    /// Whether the image `id` has loaded (under the page's CSP).
    async fn image_loaded(&self, id: &str) -> bool {
        let img = self.find(id).await.expect("the image");
        self.driver
            .execute("return arguments[0].complete && arguments[0].naturalWidth > 0", &[&img])
            .await
            .unwrap()
            == json!(true)
    }

    async fn quit(self) {
        let _ = self.driver.quit().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

fn with_checkout(mut order: Value, app: &TestApp) -> Value {
    let base = app.sandbox.shop_webhook_url().replace("/shop/webhooks", "");
    order["checkout"] = json!({
        "returnUrl": format!("{base}/shop/checkout/return?ref=abc"),
        "cancelUrl": format!("{base}/shop/checkout/cancel"),
    });
    order
}

async fn create(app: &TestApp, order: &Value) -> Value {
    let r = app.post_order(order).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    assert!(body["checkout"]["url"].is_string(), "{body:#}");
    body
}

/// The shop's check of the signed return, as the README tells shops to do.
fn verify_return(app: &TestApp, url: &reqwest::Url, want_order: &str, want_status: &str) {
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("ref").map(String::as_str),
        Some("abc"),
        "the shop's own query is kept: {url}"
    );
    assert_eq!(q["payhub_order"], want_order);
    assert_eq!(q["payhub_status"], want_status);
    let key = ring::digest::digest(&ring::digest::SHA256, app.api_key().as_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_ref());
    let msg = format!("{}.{}.{}", q["payhub_order"], q["payhub_status"], q["payhub_ts"]);
    let sig: String = ring::hmac::sign(&key, msg.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(q["payhub_signature"], sig, "the return is signed under the shop's key");
    // A tampered status does not verify.
    let forged = format!("{}.{}.{}", q["payhub_order"], "paid", q["payhub_ts"]);
    if want_status != "paid" {
        let forged_sig: String = ring::hmac::sign(&key, forged.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(q["payhub_signature"], forged_sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pix_checkout_shows_the_qr_code_and_turns_paid_by_itself() {
    let app = TestApp::spawn().await;
    let view = create(&app, &with_checkout(sample_order("co-pix"), &app)).await;
    let url = view["checkout"]["url"].as_str().unwrap().to_string();
    let order_id = view["id"].as_str().unwrap().to_string();
    app.wait_for_status("co-pix", "awaiting_payment").await;
    // The order's first webhook hands the shop the same checkout URL (the
    // session is opened before the order's event is published).
    assert!(
        eventually(Duration::from_secs(15), || async {
            !app.shop_hooks_for("co-pix", "awaiting_payment").is_empty()
        })
        .await,
        "the first webhook"
    );
    let hook: Value = serde_json::from_str(&app.shop_hooks_for("co-pix", "awaiting_payment")[0].body).unwrap();
    assert_eq!(hook["data"]["checkout"]["url"], url, "{hook:#}");
    let br_code = app.get_order("co-pix").await.json::<Value>().await.unwrap()["charge"]["brCode"]
        .as_str()
        .unwrap()
        .to_string();

    let b = Browser::start(BrowserOptions::default()).await;
    b.d().goto(&url).await.unwrap();
    assert_eq!(b.text("status").await, "Aguardando pagamento");
    let page = b.d().source().await.unwrap();
    assert!(page.contains("R$ 227,79"), "the total in the order's currency");
    assert!(page.contains("Camiseta Branca Unissex") && page.contains("Meia esportiva"));
    // The QR image is payhub's own, drawn and loaded.
    assert!(b.image_loaded("qr").await, "the QR code image loads under the CSP");
    let code = b.value("brcode").await;
    assert_eq!(
        code.as_deref(),
        Some(br_code.as_str()),
        "the copy-and-paste code is the BR Code"
    );
    b.click("copy").await;
    assert!(b.wait_text("copy-done", "Código copiado", Duration::from_secs(5)).await);
    assert!(b.text("countdown").await.contains(':'), "the countdown runs");
    b.screenshot("pix-checkout").await;

    // The buyer pays in the sandbox; the page changes by itself.
    app.pay_until_acknowledged(&order_id).await;
    assert!(
        b.wait_text("status", "Pago", Duration::from_secs(30)).await,
        "the status never turned paid: {}",
        b.text("status").await
    );
    b.screenshot("pix-checkout-paid").await;
    // Then the result page, and back to the shop with a signed return.
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.text("back").await.contains("Voltar para a loja")
        })
        .await
    );
    b.screenshot("pix-checkout-result").await;
    let landed = back_at_the_shop(&b).await;
    verify_return(&app, &landed, "co-pix", "paid");
    b.quit().await;
    app.stop().await;
}

/// Waits until the browser is on the shop's return page, and gives its URL.
async fn back_at_the_shop(b: &Browser) -> reqwest::Url {
    assert!(
        eventually(Duration::from_secs(15), || async {
            b.d()
                .current_url()
                .await
                .is_ok_and(|u| u.path() == "/shop/checkout/return")
        })
        .await,
        "the buyer was never sent back to the shop"
    );
    b.d().current_url().await.unwrap()
}

/// The shared PixelPay card order without its card: the buyer types it on
/// the checkout page.
fn card_order(cid: &str, total: &str) -> Value {
    let mut order = payhub_tests::card_order(cid, total);
    order.as_object_mut().expect("an order object").remove("card");
    order
}

async fn pay_by_card(b: &Browser, url: &str, number: &str) {
    b.d().goto(url).await.unwrap();
    b.fill("number", number).await;
    b.fill("expiry", "12/30").await;
    b.fill("cvv", "739").await;
    b.fill("address", "Col. Palmira 12").await;
    b.fill("city", "Tegucigalpa").await;
    b.fill("state", "HN-FM").await;
    assert_eq!(
        b.value("country").await.as_deref(),
        Some("HN"),
        "the country comes from the order's currency"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_paid_and_a_card_declined_on_the_checkout_and_the_card_rests_nowhere() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let ok = create(&app, &with_checkout(card_order("co-card-ok", "150.00"), &app)).await;
    let no = create(&app, &with_checkout(card_order("co-card-no", "2.00"), &app)).await;

    let b = Browser::start(BrowserOptions {
        accept_language: Some("es-HN,es"),
        ..Default::default()
    })
    .await;
    // A field error comes back on the form, without the number.
    pay_by_card(&b, ok["checkout"]["url"].as_str().unwrap(), "4111111111111112").await;
    b.click("pay").await;
    assert!(
        b.wait_text("errors", "Número de tarjeta inválido", Duration::from_secs(10))
            .await,
        "{}",
        b.d().source().await.unwrap_or_default()
    );
    assert!(!b.d().source().await.unwrap().contains("4111111111111112"));
    b.screenshot("card-checkout-error").await;

    pay_by_card(
        &b,
        ok["checkout"]["url"].as_str().unwrap(),
        payhub_sandbox::PIXELPAY_TEST_VISA,
    )
    .await;
    b.screenshot("card-checkout-form").await;
    b.click("pay").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            b.d().source().await.unwrap_or_default().contains("Pago confirmado")
        })
        .await,
        "no paid result: {}",
        b.d().source().await.unwrap_or_default()
    );
    b.screenshot("card-checkout-paid").await;
    let paid = app.wait_for_status("co-card-ok", "paid").await;
    assert_eq!(paid["payment"]["method"], "card");
    let back = b.href("back").await;
    verify_return(&app, &reqwest::Url::parse(&back).unwrap(), "co-card-ok", "paid");

    pay_by_card(
        &b,
        no["checkout"]["url"].as_str().unwrap(),
        payhub_sandbox::PIXELPAY_TEST_VISA,
    )
    .await;
    b.click("pay").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            b.d().source().await.unwrap_or_default().contains("Pago rechazado")
        })
        .await
    );
    assert!(
        b.d().source().await.unwrap().contains("no se cobró nada"),
        "what to do is said"
    );
    b.screenshot("card-checkout-declined").await;
    app.wait_for_status("co-card-no", "failed").await;
    let back = b.href("back").await;
    verify_return(&app, &reqwest::Url::parse(&back).unwrap(), "co-card-no", "failed");
    // The paid page cannot be paid again.
    b.d().goto(ok["checkout"]["url"].as_str().unwrap()).await.unwrap();
    assert!(b.find("number").await.is_err(), "no card form on a paid order");
    b.quit().await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nowhere(
        &app,
        &[
            payhub_sandbox::PIXELPAY_TEST_VISA.to_string(),
            "4111 1111 1111 1111".into(),
            "\"739\"".into(),
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_javascript_off_the_page_works_and_a_button_refreshes_the_status() {
    let app = TestApp::spawn().await;
    let view = create(&app, &with_checkout(sample_order("co-nojs"), &app)).await;
    let url = view["checkout"]["url"].as_str().unwrap().to_string();
    let order_id = view["id"].as_str().unwrap().to_string();
    app.wait_for_status("co-nojs", "awaiting_payment").await;

    let b = Browser::start(BrowserOptions {
        javascript_off: true,
        ..Default::default()
    })
    .await;
    b.d().goto(&url).await.unwrap();
    assert!(b.find("qr").await.is_ok(), "the QR code shows without scripts");
    let refresh = b.find("refresh").await.unwrap();
    assert!(
        b.d().displayed(&refresh).await.unwrap(),
        "the refresh button shows without scripts"
    );
    assert!(
        !b.d().displayed(&b.find("copy").await.unwrap()).await.unwrap(),
        "no copy button that cannot work"
    );
    b.screenshot("pix-checkout-nojs").await;
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status("co-nojs", "paid").await;
    // Without scripts nothing changes by itself; the button does it.
    assert_eq!(b.text("status").await, "Aguardando pagamento");
    b.d().click(&refresh).await.unwrap();
    assert!(b.wait_text("status", "Pago", Duration::from_secs(10)).await);
    assert!(b.d().source().await.unwrap().contains("Pagamento confirmado"));
    b.screenshot("pix-checkout-nojs-paid").await;
    let back = b.href("back").await;
    verify_return(&app, &reqwest::Url::parse(&back).unwrap(), "co-nojs", "paid");
    b.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_follows_the_buyer_the_browser_and_the_shop() {
    let app = TestApp::spawn().await;
    let view = create(&app, &with_checkout(sample_order("co-lang"), &app)).await;
    let url = view["checkout"]["url"].as_str().unwrap().to_string();

    let b = Browser::start(BrowserOptions {
        accept_language: Some("es-CO,es;q=0.9"),
        ..Default::default()
    })
    .await;
    b.d().goto(&url).await.unwrap();
    let html = b.d().find("html").await.unwrap();
    assert_eq!(b.d().attr(&html, "lang").await.unwrap().as_deref(), Some("es"));
    assert!(b.d().source().await.unwrap().contains("Paga con PIX"));
    b.screenshot("checkout-es").await;
    // The buyer's own choice wins, by keyboard alone.
    let link = b.find("lang-pt").await.unwrap();
    b.d().send_keys(&link, "\u{E007}").await.unwrap(); // Enter
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.d().source().await.unwrap_or_default().contains("Pague com PIX")
        })
        .await
    );
    b.quit().await;

    // The shop's setting, for a browser that names neither language.
    let shop = app.shop.shop.id.to_string();
    let out = app.payhubctl(&["shop", "set-checkout", &shop, "--locale", "es", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = app.payhubctl(&["shop", "set-checkout", &shop, "--locale", "en"]);
    assert!(!bad.status.success(), "only pt-BR and es");
    let page = app
        .http
        .get(&url)
        .header("accept-language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(page.text().await.unwrap().contains("<html lang=\"es\">"));
    app.stop().await;
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn form_body(fields: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://x/").unwrap();
    u.query_pairs_mut().extend_pairs(fields);
    u.query().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_form_refuses_posts_from_elsewhere_and_frames_only_the_shops_origins() {
    let app = TestApp::spawn().await;
    app.use_sandbox_pixelpay();
    let view = create(&app, &with_checkout(card_order("co-csrf", "150.00"), &app)).await;
    let url = view["checkout"]["url"].as_str().unwrap().to_string();
    let form = [
        ("number", payhub_sandbox::PIXELPAY_TEST_VISA),
        ("expiry", "12/30"),
        ("cvv", "739"),
        ("holder", "Pedro Perez"),
        ("address", "Col. Palmira 12"),
        ("city", "Tegucigalpa"),
        ("state", "HN-FM"),
        ("country", "HN"),
    ];
    // No token: refused, nothing charged.
    let r = app
        .http
        .post(format!("{url}/card"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The right token from another site: refused too.
    let csrf: String = sqlx::query_scalar("SELECT csrf_token FROM checkout_sessions")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    let mut with_token: Vec<(&str, &str)> = form.to_vec();
    with_token.push(("csrf", &csrf));
    let r = app
        .http
        .post(format!("{url}/card"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&with_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(app.sandbox.pixelpay_transactions().is_empty(), "nothing was charged");
    assert_eq!(app.order_status("co-csrf").await.as_deref(), Some("accepted"));
    // An unknown or malformed token is a plain 404.
    let r = app
        .http
        .get(format!("{}/checkout/{}", app.ingress_url, "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // The shop's own origins may frame the page.
    let shop = app.shop.shop.id.to_string();
    for bad in [
        "http://shop.example",
        "https://shop.example/path",
        "javascript:alert(1)",
    ] {
        let out = app.payhubctl(&["shop", "set-checkout", &shop, "--origin", bad]);
        assert!(!out.status.success(), "{bad} is refused");
    }
    let out = app.payhubctl(&[
        "shop",
        "set-checkout",
        &shop,
        "--origin",
        "https://shop.example",
        "--origin",
        "https://www.shop.example:8443",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = app.http.get(&url).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors https://shop.example https://www.shop.example:8443"),
        "{csp}"
    );
    // Bad checkout blocks are field errors.
    let mut bad = card_order("co-bad", "10.00");
    bad["checkout"] = json!({"returnUrl": "http://shop.example/ok", "cancelUrl": "javascript:alert(1)"});
    let r = app.post_order(&bad).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    let text = body.to_string();
    assert!(
        text.contains("checkout.returnUrl") && text.contains("checkout.cancelUrl"),
        "{text}"
    );
    app.stop().await;
}

fn pagoseguro_order(cid: &str) -> Value {
    json!({
        "correlationID": cid,
        "provider": "pagoseguro",
        "currency": "COP",
        "items": [{"title": "Camiseta Roja", "price": "75000.00", "qty": 1, "total": "75000.00"}],
        "total": "75000.00",
        // No phone: payhub reads only Brazilian numbers so far (a Colombian one is refused).
        "customer": {"name": "Pedro Pérez", "email": "pedro.perez@example.com"},
    })
}

/// The buyer opens the checkout, is sent on to (the sandbox's) Pago Seguro
/// by the auto-submitting form, chooses there, and comes back through
/// webhook-verifier's return door to payhub's result page.
async fn through_pagoseguro(b: &Browser, url: &str, decision: &str, tamper: &str) {
    b.d().goto(url).await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async { b.find(decision).await.is_ok() }).await,
        "never reached Pago Seguro's page: {}",
        b.d().source().await.unwrap_or_default()
    );
    let select = b.find("tamper").await.unwrap();
    b.d()
        .execute(&format!("arguments[0].value = '{tamper}'"), &[&select])
        .await
        .unwrap();
    b.click(decision).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            b.d().current_url().await.is_ok_and(|u| u.path().ends_with("/done"))
        })
        .await,
        "never came back to payhub's result page: {:?}",
        b.d().current_url().await
    );
}

async fn returns_of(app: &TestApp, cid: &str) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT r.verdict, r.status, r.reason FROM pagoseguro_returns r JOIN orders o ON o.id = r.order_id
         WHERE o.correlation_id = $1 ORDER BY r.received_at",
    )
    .bind(cid)
    .fetch_all(&app.store.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pagoseguro_round_trip_approved_rejected_and_tampered_never_pays_on_a_return_alone() {
    logs();
    let app = TestApp::spawn().await;
    app.use_sandbox_pagoseguro();
    // Without a checkout a Pago Seguro order could never be paid: refused.
    let r = app.post_order(&pagoseguro_order("ps-nocheckout")).await;
    assert_eq!(r.status().as_u16(), 422);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"checkout\"") && text.contains("required"), "{text}");
    let mut in_brl = pagoseguro_order("ps-brl");
    in_brl["currency"] = json!("BRL");
    assert_eq!(
        app.post_order(&with_checkout(in_brl, &app)).await.status().as_u16(),
        422
    );

    let mut urls = Vec::new();
    for cid in ["ps-ok", "ps-no", "ps-flip", "ps-forged"] {
        let v = create(&app, &with_checkout(pagoseguro_order(cid), &app)).await;
        urls.push(v["checkout"]["url"].as_str().unwrap().to_string());
        app.wait_for_status(cid, "awaiting_payment").await;
    }
    // The page posts to Pago Seguro's origin only; the form carries no key.
    let page = app.http.get(&urls[0]).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    let sandbox_origin = app.sandbox.provider_url();
    assert!(csp.contains(&format!("form-action 'self' {sandbox_origin}")), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name=\"hash\"") && html.contains("id=\"pagoseguro-go\""),
        "{html}"
    );
    assert!(!html.contains(payhub_sandbox::PAGOSEGURO_SANDBOX_API_KEY));

    let b = Browser::start(BrowserOptions {
        accept_language: Some("es-CO,es"),
        ..Default::default()
    })
    .await;
    // Approved: a verified 22, but only "being confirmed" (no status query exists).
    through_pagoseguro(&b, &urls[0], "ps-pay", "none").await;
    let src = b.d().source().await.unwrap();
    assert!(src.contains("Estamos confirmando el pago"), "{src}");
    b.screenshot("pagoseguro-approved").await;
    assert_eq!(
        returns_of(&app, "ps-ok").await,
        vec![("verified".into(), Some("authorised".into()), None)]
    );
    // Then back to the shop, signed, with the order's status as it stands.
    let landed = back_at_the_shop(&b).await;
    verify_return(&app, &landed, "ps-ok", "awaiting_payment");

    // Rejected: declined, with what to do and a button to try again.
    through_pagoseguro(&b, &urls[1], "ps-reject", "none").await;
    let src = b.d().source().await.unwrap();
    assert!(
        src.contains("Pago rechazado") && src.contains("inténtalo de nuevo"),
        "{src}"
    );
    assert!(b.find("pagoseguro-go").await.is_ok(), "a retry button");
    b.screenshot("pagoseguro-rejected").await;
    assert_eq!(
        returns_of(&app, "ps-no").await,
        vec![("verified".into(), Some("rejected".into()), None)]
    );

    // A rejection turned into 22 by the buyer: the sign still verifies
    // (status is not covered), so it reads as a verified 22, and still pays nothing.
    through_pagoseguro(&b, &urls[2], "ps-reject", "status").await;
    assert!(b.d().source().await.unwrap().contains("Estamos confirmando el pago"));
    b.screenshot("pagoseguro-tampered-status").await;
    // A wrong sign, another amount, another reference: rejected, "being confirmed".
    for tamper in ["sign", "amount", "reference"] {
        through_pagoseguro(&b, &urls[3], "ps-pay", tamper).await;
        assert!(b.d().source().await.unwrap().contains("Estamos confirmando el pago"));
    }
    b.screenshot("pagoseguro-tampered").await;
    assert_eq!(
        returns_of(&app, "ps-forged").await,
        vec![
            ("rejected".into(), None, Some("bad_signature".into())),
            ("rejected".into(), None, Some("amount_mismatch".into())),
            ("rejected".into(), None, Some("other_order".into())),
        ]
    );
    b.quit().await;

    // No return paid anything.
    for cid in ["ps-ok", "ps-no", "ps-flip", "ps-forged"] {
        assert_eq!(
            app.order_status(cid).await.as_deref(),
            Some("awaiting_payment"),
            "{cid}"
        );
    }
    pagoseguro_confirmation_mails(&app).await;
    // A return for no known order is stored as rejected and shown as "being confirmed".
    let r = app
        .http
        .get(format!(
            "{}/returns/pagoseguro/{}?status=22&sign=x",
            app.verifier_url,
            "a".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("confirmando"));
    let unknown: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pagoseguro_returns WHERE order_id IS NULL AND verdict = 'rejected' AND reason = 'unknown_order'",
    )
    .fetch_one(&app.store.pool)
    .await
    .unwrap();
    assert_eq!(unknown, 1);
    // The API key is nowhere outside charge-creator's sealed row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nowhere(&app, &[payhub_sandbox::PAGOSEGURO_SANDBOX_API_KEY.to_string()]).await;
    app.stop().await;
}

/// payhub's own e-mail about each verified return (issue 11 §2), to the buyer
/// and the shop's admin: reference, approval number and status, an approval
/// told as being confirmed (the order is not paid), a rejection as such;
/// none for an unverifiable return; none twice for a redelivered event.
async fn pagoseguro_confirmation_mails(app: &TestApp) {
    const BUYER: &str = "pedro.perez@example.com";
    const ADMIN: &str = "admin@loja.example.com";
    let reference = |cid: &'static str| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT c.provider_charge_id FROM charges c JOIN orders o ON o.id = c.order_id WHERE o.correlation_id = $1",
        )
        .bind(cid)
        .fetch_one(&app.store.pool)
        .await
        .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.mails_to(BUYER, "Pedido ps-ok: estamos confirmando").len() == 1
                && app.mails_to(ADMIN, "del pedido ps-ok").len() == 1
                && app.mails_to(BUYER, "Pedido ps-no: Pago Seguro rechaz").len() == 1
                && app.mails_to(ADMIN, "del pedido ps-no").len() == 1
                && app.mails_to(BUYER, "Pedido ps-flip: estamos confirmando").len() == 1
        })
        .await,
        "payhub's confirmation e-mails: {:?}",
        app.sandbox
            .emails()
            .iter()
            .map(|m| (&m.rcpt_to, &m.subject))
            .collect::<Vec<_>>()
    );
    let buyer = &app.mails_to(BUYER, "Pedido ps-ok: estamos confirmando")[0];
    let ok_ref = reference("ps-ok").await;
    for want in [
        "Pago Seguro te devolvió a nosotros con el pago aprobado",
        "todavía no figura como pagado",
        &format!("Referencia en Pago Seguro: {ok_ref}"),
        "Número de aprobación: no informado",
        "Estado informado por Pago Seguro: aprobada (22)",
        "Valor: COP 75000.00",
        &format!("{}/my/orders/", app.ingress_url),
    ] {
        assert!(buyer.contains(want), "{want:?} in the buyer's mail:\n{buyer}");
    }
    assert!(!buyer.contains("Pago confirmado"), "{buyer}");
    let admin = &app.mails_to(ADMIN, "del pedido ps-ok")[0];
    for want in [
        "Tienda: Loja Teste",
        &format!("Referencia en Pago Seguro: {ok_ref}"),
        "Número de aprobación: -",
        "Estado informado por el retorno: aprobada (22)",
        "NO marcó el pedido como pagado",
        "Comprador: Pedro Pérez <pedro.perez@example.com>",
    ] {
        assert!(admin.contains(want), "{want:?} in the admin's mail:\n{admin}");
    }
    let rejected = &app.mails_to(BUYER, "Pedido ps-no: Pago Seguro rechaz")[0];
    assert!(
        rejected.contains("Estado informado por Pago Seguro: rechazada (17)"),
        "{rejected}"
    );
    // Nothing for the unverifiable returns.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        app.sandbox
            .emails()
            .iter()
            .all(|m| !m.subject.as_deref().unwrap_or_default().contains("ps-forged")),
        "no mail for a rejected return"
    );

    // A redelivered event sends nothing again.
    let (body,): (Vec<u8>,) = sqlx::query_as(
        "SELECT body FROM outbox
         WHERE routing_key = 'pagoseguro.returned' AND convert_from(body, 'UTF8')::jsonb->>'correlation_id' = 'ps-ok'",
    )
    .fetch_one(&app.store.pool)
    .await
    .unwrap();
    let env = payhub_core::Envelope::from_json(&body).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let broker = payhub_queue::Broker::start(
        &payhub_tests::amqp_url(),
        "redeliver",
        app.topology.clone(),
        stop.clone(),
    );
    broker.wait_connected(Duration::from_secs(10)).await.unwrap();
    broker.publish(&env).await.unwrap();
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1 AND status = 'delivered'")
        .bind(env.id)
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
    assert_eq!(sent, 2, "one to the buyer, one to the admin");
    // Given the notifier time to take the copy: still one mail each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.mails_to(BUYER, "Pedido ps-ok: estamos confirmando").len(), 1);
    assert_eq!(app.mails_to(ADMIN, "del pedido ps-ok").len(), 1);
    stop.cancel();
}

/// The "my orders" link in the buyer's e-mail whose subject has `subject`.
fn order_link_in_mail(app: &TestApp, subject: &str) -> Option<(String, String)> {
    let mail = app
        .sandbox
        .emails()
        .into_iter()
        .find(|m| m.subject.as_deref().is_some_and(|s| s.contains(subject)))?;
    let text = match mail
        .data
        .split("\r\n--")
        .find(|p| p.to_ascii_lowercase().contains("content-type: text/plain"))
    {
        Some(part) if mail.data.contains("multipart/") => {
            payhub_tests::email_text(part.split_once("\r\n").map_or(part, |(_, rest)| rest))
        }
        _ => payhub_tests::email_text(&mail.data),
    };
    let start = text.find(&format!("{}/my/orders/", app.ingress_url))?;
    Some((text[start..].split_whitespace().next()?.to_string(), mail.data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_orders_from_the_buyers_email_shows_the_pix_then_the_paid_order_and_its_receipt() {
    let app = TestApp::spawn().await;
    let cid = "my-pix";
    assert_eq!(app.post_order(&sample_order(cid)).await.status(), 201);
    let order = app.wait_for_status(cid, "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let br_code = app.get_order(cid).await.json::<Value>().await.unwrap()["charge"]["brCode"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(Duration::from_secs(15), || async {
            order_link_in_mail(&app, "pague").is_some()
        })
        .await,
        "the PIX e-mail carries the order's link"
    );
    let (link, _) = order_link_in_mail(&app, "pague").unwrap();
    assert!(link.contains(&order_id), "{link}");

    // Headers: strict CSP, frames only from the shop's origins.
    let r = app.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("frame-ancestors") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let b = Browser::start(BrowserOptions::default()).await;
    b.d().goto(&link).await.unwrap();
    assert_eq!(b.text("status").await, "Aguardando pagamento");
    assert_eq!(b.value("brcode").await.as_deref(), Some(br_code.as_str()));
    assert!(b.image_loaded("qr").await, "the QR code loads under the CSP");
    let page = b.d().source().await.unwrap();
    assert!(page.contains("R$ 227,79") && page.contains("Camiseta Branca Unissex"));
    assert!(b.find("receipt-a4").await.is_err(), "no receipt while unpaid");
    b.screenshot("my-order-waiting").await;

    // JSON: the same content, no buyer data.
    let j: Value = app
        .http
        .get(format!("{link}.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["status"], "awaiting_payment");
    assert_eq!(j["totalMinor"], 22779);
    assert_eq!(j["pix"]["brCode"], br_code.as_str());
    let raw = j.to_string();
    let buyer = &sample_order(cid)["customer"];
    for k in ["name", "email", "taxID"] {
        let v = buyer[k].as_str().unwrap_or_else(|| panic!("the sample buyer's {k}"));
        assert!(!raw.contains(v), "{k} in the JSON: {raw}");
    }

    // Paid: the page shows it, with the receipt link.
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status(cid, "paid").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            order_link_in_mail(&app, "Pagamento confirmado").is_some()
        })
        .await
    );
    let (paid_link, paid_mail) = order_link_in_mail(&app, "Pagamento confirmado").unwrap();
    assert_eq!(paid_link, link, "one link per order");
    b.d().goto(&link).await.unwrap();
    assert_eq!(b.text("status").await, "Pago");
    assert!(b.find("pix").await.is_err(), "no PIX code once paid");
    assert!(b.text("history").await.contains("Pago"));
    b.screenshot("my-order-paid").await;
    let receipt_url = format!("{}{}", app.ingress_url, b.href("receipt-a4").await);
    let got = app.http.get(&receipt_url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/pdf");
    let got = got.bytes().await.unwrap().to_vec();
    let attached = payhub_tests::pdf_attachments(&paid_mail);
    assert_eq!(got, attached[0].1, "the downloaded receipt is the e-mailed one");
    b.quit().await;

    // A wrong token, another order's token, an unknown order: one 404.
    let token = link.rsplit('/').next().unwrap().to_string();
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let other = uuid::Uuid::new_v4();
    let mut answers = Vec::new();
    for url in [
        format!("{}/my/orders/{order_id}/{wrong}", app.ingress_url),
        format!("{}/my/orders/{other}/{token}", app.ingress_url),
        format!(
            "{}{}",
            app.ingress_url,
            payhub_core::order_link::OrderLinks::new(payhub_core::order_link::DEVELOPMENT_KEY).path(other)
        ),
        format!("{}/my/orders/{order_id}/{wrong}/receipt", app.ingress_url),
    ] {
        let r = app.http.get(&url).send().await.unwrap();
        answers.push((r.status().as_u16(), r.text().await.unwrap()));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 404);
    app.stop().await;
}
