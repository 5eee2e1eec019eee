//! charge-creator: turns `order.accepted` into a charge at the provider.
//!
//! The provider call is idempotent on the order's id (OpenPix
//! `return_existing`), so a redelivered event never creates a second charge.
//! The charge row, the processed-event record and `charge.created` commit
//! together. A transient provider failure is retried through the queue's
//! retry topology; on the last attempt, or on a permanent refusal, the order
//! is reported failed (`charge.failed`) so it is blocked and people are told.
//!
//! It also serves the internal calls of the services that need a provider:
//! payment confirmations (`confirm`), card charges (`card`) and refunds
//! (`refund`).

use accounts::{AccountError, Providers, Using};
use payhub_connectors::openpix::OpenPixClient;
use payhub_connectors::{ChargeConnector, ChargeRequest, ConnectorError};
use payhub_core::Envelope;
use payhub_core::events::{ChargeCreated, ChargeFailed, EventPayload};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::{Store, outbox};
use payhub_telemetry::{ConfigError, Env};
use secrecy::SecretString;
use sqlx::Connection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub mod accounts;
mod callbacks;
pub mod capture;
pub mod card;
pub mod confirm;
pub mod health;
pub mod invoice;
pub mod listing;
pub mod pagoseguro;
pub mod pixelpay_status;
pub mod refund;
pub mod registrar;

pub const SERVICE: &str = "charge-creator";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub openpix_base_url: String,
    pub openpix_app_id: SecretString,
    pub provider_timeout: Duration,
    /// Authenticates the internal confirmation call (`PAYHUB_INTERNAL_TOKEN`).
    pub internal_token: SecretString,
    /// Opens the shops' provider credentials (`PAYHUB_PROVIDER_KEY`).
    pub provider_key: payhub_store::Secrets,
    /// How long a shop's provider account is used before it is read again
    /// (`PAYHUB_ACCOUNT_CACHE_MS`): a rotation takes effect within it.
    pub account_cache_ttl: Duration,
    /// The platform's PixelPay account, for shops without their own
    /// (`PAYHUB_PIXELPAY_KEY_ID`, `PAYHUB_PIXELPAY_SECRET_KEY`, `PAYHUB_PIXELPAY_ENDPOINT`).
    pub pixelpay: Option<payhub_connectors::pixelpay::PixelPayAccount>,
    /// How providers reach webhook-verifier (`PAYHUB_PUBLIC_WEBHOOK_BASE_URL`):
    /// the card sale's `order_callback` and the OpenPix webhooks registered
    /// at each shop's account are under it. `None`: neither is given.
    pub public_webhook_base_url: Option<String>,
    /// How often the shops' OpenPix webhooks are checked and registered
    /// (`PAYHUB_WEBHOOK_CHECK_INTERVAL_MS`).
    pub webhook_check_interval: Duration,
    /// How provider accounts are probed (`PAYHUB_PROVIDER_PROBE_INTERVAL_MS`,
    /// `PAYHUB_PROVIDER_DOWN_AFTER`).
    pub probe: health::ProbeConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:9101")?,
            openpix_base_url: env.external_url("PAYHUB_OPENPIX_BASE_URL", "https://api.woovi.com")?,
            openpix_app_id: SecretString::from(env.required("PAYHUB_OPENPIX_APP_ID")?),
            provider_timeout: env.millis("PAYHUB_PROVIDER_TIMEOUT_MS", Duration::from_secs(10))?,
            internal_token: payhub_service::internal::token(env)?.into(),
            provider_key: payhub_store::Secrets::from_settings_of(payhub_store::secrets::KeyKind::Provider, |name| {
                env.optional(name)
            })
            .map_err(|e| match e {
                payhub_store::secrets::SecretsError::Setting { name, reason } => Env::bad(name, reason),
                other => Env::bad(payhub_store::secrets::PROVIDER_KEY_VAR, other.to_string()),
            })?,
            account_cache_ttl: env.millis("PAYHUB_ACCOUNT_CACHE_MS", Duration::from_secs(30))?,
            pixelpay: platform_pixelpay(env)?,
            public_webhook_base_url: payhub_service::callbacks::public_webhook_base_url(env)?,
            webhook_check_interval: positive(
                "PAYHUB_WEBHOOK_CHECK_INTERVAL_MS",
                env.millis("PAYHUB_WEBHOOK_CHECK_INTERVAL_MS", Duration::from_secs(15 * 60))?,
            )?,
            probe: health::ProbeConfig::from_env(env)?,
        })
    }
}

