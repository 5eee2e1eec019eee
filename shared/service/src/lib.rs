//! What every payhub service wires the same way: the common settings, the
//! store and broker handles with readiness, the ops HTTP server, and a
//! two-phase shutdown (stop intake and drain, then close connections).

pub mod callbacks;
pub mod internal;
pub mod outbound;
pub mod problem;

use payhub_queue::Failure;
use payhub_store::StoreError;

/// How a consumer treats a database error: connection trouble (the
/// database restarting, the pool exhausted) holds the message until the
/// database is back; anything else is a transient failure with bounded
/// attempts, then the dead-letter queue.
pub fn store_failure(e: impl Into<StoreError>) -> Failure {
    let e = e.into();
    if e.is_transient() {
        Failure::Unavailable(format!("database: {e}"))
    } else {
        Failure::Transient(format!("database: {e}"))
    }
}

/// The buyer's "my orders" links' key (`PAYHUB_ORDER_LINK_KEY`, or
/// `_FILE`): required with `PAYHUB_ENV=production`, at least 32 characters;
/// elsewhere the public development key. The value is never echoed.
pub fn order_links(env: &Env) -> Result<payhub_core::order_link::OrderLinks, ConfigError> {
    use payhub_core::order_link::{DEVELOPMENT_KEY, KEY_VAR, OrderLinks};
    let key = env.string_or_production_required(KEY_VAR, DEVELOPMENT_KEY)?;
    OrderLinks::from_setting(&key).map_err(|reason| Env::bad(KEY_VAR, reason))
}

use anyhow::Context;
use payhub_queue::{Broker, RetryPolicy, Topology};
use payhub_store::Store;
pub use payhub_telemetry::http::HttpLimits;
use payhub_telemetry::{ConfigError, Env, Readiness};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings every service reads. Defaults work against a local RabbitMQ and
/// PostgreSQL; see the README's configuration table.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub database_url: String,
    pub amqp_url: String,
    pub http_addr: SocketAddr,
    pub topology: Topology,
    pub prefetch: u16,
    pub db_max_connections: u32,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/payhub";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl CommonConfig {
    /// In production (`Env::is_production`) the database and broker URLs
    /// have no local default: they must be given (directly or as `_FILE`).
    pub fn from_env(env: &Env, default_http_addr: &str) -> Result<CommonConfig, ConfigError> {
        env.check_files()?;
        let database_url = env.string_or_production_required("PAYHUB_DATABASE_URL", DEFAULT_DATABASE_URL)?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(Env::bad("PAYHUB_DATABASE_URL", "must be a postgres:// URL"));
        }
        let amqp_url = env.string_or_production_required("PAYHUB_AMQP_URL", DEFAULT_AMQP_URL)?;
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(Env::bad("PAYHUB_AMQP_URL", "must be an amqp:// or amqps:// URL"));
        }
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            delay: env.millis("PAYHUB_RETRY_DELAY_MS", defaults.delay)?,
            max_attempts: env.parse("PAYHUB_MAX_ATTEMPTS", defaults.max_attempts)?,
            delivery_limit: env.parse("PAYHUB_DELIVERY_LIMIT", defaults.delivery_limit)?,
            hold_limit: env.millis("PAYHUB_HOLD_LIMIT_MS", defaults.hold_limit)?,
        };
        if retry.hold_limit.is_zero() {
            return Err(Env::bad("PAYHUB_HOLD_LIMIT_MS", "must be above 0"));
        }
        if retry.max_attempts == 0 {
            return Err(Env::bad("PAYHUB_MAX_ATTEMPTS", "must be at least 1"));
        }
        if retry.delay.is_zero() {
            return Err(Env::bad("PAYHUB_RETRY_DELAY_MS", "must be above 0"));
        }
        let prefetch: u16 = env.parse("PAYHUB_PREFETCH", 32)?;
        if prefetch == 0 {
            return Err(Env::bad("PAYHUB_PREFETCH", "must be at least 1"));
        }
        let db_max_connections: u32 = env.parse("PAYHUB_DB_MAX_CONNECTIONS", 10)?;
        if db_max_connections == 0 {
            return Err(Env::bad("PAYHUB_DB_MAX_CONNECTIONS", "must be at least 1"));
        }
        Ok(CommonConfig {
            database_url,
            amqp_url,
            http_addr: env.socket_addr("PAYHUB_HTTP_ADDR", default_http_addr)?,
            topology: Topology {
                exchange: env.string("PAYHUB_EXCHANGE", "payhub.events"),
                orders_exchange: env.string("PAYHUB_ORDERS_EXCHANGE", "payhub.orders"),
                prefix: env.string("PAYHUB_QUEUE_PREFIX", ""),
                retry,
            },
            prefetch,
            db_max_connections,
        })
    }
}

