//! The installation under test: a fresh database, a fresh exchange and queue
//! prefix, one shop (API key, webhook secret, RabbitMQ user), the sandbox and
//! the six services as separate processes from `target/release`, exactly as
//! `payhub-demo` runs them; and the clean-up afterwards.

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use payhub_queue::{QueueSpec, RetryPolicy, Topology};
use payhub_store::Store;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The six services, by binary suffix.
pub const SERVICES: [&str; 6] = [
    "ingress",
    "charge-creator",
    "webhook-verifier",
    "order-updater",
    "notifier",
    "reporter",
];

pub struct Settings {
    pub pg_server_url: String,
    pub amqp_url: String,
    pub db_max_connections: u32,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub run_id: String,
    /// Processes per service (the chaos run starts two of each).
    pub replicas: usize,
    /// Extra environment of every service (the chaos run's short retry delay).
    pub extra_env: Vec<(String, String)>,
}

/// A RabbitMQ user that publishes one shop's order messages.
pub struct AmqpShop {
    pub user: String,
    pub url: String,
}

pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Child,
    /// How it was started, so it can be started again.
    bin: String,
    envs: Vec<(String, String)>,
    log: String,
}

pub struct Cluster {
    pub db_name: String,
    pub database_url: String,
    pub topology: Topology,
    pub store: Store,
    pub shop_id: Uuid,
    pub api_key: String,
    pub amqp_shop: Option<AmqpShop>,
    /// Why orders cannot come over AMQP, when they cannot.
    pub amqp_unavailable: Option<String>,
    pub sandbox_url: String,
    pub ingress_url: String,
    /// Every ingress replica's base URL (the first is `ingress_url`).
    pub ingress_urls: Vec<String>,
    /// (service, base URL of its HTTP listener: /readyz, /metrics).
    pub service_urls: Vec<(String, String)>,
    pub procs: Vec<Proc>,
    settings_amqp_url: String,
    settings_pg_server_url: String,
}

/// A free loopback address (bound, read, released), below Linux's
/// ephemeral range (32768 and up by default): a port handed out by
/// `bind(0)` comes from that range, where the outgoing connections the
/// services open at start (PostgreSQL, RabbitMQ) can take it before the
/// service binds it (a chaos run in CI lost ingress to "Address already in
/// use" that way). Ports are tried in turn from a start that differs
/// between processes, so that two benches at once do not walk the same ones.
pub fn free_addr() -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 1_000) * 12,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return Ok(l.local_addr()?.to_string());
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// `(scheme, host:port, vhost path segment)` of an AMQP URL; credentials and
/// query dropped.
pub fn split_amqp(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let vhost = path.split('?').next().unwrap_or("");
    (scheme.to_string(), host.to_string(), vhost.to_string())
}

