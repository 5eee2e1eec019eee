//! The deployment's observability files against the real thing (issue 13
//! §4): the Grafana dashboard's JSON is sound, `promtool test rules` covers
//! every alert, and Debian's `prometheus` server, scraping the services
//! through a short load (orders paid, fulfilled on time and late, card sales
//! approved and declined, a shop endpoint that fails until its dead letters
//! are replayed, a provider outage that holds an order, a reconciliation run
//! that finds a discrepancy, a management report), finds data for every one
//! of the dashboard's panels and evaluates every alert rule without error.
//!
//! promtool and prometheus come from Debian's `prometheus` package (.ci/run
//! installs it); without them these tests say so and skip.

use payhub_tests::{TestApp, TestOptions, card_order, eventually, free_addr, sample_order};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/payhub-dashboard.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every (panel title, refId, expr) of the dashboard.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["refId"].as_str().unwrap_or_default().to_string(),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_dashboard_json_is_sound() {
    let d = dashboard();
    assert_eq!(d["uid"], "payhub-overview");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = HashSet::new();
    let mut cells: HashSet<(u64, u64)> = HashSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "duplicate panel id in {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "{title} does not fit the 24-column grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at ({cx}, {cy})");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title} has no description"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("payhub_") || expr.contains("up{"), "{title}: {expr}");
            // No label that names a shop, an order or an account.
            for bad in ["shop", "order_id", "account", "correlation"] {
                assert!(!expr.contains(&format!("{bad}=")), "{title} selects by {bad}");
            }
        }
    }
    // The metrics an SRE needs each have a panel (issue 13 §4), and the
    // orders-accepted panel counts every door.
    let all: String = queries(&d)
        .into_iter()
        .map(|(_, _, e)| e)
        .collect::<Vec<_>>()
        .join("\n");
    for m in [
        "payhub_provider_calls_total",
        "payhub_provider_call_duration_seconds_bucket",
        "payhub_provider_accounts",
        "payhub_provider_webhook_lag_seconds_bucket",
        "payhub_provider_webhooks_total",
        "payhub_orders_received_total",
        "payhub_order_transitions_total",
        "payhub_order_time_to_paid_seconds_bucket",
        "payhub_payment_reported_to_paid_seconds_bucket",
        "payhub_paid_order_notified_seconds_bucket",
        "payhub_outbox_unpublished",
        "payhub_stale_orders",
        "payhub_reconciliation_discrepancies",
        "payhub_management_reports_total",
    ] {
        assert!(all.contains(m), "no panel shows {m}");
    }
    let accepted = &panels[1];
    assert!(
        accepted["targets"][0]["expr"]
            .as_str()
            .is_some_and(|e| e.contains("payhub_orders_received_total") && e.contains("by (door)")),
        "the orders-accepted panel counts every door"
    );
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let dir = repo().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Each alert is exercised by the unit tests.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "alerts.test.yml never tests {name}"
            );
        }
    }
}

struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start_prometheus(app: &TestApp) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("payhub-prom-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo().join("deploy/prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
    let mut targets = String::new();
    for (name, base) in &app.ops_urls {
        let host = base.trim_start_matches("http://");
        targets.push_str(&format!(
            "      - targets: ['{host}']\n        labels: {{service: '{name}', instance: '{name}'}}\n"
        ));
    }
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: payhub\n    static_configs:\n{targets}"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

async fn query(app: &TestApp, prom: &str, expr: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", expr)]).expect("a URL");
    let r = app.http.get(url).send().await;
    let Ok(r) = r else { return Vec::new() };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_ne!(v["status"], "error", "{expr}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The payhub metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("payhub_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The first sample's value of an instant query, if it has one.
async fn value(app: &TestApp, prom: &str, expr: &str) -> Option<f64> {
    query(app, prom, expr)
        .await
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// Waits until Prometheus has scraped a series matching `expr` (an instant
/// query that must return data), or fails with `what`.
async fn wait_scraped(app: &TestApp, prom: &str, expr: &str, what: &str) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            !query(app, prom, expr).await.is_empty()
        })
        .await,
        "prometheus never saw {what}: {expr}"
    );
}

/// A shop's report of its order's fulfilment (issue 12), through the API.
async fn fulfil(app: &TestApp, cid: &str, body: Value) {
    let r = app.post_fulfilment(cid, &body).await;
    assert_eq!(r.status(), 202, "{cid}: {body}: {}", r.text().await.unwrap_or_default());
}

