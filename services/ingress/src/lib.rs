//! ingress: the shops' door. `POST /v1/orders` validates an order into
//! domain types, stores it with its first history entry and the
//! `order.accepted` event in one transaction, and publishes the event;
//! `GET /v1/orders/{correlationID}` shows the order, its charge and history;
//! `POST /v1/orders/{correlationID}/refunds` gives money back through
//! charge-creator's internal refund call;
//! `POST /v1/orders/{correlationID}/fulfilment` reports a paid order's
//! fulfilment (forwarded, shipped, delivered, returned, cancelled).

mod accept;
mod amqp;
mod card;
pub mod checkout;
mod fulfilment;
mod health;
mod orders;
mod receipt;
mod refunds;
pub mod stock;
pub mod survey;
mod wake;

use payhub_core::url_safety::WebhookUrlPolicy;
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
    /// charge-creator's listener, where a card received at a door is charged
    /// (`PAYHUB_CHARGE_CREATOR_URL`, `POST /internal/v1/card`).
    pub charge_creator_url: String,
    /// Authenticates the internal card call (`PAYHUB_INTERNAL_TOKEN`).
    pub internal_token: secrecy::SecretString,
    /// How long the door waits for the card's outcome, and a refund's
    /// (`PAYHUB_CARD_TIMEOUT_MS`).
    pub card_timeout: std::time::Duration,
    /// How providers reach webhook-verifier (`PAYHUB_PUBLIC_WEBHOOK_BASE_URL`):
    /// a PixelPay order's view shows its callback URL under it.
    pub public_webhook_base_url: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:8080")?,
            max_body_bytes: env.parse("PAYHUB_MAX_BODY_BYTES", 256 * 1024)?,
            charge_creator_url: env.url("PAYHUB_CHARGE_CREATOR_URL", "http://127.0.0.1:9101")?,
            internal_token: payhub_service::internal::token(env)?.into(),
            card_timeout: env.millis("PAYHUB_CARD_TIMEOUT_MS", std::time::Duration::from_secs(25))?,
            public_webhook_base_url: payhub_service::callbacks::public_webhook_base_url(env)?,
        })
    }
}

/// Settings beyond [`Config`] (kept apart so that code building a `Config`
/// by hand, the test harness, keeps compiling).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which stock-callback URLs may be called: the same rules, and the same
    /// settings (`PAYHUB_ENV`, `PAYHUB_ALLOW_PRIVATE_WEBHOOKS`), as shop
    /// webhook URLs. The default is development's.
    pub stock_urls: WebhookUrlPolicy,
    /// HTTP limits and ops address; `None` reads them from the environment
    /// (as every service does, see `payhub_service::App::start`).
    pub http: Option<payhub_service::HttpOptions>,
    /// How long a Wake `/payment` or `/authorize` with a card waits for the
    /// card's outcome before answering `statusId` 1 (the outcome then comes
    /// by postback): `PAYHUB_WAKE_CARD_BUDGET_MS`, 2,500 ms when `None`,
    /// inside Wake's 3-second timeout.
    pub wake_card_budget: Option<std::time::Duration>,
    /// Where buyers open the hosted checkout (`PAYHUB_PUBLIC_CHECKOUT_BASE_URL`);
    /// `None` builds its URLs from the address the shop reached ingress at.
    pub checkout_base_url: Option<String>,
    /// Where a Pago Seguro order's signed form is posted
    /// (`PAYHUB_PAGOSEGURO_CHECKOUT_URL`); `None`: Pago Seguro's sandbox,
    /// or its production checkout with `PAYHUB_ENV=production`.
    pub pagoseguro_checkout_url: Option<String>,
    /// Checks the buyer's "my orders" links (`PAYHUB_ORDER_LINK_KEY`);
    /// `None`: the public development key.
    pub order_links: Option<payhub_core::order_link::OrderLinks>,
}