/// The connections and background tasks of one running service.
pub struct Infra {
    pub service: &'static str,
    pub store: Store,
    pub broker: Broker,
    pub readiness: Readiness,
    /// Cancelled by the operator (SIGTERM): stop taking work.
    pub shutdown: CancellationToken,
    /// Cancelled last, after work drained: close connections.
    infra_shutdown: CancellationToken,
    pub tasks: JoinSet<()>,
}

impl Infra {
    pub fn start(service: &'static str, cfg: &CommonConfig, shutdown: CancellationToken) -> anyhow::Result<Infra> {
        let store = Store::connect_lazy(&cfg.database_url, cfg.db_max_connections).context("PAYHUB_DATABASE_URL")?;
        let infra_shutdown = CancellationToken::new();
        let broker = Broker::start(
            &cfg.amqp_url,
            &format!("payhub-{service}"),
            cfg.topology.clone(),
            infra_shutdown.clone(),
        );
        let readiness = Readiness::default();
        let db_ok = readiness.check("database");
        let broker_ok = readiness.check("broker");
        let mut tasks = JoinSet::new();
        {
            let (store, broker, stop) = (store.clone(), broker.clone(), infra_shutdown.clone());
            tasks.spawn(async move {
                loop {
                    db_ok.store(store.ping().await, Ordering::Relaxed);
                    broker_ok.store(broker.is_connected(), Ordering::Relaxed);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            });
        }
        Ok(Infra {
            service,
            store,
            broker,
            readiness,
            shutdown,
            infra_shutdown,
            tasks,
        })
    }

    /// Reads shops through the store's cache, kept current by PostgreSQL's
    /// notifications (see `payhub_store::shop_cache`). For services that
    /// only route by shop (notifier): a change reaches them a few
    /// milliseconds after its commit. Services that authenticate shops or
    /// apply their rules read the database every time.
    pub fn cache_shops(&mut self) {
        let store = self.store.clone();
        self.tasks.spawn(
            store
                .shop_cache()
                .clone()
                .listen(store.clone(), self.infra_shutdown.clone()),
        );
    }

    /// Runs the outbox relay and the published-marker in the background
    /// (services that publish), and returns the handle that publishes.
    pub fn spawn_outbox(&mut self) -> payhub_store::outbox::Outbox {
        let relay = payhub_store::outbox::Relay {
            store: self.store.clone(),
            broker: self.broker.clone(),
            grace: Duration::from_secs(2),
            interval: Duration::from_secs(1),
        };
        let stop = self.infra_shutdown.clone();
        self.tasks.spawn(relay.run(stop.clone()));
        let (outbox, marker) = payhub_store::outbox::Outbox::new(self.store.clone(), self.broker.clone(), stop);
        self.tasks.spawn(marker);
        outbox
    }

    /// Binds the HTTP listener: service routes plus `/metrics`, `/healthz`,
    /// `/readyz`, with request metrics and the default [`HttpLimits`].
    pub async fn bind_http(&self, addr: SocketAddr, routes: axum::Router) -> anyhow::Result<HttpServer> {
        self.bind_http_with(addr, routes, &HttpOptions::default()).await
    }

    /// Binds the HTTP listener(s) under `opts`: with an ops address, the ops
    /// routes are served there only, and the public listener has the service
    /// routes alone.
    pub async fn bind_http_with(
        &self,
        addr: SocketAddr,
        routes: axum::Router,
        opts: &HttpOptions,
    ) -> anyhow::Result<HttpServer> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (PAYHUB_HTTP_ADDR)"))?;
        let local_addr = listener.local_addr()?;
        let ops = payhub_telemetry::ops_router(self.readiness.clone());
        let (router, ops) = match opts.ops_addr {
            None => (routes.merge(ops), None),
            Some(ops_addr) => {
                let ops_listener = TcpListener::bind(ops_addr)
                    .await
                    .with_context(|| format!("cannot listen on {ops_addr} (PAYHUB_OPS_ADDR)"))?;
                (routes, Some((ops_listener, payhub_telemetry::http::instrument(ops))))
            }
        };
        let ops_local_addr = match &ops {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        Ok(HttpServer {
            listener,
            router: payhub_telemetry::http::instrument(router),
            local_addr,
            limits: opts.limits,
            ops,
            ops_local_addr,
        })
    }

    /// Waits for `work` (consumers, HTTP) to end after shutdown, then closes
    /// the broker connection and background tasks.
    pub async fn run_until_stopped(mut self, mut work: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
        let readiness = self.readiness.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.set_draining();
        });
        let mut result = Ok(());
        while let Some(r) = work.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = format!("{e:#}"), "a task of the service failed; stopping");
                    self.shutdown.cancel();
                    result = Err(e);
                }
                Err(e) => {
                    self.shutdown.cancel();
                    result = Err(anyhow::anyhow!("a task of the service panicked: {e}"));
                }
            }
        }
        self.infra_shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        // Let the broker supervisor close the connection politely.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tracing::info!(service = self.service, "drained and stopped");
        result
    }
}

