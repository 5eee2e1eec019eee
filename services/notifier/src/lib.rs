//! notifier: tells the shop, the buyer and the shop's admin.
//!
//! For each `order.status_changed` it makes up to three deliveries, each
//! recorded in `deliveries` under (event id, kind): a Standard-Webhooks
//! signed POST to the shop's URL, an e-mail to the buyer, and an alert to
//! the shop's admin when an order is blocked or needs review. A delivery
//! already delivered is never sent again; one that failed makes the message
//! transient, so the queue retries it (5 minutes later, 3 attempts by
//! default) with the same `webhook-id`. After the last attempt the delivery
//! is marked `failed`. A delivery is `delivered` only on a 2xx answer or an
//! SMTP acceptance, never merely because it was recorded.

mod mail;
mod url_safety;
mod wake;
mod webhook;

use payhub_core::events::EventPayload;
use payhub_core::url_safety::WebhookUrlPolicy;
use payhub_core::{Envelope, OrderStatus};
use payhub_queue::{Failure, Handler, Incoming, QueueSpec};
use payhub_service::{CommonConfig, Infra, store_failure as db};
use payhub_store::Store;
use payhub_telemetry::{ConfigError, Env};
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use mail::Mailer;
pub use webhook::{WebhookSender, shop_payload};

pub const SERVICE: &str = "notifier";

static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_deliveries_total",
        "Delivery attempts, by shop, kind (shop_webhook, buyer_email, admin_alert, delivery_failure_alert) and outcome (delivered, retry, failed).",
        &["shop", "kind", "outcome"]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub smtp_url: String,
    pub mail_from: String,
    pub webhook_timeout: Duration,
    /// Where Wake Commerce postbacks go (`{base}/api/Custom/{chave}`).
    pub wake_postback_url: String,
    /// Which shop webhook URLs may be called (`PAYHUB_ENV`, `PAYHUB_ALLOW_PRIVATE_WEBHOOKS`).
    pub webhook_urls: WebhookUrlPolicy,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let smtp_url = env.string("PAYHUB_SMTP_URL", "smtp://127.0.0.1:2525");
        if !(smtp_url.starts_with("smtp://") || smtp_url.starts_with("smtps://")) {
            return Err(Env::bad("PAYHUB_SMTP_URL", "must be an smtp:// or smtps:// URL"));
        }
        let mail_from = env.string("PAYHUB_MAIL_FROM", "payhub <no-reply@payhub.local>");
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(Env::bad(
                "PAYHUB_MAIL_FROM",
                format!("{mail_from:?} is not a mailbox such as `payhub <no-reply@example.com>`"),
            ));
        }
        // The store reads the key itself; checking it here stops a bad or
        // missing PAYHUB_SECRETS_KEY at start as a configuration error.
        payhub_store::Secrets::from_settings(|name| env.optional(name)).map_err(|e| match e {
            payhub_store::secrets::SecretsError::Setting { name, reason } => Env::bad(name, reason),
            other => Env::bad(payhub_store::secrets::KEY_VAR, other.to_string()),
        })?;
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:9103")?,
            smtp_url,
            mail_from,
            webhook_timeout: env.millis("PAYHUB_WEBHOOK_TIMEOUT_MS", Duration::from_secs(10))?,
            wake_postback_url: env.url("PAYHUB_WAKE_POSTBACK_URL", "https://gateway-postback.fbits.net")?,
            webhook_urls: WebhookUrlPolicy::from_settings(
                env.optional(payhub_core::url_safety::ENV_VAR).as_deref(),
                env.optional(payhub_core::url_safety::ALLOW_PRIVATE_VAR).as_deref(),
            )
            .map_err(|(name, reason)| Env::bad(name, reason))?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ShopWebhook,
    BuyerEmail,
    AdminAlert,
    /// Tells the shop's admin that a webhook could not be delivered.
    DeliveryFailureAlert,
    /// Wake Commerce's postback for a Wake order.
    WakePostback,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ShopWebhook => "shop_webhook",
            Kind::BuyerEmail => "buyer_email",
            Kind::AdminAlert => "admin_alert",
            Kind::DeliveryFailureAlert => "delivery_failure_alert",
            Kind::WakePostback => "wake_postback",
        }
    }
}

/// The outcome of one attempt at one delivery.
struct Attempt {
    ok: bool,
    status_code: Option<i32>,
    error: Option<String>,
}

