//! The deployment's observability files against the real thing (issue 13
//! §4): the Grafana dashboard's JSON is sound, `promtool test rules` covers
//! every alert, and Debian's `prometheus` server, scraping the services
//! through a short load with a provider outage, finds data for the
//! dashboard's panels and evaluates every alert rule without error.
//!
//! promtool and prometheus come from Debian's `prometheus` package (.ci/run
//! installs it); without them these tests say so and skip.

use payhub_tests::{TestApp, TestOptions, eventually, free_addr, sample_order};
use serde_json::Value;
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

/// Panels whose series only exist after a fault this run does not make
/// (a dead letter, a replay, a broker reconnect, a database outage, a failed
/// delivery, a stale order, a card sale, a reconciliation run): their queries must still parse and
/// evaluate, which Prometheus checks below.
const NEEDS_OTHER_FAULTS: [&str; 12] = [
    "Dead letters by queue and reason",
    "Retries by queue and attempt",
    "Dead letters replayed by queue",
    "Dependency unavailable: in-place waits by queue",
    "Failed deliveries in the time range by kind",
    "Card payments by outcome",
    "Sweeper actions",
    "Oldest stale order by kind",
    "Open reconciliation discrepancies by kind",
    // Set or counted only once a reconciliation run or a report was made.
    "Open reconciliation discrepancies by provider",
    "Management reports made",
    // Needs an order delivered with a promised date (issue 12's fulfilment).
    "Deliveries on time and late",
];

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
    for i in 0..6 {
        let cid = format!("prom-{i}");
        let o = app.submit_until_accepted(&sample_order(&cid)).await;
        let id = o["id"].as_str().unwrap().to_string();
        app.wait_for_status(&cid, "awaiting_payment").await;
        app.pay_until_acknowledged(&id).await;
        app.wait_for_status(&cid, "paid").await;
    }
    let mut bad = sample_order("prom-bad");
    bad["total"] = serde_json::json!(1.0);
    assert_eq!(app.post_order(&bad).await.status(), 422);
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

    // Every panel query (Grafana's variables filled in) returns data.
    let d = dashboard();
    let mut empty = Vec::new();
    for (title, ref_id, expr) in queries(&d) {
        let e = expr
            .replace("$job", "payhub")
            .replace("$service", ".*")
            .replace("$__rate_interval", "2m")
            .replace("$__range", "10m");
        if NEEDS_OTHER_FAULTS.contains(&title.as_str()) {
            continue;
        }
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
    for g in rules["data"]["groups"].as_array().expect("rule groups") {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{} does not evaluate: {}", r["name"], r["lastError"]);
        }
    }
    assert!(n >= 27, "only {n} rules loaded");
    app.sandbox.set_outage("openpix", false);
    drop(prom);
    app.stop().await;
}
