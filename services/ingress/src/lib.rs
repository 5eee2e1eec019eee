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

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let state = orders::AppState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
        };
        let handler = amqp::ShopOrderHandler {
            store: infra.store.clone(),
            outbox,
        };
        let routes = orders::router(state.clone(), config.max_body_bytes).merge(wake::router(state));
        let mut app = payhub_service::App::start(infra, config.common.http_addr, routes).await?;
        app.consume(payhub_queue::QueueSpec::INGRESS_ORDERS, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