/// A call to one of reporter's internal routes, as payhubctl makes it.
async fn internal(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}{path}", app.reporter_url))
        .bearer_auth(payhub_service::internal::DEVELOPMENT_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("reporter answers");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_finds_data_for_the_panels_and_evaluates_every_alert_during_a_short_load() {
    if !have("prometheus") {
        eprintln!("SKIPPED: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let app = TestApp::spawn_with(TestOptions {
        provider_probe: charge_creator::health::ProbeConfig {
            interval: Duration::from_millis(250),
            down_after: 2,
        },
        sweep: reporter::sweeper::SweepConfig {
            interval: Duration::from_secs(1),
            ..Default::default()
        },
        ..TestOptions::default()
    })
    .await;
    let prom = start_prometheus(&app);
    assert!(
        eventually(Duration::from_secs(30), || async {
            !query(&app, &prom.url, "up == 1").await.is_empty()
        })
        .await,
        "prometheus never scraped the services"
    );
    // The shop promises delivery dates (issue 12): each order paid below
    // gets one.
    let mut rules = app.shop.shop.order_rules.clone();
    rules.delivery_time =
        Some(serde_json::from_value(json!({"defaultDays": 5, "states": {"PR": 2}})).expect("a delivery rule"));
    payhub_store::shops::set_order_rules(&app.store, app.shop.shop.id, &rules)
        .await
        .unwrap();

    // A short load: orders paid, an invalid one, a rejected webhook, and a
    // provider outage the probes see.
    // A forged webhook first: its counter is born with it, and rate() needs
    // more than one scrape of it.
    let forged = app
        .http
        .post(format!("{}/webhooks/openpix", app.verifier_url))
        .header("x-webhook-signature", "bm90IGEgc2lnbmF0dXJl")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // One charge call fails (503) and is retried: a real provider error.
    app.sandbox
        .provider_fail_next(1, payhub_sandbox::ProviderFault::Status(503));
    let mut ids = Vec::new();
    for i in 0..6 {
        let cid = format!("prom-{i}");
        let o = app.submit_until_accepted(&sample_order(&cid)).await;
        let id = o["id"].as_str().unwrap().to_string();
        app.wait_for_status(&cid, "awaiting_payment").await;
        app.pay_until_acknowledged(&id).await;
        app.wait_for_status(&cid, "paid").await;
        ids.push(id);
    }
    let mut bad = sample_order("prom-bad");
    bad["total"] = serde_json::json!(1.0);
    assert_eq!(app.post_order(&bad).await.status(), 422);

    // Fulfilment: prom-0 is shipped and delivered before its promised day;
    // prom-1's promised day passes while it travels (the clock is the
    // database's), the sweeper finds it late (a stale order, alerted), and
    // it is delivered late.
    for cid in ["prom-0", "prom-1"] {
        fulfil(
            &app,
            cid,
            json!({"status": "shipped", "carrier": "Correios", "trackingCode": "QB123456789BR"}),
        )
        .await;
        app.wait_for_status(cid, "shipped").await;
    }
    fulfil(&app, "prom-0", json!({"status": "delivered"})).await;
    sqlx::query("UPDATE orders SET promised_delivery_on = current_date - 3 WHERE id = $1::uuid")
        .bind(&ids[1])
        .execute(&app.store.pool)
        .await
        .unwrap();
    wait_scraped(
        &app,
        &prom.url,
        "payhub_stale_orders{kind=\"late_delivery\"} > 0",
        "the late order the sweeper found",
    )
    .await;
    fulfil(&app, "prom-1", json!({"status": "delivered"})).await;
    for cid in ["prom-0", "prom-1"] {
        app.wait_for_status(cid, "delivered").await;
    }

    // Card sales through PixelPay: one approved (and paid), one declined.
    app.use_sandbox_pixelpay();
    for (cid, total, outcome, status) in [
        ("prom-card-ok", "150.00", "approved", "paid"),
        ("prom-card-no", "2.00", "declined", "failed"),
    ] {
        let r = app.post_order(&card_order(cid, total)).await;
        assert_eq!(r.status(), 201);
        let view: Value = r.json().await.unwrap();
        assert_eq!(view["cardPayment"]["outcome"], outcome, "{view:#}");
        app.wait_for_status(cid, status).await;
    }
    // Every shop webhook so far reached the shop before its endpoint breaks.
    assert!(
        eventually(Duration::from_secs(20), || async {
            [
                ("prom-0", "delivered"),
                ("prom-1", "delivered"),
                ("prom-card-ok", "paid"),
                ("prom-card-no", "failed"),
            ]
            .iter()
            .all(|(cid, st)| app.shop_hooks_for(cid, st).iter().any(|h| h.answered == Some(200)))
        })
        .await,
        "the shop never got the fulfilment and card webhooks"
    );

    // The shop's endpoint fails for good: a webhook is retried, fails on its
    // last attempt and is dead-lettered; after Prometheus has seen that
    // failure, a second one (so the failed-deliveries panel's increase is
    // above 0); then the shop recovers and the operator replays both.
    app.sandbox.shop_fail_always(payhub_sandbox::ShopFault::Status(503));
    let parked = app.submit_until_accepted(&sample_order("prom-parked")).await;
    let parked_id = parked["id"].as_str().unwrap().to_string();
    app.wait_for_status("prom-parked", "awaiting_payment").await;
    // In tests the services share one process, so each scrape target shows
    // the same counters: max, not sum, is the count.
    let failed = "max(payhub_deliveries_total{kind=\"shop_webhook\", outcome=\"failed\"})";
    wait_scraped(&app, &prom.url, failed, "a failed delivery").await;
    let first = value(&app, &prom.url, failed)
        .await
        .expect("a count of failed deliveries");
    app.pay_until_acknowledged(&parked_id).await;
    app.wait_for_status("prom-parked", "paid").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            value(&app, &prom.url, failed).await.is_some_and(|n| n > first)
        })
        .await,
        "prometheus never saw the second failed delivery"
    );
    let parked_failed = || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM deliveries d JOIN orders o ON o.id = d.order_id
             WHERE o.correlation_id = 'prom-parked' AND d.kind = 'shop_webhook' AND d.status = $1",
        )
        .bind("failed")
        .fetch_one(&app.store.pool)
        .await
        .unwrap();
        n
    };
    assert_eq!(
        parked_failed().await,
        2,
        "both of prom-parked's webhooks failed for good"
    );
    let admin = app.dead_letter_admin().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin
                .list(&payhub_queue::QueueSpec::NOTIFIER, 50)
                .await
                .is_ok_and(|l| l.len() >= 2)
        })
        .await,
        "both failed webhooks are parked"
    );
    admin.close().await;
    app.sandbox.shop_recover();
    let replay = app.payhubctl(&["dlq", "replay", "notifier.status", "--all"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(
        eventually(Duration::from_secs(20), || async {
            ["awaiting_payment", "paid"].iter().all(|st| {
                app.shop_hooks_for("prom-parked", st)
                    .iter()
                    .any(|h| h.answered == Some(200))
            })
        })
        .await,
        "the replayed webhooks never reached the shop"
    );

    // A provider outage: the probes see it, its alert fires, and an order
    // that arrives meanwhile is held in place (no attempt used) until the
    // provider is back.
    app.sandbox.set_outage("openpix", true);
    // The outage fires its alert (pending after one evaluation, firing after 1m;
    // pending is enough here).
    assert!(
        eventually(Duration::from_secs(30), || async {
            !query(
                &app,
                &prom.url,
                "ALERTS{alertname=\"PayhubProviderDown\", provider=\"openpix\"}",
            )
            .await
            .is_empty()
        })
        .await,
        "PayhubProviderDown never became pending during the outage"
    );
    app.submit_until_accepted(&sample_order("prom-held")).await;
    wait_scraped(
        &app,
        &prom.url,
        "payhub_dependency_unavailable_total > 0",
        "the held order's in-place waits",
    )
    .await;
    assert_eq!(app.order_status("prom-held").await.as_deref(), Some("accepted"));
    app.sandbox.set_outage("openpix", false);
    let held = app
        .wait_for_status_within("prom-held", "awaiting_payment", Duration::from_secs(30))
        .await;
    let held_id = held["id"].as_str().unwrap().to_string();

    // Reconciliation: the provider's listing of the day does not show the
    // held order's charge.
    app.sandbox.set_listing_fault(&held_id, "hide", None).unwrap();
    // The day (UTC) of the held order's charge, made a moment ago.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let (status, run) = internal(&app, "/internal/v1/reconcile", json!({"date": today})).await;
    assert_eq!(status, 200, "{run}");
    assert!(
        run["discrepancies"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["reference"] == held_id.as_str() && d["kind"] == "unknown_at_provider")),
        "{run:#}"
    );
    app.sandbox.clear_listing_faults();

    // A management report, made on demand.
    let (status, made) = internal(
        &app,
        "/internal/v1/reports",
        json!({"period": "daily", "date": today, "shopId": app.shop.shop.id}),
    )
    .await;
    assert_eq!(status, 201, "{made}");

    // What each fault produced is there, by its labels.
    for (expr, what) in [
        (
            "payhub_messages_dead_lettered_total{queue=~\".*notifier.status\", reason=\"attempts_exhausted\"}",
            "the parked webhooks",
        ),
        (
            "payhub_messages_retried_total{queue=~\".*notifier.status\"}",
            "the retried webhooks",
        ),
        (
            "payhub_messages_replayed_total{queue=~\".*notifier.status\"} >= 2",
            "the replayed webhooks",
        ),
        (
            "payhub_dependency_unavailable_total{queue=~\".*charge-creator.orders\"}",
            "the held order",
        ),
        (
            "payhub_card_payments_total{provider=\"pixelpay\", outcome=\"approved\"}",
            "the approved card",
        ),
        (
            "payhub_card_payments_total{provider=\"pixelpay\", outcome=\"declined\"}",
            "the declined card",
        ),
        (
            "payhub_sweeper_actions_total{kind=\"late_delivery\", action=\"alerted\"}",
            "the sweeper's alert on the late order",
        ),
        (
            "payhub_order_deliveries_total{timeliness=\"on_time\"}",
            "the order delivered on time",
        ),
        (
            "payhub_order_deliveries_total{timeliness=\"late\"}",
            "the order delivered late",
        ),
        (
            "payhub_reconciliation_discrepancies{provider=\"openpix\", kind=\"unknown_at_provider\"} >= 1",
            "the open discrepancy",
        ),
        (
            "payhub_management_reports_total{scope=\"shop\", period=\"daily\", outcome=\"made\"}",
            "the report made",
        ),
    ] {
        wait_scraped(&app, &prom.url, expr, what).await;
    }

    // Every panel query (Grafana's variables filled in) returns data, none
    // skipped: each series above came from a real event of this load.
    let d = dashboard();
    let mut empty = Vec::new();
    for (title, ref_id, expr) in queries(&d) {
        let e = expr
            .replace("$job", "payhub")
            .replace("$service", ".*")
            .replace("$__rate_interval", "2m")
            .replace("$__range", "10m");
        // A series born late needs a few more scrapes before rate() sees it.
        let found = eventually(Duration::from_secs(10), || async {
            !query(&app, &prom.url, &e).await.is_empty()
        })
        .await;
        if !found {
            empty.push(format!("{title}/{ref_id}: {e}"));
        }
    }
    assert!(empty.is_empty(), "panels without data:\n{}", empty.join("\n"));

    // Every alert rule evaluated against the real series without error.
    let rules: Value = app
        .http
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut n = 0;
    let mut series: Vec<(String, String)> = Vec::new();
    for g in rules["data"]["groups"].as_array().expect("rule groups") {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{} does not evaluate: {}", r["name"], r["lastError"]);
            let name = r["name"].as_str().unwrap_or_default();
            for m in metric_names(r["query"].as_str().unwrap_or_default()) {
                series.push((name.to_string(), m));
            }
        }
    }
    assert!(n >= 27, "only {n} rules loaded");
    // An alert evaluates "ok" over a metric nobody exports (a typo, a
    // renamed metric) and then never fires: every metric each alert's query
    // reads has series from this load.
    let mut missing = Vec::new();
    for (alert, m) in series {
        let selector = format!("{{__name__=\"{m}\"}}");
        if query(&app, &prom.url, &selector).await.is_empty() {
            missing.push(format!("{alert}: {m}"));
        }
    }
    assert!(missing.is_empty(), "alerts reading no series:\n{}", missing.join("\n"));
    drop(prom);
    app.stop().await;
}
