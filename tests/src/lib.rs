//! The end-to-end test harness: the six services started in-process against
//! the real RabbitMQ and PostgreSQL, each test isolated by its own database,
//! exchange and queue prefix, with the sandbox standing in for OpenPix, the
//! shop and the mail server.

pub mod leaks;
pub mod webdriver;

use anyhow::Context;
use payhub_queue::{RetryPolicy, Topology};
use payhub_sandbox::{Sandbox, SandboxConfig};
use payhub_service::CommonConfig;
use payhub_store::Store;
use payhub_store::shops::NewShopCredentials;
use serde_json::Value;
use sqlx::Connection;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const APP_ID: &str = "test-app-id";

/// PostgreSQL server URL without a database (tests make their own).
pub fn pg_server_url() -> String {
    std::env::var("PAYHUB_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("PAYHUB_TEST_AMQP_URL").unwrap_or_else(|_| payhub_service::DEFAULT_AMQP_URL.into())
}

/// Options a test may change.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub retry_delay: Duration,
    pub max_attempts: u32,
    pub prefetch: u16,
    /// Services the test runs itself as separate processes
    /// ([`TestApp::spawn_process`]) instead of in-process.
    pub external: Vec<&'static str>,
    /// Services not started by the harness: the test starts them later
    /// with [`TestApp::start_service`].
    pub deferred: Vec<&'static str>,
    /// The sweeper's settings (by default it sweeps rarely: tests that
    /// exercise it shorten them).
    pub sweep: reporter::sweeper::SweepConfig,
    /// Applies `payhubctl db roles` and runs each in-process service as its
    /// own PostgreSQL role (`options=-c role=payhub_<service>`), so the
    /// grants are what the services run under.
    pub as_service_roles: bool,
    /// `(service, AMQP URL)` for in-process services that connect as a
    /// RabbitMQ user of their own (e.g. under the permissions `payhubctl
    /// broker permissions` prints); the others use [`amqp_url`].
    pub amqp_urls: Vec<(&'static str, String)>,
    /// How often charge-creator checks the shops' OpenPix webhooks (it
    /// checks once at start; by default rarely after that).
    pub webhook_check_interval: Duration,
    /// The delay between the sandbox's PixelPay webhook attempts (PixelPay:
    /// 5 minutes).
    pub pixelpay_webhook_retry_delay: Duration,
    /// How charge-creator probes the provider accounts (it probes once at
    /// start; by default rarely after that, so that tests counting provider
    /// requests see only their own: tests of provider health shorten it).
    pub provider_probe: charge_creator::health::ProbeConfig,
    /// How often reporter looks for management reports that are due (by
    /// default rarely: a test of the schedule shortens it).
    pub report_interval: Duration,
    /// notifier's `PAYHUB_PLATFORM_REPORT_EMAILS`.
    pub platform_report_emails: Vec<String>,
    /// reporter's reconciliation bounds and backfill.
    pub reconcile: reporter::reconcile::ReconcileConfig,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            retry_delay: Duration::from_millis(300),
            max_attempts: 3,
            prefetch: 16,
            external: Vec::new(),
            deferred: Vec::new(),
            sweep: reporter::sweeper::SweepConfig {
                interval: Duration::from_secs(3600),
                ..Default::default()
            },
            as_service_roles: false,
            amqp_urls: Vec::new(),
            webhook_check_interval: Duration::from_secs(3600),
            provider_probe: charge_creator::health::ProbeConfig {
                interval: Duration::from_secs(3600),
                down_after: 2,
            },
            pixelpay_webhook_retry_delay: Duration::from_millis(300),
            report_interval: Duration::from_secs(3600),
            platform_report_emails: Vec::new(),
            reconcile: Default::default(),
        }
    }
}