/// The vhost of an AMQP URL, as rabbitmqctl names it.
pub fn vhost_of(amqp_url: &str) -> String {
    let (_, _, raw) = split_amqp(amqp_url);
    if raw.is_empty() || raw.eq_ignore_ascii_case("%2f") {
        "/".into()
    } else {
        raw.replace("%2f", "/").replace("%2F", "/")
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("rabbitmqctl cannot run")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {}: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `bin` from `dir`, its output appended to `<log_dir>/<log>.log`.
fn spawn(dir: &Path, bin: &str, envs: &[(String, String)], log_dir: &Path, log: &str) -> anyhow::Result<Child> {
    let path = dir.join(bin);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (make bench and make test do)",
        path.display()
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("{log}.log")))?;
    let mut cmd = Command::new(&path);
    cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("cannot start {bin}"))
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Applies the migrations to a new database, exactly as an operator does.
pub fn migrate(bin_dir: &Path, database_url: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin_dir.join("payhubctl"))
        .arg("migrate")
        .env("PAYHUB_DATABASE_URL", database_url)
        .output()
        .context("payhubctl cannot run")?;
    anyhow::ensure!(
        out.status.success(),
        "payhubctl migrate failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Cluster {
    /// Database, shop and broker user; nothing runs yet.
    pub async fn prepare(s: &Settings) -> anyhow::Result<Cluster> {
        let db_name = format!("payhub_bench_{}", s.run_id);
        let database_url = format!("{}/{db_name}", s.pg_server_url);
        migrate(&s.bin_dir, &database_url)?;
        let store = Store::connect_lazy(&database_url, 6)?;
        let topology = Topology {
            exchange: format!("payhub.bench.{}", s.run_id),
            orders_exchange: format!("payhub.bench-orders.{}", s.run_id),
            prefix: format!("bench{}.", s.run_id),
            // The product's retry policy (5 minutes, 3 attempts): a failure
            // shows as an outlier or a loss, which is the truth.
            retry: RetryPolicy::default(),
        };
        Ok(Cluster {
            db_name,
            database_url,
            topology,
            store,
            shop_id: Uuid::nil(),
            api_key: String::new(),
            amqp_shop: None,
            amqp_unavailable: None,
            sandbox_url: String::new(),
            ingress_url: String::new(),
            ingress_urls: Vec::new(),
            service_urls: Vec::new(),
            procs: Vec::new(),
            settings_amqp_url: s.amqp_url.clone(),
            settings_pg_server_url: s.pg_server_url.clone(),
        })
    }

    /// Onboards the shop, starts the sandbox and the six services and waits
    /// until every one is ready and every consumer queue exists.
    pub async fn start(&mut self, s: &Settings, want_amqp: bool) -> anyhow::Result<()> {
        let provider_addr = free_addr()?;
        let shop_addr = free_addr()?;
        let smtp_addr = free_addr()?;
        let shop = payhub_store::shops::create(
            &self.store,
            "Loja Bench",
            Some(&format!("http://{shop_addr}/shop/webhooks")),
            None,
        )
        .await
        .context("creating the bench shop")?;
        self.shop_id = shop.shop.id;
        self.api_key = shop.api_key.clone();

        if want_amqp {
            match self.amqp_user(s) {
                Ok(u) => self.amqp_shop = Some(u),
                Err(e) => {
                    eprintln!("warning: orders cannot come over AMQP: {e:#}");
                    self.amqp_unavailable = Some(format!("{e:#}"));
                }
            }
        }

        // (process name, service, replica index, address); replica 0 is named
        // after its service, the others `<service>-2`, ...
        let replicas = s.replicas.max(1);
        let mut addrs: Vec<(String, &str, usize, String)> = Vec::new();
        for n in SERVICES {
            for r in 0..replicas {
                let name = if r == 0 {
                    n.to_string()
                } else {
                    format!("{n}-{}", r + 1)
                };
                addrs.push((name, n, r, free_addr()?));
            }
        }
        let addr_of = |service: &str, replica: usize| {
            addrs
                .iter()
                .find(|(_, n, r, _)| *n == service && *r == replica)
                .map(|(_, _, _, a)| a.clone())
                .unwrap_or_default()
        };
        let sandbox_env: Vec<(String, String)> = [
            ("SANDBOX_PROVIDER_ADDR", provider_addr.clone()),
            ("SANDBOX_SHOP_ADDR", shop_addr.clone()),
            ("SANDBOX_SMTP_ADDR", smtp_addr.clone()),
            ("SANDBOX_OPENPIX_APP_ID", "sandbox-app-id".to_string()),
            (
                "SANDBOX_WEBHOOK_TARGET",
                format!("http://{}/webhooks/openpix", addr_of("webhook-verifier", 0)),
            ),
            ("SANDBOX_SHOP_SECRETS", shop.shop.webhook_secret.expose()),
            // The sandbox is the harness, not payhub: keep its logging quiet.
            ("RUST_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.launch(s, "sandbox", "payhub-sandbox", sandbox_env)?;
        self.sandbox_url = format!("http://{provider_addr}");

        for (name, service, replica, addr) in &addrs {
            let mut envs: Vec<(String, String)> = [
                ("PAYHUB_DATABASE_URL", self.database_url.clone()),
                ("PAYHUB_AMQP_URL", s.amqp_url.clone()),
                ("PAYHUB_HTTP_ADDR", addr.clone()),
                ("PAYHUB_EXCHANGE", self.topology.exchange.clone()),
                ("PAYHUB_ORDERS_EXCHANGE", self.topology.orders_exchange.clone()),
                ("PAYHUB_QUEUE_PREFIX", self.topology.prefix.clone()),
                ("PAYHUB_OPENPIX_BASE_URL", format!("http://{provider_addr}")),
                ("PAYHUB_OPENPIX_APP_ID", "sandbox-app-id".to_string()),
                (
                    "PAYHUB_OPENPIX_PUBLIC_KEYS",
                    payhub_sandbox::FIXTURE_PUBLIC_KEY_PEM.to_string(),
                ),
                ("PAYHUB_SMTP_URL", format!("smtp://{smtp_addr}")),
                (
                    // Each replica confirms with the charge-creator of its own index.
                    "PAYHUB_CHARGE_CREATOR_URL",
                    format!("http://{}", addr_of("charge-creator", *replica)),
                ),
                ("PAYHUB_DB_MAX_CONNECTIONS", s.db_max_connections.to_string()),
                ("PAYHUB_LOG_FORMAT", "json".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            envs.extend(s.extra_env.iter().cloned());
            self.launch(s, name, &format!("payhub-{service}"), envs)?;
            self.service_urls.push((name.clone(), format!("http://{addr}")));
        }
        self.ingress_urls = (0..replicas)
            .map(|r| format!("http://{}", addr_of("ingress", r)))
            .collect();
        self.ingress_url = self.ingress_urls[0].clone();

        self.wait_ready(Duration::from_secs(60)).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let sandbox = self.sandbox_url.clone();
        wait_until("the sandbox", Duration::from_secs(20), || async {
            http.get(format!("{sandbox}/sandbox/charges")).send().await.is_ok()
        })
        .await?;
        wait_until("the consumer queues", Duration::from_secs(20), || async {
            self.queues_declared().await
        })
        .await?;
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited at start ({status}); see its log", p.name);
            }
        }
        Ok(())
    }

    /// Starts one process (its log: `<log_dir>/<binary>.log` for the first
    /// of a service, `<name>.log` for the other replicas).
    fn launch(&mut self, s: &Settings, name: &str, bin: &str, envs: Vec<(String, String)>) -> anyhow::Result<()> {
        let log = if name == "sandbox" || SERVICES.contains(&name) {
            bin.to_string()
        } else {
            format!("payhub-{name}")
        };
        let child = spawn(&s.bin_dir, bin, &envs, &s.log_dir, &log)?;
        self.procs.push(Proc {
            name: name.to_string(),
            pid: child.id().unwrap_or(0),
            child,
            bin: bin.to_string(),
            envs,
            log,
        });
        Ok(())
    }

    /// SIGKILL to the process `name` (no drain, no acks), waited for.
    /// Returns its pid.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<u32> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name}"))?;
        p.child.start_kill().with_context(|| format!("killing {name}"))?;
        let _ = p.child.wait().await;
        Ok(p.pid)
    }

    /// Starts the process `name` again exactly as it was started (same
    /// address, same environment; its log is appended to). Returns the new pid.
    pub fn restart(&mut self, s: &Settings, name: &str) -> anyhow::Result<u32> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name}"))?;
        p.child = spawn(&s.bin_dir, &p.bin, &p.envs, &s.log_dir, &p.log)?;
        p.pid = p.child.id().unwrap_or(0);
        Ok(p.pid)
    }

    /// Processes that exited on their own: (name, exit status).
    pub fn exited(&mut self) -> Vec<(String, String)> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((p.name.clone(), status.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Waits until every service answers /readyz.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        for (name, base) in &self.service_urls {
            wait_until(&format!("{name} to be ready"), timeout, || async {
                matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
            })
            .await?;
        }
        Ok(())
    }

    fn amqp_user(&self, s: &Settings) -> anyhow::Result<AmqpShop> {
        let user = format!("bench-shop-{}", s.run_id);
        let password = Uuid::new_v4().simple().to_string();
        let vhost = vhost_of(&s.amqp_url);
        rabbitmqctl(&["-q", "add_user", &user, &password])?;
        let write = format!("^{}$", self.topology.orders_exchange.replace('.', "\\."));
        rabbitmqctl(&["-q", "set_permissions", "-p", &vhost, &user, "^$", &write, "^$"])?;
        let out = std::process::Command::new(s.bin_dir.join("payhubctl"))
            .args(["shop", "set-amqp-user", &self.shop_id.to_string(), &user])
            .env("PAYHUB_DATABASE_URL", &self.database_url)
            .output()
            .context("payhubctl cannot run")?;
        anyhow::ensure!(
            out.status.success(),
            "payhubctl shop set-amqp-user failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let (scheme, host, vhost_part) = split_amqp(&s.amqp_url);
        let vhost_part = if vhost_part.is_empty() {
            "%2f".to_string()
        } else {
            vhost_part
        };
        Ok(AmqpShop {
            url: format!("{scheme}://{user}:{password}@{host}/{vhost_part}"),
            user,
        })
    }

    /// Every work queue exists (consumers declare them on connect).
    async fn queues_declared(&self) -> bool {
        let Ok(conn) =
            lapin::Connection::connect(&self.settings_amqp_url, lapin::ConnectionProperties::default()).await
        else {
            return false;
        };
        let mut ok = true;
        for spec in QueueSpec::ALL {
            let Ok(ch) = conn.create_channel().await else {
                ok = false;
                break;
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let q = self.topology.work_queue(&spec);
            if ch
                .queue_declare(q.as_str().into(), passive, Default::default())
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

    /// Every queue of the installation: (spec base, kind, name).
    pub fn queues(&self) -> Vec<(String, &'static str, String)> {
        let mut out = Vec::new();
        for spec in QueueSpec::ALL {
            out.push((spec.base.to_string(), "work", self.topology.work_queue(&spec)));
            out.push((spec.base.to_string(), "retry", self.topology.retry_queue(&spec)));
            out.push((spec.base.to_string(), "dlq", self.topology.dead_letter_queue(&spec)));
        }
        out
    }

    /// SIGTERM to every process (services drain and exit), then wait.
    pub async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // Services first, the sandbox last (notifier may still be talking to it).
        self.procs.sort_by_key(|p| p.name == "sandbox");
        for p in &self.procs {
            if p.pid != 0 {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &p.pid.to_string()])
                    .status();
            }
        }
        for p in &mut self.procs {
            match tokio::time::timeout(Duration::from_secs(20), p.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("{} exited with {status}", p.name)),
                _ => {
                    problems.push(format!("{} did not stop within 20 s; killed", p.name));
                    let _ = p.child.kill().await;
                }
            }
        }
        self.procs.clear();
        problems
    }

    /// Drops the database, the queues, the exchanges and the broker user.
    pub async fn cleanup(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.store.pool.close().await;
        match drop_database(&self.settings_pg_server_url, &self.db_name).await {
            Ok(()) => {}
            Err(e) => problems.push(format!("dropping database {}: {e:#}", self.db_name)),
        }
        let connect = lapin::Connection::connect(&self.settings_amqp_url, lapin::ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(30), connect)
            .await
            .map_err(|_| "no connection within 30 s".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            Ok(conn) => {
                if let Ok(ch) = conn.create_channel().await {
                    for (_, _, q) in self.queues() {
                        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                    }
                    for ex in [&self.topology.exchange, &self.topology.orders_exchange] {
                        let _ = ch.exchange_delete(ex.as_str().into(), Default::default()).await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            }
            Err(e) => problems.push(format!("deleting the queues: {e}")),
        }
        if let Some(u) = &self.amqp_shop
            && let Err(e) = rabbitmqctl(&["-q", "delete_user", &u.user])
        {
            problems.push(format!("deleting RabbitMQ user {}: {e:#}", u.user));
        }
        problems
    }
}

pub async fn drop_database(pg_server_url: &str, db_name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&format!("{pg_server_url}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhosts() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/"), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672/payhub-test"), "payhub-test");
        assert_eq!(vhost_of("amqp://g:g@h:5672"), "/");
        assert_eq!(
            split_amqp("amqps://u:p@h:5671/v?heartbeat=5"),
            ("amqps".into(), "h:5671".into(), "v".into())
        );
    }
}