pub struct NotifyHandler {
    pub store: Store,
    pub webhooks: WebhookSender,
    pub mailer: Mailer,
    pub max_attempts: u32,
    pub wake_postback_url: String,
}

impl NotifyHandler {
    /// Records the delivery if new; returns its id unless already delivered.
    async fn open(
        &self,
        env: &Envelope,
        kind: Kind,
        target: &str,
        webhook_id: Option<&str>,
    ) -> Result<Option<Uuid>, Failure> {
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, order_id, shop_id, kind, target, webhook_id, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT (event_id, kind) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(env.id)
        .bind(env.order_id)
        .bind(env.shop_id)
        .bind(kind.as_str())
        .bind(target)
        .bind(webhook_id)
        .execute(&self.store.pool)
        .await
        .map_err(db)?;
        let (id, status): (Uuid, String) =
            sqlx::query_as("SELECT id, status FROM deliveries WHERE event_id = $1 AND kind = $2")
                .bind(env.id)
                .bind(kind.as_str())
                .fetch_one(&self.store.pool)
                .await
                .map_err(db)?;
        Ok((status != "delivered").then_some(id))
    }

    async fn close(&self, id: Uuid, kind: Kind, shop: Uuid, attempt: &Attempt, last: bool) -> Result<(), Failure> {
        let status = if attempt.ok {
            "delivered"
        } else if last {
            "failed"
        } else {
            "pending"
        };
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, status = $2, last_status_code = $3, last_error = $4,
                    updated_at = now(), delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(attempt.status_code)
        .bind(attempt.error.as_deref())
        .execute(&self.store.pool)
        .await
        .map_err(db)?;
        let outcome = if attempt.ok {
            "delivered"
        } else if last {
            "failed"
        } else {
            "retry"
        };
        DELIVERIES
            .with_label_values(&[&shop.to_string(), kind.as_str(), outcome])
            .inc();
        Ok(())
    }
}

impl NotifyHandler {
    /// An order message was refused: the shop hears why, signed like every
    /// webhook, with the same retry rules.
    async fn notify_rejected(
        &self,
        msg: &Incoming,
        rejected: &payhub_core::events::OrderRejected,
    ) -> Result<(), Failure> {
        let env = &msg.envelope;
        let shop_id = env
            .shop_id
            .ok_or_else(|| Failure::Permanent("order.rejected without a shop".into()))?;
        let shop = payhub_store::shops::by_id(&self.store, shop_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Failure::Permanent(format!("unknown shop {shop_id}")))?;
        let Some(url) = shop.webhook_url.as_deref() else {
            tracing::warn!(shop_id = %shop.id, "an order message was refused and the shop has no webhook URL to tell");
            return Ok(());
        };
        let last = msg.attempt >= self.max_attempts;
        let webhook_id = webhook::webhook_id(env.id);
        if let Some(id) = self.open(env, Kind::ShopWebhook, url, Some(&webhook_id)).await? {
            let attempt = self
                .webhooks
                .send(
                    url,
                    &shop.signing_secrets(),
                    &webhook_id,
                    &webhook::rejected_payload(env, rejected),
                )
                .await;
            let ok = attempt.ok;
            let error = attempt.error.clone().unwrap_or_default();
            self.close(id, Kind::ShopWebhook, shop.id, &attempt, last).await?;
            if !ok {
                return Err(Failure::Transient(format!("shop webhook: {error}")));
            }
        }
        Ok(())
    }
}

impl Handler for NotifyHandler {
    type Message = payhub_core::Envelope;

    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let env = &msg.envelope;
        let change = match &env.payload {
            EventPayload::OrderStatusChanged(change) => change,
            EventPayload::OrderRejected(rejected) => return self.notify_rejected(msg, rejected).await,
            _ => return Err(Failure::Permanent(format!("notifier cannot handle {}", env.kind()))),
        };
        let shop_id = env
            .shop_id
            .ok_or_else(|| Failure::Permanent("order.status_changed without a shop".into()))?;
        let shop = payhub_store::shops::by_id(&self.store, shop_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Failure::Permanent(format!("unknown shop {shop_id}")))?;
        let last = msg.attempt >= self.max_attempts;
        let mut failures = Vec::new();
        let mut webhook_given_up = None;
        let mut webhook_refused = None;