pub struct TestApp {
    pub id: String,
    pub database_url: String,
    pub db_name: String,
    pub store: Store,
    pub sandbox: Sandbox,
    pub shop: NewShopCredentials,
    pub topology: Topology,
    pub ingress_url: String,
    pub verifier_url: String,
    pub reporter_url: String,
    pub ops_urls: Vec<(&'static str, String)>,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    services: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    sandbox_stop: CancellationToken,
    opts: TestOptions,
    common: CommonConfig,
    charge_creator_addr: std::net::SocketAddr,
    verifier_addr: std::net::SocketAddr,
}

/// The six services, in the order the harness starts them by default.
pub const SERVICES: [&str; 6] = [
    "charge-creator",
    "ingress",
    "webhook-verifier",
    "order-updater",
    "notifier",
    "reporter",
];

/// Where the notifier sends platform alerts in tests.
pub const PLATFORM_ADMIN: &str = "platform-admin@payhub.example.com";

fn common(database_url: &str, topology: &Topology, opts: &TestOptions) -> CommonConfig {
    CommonConfig {
        database_url: database_url.to_string(),
        amqp_url: amqp_url(),
        http_addr: "127.0.0.1:0".parse().expect("literal address"),
        topology: topology.clone(),
        prefetch: opts.prefetch,
        db_max_connections: 3,
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(opts: TestOptions) -> TestApp {
        // The fixed addresses (charge-creator's, webhook-verifier's) are
        // picked before the services bind them; a test running beside this
        // one may take such a port in between. Then start again, afresh
        // (another database, topology and ports).
        let mut attempt = 1;
        loop {
            match Self::try_spawn(opts.clone()).await {
                Ok(app) => return app,
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    eprintln!("the test app lost a port to another test ({e:#}); starting again");
                    attempt += 1;
                }
                Err(e) => panic!("the test app starts: {e:?}"),
            }
        }
    }

    async fn try_spawn(opts: TestOptions) -> anyhow::Result<TestApp> {
        payhub_telemetry::install_crypto();
        if std::env::var("PAYHUB_TEST_LOG").is_ok() {
            let _ = payhub_telemetry::trace::init("tests", payhub_telemetry::LogFormat::Pretty);
        }
        let id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("payhub_test_{id}");
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server_url()))
            .await
            .context("PostgreSQL must run for the tests")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let database_url = format!("{}/{db_name}", pg_server_url());
        let store = Store::connect_lazy(&database_url, 3)?;
        store.migrate().await?;
        if opts.as_service_roles {
            payhub_store::roles::apply(&store).await?;
        }

        let sandbox_stop = CancellationToken::new();
        let mut sandbox_config = SandboxConfig::local_ephemeral(APP_ID);
        sandbox_config.pixelpay_webhook_retry_delay = opts.pixelpay_webhook_retry_delay;
        let sandbox = Sandbox::start(sandbox_config, sandbox_stop.clone()).await?;
        let shop = payhub_store::shops::create(
            &store,
            "Loja Teste",
            Some(&sandbox.shop_webhook_url()),
            Some("admin@loja.example.com"),
        )
        .await?;
        sandbox.add_shop_secret(&shop.shop.webhook_secret.expose());