fn positive(name: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(Env::bad(name, "must be above 0"));
    }
    Ok(d)
}

/// The platform's PixelPay account: both the Key ID and the Secret Key, or neither.
fn platform_pixelpay(env: &Env) -> Result<Option<payhub_connectors::pixelpay::PixelPayAccount>, ConfigError> {
    let endpoint = env.external_url("PAYHUB_PIXELPAY_ENDPOINT", "https://pixelpay.app")?;
    match (
        env.optional("PAYHUB_PIXELPAY_KEY_ID"),
        env.optional("PAYHUB_PIXELPAY_SECRET_KEY"),
    ) {
        (None, None) => Ok(None),
        (Some(key_id), Some(secret)) => {
            if key_id.is_empty() || !key_id.chars().all(|c| c.is_ascii_digit()) {
                return Err(Env::bad("PAYHUB_PIXELPAY_KEY_ID", "must be PixelPay's numeric Key ID"));
            }
            Ok(Some(payhub_connectors::pixelpay::PixelPayAccount::new(
                endpoint,
                key_id,
                SecretString::from(secret),
            )))
        }
        (Some(_), None) => Err(Env::bad(
            "PAYHUB_PIXELPAY_SECRET_KEY",
            "is required with PAYHUB_PIXELPAY_KEY_ID",
        )),
        (None, Some(_)) => Err(Env::bad(
            "PAYHUB_PIXELPAY_KEY_ID",
            "is required with PAYHUB_PIXELPAY_SECRET_KEY",
        )),
    }
}

/// Handles `order.accepted`: creates the charge at the provider, then
/// stores it with `charge.created` (or `charge.failed`) in one transaction.
pub struct ChargeHandler {
    pub store: Store,
    pub outbox: outbox::Outbox,
    pub providers: Arc<Providers>,
    pub max_attempts: u32,
    /// Which provider accounts the probes found down: their orders are held.
    pub health: payhub_store::health::HealthCache,
    /// Paid orders' invoices (`invoice.requested` on the same queue).
    pub invoicer: invoice::Invoicer,
}

/// Most orders whose charges are created together (provider calls at once,
/// one transaction for their records).
pub const MAX_BATCH: usize = 64;

/// An `order.accepted` read for the provider call.
struct Order<'a> {
    env: &'a Envelope,
    accepted: &'a payhub_core::events::OrderAccepted,
    order_id: uuid::Uuid,
    shop_id: uuid::Uuid,
    correlation_id: &'a str,
    attempt: u32,
}

fn read(msg: &Incoming) -> Result<Order<'_>, Failure> {
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
    Ok(Order {
        env,
        accepted,
        order_id,
        shop_id,
        correlation_id,
        attempt: msg.attempt,
    })
}

/// What the provider's answer makes of an order.
enum Outcome {
    /// The charge exists (under the named account): store it and tell the pipeline.
    Created(Box<payhub_connectors::CreatedCharge>, String),
    /// The charge cannot be created: the order will be blocked.
    Failed(Box<Envelope>),
    /// Worth another attempt later.
    Retry(String),
    /// The account's provider is down: held in place, no attempt used, no
    /// call made, until the probes find it up.
    Hold(String),
    /// A card order: charged by the door that received the card, over the
    /// internal card call, never from this event (which carries no card).
    NotMine,
}

