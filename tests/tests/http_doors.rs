//! The HTTP doors' limits (issue 9 §5): a client that never finishes its
//! request head is cut off, requests over the concurrency limit are
//! answered 503 at once, metric labels stay bounded whatever a client
//! sends, the ops routes can live on their own port, and a shop's stock
//! callback on a private address is never called (and the answer does not
//! say why).

use payhub_core::url_safety::WebhookUrlPolicy;
use payhub_service::{CommonConfig, HttpLimits, HttpOptions};
use payhub_tests::{TestApp, sample_order};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const STRICT: WebhookUrlPolicy = WebhookUrlPolicy {
    require_https: false,
    allow_private: false,
};

/// A second ingress on the test's installation, with tight limits, the
/// ops routes on their own port and production's address rules for stock
/// callbacks. Returns (public URL, ops URL, its shutdown token).
async fn strict_ingress(app: &TestApp, limits: HttpLimits) -> (String, String, CancellationToken) {
    let common = CommonConfig {
        database_url: app.database_url.clone(),
        amqp_url: payhub_tests::amqp_url(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        topology: app.topology.clone(),
        prefetch: 4,
        db_max_connections: 3,
    };
    let stop = CancellationToken::new();
    let ingress = ingress::Application::build_with(
        ingress::Config {
            common,
            max_body_bytes: 256 * 1024,
            charge_creator_url: "http://127.0.0.1:9".into(),
            internal_token: payhub_service::internal::DEVELOPMENT_TOKEN.to_string().into(),
            card_timeout: Duration::from_secs(5),
            public_webhook_base_url: None,
        },
        ingress::Options {
            stock_urls: STRICT,
            http: Some(HttpOptions {
                limits,
                ops_addr: Some("127.0.0.1:0".parse().unwrap()),
            }),
            wake_card_budget: None,
            ..Default::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let (public, ops) = (
        format!("http://{}", ingress.local_addr()),
        format!("http://{}", ingress.ops_addr()),
    );
    tokio::spawn(ingress.run_until_stopped());
    (public, ops, stop)
}

fn tight() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_concurrency: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = TestApp::spawn().await;
    let (public, _ops, stop) = strict_ingress(&app, tight()).await;
    let addr = public.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"POST /v1/orders HTTP/1.1\r\nHost: payhub\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    // The server closes the connection (maybe after a 408) well before 5 s.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow client is still connected after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    stop.cancel();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_concurrency_limit_is_answered_503_at_once() {
    let app = TestApp::spawn().await;
    let (public, _ops, stop) = strict_ingress(&app, tight()).await;
    let addr = public.trim_start_matches("http://").to_string();
    // One request holds the only slot: its body never finishes.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/orders HTTP/1.1\r\nHost: payhub\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"corr",
            app.api_key()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = app.http.get(format!("{public}/v1/orders/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // The slow body runs out of time and frees the slot.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 4") || answer.is_empty(), "{answer}");
    let r = app.http.get(format!("{public}/v1/orders/x")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the slot is free again");
    stop.cancel();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_routes_move_to_the_ops_port_and_labels_stay_bounded() {
    let app = TestApp::spawn().await;
    let limits = HttpLimits {
        max_concurrency: 64,
        ..tight()
    };
    let (public, ops, stop) = strict_ingress(&app, limits).await;
    assert_eq!(
        app.http.get(format!("{public}/metrics")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        app.http.get(format!("{public}/readyz")).send().await.unwrap().status(),
        404
    );
    assert!(
        payhub_tests::eventually(Duration::from_secs(20), || async {
            matches!(app.http.get(format!("{ops}/readyz")).send().await, Ok(r) if r.status() == 200)
        })
        .await,
        "ready on the ops port"
    );

    // A method of the client's invention, and paths full of its values.
    let odd = reqwest::Method::from_bytes(b"FOOBAR").unwrap();
    let r = app
        .http
        .request(odd, format!("{public}/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    for i in 0..3 {
        let r = app
            .http
            .get(format!("{public}/v1/orders/client-chosen-{i}"))
            .bearer_auth(app.api_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let metrics = app
        .http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("payhub_http_requests_total{"))
        .collect();
    assert!(!metrics.contains("FOOBAR"), "the method string became a label value");
    assert!(!metrics.contains("client-chosen"), "a path value became a label value");
    assert!(
        series
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("route=\"/v1/orders\"")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("route=\"/v1/orders/{correlation_id}\"")),
        "{series:#?}"
    );
    let allowed = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"];
    for l in &series {
        let method = l.split("method=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert!(allowed.contains(&method), "{l}");
    }
    assert!(!metrics.contains(&app.shop.shop.id.to_string()), "a shop id in a label");
    stop.cancel();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_callback_on_a_private_address_is_never_called_and_the_answer_is_neutral() {
    let app = TestApp::spawn().await;
    let limits = HttpLimits {
        max_concurrency: 64,
        ..tight()
    };
    let (public, _ops, stop) = strict_ingress(&app, limits).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((_sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    for (i, url) in [
        format!("http://127.0.0.1:{port}/stock"),
        format!("http://localhost:{port}/stock"),
        format!("http://[::ffff:127.0.0.1]:{port}/stock"),
        "http://169.254.169.254/latest/meta-data".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let rules: payhub_core::rules::OrderRules =
            serde_json::from_value(json!({"stock": {"kind": "callback", "url": url, "timeoutMs": 1000}})).unwrap();
        payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
            .await
            .unwrap();
        let r = app
            .http
            .post(format!("{public}/v1/orders"))
            .bearer_auth(app.api_key())
            .json(&sample_order(&format!("ssrf-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{url}");
        let body: Value = r.json().await.unwrap();
        let text = body.to_string();
        for leak in [
            "127.0.0.1",
            "localhost",
            "169.254",
            "::ffff",
            &port.to_string(),
            "unsafe",
            "loopback",
            "http",
        ] {
            assert!(
                !text.replace("https://payhub.dev/problems", "").contains(leak),
                "{leak} leaks in {text}"
            );
        }
        assert!(text.contains("could not confirm the items"), "{text}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the private address was never called");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    stop.cancel();
    app.stop().await;
}