        let topology = Topology {
            exchange: format!("payhub.test.{id}"),
            orders_exchange: format!("payhub.test-orders.{id}"),
            prefix: format!("t{id}."),
            retry: RetryPolicy {
                delay: opts.retry_delay,
                max_attempts: opts.max_attempts,
                delivery_limit: 5,
                hold_limit: Duration::from_secs(600),
            },
        };
        let c = common(&database_url, &topology, &opts);
        let shutdown = CancellationToken::new();
        // charge-creator's address is fixed before any service starts, so
        // those that call it can start first.
        let charge_creator_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        // webhook-verifier's too: it is the public webhook base URL that
        // ingress and charge-creator hand out.
        let verifier_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let mut app = TestApp {
            id,
            database_url,
            db_name,
            store,
            sandbox,
            shop,
            topology,
            ingress_url: String::new(),
            verifier_url: String::new(),
            reporter_url: String::new(),
            ops_urls: Vec::new(),
            http,
            shutdown,
            services: Vec::new(),
            sandbox_stop,
            opts: opts.clone(),
            common: c,
            charge_creator_addr,
            verifier_addr,
        };
        anyhow::ensure!(
            opts.external.iter().all(|e| *e == "order-updater"),
            "only order-updater can run as a separate process in tests so far"
        );
        for name in SERVICES {
            if !opts.external.contains(&name) && !opts.deferred.contains(&name) {
                app.start_service(name).await?;
            }
        }
        // With external or deferred services, the test starts them and then waits.
        if opts.external.is_empty() && opts.deferred.is_empty() {
            app.wait_ready().await?;
        }
        Ok(app)
    }

    /// Starts one service in-process (see [`SERVICES`]); for services the
    /// test deferred ([`TestOptions::deferred`]), in any order.
    pub async fn start_service(&mut self, name: &'static str) -> anyhow::Result<()> {
        let mut c = self.common.clone();
        if self.opts.as_service_roles {
            let role = payhub_store::roles::ROLES
                .iter()
                .find(|(service, _)| *service == name)
                .map(|(_, role)| *role)
                .with_context(|| format!("no role for {name}"))?;
            c.database_url = format!("{}?options=-c%20role%3D{role}", c.database_url);
        }
        if let Some((_, amqp)) = self.opts.amqp_urls.iter().find(|(service, _)| *service == name) {
            c.amqp_url = amqp.clone();
        }
        let shutdown = self.shutdown.clone();
        let url = |a: std::net::SocketAddr| format!("http://{a}");
        let charge_creator_url = url(self.charge_creator_addr);
        let token = payhub_service::internal::DEVELOPMENT_TOKEN.to_string();
        let public_webhooks = url(self.verifier_addr);
        let (addr, task) = match name {
            "ingress" => {
                let app = ingress::Application::build_with(
                    ingress::Config {
                        common: c,
                        max_body_bytes: 256 * 1024,
                        charge_creator_url: charge_creator_url.clone(),
                        internal_token: token.into(),
                        card_timeout: Duration::from_secs(10),
                        public_webhook_base_url: Some(public_webhooks.clone()),
                    },
                    ingress::Options {
                        // Pago Seguro forms go to the sandbox's Pago Seguro.
                        pagoseguro_checkout_url: Some(self.sandbox.pagoseguro_checkout_url()),
                        ..Default::default()
                    },
                    shutdown,
                )
                .await?;
                self.ingress_url = url(app.local_addr());
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            "webhook-verifier" => {
                let mut c = c;
                c.http_addr = self.verifier_addr;
                let keys = payhub_connectors::rsa::TrustedKeys::from_pem(payhub_sandbox::FIXTURE_PUBLIC_KEY_PEM)?;
                let app = webhook_verifier::Application::build(
                    webhook_verifier::Config {
                        common: c,
                        openpix_keys: keys,
                        charge_creator_url,
                        internal_token: token.into(),
                        confirm_timeout: Duration::from_secs(5),
                        rate_per_sec: 1000,
                        rate_burst: 2000,
                        checkout_base_url: if self.ingress_url.is_empty() {
                            "http://127.0.0.1:8080".into()
                        } else {
                            self.ingress_url.clone()
                        },
                    },
                    shutdown,
                )
                .await?;
                self.verifier_url = url(app.local_addr());
                self.sandbox
                    .set_webhook_target(&format!("{}/webhooks/openpix", self.verifier_url));
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            "charge-creator" => {
                let mut c = c;
                c.http_addr = self.charge_creator_addr;
                let app = charge_creator::Application::build(
                    charge_creator::Config {
                        common: c,
                        openpix_base_url: self.sandbox.provider_url(),
                        openpix_app_id: APP_ID.to_string().into(),
                        provider_timeout: Duration::from_secs(3),
                        internal_token: token.into(),
                        provider_key: payhub_store::Secrets::development_of(payhub_store::secrets::KeyKind::Provider),
                        account_cache_ttl: Duration::from_millis(200),
                        pixelpay: None,
                        public_webhook_base_url: Some(public_webhooks.clone()),
                        webhook_check_interval: self.opts.webhook_check_interval,
                        probe: self.opts.provider_probe,
                    },
                    shutdown,
                )
                .await?;
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            "order-updater" => {
                let app = order_updater::Application::build(order_updater::Config { common: c }, shutdown).await?;
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            "notifier" => {
                let app = notifier::Application::build(
                    notifier::Config {
                        common: c,
                        smtp_url: format!("smtp://{}", self.sandbox.smtp_addr()),
                        smtp_pool_size: 8,
                        mail_from: "payhub <no-reply@payhub.local>".into(),
                        webhook_timeout: Duration::from_secs(3),
                        wake_postback_url: self.sandbox.wake_postback_base_url(),
                        // The sandbox shop listens on loopback: development rules.
                        webhook_urls: Default::default(),
                        platform_admin_email: Some(PLATFORM_ADMIN.into()),
                        platform_report_emails: self.opts.platform_report_emails.clone(),
                        survey: notifier::survey::SurveyConfig {
                            base_url: self.ingress_url.clone(),
                            ..Default::default()
                        },
                        order_links: payhub_core::order_link::OrderLinks::new(payhub_core::order_link::DEVELOPMENT_KEY),
                        public_base_url: self.ingress_url.clone(),
                    },
                    shutdown,
                )
                .await?;
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            "reporter" => {
                let app = reporter::Application::build(
                    reporter::Config {
                        common: c,
                        sweep: self.opts.sweep.clone(),
                        charge_creator_url,
                        internal_token: token.into(),
                        reconcile_interval: Duration::from_secs(3600),
                        report_interval: self.opts.report_interval,
                        report_delay: Duration::from_secs(7200),
                        reconcile: self.opts.reconcile,
                    },
                    shutdown,
                )
                .await?;
                self.reporter_url = url(app.local_addr());
                (app.local_addr(), tokio::spawn(app.run_until_stopped()))
            }
            other => anyhow::bail!("no service {other}"),
        };
        self.ops_urls.push((name, url(addr)));
        self.services.push((name, task));
        Ok(())
    }

    /// The environment a service binary needs to join this test's
    /// installation (same database, vhost, exchange, prefix and retries).
    pub fn service_env(&self, http_addr: &str) -> Vec<(String, String)> {
        vec![
            ("PAYHUB_DATABASE_URL".into(), self.database_url.clone()),
            ("PAYHUB_AMQP_URL".into(), amqp_url()),
            ("PAYHUB_HTTP_ADDR".into(), http_addr.into()),
            ("PAYHUB_EXCHANGE".into(), self.topology.exchange.clone()),
            ("PAYHUB_ORDERS_EXCHANGE".into(), self.topology.orders_exchange.clone()),
            ("PAYHUB_QUEUE_PREFIX".into(), self.topology.prefix.clone()),
            (
                "PAYHUB_RETRY_DELAY_MS".into(),
                self.opts.retry_delay.as_millis().to_string(),
            ),
            ("PAYHUB_MAX_ATTEMPTS".into(), self.opts.max_attempts.to_string()),
            ("PAYHUB_PREFETCH".into(), self.opts.prefetch.to_string()),
            ("PAYHUB_DB_MAX_CONNECTIONS".into(), "3".into()),
            ("PAYHUB_LOG_FORMAT".into(), "json".into()),
        ]
    }

    /// Starts `payhub-<service>` from the build directory as a separate
    /// process (`make test` builds the binaries first).
    pub fn spawn_process(&self, service: &str, http_addr: &str) -> std::process::Child {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/payhub-<service>
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("build directory")
            .join(format!("payhub-{service}"));
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            bin.display()
        );
        std::process::Command::new(bin)
            .envs(self.service_env(http_addr))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var("PAYHUB_TEST_LOG").is_ok() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("the service binary starts")
    }

    /// Waits until every service answers `/readyz` with 200 (connected to
    /// the broker and the database, consumers declared).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for (name, base) in &self.ops_urls {
            let ok = eventually(Duration::from_secs(20), || async {
                matches!(self.http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
            })
            .await;
            anyhow::ensure!(ok, "{name} never became ready");
        }
        // Consumers declare their queues on connect; give them a moment so
        // the first publish is routable.
        let queues_ok = eventually(Duration::from_secs(10), || async { self.queues_declared().await }).await;
        anyhow::ensure!(queues_ok, "the consumer queues were never declared");
        Ok(())
    }

    async fn queues_declared(&self) -> bool {
        let Ok(conn) = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await else {
            return false;
        };
        let mut ok = true;
        for spec in payhub_queue::QueueSpec::ALL {
            let Ok(ch) = conn.create_channel().await else {
                return false;
            };
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if ch
                .queue_declare(
                    self.topology.work_queue(&spec).as_str().into(),
                    passive,
                    Default::default(),
                )
                .await
                .is_err()
            {
                ok = false;
                break;
            }
        }
        let _ = conn.close(200, "ok".into()).await;
        ok
    }

    /// charge-creator's base URL (its internal API: confirm, card, listing).
    pub fn charge_creator_url(&self) -> String {
        format!("http://{}", self.charge_creator_addr)
    }

    pub fn api_key(&self) -> &str {
        &self.shop.api_key
    }

    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.post_order_as(body, self.api_key()).await
    }

    /// A shop's fulfilment report for its order (`POST /v1/orders/{cid}/fulfilment`).
    pub async fn post_fulfilment(&self, correlation_id: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/orders/{correlation_id}/fulfilment", self.ingress_url))
            .bearer_auth(self.api_key())
            .json(body)
            .send()
            .await
            .expect("ingress answers")
    }

    pub async fn post_order_as(&self, body: &Value, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/orders", self.ingress_url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("ingress answers")
    }

    pub async fn get_order(&self, correlation_id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/orders/{correlation_id}", self.ingress_url))
            .bearer_auth(self.api_key())
            .send()
            .await
            .expect("ingress answers")
    }

    pub async fn order_status(&self, correlation_id: &str) -> Option<String> {
        let r = self.get_order(correlation_id).await;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        v["status"].as_str().map(str::to_string)
    }

    /// Waits for the order to reach `status`; panics with the last seen one.
    pub async fn wait_for_status(&self, correlation_id: &str, status: &str) -> Value {
        self.wait_for_status_within(correlation_id, status, Duration::from_secs(20))
            .await
    }

    pub async fn wait_for_status_within(&self, correlation_id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = Value::Null;
        while tokio::time::Instant::now() < deadline {
            let r = self.get_order(correlation_id).await;
            if r.status().is_success() {
                last = r.json().await.expect("order JSON");
                if last["status"] == status {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("order {correlation_id} never reached {status}; last seen: {last:#}");
    }

    /// Counts rows of a query returning one bigint.
    /// The dead-letter queues of this app's topology.
    /// Deliveries of one event type that `spec`'s work queue handed its
    /// consumer, whatever their outcome, as the consumer counts them (the
    /// services run in this process).
    pub fn deliveries_taken(&self, spec: &payhub_queue::QueueSpec, kind: &str) -> u64 {
        let queue = self.topology.work_queue(spec);
        ["ack", "retry", "dead_letter", "requeue", "handed_back", "permanent"]
            .iter()
            .map(|outcome| {
                payhub_queue::metrics::CONSUMED
                    .with_label_values(&[queue.as_str(), kind, outcome])
                    .get()
            })
            .sum()
    }

    /// Puts `events` straight onto `spec`'s work queue, persistent and
    /// confirmed, as an earlier version's bindings would have routed them.
    pub async fn put_on_queue(&self, spec: &payhub_queue::QueueSpec, events: &[payhub_core::Envelope]) {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("the broker");
        let ch = conn.create_channel().await.expect("a channel");
        ch.confirm_select(Default::default()).await.expect("confirms");
        let queue = self.topology.work_queue(spec);
        for env in events {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                Default::default(),
                &env.to_json(),
                lapin::BasicProperties::default()
                    .with_message_id(env.id.to_string().into())
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        }
        let _ = conn.close(200, "done".into()).await;
    }

    pub async fn dead_letter_admin(&self) -> payhub_queue::dead_letters::DeadLetterAdmin {
        payhub_queue::dead_letters::DeadLetterAdmin::connect(&amqp_url(), self.topology.clone())
            .await
            .expect("the dead-letter admin connects")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql)
            .fetch_one(&self.store.pool)
            .await
            .expect("count query");
        n
    }

    /// Stops every service (SIGTERM-like), then drops the database and the
    /// test's queues and exchange.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (name, h) in self.services {
            match tokio::time::timeout(Duration::from_secs(20), h).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("{name} stopped with an error: {e:#}"),
                Ok(Err(e)) => panic!("{name} panicked: {e}"),
                Err(_) => panic!("{name} did not stop within 20 s"),
            }
        }
        self.sandbox_stop.cancel();
        self.store.pool.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server_url())).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            )))
            .execute(&mut admin)
            .await;
        }
        delete_topology(&self.topology).await;
    }
}