impl ChargeHandler {
    async fn call_provider(&self, o: &Order<'_>) -> Outcome {
        match o.accepted.method {
            payhub_core::PaymentMethod::Card => return Outcome::NotMine,
            payhub_core::PaymentMethod::Redirect => return self.redirect_charge(o).await,
            payhub_core::PaymentMethod::Pix => {}
        }
        let req = ChargeRequest {
            provider_reference: o.accepted.provider_reference.clone(),
            amount: o.accepted.amount,
            description: o.accepted.description.clone(),
            expires_in_secs: o.accepted.expires_in_secs,
            customer: o.accepted.customer.clone(),
        };
        let provider = o.accepted.provider;
        let account = self.providers.for_shop(o.shop_id, provider.as_str()).await;
        let (using, client) = match account.and_then(|using| Ok((self.providers.openpix(&using)?, using))) {
            Ok((client, using)) => (using, client),
            Err(AccountError::Unavailable(e)) if o.attempt < self.max_attempts => return Outcome::Retry(e),
            Err(e) => return Outcome::Failed(failed_event(provider, e.to_string(), true)),
        };
        let account = match &using {
            Using::Platform => payhub_store::health::platform_account(provider.as_str()),
            Using::Shop(a) => a.id.to_string(),
        };
        match self.health.account_down(&account).await {
            Ok(Some(down)) => {
                return Outcome::Hold(format!(
                    "{} is down for this account ({}); holding the order until it is back",
                    provider.as_str(),
                    down.detail.unwrap_or_default()
                ));
            }
            Ok(None) => {}
            // Unknown health: call the provider as usual.
            Err(e) => tracing::warn!(error = %e, "provider health could not be read"),
        }
        match client.create_charge(&req).await {
            // The provider changed the amount: never let the buyer pay a different sum.
            Ok(created) if created.amount != o.accepted.amount => Outcome::Failed(failed_event(
                provider,
                format!(
                    "the provider created the charge for {} instead of {}",
                    created.amount, o.accepted.amount
                ),
                true,
            )),
            Ok(created) => Outcome::Created(Box::new(created), using.name()),
            Err(ConnectorError::Transient(e)) if o.attempt < self.max_attempts => Outcome::Retry(e),
            Err(ConnectorError::Transient(e)) => Outcome::Failed(failed_event(
                provider,
                format!("the provider stayed unavailable for {} attempts: {e}", o.attempt),
                false,
            )),
            Err(ConnectorError::Permanent(e)) => Outcome::Failed(failed_event(provider, e, true)),
        }
    }

    /// A Pago Seguro order: nothing is created at Pago Seguro (the buyer's
    /// browser posts the signed form from payhub's checkout page); the charge
    /// row records the order's reference there (`txnid`) and the shop's
    /// account, and `charge.created` moves the order to awaiting payment.
    async fn redirect_charge(&self, o: &Order<'_>) -> Outcome {
        let provider = o.accepted.provider;
        let using = match self.providers.for_shop(o.shop_id, provider.as_str()).await {
            Ok(u) => u,
            Err(AccountError::Unavailable(e)) if o.attempt < self.max_attempts => return Outcome::Retry(e),
            Err(e) => return Outcome::Failed(failed_event(provider, e.to_string(), true)),
        };
        if let Err(e) = self.providers.pagoseguro(&using) {
            return Outcome::Failed(failed_event(provider, e.to_string(), true));
        }
        let expires_at = time::OffsetDateTime::now_utc() + Duration::from_secs(u64::from(o.accepted.expires_in_secs));
        Outcome::Created(
            Box::new(payhub_connectors::CreatedCharge {
                provider_charge_id: payhub_connectors::pagoseguro::reference(o.order_id),
                amount: o.accepted.amount,
                view: payhub_core::events::ChargeView {
                    br_code: String::new(),
                    qr_code_image_url: String::new(),
                    payment_link_url: String::new(),
                    expires_at: Some(expires_at),
                },
            }),
            using.name(),
        )
    }

