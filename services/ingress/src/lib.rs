//! ingress: the shops' door. `POST /v1/orders` validates an order into
//! domain types, stores it with its first history entry and the
//! `order.accepted` event in one transaction, and publishes the event;
//! `GET /v1/orders/{correlationID}` shows the order, its charge and history.

mod accept;
mod amqp;
mod orders;
mod wake;

use payhub_service::{CommonConfig, Infra};
use payhub_telemetry::{ConfigError, Env};
use std::net::SocketAddr;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "ingress";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:8080")?,
            max_body_bytes: env.parse("PAYHUB_MAX_BODY_BYTES", 256 * 1024)?,
        })
    }
}

pub struct Application {
    infra: Infra,
    work: JoinSet<anyhow::Result<()>>,
    local_addr: SocketAddr,
}

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown.clone())?;
        infra.spawn_outbox_relay();
        let state = orders::AppState {
            store: infra.store.clone(),
            broker: infra.broker.clone(),
        };
        let routes = orders::router(state.clone(), config.max_body_bytes).merge(wake::router(state));
        let server = infra.bind_http(config.common.http_addr, routes).await?;
        let local_addr = server.local_addr;
        let mut work = JoinSet::new();
        work.spawn(server.serve(shutdown.clone()));
        let handler = std::sync::Arc::new(amqp::ShopOrderHandler {
            store: infra.store.clone(),
            broker: infra.broker.clone(),
        });
        let opts = payhub_queue::ConsumerOptions {
            spec: payhub_queue::QueueSpec::INGRESS_ORDERS,
            service: SERVICE,
            prefetch: config.common.prefetch,
        };
        let broker = infra.broker.clone();
        work.spawn(async move {
            payhub_queue::consume(broker, opts, handler, shutdown).await;
            Ok(())
        });
        tracing::info!(%local_addr, "ingress listening");
        Ok(Application {
            infra,
            work,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.infra.run_until_stopped(self.work).await
    }
}