impl Options {
    pub fn from_env(env: &Env) -> Result<Options, ConfigError> {
        Ok(Options {
            stock_urls: WebhookUrlPolicy::from_settings(
                env.optional(payhub_core::url_safety::ENV_VAR).as_deref(),
                env.optional(payhub_core::url_safety::ALLOW_PRIVATE_VAR).as_deref(),
            )
            .map_err(|(name, reason)| Env::bad(name, reason))?,
            http: Some(payhub_service::HttpOptions::from_env(env)?),
            wake_card_budget: Some(env.millis("PAYHUB_WAKE_CARD_BUDGET_MS", wake::CARD_BUDGET)?),
            checkout_base_url: match env.optional("PAYHUB_PUBLIC_CHECKOUT_BASE_URL") {
                None => None,
                Some(_) => Some(
                    env.url("PAYHUB_PUBLIC_CHECKOUT_BASE_URL", "")?
                        .trim_end_matches('/')
                        .to_string(),
                ),
            },
            order_links: Some(payhub_service::order_links(env)?),
            pagoseguro_checkout_url: Some(env.url(
                "PAYHUB_PAGOSEGURO_CHECKOUT_URL",
                if env.is_production() {
                    payhub_connectors::pagoseguro::PRODUCTION_CHECKOUT_URL
                } else {
                    payhub_connectors::pagoseguro::SANDBOX_CHECKOUT_URL
                },
            )?),
        })
    }
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        Self::build_with(config, Options::default(), shutdown).await
    }

    pub async fn build_with(
        config: Config,
        options: Options,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        let stock = stock::StockClient::new(options.stock_urls)?;
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let state = orders::AppState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            stock: stock.clone(),
            cards: payhub_connectors::internal::CardClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                config.card_timeout,
            )?,
            public_webhook_base_url: config.public_webhook_base_url.clone(),
            health: payhub_store::health::HealthCache::new(infra.store.clone(), std::time::Duration::from_secs(1)),
            wake_card_budget: options.wake_card_budget.unwrap_or(wake::CARD_BUDGET),
            checkout_base_url: options.checkout_base_url.clone(),
            redirects: payhub_connectors::internal::RedirectClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                std::time::Duration::from_secs(5),
            )?,
            pagoseguro_checkout_url: options
                .pagoseguro_checkout_url
                .clone()
                .unwrap_or_else(|| payhub_connectors::pagoseguro::SANDBOX_CHECKOUT_URL.to_string()),
            order_links: options
                .order_links
                .clone()
                .unwrap_or_else(|| payhub_core::order_link::OrderLinks::new(payhub_core::order_link::DEVELOPMENT_KEY)),
        };
        let handler = amqp::ShopOrderHandler {
            stock,
            store: infra.store.clone(),
            outbox: outbox.clone(),
            own_user: infra.broker.user().map(str::to_string),
            max_attempts: config.common.topology.retry.max_attempts,
            max_body_bytes: config.max_body_bytes,
        };
        let refunds = refunds::RefundsState {
            store: infra.store.clone(),
            // A refund waits for the provider like a card does.
            refunds: payhub_connectors::internal::RefundClient::new(
                &config.charge_creator_url,
                config.internal_token.clone(),
                config.card_timeout,
            )?,
        };
        let fulfilment = fulfilment::FulfilmentState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
        };
        let routes = orders::router(state.clone(), config.max_body_bytes)
            .merge(fulfilment::router(fulfilment, config.max_body_bytes))
            .merge(receipt::router(infra.store.clone()))
            .merge(survey::router(survey::SurveyState {
                store: infra.store.clone(),
                outbox: outbox.clone(),
            }))
            .merge(refunds::router(refunds, config.max_body_bytes))
            .merge(wake::router(state.clone()))
            .merge(checkout::router(state));
        let mut app = match options.http {
            None => payhub_service::App::start(infra, config.common.http_addr, routes).await?,
            Some(http) => payhub_service::App::start_with(infra, config.common.http_addr, routes, http).await?,
        };
        app.consume(payhub_queue::QueueSpec::INGRESS_ORDERS, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Where the ops routes are served (see `PAYHUB_OPS_ADDR`).
    pub fn ops_addr(&self) -> SocketAddr {
        self.0.ops_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