    /// Stores one order's outcome on `conn` (inside the batch's transaction,
    /// or on its own as one autocommit statement) and returns the event to
    /// publish after commit (none when the order was handled before).
    ///
    /// The processed mark, the charge and its event are one statement: one
    /// round trip, and all three or none.
    async fn store(
        &self,
        conn: &mut sqlx::PgConnection,
        o: &Order<'_>,
        outcome: Outcome,
    ) -> Result<Option<Envelope>, Failure> {
        let (mut event, charge) = match outcome {
            Outcome::Retry(e) => return Err(Failure::Transient(e)),
            Outcome::Hold(e) => return Err(Failure::Unavailable(e)),
            Outcome::NotMine => {
                payhub_store::mark_processed(&mut *conn, SERVICE, o.env.id)
                    .await
                    .map_err(db)?;
                return Ok(None);
            }
            Outcome::Created(created, account) => {
                let event = Envelope::new(EventPayload::ChargeCreated(ChargeCreated {
                    provider: o.accepted.provider,
                    provider_reference: o.accepted.provider_reference.clone(),
                    provider_charge_id: created.provider_charge_id.clone(),
                    amount: created.amount,
                    charge: created.view.clone(),
                }));
                (event, Some((created, account)))
            }
            Outcome::Failed(event) => (*event, None),
        };
        event.order_id = Some(o.order_id);
        event.shop_id = Some(o.shop_id);
        event.correlation_id = Some(o.correlation_id.to_string());
        event.trace = payhub_telemetry::trace::current_context();
        let (created, account) = charge.unzip();
        let stored: i64 = sqlx::query_scalar(
            "WITH fresh AS (
                 INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
                 RETURNING event_id
             ), charge AS (
                 INSERT INTO charges (order_id, provider, provider_reference, provider_charge_id, currency, amount_minor,
                     br_code, qr_code_image_url, payment_link_url, expires_at, provider_account, method)
                 SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM fresh WHERE $6 IS NOT NULL
                 ON CONFLICT (order_id) DO NOTHING
             ), event AS (
                 INSERT INTO outbox (id, routing_key, body) SELECT $15, $16, $17 FROM fresh
             )
             SELECT count(*) FROM fresh",
        )
        .bind(SERVICE)
        .bind(o.env.id)
        .bind(o.order_id)
        .bind(o.accepted.provider.as_str())
        .bind(&o.accepted.provider_reference)
        .bind(created.as_ref().map(|c| c.provider_charge_id.as_str()))
        .bind(created.as_ref().map(|c| c.amount.currency().code()))
        .bind(created.as_ref().map(|c| c.amount.minor()))
        .bind(created.as_ref().map(|c| c.view.br_code.as_str()))
        .bind(created.as_ref().map(|c| c.view.qr_code_image_url.as_str()))
        .bind(created.as_ref().map(|c| c.view.payment_link_url.as_str()))
        .bind(created.as_ref().and_then(|c| c.view.expires_at))
        .bind(account.as_deref())
        .bind(o.accepted.method.as_str())
        .bind(event.id)
        .bind(event.kind())
        .bind(event.to_json())
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if stored == 0 {
            return Ok(None);
        }
        match &created {
            Some(c) => {
                tracing::info!(event_id = %o.env.id, order_id = %o.order_id, charge_id = %c.provider_charge_id, account = account.as_deref().unwrap_or_default(), "charge created")
            }
            None => {
                tracing::warn!(event_id = %o.env.id, order_id = %o.order_id, "charge could not be created; the order will be blocked")
            }
        }
        Ok(Some(event))
    }
}

impl Handler for ChargeHandler {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        payhub_queue::handle_as_batch(self, msg).await
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// The orders not handled before go to the provider all at once; their
    /// outcomes are stored in one transaction, each under its own savepoint
    /// so that one failing record is rolled back alone.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<(), Failure>> {
        // Invoice requests are the invoicer's (issue 12 §3), one by one,
        // beside the batch's charges (a slow invoicing service, or the last
        // attempt's pause before its final status read, never delays them).
        let invoices: Vec<usize> = (0..msgs.len())
            .filter(|&i| {
                matches!(
                    msgs[i].envelope.payload,
                    EventPayload::InvoiceRequested(_) | EventPayload::OrderStatusChanged(_)
                )
            })
            .collect();
        let (outcomes, mut results) = futures::future::join(
            futures::future::join_all(invoices.iter().map(|&i| self.invoicer.handle(&msgs[i]))),
            self.charge_batch(msgs, &invoices),
        )
        .await;
        for (&i, outcome) in invoices.iter().zip(outcomes) {
            results[i] = outcome;
        }
        results
    }
}