/// How a service's HTTP listeners are run: the limits every listener has
/// and, optionally, a separate internal address for the ops routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    pub limits: HttpLimits,
    /// `PAYHUB_OPS_ADDR`: where `/metrics`, `/healthz` and `/readyz` are
    /// served instead of the public listener. Unset: on the public listener.
    pub ops_addr: Option<SocketAddr>,
}

impl HttpOptions {
    /// The limits (`PAYHUB_HTTP_*`, see [`HttpLimits::from_env`]) and
    /// `PAYHUB_OPS_ADDR`.
    pub fn from_env(env: &Env) -> Result<HttpOptions, ConfigError> {
        Ok(HttpOptions {
            limits: HttpLimits::from_env(env)?,
            ops_addr: match env.optional("PAYHUB_OPS_ADDR") {
                None => None,
                Some(_) => Some(env.socket_addr("PAYHUB_OPS_ADDR", "")?),
            },
        })
    }
}

/// A bound, not yet serving, HTTP server.
pub struct HttpServer {
    listener: TcpListener,
    router: axum::Router,
    pub local_addr: SocketAddr,
    limits: HttpLimits,
    ops: Option<(TcpListener, axum::Router)>,
    /// Where the ops routes are, when not on the public listener.
    pub ops_local_addr: Option<SocketAddr>,
}

impl HttpServer {
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        use payhub_telemetry::http::serve_with;
        let public = serve_with(self.listener, self.router, self.limits, "public", shutdown.clone());
        let result = match self.ops {
            None => public.await,
            Some((listener, router)) => {
                let ops = serve_with(listener, router, self.limits, "ops", shutdown);
                let (a, b) = tokio::join!(public, ops);
                a.and(b)
            }
        };
        result.context("the HTTP server failed")
    }
}

/// A running service: its connections, its HTTP server and its consumers.
/// Every service's `Application` wraps one.
pub struct App {
    infra: Infra,
    work: JoinSet<anyhow::Result<()>>,
    local_addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
}

impl App {
    /// Binds the HTTP listener (service routes plus the ops routes) and
    /// starts serving until shutdown, with the limits and ops address the
    /// environment sets ([`HttpOptions::from_env`]; a bad value stops the
    /// service like any other setting).
    pub async fn start(infra: Infra, http_addr: SocketAddr, routes: axum::Router) -> anyhow::Result<App> {
        let opts = HttpOptions::from_env(&Env::process())?;
        Self::start_with(infra, http_addr, routes, opts).await
    }