/// Removes a test's queues and exchange from the broker (best effort, and
/// never for longer than 20 s: a cleanup must not hang a test run).
pub async fn delete_topology(topology: &Topology) {
    let _ = tokio::time::timeout(Duration::from_secs(20), delete_topology_now(topology)).await;
}

async fn delete_topology_now(topology: &Topology) {
    let Ok(conn) = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        for spec in payhub_queue::QueueSpec::ALL {
            for q in [
                topology.work_queue(&spec),
                topology.retry_queue(&spec),
                topology.dead_letter_queue(&spec),
            ] {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
        }
        for exchange in [&topology.exchange, &topology.orders_exchange] {
            let _ = ch.exchange_delete(exchange.as_str().into(), Default::default()).await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

/// Polls `cond` until true or `timeout` (a check still running at the
/// deadline counts as false).
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A check that never answers counts as a no, not as a hang.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left.max(Duration::from_millis(500)), cond())
            .await
            .unwrap_or(false)
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An `order.status_changed` of a sample order (the 227.79 BRL of
/// [`sample_order`]) as an earlier version published it: what the upgrade
/// tests put straight on a queue.
pub fn sample_status_change(
    order_id: Uuid,
    shop_id: Uuid,
    correlation_id: &str,
    (from, to): (payhub_core::OrderStatus, payhub_core::OrderStatus),
    customer: (&str, &str),
) -> payhub_core::Envelope {
    payhub_core::Envelope::for_order(
        payhub_core::events::EventPayload::OrderStatusChanged(payhub_core::events::OrderStatusChanged {
            channel: Default::default(),
            provider: payhub_core::Provider::Openpix,
            from,
            to,
            amount: payhub_core::Money::from_minor(22779, payhub_core::Currency::Brl),
            reason: None,
            customer_name: customer.0.to_string(),
            customer_email: customer.1.to_string(),
            summary: String::new(),
            charge: None,
            end_to_end_id: None,
            order_created_at: time::OffsetDateTime::now_utc(),
            refund: None,
            details: None,
            shipment: None,
        }),
        order_id,
        shop_id,
        correlation_id,
    )
}

/// A PixelPay card order paid with the sandbox's test Visa (CVV
/// [`CARD_CVV`], expiry [`CARD_EXPIRE`]); a total of 2.00 is declined.
pub fn card_order(cid: &str, total: &str) -> Value {
    serde_json::json!({
        "correlationID": cid,
        "provider": "pixelpay",
        "currency": "HNL",
        "items": [{"title": "Camiseta Roja", "price": total, "qty": 1, "total": total}],
        "total": total,
        "customer": {"name": "Pedro Perez", "email": "pedro.perez@example.com", "taxID": "470.436.220-50",
                     "phone": "+504 9999-9999"},
        "card": {
            "number": payhub_sandbox::PIXELPAY_TEST_VISA, "cvv": CARD_CVV, "expire": CARD_EXPIRE,
            "holder": "Pedro Perez",
            "billing": {"address": "Col. Palmira 12", "country": "HN", "state": "HN-FM", "city": "Tegucigalpa"}
        }
    })
}

/// The test card's CVV and expiry (YYMM) in [`card_order`].
pub const CARD_CVV: &str = "739";
pub const CARD_EXPIRE: &str = "3012";

/// A valid order, totals consistent, for `correlation_id`.
pub fn sample_order(correlation_id: &str) -> Value {
    serde_json::json!({
        "correlationID": correlation_id,
        "provider": "openpix",
        "items": [
            {"code": "0000123", "title": "Camiseta Branca Unissex", "description": "Tamanho: M", "price": 99.90, "qty": 2, "tax": 3.00, "total": 199.80},
            {"title": "Meia esportiva", "price": 19.99, "qty": 1, "total": 19.99}
        ],
        "freight": 15.00,
        "discount": 10.00,
        "total": 227.79,
        "customer": {
            "name": "Maria Oliveira",
            "email": "maria@example.com",
            "taxID": "470.436.220-50",
            "phone": "(41) 99876-5432",
            "birthDate": "1988-03-14"
        },
        "shippingAddress": {"street": "Rua Encantado", "number": "860", "neighborhood": "Centro", "city": "Dez de Maio", "state": "PR", "zipcode": "85920-970"}
    })
}

/// The PDF attachments of a multipart message: (filename, bytes).
pub fn pdf_attachments(raw: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let boundary = raw
        .lines()
        .find_map(|l| l.split("boundary=").nth(1))
        .map(|b| b.trim().trim_matches('"').to_string())
        .expect("a multipart message");
    raw.split(&format!("--{boundary}"))
        .filter(|part| part.to_ascii_lowercase().contains("content-type: application/pdf"))
        .map(|part| {
            let (head, body) = part.split_once("\r\n\r\n").expect("part headers");
            let name = head
                .split("filename=")
                .nth(1)
                .map(|n| n.lines().next().unwrap_or("").trim().trim_matches('"').to_string())
                .unwrap_or_default();
            let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            (
                name,
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64 PDF"),
            )
        })
        .collect()
}

/// The text a mail reader shows for a single-part message: the body after
/// the headers, with its Content-Transfer-Encoding (quoted-printable or
/// base64, as lettre picks for non-ASCII text) undone.
pub fn email_text(raw: &str) -> String {
    let (_, bytes) = decode_part(raw);
    String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
}

/// A MIME part's headers and its body with its Content-Transfer-Encoding
/// (base64, quoted-printable, or none) undone.
pub fn decode_part(raw: &str) -> (&str, Vec<u8>) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .unwrap_or((raw, ""));
    let encoding = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-transfer-encoding")
                .then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    let bytes = match encoding.as_str() {
        "base64" => {
            use base64::Engine;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_default()
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    (head, bytes)
}

fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            // Soft line break.
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2))
                && let Ok(v) = u8::from_str_radix(&format!("{}{}", *h as char, *l as char), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A free loopback address for a service started as a process.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").to_string()
}

impl TestApp {
    /// Submits an order the way a careful shop does: retrying on 5xx or a
    /// refused connection (the same correlationID makes that safe).
    pub async fn submit_until_accepted(&self, body: &Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .http
                .post(format!("{}/v1/orders", self.ingress_url))
                .bearer_auth(self.api_key())
                .json(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => return r.json().await.expect("order JSON"),
                Ok(r) if r.status().is_client_error() => {
                    panic!("order refused: {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ingress never accepted the order"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pays a charge and makes sure the provider's webhook got a 2xx, sending
    /// it again as the provider would until it does.
    pub async fn pay_until_acknowledged(&self, order_id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut attempt = self.sandbox.pay(order_id).await;
        loop {
            if matches!(&attempt, Ok(a) if (200..300).contains(&a.status)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the payment webhook was never acknowledged: {attempt:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            attempt = self.sandbox.resend_last_webhook(order_id).await;
        }
    }
}

impl TestApp {
    /// `payhubctl shop set-provider <this shop> <provider> --secret-file F
    /// <args>`, the secret written to a temporary file (never an argument).
    pub fn set_provider(&self, provider: &str, secret: &str, args: &[&str]) -> std::process::Output {
        let path = std::env::temp_dir().join(format!("payhub-secret-{}", Uuid::new_v4()));
        std::fs::write(&path, format!("{secret}\n")).expect("the secret file is written");
        let shop = self.shop.shop.id.to_string();
        let mut all = vec!["shop", "set-provider", shop.as_str(), provider, "--secret-file"];
        let file = path.to_string_lossy().into_owned();
        all.push(&file);
        all.extend_from_slice(args);
        let out = self.payhubctl(&all);
        let _ = std::fs::remove_file(&path);
        out
    }

    /// The shop's own Pago Seguro account: the sandbox's merchant, allowed
    /// for the shop. Returns the account's id.
    pub fn use_sandbox_pagoseguro(&self) -> String {
        let out = self.set_provider(
            "pagoseguro",
            payhub_sandbox::PAGOSEGURO_SANDBOX_API_KEY,
            &[
                "--account-id",
                payhub_sandbox::PAGOSEGURO_SANDBOX_ACCOUNT_ID,
                "--allow",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("set-provider answers JSON");
        v["account"].as_str().expect("the account's id").to_string()
    }

    /// The shop's own PixelPay account: the sandbox's public sandbox
    /// merchant, allowed for the shop. Returns the account's id.
    pub fn use_sandbox_pixelpay(&self) -> String {
        let endpoint = self.sandbox.provider_url();
        let out = self.set_provider(
            "pixelpay",
            payhub_sandbox::PIXELPAY_SANDBOX_SECRET_KEY,
            &[
                "--key-id",
                payhub_sandbox::PIXELPAY_SANDBOX_KEY_ID,
                "--endpoint",
                &endpoint,
                "--allow",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("set-provider answers JSON");
        v["account"].as_str().expect("the account's id").to_string()
    }

    /// Runs `payhubctl` against this test's installation.
    pub fn payhubctl(&self, args: &[&str]) -> std::process::Output {
        self.payhubctl_with_env(args, &[])
    }

    /// [`TestApp::payhubctl`] with extra environment variables (e.g.
    /// `PAYHUB_ALLOW_PRIVATE_WEBHOOKS=false`).
    pub fn payhubctl_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let exe = std::env::current_exe().expect("test executable path");
        let bin = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("build directory")
            .join("payhubctl");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            bin.display()
        );
        std::process::Command::new(bin)
            .args(args)
            .envs(self.service_env("127.0.0.1:0"))
            .envs(env.iter().copied())
            .output()
            .expect("payhubctl runs")
    }

    /// The shop webhooks received for one status of one order, in order.
    pub fn shop_hooks_for(&self, correlation_id: &str, status: &str) -> Vec<payhub_sandbox::ReceivedWebhook> {
        self.sandbox
            .shop_webhooks()
            .into_iter()
            .filter(|h| {
                serde_json::from_str::<Value>(&h.body)
                    .is_ok_and(|b| b["data"]["correlationID"] == correlation_id && b["data"]["status"] == status)
            })
            .collect()
    }
}

/// A RabbitMQ user made for one test shop (deleted when dropped).
pub struct AmqpShopUser {
    pub user: String,
    pub url: String,
}

impl Drop for AmqpShopUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_user", &self.user])
            .output();
    }
}

impl TestApp {
    /// The vhost the tests use, as rabbitmqctl names it.
    pub fn vhost() -> String {
        let url = amqp_url();
        let raw = url.rsplit('/').next().unwrap_or("%2f");
        if raw.is_empty() || raw.eq_ignore_ascii_case("%2f") {
            "/".into()
        } else {
            raw.to_string()
        }
    }

    /// Makes a RabbitMQ user that may only publish to the shop-orders
    /// exchange, and registers it as `shop_id`'s publisher. Needs rabbitmqctl.
    pub async fn amqp_user_for(&self, shop_id: Uuid) -> AmqpShopUser {
        let user = format!("shop-{}-{}", self.id, &Uuid::new_v4().simple().to_string()[..6]);
        let password = Uuid::new_v4().simple().to_string();
        let ok = |args: &[&str]| {
            let out = std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .expect("rabbitmqctl runs");
            assert!(
                out.status.success(),
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(&["-q", "add_user", &user, &password]);
        let write = format!("^{}$", self.topology.orders_exchange.replace('.', "\\."));
        ok(&["-q", "set_permissions", "-p", &Self::vhost(), &user, "^$", &write, "^$"]);
        sqlx::query("UPDATE shops SET amqp_user = $2 WHERE id = $1")
            .bind(shop_id)
            .bind(&user)
            .execute(&self.store.pool)
            .await
            .unwrap();
        let vhost = if Self::vhost() == "/" {
            "%2f".to_string()
        } else {
            Self::vhost()
        };
        AmqpShopUser {
            url: format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}"),
            user,
        }
    }

    /// Runs the pika publisher (tests/python/publish_order.py) as a shop would.
    pub fn publish_with_pika(&self, shop: &AmqpShopUser, order: &Value) -> std::process::Output {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/publish_order.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args([
                "--url",
                &shop.url,
                "--exchange",
                &self.topology.orders_exchange,
                "--routing-key",
                "orders.test",
                "--file",
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(order.to_string().as_bytes())
            .expect("write the order");
        child.wait_with_output().expect("pika publisher finishes")
    }
}

/// Issue 12 §3–4: invoices and the survey after payment.
impl TestApp {
    /// Submits the sample order under `cid`, pays it in the sandbox and
    /// waits until it is paid; returns payhub's order id.
    pub async fn sample_paid_order(&self, cid: &str) -> String {
        assert_eq!(self.post_order(&sample_order(cid)).await.status(), 201);
        let order = self.wait_for_status(cid, "awaiting_payment").await;
        let order_id = order["id"].as_str().expect("the order's id").to_string();
        self.pay_until_acknowledged(&order_id).await;
        self.wait_for_status(cid, "paid").await;
        order_id
    }

    /// The bodies of the e-mails to `to` whose subject contains `subject`.
    pub fn mails_to(&self, to: &str, subject: &str) -> Vec<String> {
        self.sandbox
            .emails()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == to) && m.subject.as_deref().is_some_and(|s| s.contains(subject)))
            .map(|m| email_text(&m.data))
            .collect()
    }

    /// `payhubctl shop set-invoicing <this shop>` with the sandbox's Focus
    /// NFe token (written to a file, never an argument) and `profile`.
    pub fn set_invoicing(&self, profile: &Value, extra: &[&str]) -> std::process::Output {
        let dir = std::env::temp_dir();
        let token = dir.join(format!("payhub-focus-token-{}", Uuid::new_v4()));
        let prof = dir.join(format!("payhub-fiscal-profile-{}.json", Uuid::new_v4()));
        std::fs::write(&token, format!("{}\n", payhub_sandbox::FOCUSNFE_SANDBOX_TOKEN)).expect("token file");
        std::fs::write(&prof, profile.to_string()).expect("profile file");
        let shop = self.shop.shop.id.to_string();
        let (token_path, prof_path) = (
            token.to_string_lossy().into_owned(),
            prof.to_string_lossy().into_owned(),
        );
        let endpoint = self.sandbox.focusnfe_url();
        let mut args = vec![
            "shop",
            "set-invoicing",
            shop.as_str(),
            "--profile",
            &prof_path,
            "--token-file",
            &token_path,
            "--endpoint",
            &endpoint,
        ];
        args.extend_from_slice(extra);
        let out = self.payhubctl(&args);
        let _ = std::fs::remove_file(&token);
        let _ = std::fs::remove_file(&prof);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_transfer_encodings() {
        let qp = "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nOl=C3=A1, abc=\r\ndef\r\n";
        assert_eq!(email_text(qp), "Olá, abcdef\n");
        let b64 = "Content-Transfer-Encoding: base64\r\n\r\nT2zDoQ==\r\n";
        assert_eq!(email_text(b64), "Olá");
        assert_eq!(email_text("A: b\r\n\r\nplain"), "plain");
    }
}