impl ChargeHandler {
    /// The batch's `order.accepted` (every message but those at `invoices`).
    async fn charge_batch(&self, msgs: &[Incoming], invoices: &[usize]) -> Vec<Result<(), Failure>> {
        let mut results: Vec<Result<(), Failure>> = vec![Ok(()); msgs.len()];
        let mut orders = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            if invoices.contains(&i) {
                continue;
            }
            match read(m) {
                Ok(o) => orders.push((i, o)),
                Err(f) => results[i] = Err(f),
            }
        }
        // A redelivered order whose charge is stored must not reach the provider again.
        let ids: Vec<uuid::Uuid> = orders.iter().map(|(_, o)| o.env.id).collect();
        let done: Vec<(uuid::Uuid,)> =
            match sqlx::query_as("SELECT event_id FROM processed_events WHERE consumer = $1 AND event_id = ANY($2)")
                .bind(SERVICE)
                .bind(&ids)
                .fetch_all(&self.store.pool)
                .await
            {
                Ok(done) => done,
                Err(e) => return vec![Err(db(e)); msgs.len()],
            };
        orders.retain(|(_, o)| {
            let seen = done.iter().any(|(id,)| *id == o.env.id);
            if seen {
                tracing::info!(event_id = %o.env.id, "already processed; acking the duplicate");
            }
            !seen
        });
        if orders.is_empty() {
            return results;
        }
        let outcomes = futures::future::join_all(orders.iter().map(|(_, o)| self.call_provider(o))).await;
        if let ([(i, o)], [_]) = (&orders[..], &outcomes[..]) {
            // One order (the usual case below saturation): its one statement
            // is its own transaction, without BEGIN, savepoint and COMMIT.
            let outcome = outcomes.into_iter().next().expect("one outcome");
            if let Outcome::Hold(e) = outcome {
                results[*i] = Err(Failure::Unavailable(e));
                return results;
            }
            let mut conn = match self.store.pool.acquire().await {
                Ok(c) => c,
                Err(e) => return vec![Err(db(e)); msgs.len()],
            };
            match self.store(&mut conn, o, outcome).await {
                Ok(event) => {
                    drop(conn);
                    let _ = self.outbox.publish_now(event.as_slice()).await;
                }
                Err(Failure::Unavailable(e)) => return vec![Err(Failure::Unavailable(e)); msgs.len()],
                Err(f) => results[*i] = Err(f),
            }
            return results;
        }
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(e) => return vec![Err(db(e)); msgs.len()],
        };
        let mut events = Vec::new();
        let mut stored = Vec::new();
        for ((i, o), outcome) in orders.iter().zip(outcomes) {
            if let Outcome::Retry(e) = outcome {
                results[*i] = Err(Failure::Transient(e));
                continue;
            }
            if let Outcome::Hold(e) = outcome {
                results[*i] = Err(Failure::Unavailable(e));
                continue;
            }
            let mut sp = match tx.begin().await {
                Ok(sp) => sp,
                Err(e) => return vec![Err(db(e)); msgs.len()],
            };
            match self.store(&mut sp, o, outcome).await {
                Ok(event) => {
                    if let Err(e) = sp.commit().await {
                        return vec![Err(db(e)); msgs.len()];
                    }
                    events.extend(event);
                    stored.push(*i);
                }
                Err(Failure::Unavailable(e)) => return vec![Err(Failure::Unavailable(e)); msgs.len()],
                Err(f) => {
                    if let Err(e) = sp.rollback().await {
                        return vec![Err(db(e)); msgs.len()];
                    }
                    results[*i] = Err(f);
                }
            }
        }
        if let Err(e) = tx.commit().await {
            let f = db(e);
            for i in stored {
                results[i] = Err(f.clone());
            }
            return results;
        }
        let _ = self.outbox.publish_now(&events).await;
        results
    }
}