    /// [`App::start`] with the HTTP options given.
    pub async fn start_with(
        infra: Infra,
        http_addr: SocketAddr,
        routes: axum::Router,
        opts: HttpOptions,
    ) -> anyhow::Result<App> {
        let server = infra.bind_http_with(http_addr, routes, &opts).await?;
        let local_addr = server.local_addr;
        let ops_addr = server.ops_local_addr;
        let mut work = JoinSet::new();
        work.spawn(server.serve(infra.shutdown.clone()));
        tracing::info!(service = infra.service, %local_addr, ops_addr = ?ops_addr, "listening");
        Ok(App {
            infra,
            work,
            local_addr,
            ops_addr,
        })
    }

    /// Runs the worker loop for `spec` with `handler` until shutdown.
    /// A handler that batches takes at least a full batch per prefetch.
    pub fn consume<H: payhub_queue::Handler>(&mut self, spec: payhub_queue::QueueSpec, prefetch: u16, handler: H) {
        let batch = u16::try_from(handler.max_batch()).unwrap_or(u16::MAX);
        let opts = payhub_queue::ConsumerOptions {
            spec,
            service: self.infra.service,
            prefetch: prefetch.max(batch),
        };
        let (broker, shutdown) = (self.infra.broker.clone(), self.infra.shutdown.clone());
        self.work.spawn(async move {
            payhub_queue::consume(broker, opts, std::sync::Arc::new(handler), shutdown).await;
            Ok(())
        });
    }

    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served: the ops
    /// address when one was set, the public listener otherwise.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr.unwrap_or(self.local_addr)
    }

    /// Waits until shutdown has drained every consumer and request, then
    /// closes the connections.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.infra.run_until_stopped(self.work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_requires_the_database_and_broker_urls() {
        let e = CommonConfig::from_env(&Env::from_pairs([("PAYHUB_ENV", "production")]), "0.0.0.0:1").unwrap_err();
        assert_eq!(e.name, "PAYHUB_DATABASE_URL");
        let e = CommonConfig::from_env(
            &Env::from_pairs([
                ("PAYHUB_ENV", "production"),
                ("PAYHUB_DATABASE_URL", "postgres://db.internal/payhub"),
            ]),
            "0.0.0.0:1",
        )
        .unwrap_err();
        assert_eq!(e.name, "PAYHUB_AMQP_URL");
        let ok = CommonConfig::from_env(
            &Env::from_pairs([
                ("PAYHUB_ENV", "production"),
                ("PAYHUB_DATABASE_URL", "postgres://db.internal/payhub"),
                ("PAYHUB_AMQP_URL", "amqps://mq.internal/%2f"),
            ]),
            "0.0.0.0:1",
        )
        .unwrap();
        assert_eq!(ok.database_url, "postgres://db.internal/payhub");
        // Outside production the local defaults stand.
        let dev = CommonConfig::from_env(&Env::from_pairs(Vec::<(&str, &str)>::new()), "0.0.0.0:1").unwrap();
        assert_eq!(dev.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(dev.amqp_url, DEFAULT_AMQP_URL);
    }

    #[test]
    fn urls_may_come_from_files_but_not_twice() {
        let path = std::env::temp_dir().join(format!("payhub-common-test-{}", std::process::id()));
        std::fs::write(&path, "postgres://from-file/payhub\n").unwrap();
        let p = path.to_str().unwrap();
        let cfg = CommonConfig::from_env(&Env::from_pairs([("PAYHUB_DATABASE_URL_FILE", p)]), "0.0.0.0:1").unwrap();
        assert_eq!(cfg.database_url, "postgres://from-file/payhub");
        let e = CommonConfig::from_env(
            &Env::from_pairs([
                ("PAYHUB_DATABASE_URL_FILE", p),
                ("PAYHUB_DATABASE_URL", "postgres://x/y"),
            ]),
            "0.0.0.0:1",
        )
        .unwrap_err();
        assert_eq!(e.name, "PAYHUB_DATABASE_URL");
        std::fs::remove_file(path).unwrap();
    }
}
