//! charge-creator: turns `order.accepted` into a charge at the provider.
//!
//! The provider call is idempotent on the order's id (OpenPix
//! `return_existing`), so a redelivered event never creates a second charge.
//! The charge row, the processed-event record and `charge.created` commit
//! together. A transient provider failure is retried through the queue's
//! retry topology; on the last attempt, or on a permanent refusal, the order
//! is reported failed (`charge.failed`) so it is blocked and people are told.

use payhub_connectors::openpix::OpenPixClient;
use payhub_connectors::{ChargeConnector, ChargeRequest, ConnectorError};
use payhub_core::Envelope;
use payhub_core::events::{ChargeCreated, ChargeFailed, EventPayload};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::{Store, outbox};
use payhub_telemetry::{ConfigError, Env};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "charge-creator";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub openpix_base_url: String,
    pub openpix_app_id: SecretString,
    pub provider_timeout: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:9101")?,
            openpix_base_url: env.url("PAYHUB_OPENPIX_BASE_URL", "https://api.woovi.com")?,
            openpix_app_id: SecretString::from(env.required("PAYHUB_OPENPIX_APP_ID")?),
            provider_timeout: env.millis("PAYHUB_PROVIDER_TIMEOUT_MS", Duration::from_secs(10))?,
        })
    }
}

/// Handles one `order.accepted`.
pub struct ChargeHandler<C> {
    pub store: Store,
    pub broker: payhub_queue::Broker,
    pub connector: C,
    pub max_attempts: u32,
}

impl<C: ChargeConnector> Handler for ChargeHandler<C> {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let env = &msg.envelope;
        let EventPayload::OrderAccepted(accepted) = &env.payload else {
            return Err(Failure::Permanent(format!(
                "charge-creator cannot handle {}",
                env.kind()
            )));
        };
        let (Some(order_id), Some(shop_id), Some(correlation_id)) =
            (env.order_id, env.shop_id, env.correlation_id.as_deref())
        else {
            return Err(Failure::Permanent(
                "order.accepted without order, shop or correlation id".into(),
            ));
        };
        if already_processed(&self.store, env.id).await? {
            tracing::info!("already processed; acking the duplicate");
            return Ok(());
        }
        let req = ChargeRequest {
            provider_reference: accepted.provider_reference.clone(),
            amount: accepted.amount,
            description: accepted.description.clone(),
            expires_in_secs: accepted.expires_in_secs,
            customer: accepted.customer.clone(),
        };
        let outcome = self.connector.create_charge(&req).await;
        let mut event = match outcome {
            Ok(created) => {
                if created.amount != accepted.amount {
                    // The provider changed the amount: never let the buyer pay a different sum.
                    failed_event(
                        accepted.provider,
                        format!(
                            "the provider created the charge for {} instead of {}",
                            created.amount, accepted.amount
                        ),
                        true,
                    )
                } else {
                    let mut tx = self.store.begin().await.map_err(db)?;
                    if !payhub_store::mark_processed(&mut tx, SERVICE, env.id)
                        .await
                        .map_err(db)?
                    {
                        return Ok(());
                    }
                    sqlx::query(
                        "INSERT INTO charges (order_id, provider, provider_reference, provider_charge_id, currency, amount_minor,
                             br_code, qr_code_image_url, payment_link_url, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (order_id) DO NOTHING",
                    )
                    .bind(order_id)
                    .bind(accepted.provider.as_str())
                    .bind(&accepted.provider_reference)
                    .bind(&created.provider_charge_id)
                    .bind(created.amount.currency().code())
                    .bind(created.amount.minor())
                    .bind(&created.view.br_code)
                    .bind(&created.view.qr_code_image_url)
                    .bind(&created.view.payment_link_url)
                    .bind(created.view.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    let mut ev = Envelope::for_order(
                        EventPayload::ChargeCreated(ChargeCreated {
                            provider: accepted.provider,
                            provider_reference: accepted.provider_reference.clone(),
                            provider_charge_id: created.provider_charge_id.clone(),
                            amount: created.amount,
                            charge: created.view.clone(),
                        }),
                        order_id,
                        shop_id,
                        correlation_id,
                    );
                    ev.trace = payhub_telemetry::trace::current_context();
                    outbox::add(&mut tx, &ev).await.map_err(db)?;
                    tx.commit().await.map_err(db)?;
                    tracing::info!(charge_id = %created.provider_charge_id, "charge created");
                    let _ = outbox::publish_now(&self.store, &self.broker, &[ev]).await;
                    return Ok(());
                }
            }
            Err(ConnectorError::Transient(e)) if msg.attempt < self.max_attempts => {
                return Err(Failure::Transient(e));
            }
            Err(ConnectorError::Transient(e)) => failed_event(
                accepted.provider,
                format!("the provider stayed unavailable for {} attempts: {e}", msg.attempt),
                false,
            ),
            Err(ConnectorError::Permanent(e)) => failed_event(accepted.provider, e, true),
        };
        event.order_id = Some(order_id);
        event.shop_id = Some(shop_id);
        event.correlation_id = Some(correlation_id.to_string());
        event.trace = payhub_telemetry::trace::current_context();
        let mut tx = self.store.begin().await.map_err(db)?;
        if !payhub_store::mark_processed(&mut tx, SERVICE, env.id)
            .await
            .map_err(db)?
        {
            return Ok(());
        }
        outbox::add(&mut tx, &event).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::warn!("charge could not be created; the order will be blocked");
        let _ = outbox::publish_now(&self.store, &self.broker, &[event]).await;
        Ok(())
    }
}

fn failed_event(provider: payhub_core::Provider, reason: String, permanent: bool) -> Envelope {
    Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider,
        reason,
        permanent,
    }))
}

async fn already_processed(store: &Store, event_id: uuid::Uuid) -> Result<bool, Failure> {
    let r: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
        .bind(SERVICE)
        .bind(event_id)
        .fetch_optional(&store.pool)
        .await
        .map_err(db)?;
    Ok(r.is_some())
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let connector = OpenPixClient::new(
            &config.openpix_base_url,
            config.openpix_app_id.clone(),
            config.provider_timeout,
        )?;
        Self::build_with(config, connector, shutdown).await
    }

    /// Builds with any connector (tests use the sandbox through the real client).
    pub async fn build_with<C: ChargeConnector>(
        config: Config,
        connector: C,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        infra.spawn_outbox_relay();
        let handler = ChargeHandler {
            store: infra.store.clone(),
            broker: infra.broker.clone(),
            connector,
            max_attempts: config.common.topology.retry.max_attempts,
        };
        let mut app = payhub_service::App::start(infra, config.common.http_addr, axum::Router::new()).await?;
        app.consume(QueueSpec::CHARGE_CREATOR, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