fn failed_event(provider: payhub_core::Provider, reason: String, permanent: bool) -> Box<Envelope> {
    Box::new(Envelope::new(EventPayload::ChargeFailed(ChargeFailed {
        provider,
        reason,
        permanent,
    })))
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let openpix = OpenPixClient::new(
            &config.openpix_base_url,
            config.openpix_app_id.clone(),
            config.provider_timeout,
        )?;
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let providers = Arc::new(Providers::new(
            infra.store.clone(),
            config.provider_key.clone(),
            openpix,
            config.account_cache_ttl,
        ));
        let card = Arc::new(card::CardState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            providers: providers.clone(),
            pixelpay: payhub_connectors::pixelpay::PixelPayClient::new(config.provider_timeout)?,
            platform_pixelpay: config.pixelpay.clone(),
            token: config.internal_token.clone(),
            public_webhook_base_url: config.public_webhook_base_url.clone(),
        });
        let refund = Arc::new(refund::RefundState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            providers: providers.clone(),
            pixelpay: payhub_connectors::pixelpay::PixelPayClient::new(config.provider_timeout)?,
            platform_pixelpay: config.pixelpay.clone(),
            token: config.internal_token.clone(),
            // A void may take a status read and the void itself.
            in_flight: config.provider_timeout * 3,
        });
        let confirm = Arc::new(confirm::ConfirmState {
            store: infra.store.clone(),
            providers: providers.clone(),
            token: config.internal_token.clone(),
            pixelpay: payhub_connectors::pixelpay::PixelPayClient::new(config.provider_timeout)?,
            platform_pixelpay: config.pixelpay.clone(),
        });
        let redirect = Arc::new(pagoseguro::RedirectState {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            providers: providers.clone(),
            token: config.internal_token.clone(),
        });
        let registrar = registrar::Registrar {
            store: infra.store.clone(),
            providers: providers.clone(),
            base_url: config.public_webhook_base_url.clone(),
            interval: config.webhook_check_interval,
        };
        infra.tasks.spawn(registrar.run(infra.shutdown.clone()));
        let prober = health::Prober {
            store: infra.store.clone(),
            providers: providers.clone(),
            pixelpay: payhub_connectors::pixelpay::PixelPayClient::new(config.provider_timeout)?,
            platform_pixelpay: config.pixelpay.clone(),
            config: config.probe,
        };
        infra.tasks.spawn(prober.run(infra.shutdown.clone()));
        let invoicer = invoice::Invoicer {
            store: infra.store.clone(),
            outbox: outbox.clone(),
            providers: providers.clone(),
            client: payhub_connectors::focusnfe::FocusNfeClient::new(config.provider_timeout)?,
            max_attempts: config.common.topology.retry.max_attempts,
            // The last attempt's pause before its final status read: the
            // retry delay, at most 10 s (the delivery is held meanwhile).
            final_check_after: config.common.topology.retry.delay.min(Duration::from_secs(10)),
        };
        let handler = ChargeHandler {
            store: infra.store.clone(),
            outbox,
            providers,
            invoicer,
            max_attempts: config.common.topology.retry.max_attempts,
            // Fresh within a second: a replica that does not probe sees the
            // other's findings at once.
            health: payhub_store::health::HealthCache::new(infra.store.clone(), Duration::from_secs(1)),
        };
        let routes = axum::Router::new()
            .route(
                payhub_connectors::internal::CONFIRM_PATH,
                axum::routing::post(confirm::confirm_route),
            )
            .route(
                payhub_connectors::internal::LISTING_PATH,
                axum::routing::post(listing::listing_route),
            )
            .route(
                payhub_connectors::internal::PIXELPAY_STATUS_PATH,
                axum::routing::post(pixelpay_status::status_route),
            )
            .with_state(confirm)
            .merge(
                axum::Router::new()
                    .route(
                        payhub_connectors::internal::CARD_PATH,
                        axum::routing::post(card::card_route),
                    )
                    .route(
                        payhub_connectors::internal::CAPTURE_PATH,
                        axum::routing::post(capture::capture_route),
                    )
                    .with_state(card),
            )
            .merge(pagoseguro::router(redirect))
            .merge(
                axum::Router::new()
                    .route(
                        payhub_connectors::internal::REFUND_PATH,
                        axum::routing::post(refund::refund_route),
                    )
                    .with_state(refund),
            );
        let mut app = payhub_service::App::start(infra, config.common.http_addr, routes).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_talks_to_the_provider_over_https_only() {
        let env = |base: &str, production: bool| {
            let mut pairs = vec![("PAYHUB_OPENPIX_APP_ID", "app-id"), ("PAYHUB_OPENPIX_BASE_URL", base)];
            if production {
                pairs.extend([
                    ("PAYHUB_ENV", "production"),
                    ("PAYHUB_DATABASE_URL", "postgres://db/payhub"),
                    ("PAYHUB_AMQP_URL", "amqps://mq/%2f"),
                    ("PAYHUB_INTERNAL_TOKEN", "a-long-enough-random-token-value"),
                    ("PAYHUB_PROVIDER_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
                ]);
            }
            Config::from_env(&Env::from_pairs(pairs))
        };
        // Production never opens shops' provider credentials with the public development key.
        let e = Config::from_env(&Env::from_pairs(vec![
            ("PAYHUB_OPENPIX_APP_ID", "app-id"),
            ("PAYHUB_OPENPIX_BASE_URL", "https://api.woovi.com"),
            ("PAYHUB_ENV", "production"),
            ("PAYHUB_DATABASE_URL", "postgres://db/payhub"),
            ("PAYHUB_AMQP_URL", "amqps://mq/%2f"),
            ("PAYHUB_INTERNAL_TOKEN", "a-long-enough-random-token-value"),
        ]))
        .unwrap_err();
        assert_eq!(e.name, "PAYHUB_PROVIDER_KEY");
        assert!(
            env("http://127.0.0.1:8090", false)
                .unwrap()
                .provider_key
                .is_development()
        );
        let e = env("http://api.woovi.com", true).unwrap_err();
        assert_eq!(e.name, "PAYHUB_OPENPIX_BASE_URL");
        assert_eq!(
            env("https://api.woovi.com", true).unwrap().openpix_base_url,
            "https://api.woovi.com"
        );
        // The sandbox (development) speaks plain http.
        assert_eq!(
            env("http://127.0.0.1:8090", false).unwrap().openpix_base_url,
            "http://127.0.0.1:8090"
        );
    }
}