        if let Some(url) = shop.webhook_url.as_deref() {
            let webhook_id = webhook::webhook_id(env.id);
            if let Some(id) = self.open(env, Kind::ShopWebhook, url, Some(&webhook_id)).await? {
                let attempt = self
                    .webhooks
                    .send(url, &shop.signing_secrets(), &webhook_id, &shop_payload(env, change))
                    .await;
                // An unsafe URL does not become safe by retrying: failed now.
                let refused = webhook::refused(&attempt);
                if !attempt.ok {
                    let error = attempt.error.clone().unwrap_or_default();
                    if refused {
                        webhook_refused = Some(format!("shop webhook: {error}"));
                    } else {
                        failures.push(format!("shop webhook: {error}"));
                    }
                    if last || refused {
                        webhook_given_up = Some(error);
                    }
                }
                self.close(id, Kind::ShopWebhook, shop.id, &attempt, last || refused)
                    .await?;
            }
        }

        if let Some(mail) = mail::buyer_mail(env, change) {
            let target = payhub_core::identity::Email::parse(&change.customer_email)
                .map(|e| e.masked())
                .unwrap_or_else(|_| "invalid".into());
            if let Some(id) = self.open(env, Kind::BuyerEmail, &target, None).await? {
                let attempt = self.mailer.send(&change.customer_email, &mail).await;
                if !attempt.ok {
                    failures.push(format!("buyer e-mail: {}", attempt.error.clone().unwrap_or_default()));
                }
                self.close(id, Kind::BuyerEmail, shop.id, &attempt, last).await?;
            }
        }

        let mut alerts = Vec::new();
        if matches!(change.to, OrderStatus::Failed | OrderStatus::UnderReview) {
            alerts.push((Kind::AdminAlert, mail::admin_alert(env, change, &shop.name)));
        }
        if let Some(error) = &webhook_given_up {
            let url = shop.webhook_url.as_deref().unwrap_or_default();
            alerts.push((
                Kind::DeliveryFailureAlert,
                mail::webhook_failure_alert(env, change, &shop.name, url, msg.attempt, error),
            ));
        }
        if let Some(admin) = shop.admin_email.as_deref() {
            for (kind, mail) in alerts {
                if let Some(id) = self.open(env, kind, admin, None).await? {
                    let attempt = self.mailer.send(admin, &mail).await;
                    if !attempt.ok {
                        failures.push(format!(
                            "{}: {}",
                            kind.as_str(),
                            attempt.error.clone().unwrap_or_default()
                        ));
                    }
                    self.close(id, kind, shop.id, &attempt, last).await?;
                }
            }
        }

        // Wake Commerce stores learn the outcome through their postback.
        if change.channel == payhub_core::events::OrderChannel::Wake
            && let Some((status, body)) = wake::postback(change)
            && let Some(chave) = env.correlation_id.as_deref()
        {
            let url = format!("{}/api/Custom/{}", self.wake_postback_url, wake::path_segment(chave));
            if let Some(id) = self.open(env, Kind::WakePostback, &url, None).await? {
                let attempt = self.webhooks.post_json(&url, &body).await;
                if !attempt.ok {
                    failures.push(format!(
                        "wake postback (status {status}): {}",
                        attempt.error.clone().unwrap_or_default()
                    ));
                }
                self.close(id, Kind::WakePostback, shop.id, &attempt, last).await?;
            }
        }

        if failures.is_empty() {
            // Parked with its reason; replay it once the URL is fixed.
            return webhook_refused.map_or(Ok(()), |reason| Err(Failure::Permanent(reason)));
        }
        if last {
            tracing::error!(failures = ?failures, "deliveries failed on the last attempt; marked failed and dead-lettered");
        }
        Err(Failure::Transient(failures.join("; ")))
    }
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let handler = NotifyHandler {
            store: infra.store.clone(),
            webhooks: WebhookSender::new(config.webhook_timeout, config.webhook_urls)?,
            mailer: Mailer::new(&config.smtp_url, &config.mail_from)?,
            max_attempts: config.common.topology.retry.max_attempts,
            wake_postback_url: config.wake_postback_url.trim_end_matches('/').to_string(),
        };
        let mut app = payhub_service::App::start(infra, config.common.http_addr, axum::Router::new()).await?;
        app.consume(QueueSpec::NOTIFIER, config.common.prefetch, handler);
        Ok(Application(app))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
