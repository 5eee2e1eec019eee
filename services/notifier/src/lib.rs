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
pub mod report;
pub mod survey;
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
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use mail::Mailer;
pub use webhook::{WebhookSender, shop_payload};

pub const SERVICE: &str = "notifier";

/// Messages in flight when `PAYHUB_PREFETCH` is unset.
pub const DEFAULT_PREFETCH: u16 = 256;

static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_deliveries_total",
        "Delivery attempts, by kind (shop_webhook, buyer_email, admin_alert, delivery_failure_alert, wake_postback, survey_invitation) and outcome (delivered, retry, failed). No shop label: which shop is in the deliveries table.",
        &["kind", "outcome"]
    )
    .expect("metric registers once")
});

/// From an order marked paid (its `order.status_changed`) to the shop's
/// webhook about it delivered, or failed for good: the SLO "paid orders
/// notified to the shop within 10 s" is read from `outcome="delivered"`,
/// `le="10"` over every outcome.
static PAID_NOTIFIED: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_paid_order_notified_seconds",
        "Time from an order marked paid to the shop's webhook about it delivered or failed for good, by outcome (delivered, failed).",
        &["outcome"],
        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub smtp_url: String,
    /// SMTP connections open at once (`PAYHUB_SMTP_POOL_SIZE`).
    pub smtp_pool_size: u32,
    pub mail_from: String,
    pub webhook_timeout: Duration,
    /// Where Wake Commerce postbacks go (`{base}/api/Custom/{chave}`).
    pub wake_postback_url: String,
    /// Which shop webhook URLs may be called (`PAYHUB_ENV`, `PAYHUB_ALLOW_PRIVATE_WEBHOOKS`).
    pub webhook_urls: WebhookUrlPolicy,
    /// Where platform alerts go (`PAYHUB_PLATFORM_ADMIN_EMAIL`); unset, they are logged only.
    pub platform_admin_email: Option<String>,
    /// The satisfaction survey's link (issue 12 §4).
    pub survey: survey::SurveyConfig,
    /// Where the platform's management reports go
    /// (`PAYHUB_PLATFORM_REPORT_EMAILS`, comma-separated); empty: the
    /// platform admin.
    pub platform_report_emails: Vec<String>,
    /// Signs the buyer's "my orders" link (`PAYHUB_ORDER_LINK_KEY`).
    pub order_links: payhub_core::order_link::OrderLinks,
    /// Where buyers reach ingress's public pages, the checkout's and "my
    /// orders" (`PAYHUB_PUBLIC_CHECKOUT_BASE_URL`).
    pub public_base_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        env.check_files()?;
        // In production: TLS only (smtps://, or smtp://...?tls=required).
        let smtp_url = env.smtp_url("PAYHUB_SMTP_URL", "smtp://127.0.0.1:2525")?;
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
        let mut common = CommonConfig::from_env(env, "0.0.0.0:9103")?;
        if env.optional("PAYHUB_PREFETCH").is_none() {
            // Its time goes to waiting on shops and mail servers, not to
            // work: many deliveries at once cost little.
            common.prefetch = DEFAULT_PREFETCH;
        }
        let smtp_pool_size: u32 = env.parse("PAYHUB_SMTP_POOL_SIZE", 32)?;
        if smtp_pool_size == 0 {
            return Err(Env::bad("PAYHUB_SMTP_POOL_SIZE", "must be at least 1"));
        }
        Ok(Config {
            common,
            smtp_url,
            smtp_pool_size,
            mail_from,
            webhook_timeout: env.millis("PAYHUB_WEBHOOK_TIMEOUT_MS", Duration::from_secs(10))?,
            wake_postback_url: env.external_url("PAYHUB_WAKE_POSTBACK_URL", "https://gateway-postback.fbits.net")?,
            webhook_urls: WebhookUrlPolicy::from_settings(
                env.optional(payhub_core::url_safety::ENV_VAR).as_deref(),
                env.optional(payhub_core::url_safety::ALLOW_PRIVATE_VAR).as_deref(),
            )
            .map_err(|(name, reason)| Env::bad(name, reason))?,
            survey: survey::SurveyConfig {
                base_url: env.url("PAYHUB_SURVEY_BASE_URL", "http://127.0.0.1:8080")?,
                valid_for: {
                    let days: u64 = env.parse("PAYHUB_SURVEY_VALID_DAYS", 30)?;
                    if !(1..=365).contains(&days) {
                        return Err(Env::bad("PAYHUB_SURVEY_VALID_DAYS", "must be 1 to 365"));
                    }
                    Duration::from_secs(days * 86_400)
                },
            },
            platform_report_emails: report::parse_list(&env.string("PAYHUB_PLATFORM_REPORT_EMAILS", ""))
                .map_err(|e| Env::bad("PAYHUB_PLATFORM_REPORT_EMAILS", e))?,
            order_links: payhub_service::order_links(env)?,
            public_base_url: env.url("PAYHUB_PUBLIC_CHECKOUT_BASE_URL", "http://127.0.0.1:8080")?,
            platform_admin_email: match env.optional("PAYHUB_PLATFORM_ADMIN_EMAIL") {
                None => None,
                Some(a) => Some(
                    payhub_core::identity::Email::parse(&a)
                        .map_err(|_| Env::bad("PAYHUB_PLATFORM_ADMIN_EMAIL", "is not an e-mail address"))?
                        .as_str()
                        .to_string(),
                ),
            },
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
    /// The satisfaction survey's invitation to the buyer (issue 12).
    SurveyInvitation,
    /// A management report to the shop's or the platform's list (issue 13).
    ManagementReport,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ShopWebhook => "shop_webhook",
            Kind::BuyerEmail => "buyer_email",
            Kind::AdminAlert => "admin_alert",
            Kind::DeliveryFailureAlert => "delivery_failure_alert",
            Kind::WakePostback => "wake_postback",
            Kind::SurveyInvitation => "survey_invitation",
            Kind::ManagementReport => "management_report",
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
    pub platform_admin_email: Option<String>,
    pub platform_report_emails: Vec<String>,
    pub survey: survey::SurveyConfig,
    pub order_links: payhub_core::order_link::OrderLinks,
    pub public_base_url: String,
}

/// A delivery this event calls for, before it is recorded.
struct Planned {
    kind: Kind,
    target: String,
    webhook_id: Option<String>,
    send: Send,
}

impl Planned {
    /// One e-mail to the buyer, recorded under its masked address.
    fn buyer_mail(to: &str, mail: mail::Mail) -> Planned {
        Planned {
            kind: Kind::BuyerEmail,
            target: masked(to),
            webhook_id: None,
            send: Send::Mail {
                to: to.to_string(),
                mail,
            },
        }
    }
}

/// A buyer's address as the deliveries table keeps it.
fn masked(email: &str) -> String {
    payhub_core::identity::Email::parse(email)
        .map(|e| e.masked())
        .unwrap_or_else(|_| "invalid".into())
}

/// What one delivery sends.
/// A paid order's receipt as e-mailed: each layout's SHA-256.
struct ReceiptHashes {
    hashes: Vec<(payhub_documents::Layout, Vec<u8>)>,
}

enum Send {
    Webhook {
        url: String,
        payload: serde_json::Value,
    },
    Mail {
        to: String,
        mail: mail::Mail,
    },
    /// An e-mail with files (the buyer's payment confirmation and its
    /// receipt, whose hashes are recorded with the delivery).
    MailWith {
        to: String,
        mail: mail::Mail,
        attachments: Vec<mail::Attachment>,
        receipt: Option<ReceiptHashes>,
    },
    Wake {
        url: String,
        body: serde_json::Value,
    },
}

/// A delivery that was attempted, ready to be recorded.
struct Done<'a> {
    planned: &'a Planned,
    attempt: Attempt,
    /// No further attempt follows: a failure is final.
    last: bool,
}

impl Done<'_> {
    fn status(&self) -> &'static str {
        if self.attempt.ok {
            "delivered"
        } else if self.last {
            "failed"
        } else {
            "pending"
        }
    }
}

impl NotifyHandler {
    /// The kinds of delivery already made for this event (a redelivered or
    /// replayed message sends only what is missing). A read: no commit.
    async fn delivered(&self, env: &Envelope) -> Result<Vec<String>, Failure> {
        sqlx::query_scalar(concat!("SELECT ", payhub_store::delivered_kinds!("$1")))
            .bind(env.id)
            .fetch_one(&self.store.pool)
            .await
            .map_err(db)
    }

    /// Sends one planned delivery.
    async fn attempt(&self, shop: &payhub_store::shops::Shop, planned: &Planned) -> Attempt {
        match &planned.send {
            Send::Webhook { url, payload } => {
                let webhook_id = planned.webhook_id.as_deref().unwrap_or_default();
                self.webhooks
                    .send(url, &shop.signing_secrets(), webhook_id, payload)
                    .await
            }
            Send::Mail { to, mail } => self.mailer.send(to, mail).await,
            Send::MailWith {
                to, mail, attachments, ..
            } => self.mailer.send_with(to, mail, attachments).await,
            Send::Wake { url, body } => self.webhooks.post_json(url, body).await,
        }
    }

    /// Records the attempts, all in one statement: a new row per delivery
    /// on its first attempt, the count and outcome raised on the next ones.
    /// A delivered row is never taken back.
    async fn record(&self, env: &Envelope, done: &[Done<'_>]) -> Result<(), Failure> {
        if done.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = done.iter().map(|_| Uuid::now_v7()).collect();
        let kinds: Vec<&str> = done.iter().map(|d| d.planned.kind.as_str()).collect();
        let targets: Vec<&str> = done.iter().map(|d| d.planned.target.as_str()).collect();
        let webhook_ids: Vec<Option<&str>> = done.iter().map(|d| d.planned.webhook_id.as_deref()).collect();
        let statuses: Vec<&str> = done.iter().map(Done::status).collect();
        let codes: Vec<Option<i32>> = done.iter().map(|d| d.attempt.status_code).collect();
        let errors: Vec<Option<&str>> = done.iter().map(|d| d.attempt.error.as_deref()).collect();
        // A receipt sent is recorded by its hash in the same statement (one
        // commit); the first recorded stays.
        let receipt = done.iter().find_map(|d| match &d.planned.send {
            Send::MailWith { receipt: Some(r), .. } => Some(r),
            _ => None,
        });
        let (receipt_layouts, receipt_hashes): (Vec<&str>, Vec<&[u8]>) = receipt
            .map(|r| r.hashes.iter().map(|(l, h)| (l.as_str(), h.as_slice())).unzip())
            .unwrap_or_default();
        sqlx::query(
            "WITH receipt AS (
                INSERT INTO receipts (order_id, layout, sha256, renderer)
                SELECT $2, r.layout, r.sha256, $13 FROM unnest($11::text[], $12::bytea[]) AS r(layout, sha256)
                WHERE $2 IS NOT NULL
                ON CONFLICT (order_id, layout) DO NOTHING
             )
             INSERT INTO deliveries AS d (id, event_id, order_id, shop_id, kind, target, webhook_id, status, attempts,
                                          last_status_code, last_error, delivered_at)
             SELECT u.id, $1, $2, $3, u.kind, u.target, u.webhook_id, u.status, 1, u.code, u.error,
                    CASE WHEN u.status = 'delivered' THEN now() END
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int4[], $10::text[])
                  AS u(id, kind, target, webhook_id, status, code, error)
             ON CONFLICT (event_id, kind) DO UPDATE
                SET attempts = d.attempts + 1, status = EXCLUDED.status, target = EXCLUDED.target,
                    last_status_code = EXCLUDED.last_status_code, last_error = EXCLUDED.last_error,
                    updated_at = now(), delivered_at = EXCLUDED.delivered_at
                WHERE d.status <> 'delivered'",
        )
        .bind(env.id)
        .bind(env.order_id)
        .bind(env.shop_id)
        .bind(&ids)
        .bind(&kinds)
        .bind(&targets)
        .bind(&webhook_ids)
        .bind(&statuses)
        .bind(&codes)
        .bind(&errors)
        .bind(&receipt_layouts)
        .bind(&receipt_hashes)
        .bind(payhub_documents::RENDERER)
        .execute(&self.store.pool)
        .await
        .map_err(db)?;
        let paid = matches!(&env.payload, EventPayload::OrderStatusChanged(c) if c.to == OrderStatus::Paid);
        let since_paid = (time::OffsetDateTime::now_utc() - env.occurred_at)
            .as_seconds_f64()
            .max(0.0);
        for d in done {
            let outcome = match d.status() {
                "pending" => "retry",
                other => other,
            };
            DELIVERIES.with_label_values(&[d.planned.kind.as_str(), outcome]).inc();
            if paid && d.planned.kind == Kind::ShopWebhook && outcome != "retry" {
                PAID_NOTIFIED.with_label_values(&[outcome]).observe(since_paid);
            }
        }
        Ok(())
    }

    /// Sends (all at once) what `planned` holds that was not delivered
    /// before, then records every outcome. A shop webhook refused as unsafe
    /// is final at once.
    async fn deliver(
        &self,
        env: &Envelope,
        shop: &payhub_store::shops::Shop,
        planned: &[Planned],
        last: bool,
    ) -> Result<Vec<(Kind, Attempt)>, Failure> {
        let delivered = self.delivered(env).await?;
        self.deliver_except(env, shop, planned, last, &delivered).await
    }

    /// [`Self::deliver`], for a caller that has read what was delivered
    /// before (to plan only what is missing).
    async fn deliver_except(
        &self,
        env: &Envelope,
        shop: &payhub_store::shops::Shop,
        planned: &[Planned],
        last: bool,
        delivered: &[String],
    ) -> Result<Vec<(Kind, Attempt)>, Failure> {
        let sends = planned
            .iter()
            .filter(|p| !delivered.iter().any(|k| k == p.kind.as_str()))
            .map(|p| async move { (p, self.attempt(shop, p).await) });
        let done: Vec<Done> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|(planned, attempt)| Done {
                planned,
                last: last || (planned.kind == Kind::ShopWebhook && webhook::refused(&attempt)),
                attempt,
            })
            .collect();
        self.record(env, &done).await?;
        Ok(done.into_iter().map(|d| (d.planned.kind, d.attempt)).collect())
    }
}

impl NotifyHandler {
    /// What a status change's deliveries need from the database, in one
    /// read: the kinds already delivered for the event, the order's hosted
    /// checkout for its first webhook (`awaiting_payment`, payhub's format)
    /// and, once paid, its stored receipt.
    async fn context(
        &self,
        env: &Envelope,
        change: &payhub_core::events::OrderStatusChanged,
        payhub_format: bool,
    ) -> Result<Context, Failure> {
        match (change.to, env.order_id) {
            (OrderStatus::Paid, Some(order_id)) => {
                let (delivered, receipt) =
                    payhub_store::receipts::load_noting_delivered(&self.store, order_id, Some(env.id))
                        .await
                        .map_err(db)?;
                Ok(Context {
                    delivered,
                    checkout: None,
                    receipt,
                })
            }
            (OrderStatus::AwaitingPayment, Some(order_id)) if payhub_format => {
                let (delivered, token, expires): (Vec<String>, Option<String>, Option<time::OffsetDateTime>) =
                    sqlx::query_as(concat!(
                        "SELECT ",
                        payhub_store::delivered_kinds!("$1"),
                        ", cs.token, cs.expires_at
                         FROM (VALUES (1)) AS one LEFT JOIN checkout_sessions cs ON cs.order_id = $2"
                    ))
                    .bind(env.id)
                    .bind(order_id)
                    .fetch_one(&self.store.pool)
                    .await
                    .map_err(db)?;
                Ok(Context {
                    delivered,
                    checkout: token.zip(expires),
                    receipt: None,
                })
            }
            _ => Ok(Context {
                delivered: self.delivered(env).await?,
                checkout: None,
                receipt: None,
            }),
        }
    }

    /// The shop's webhook with the buyer's "my orders" page (`myOrdersUrl`,
    /// every change) and, in the order's first webhook (`awaiting_payment`),
    /// its hosted checkout (`checkout.url`, `checkout.expiresAt`) when it has
    /// one: how a shop that sent the order over AMQP learns the URL to send
    /// its buyer to (issue 11 §1).
    fn with_links(
        &self,
        mut payload: serde_json::Value,
        env: &Envelope,
        checkout: Option<(String, time::OffsetDateTime)>,
    ) -> serde_json::Value {
        let Some(order_id) = env.order_id else {
            return payload;
        };
        payload["data"]["myOrdersUrl"] = self.order_links.url(&self.public_base_url, order_id).into();
        if let Some((token, expires)) = checkout {
            payload["data"]["checkout"] = serde_json::json!({
                "url": format!("{}/checkout/{token}", self.public_base_url),
                "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).ok(),
            });
        }
        payload
    }

    /// When an order is paid: its receipt in both layouts, rendered from the
    /// stored order (the same bytes every later download renders), as
    /// attachments, with the hashes `record` keeps.
    async fn receipts(
        &self,
        env: &Envelope,
        receipt: Option<payhub_documents::Receipt>,
    ) -> Result<Option<(Vec<mail::Attachment>, ReceiptHashes)>, Failure> {
        let Some(receipt) = receipt else {
            return Ok(None);
        };
        let rendered = payhub_store::receipts::render_all(receipt).await.map_err(db)?;
        let cid = env.correlation_id.as_deref().unwrap_or("pedido");
        let safe: String = cid
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut hashes = Vec::new();
        let mut out = Vec::new();
        for (layout, r) in rendered {
            hashes.push((layout, r.sha256));
            out.push(mail::Attachment {
                filename: match layout {
                    payhub_documents::Layout::A4 => format!("comprovante-{safe}.pdf"),
                    payhub_documents::Layout::Roll80 => format!("comprovante-{safe}-80mm.pdf"),
                },
                content_type: "application/pdf",
                bytes: r.bytes,
            });
        }
        Ok(Some((out, ReceiptHashes { hashes })))
    }

    /// An alert for a person: the platform's admin or the shop's, by
    /// e-mail, once per event.
    async fn notify_alert(&self, msg: &Incoming, alert: &payhub_core::events::AlertRaised) -> Result<(), Failure> {
        use payhub_core::events::AlertAudience;
        let env = &msg.envelope;
        let to = match alert.audience {
            AlertAudience::Platform => self.platform_admin_email.clone(),
            AlertAudience::Shop => match env.shop_id {
                Some(id) => payhub_store::shops::by_id(&self.store, id)
                    .await
                    .map_err(db)?
                    .and_then(|s| s.admin_email),
                None => None,
            },
        };
        let Some(to) = to else {
            tracing::error!(kind = %alert.kind, subject = %alert.subject, detail = %alert.detail,
                "an alert has nobody to go to (set PAYHUB_PLATFORM_ADMIN_EMAIL or the shop's admin e-mail)");
            return Ok(());
        };
        let planned = [Planned {
            kind: Kind::AdminAlert,
            target: to.clone(),
            webhook_id: None,
            send: Send::Mail {
                to,
                mail: mail::alert(env, alert),
            },
        }];
        let last = msg.attempt >= self.max_attempts;
        if self
            .delivered(env)
            .await?
            .iter()
            .any(|k| k == Kind::AdminAlert.as_str())
        {
            return Ok(());
        }
        let attempt = self.attempt_mail(&planned[0]).await;
        let done = [Done {
            planned: &planned[0],
            last,
            attempt,
        }];
        self.record(env, &done).await?;
        match &done[0].attempt {
            a if a.ok => Ok(()),
            a => Err(Failure::Transient(format!(
                "alert e-mail: {}",
                a.error.clone().unwrap_or_default()
            ))),
        }
    }

    /// One e-mail for this event, sent once (issue 12): recorded as
    /// delivered, retried while it fails.
    async fn mail_once(&self, msg: &Incoming, planned: Planned) -> Result<(), Failure> {
        let env = &msg.envelope;
        if self.delivered(env).await?.iter().any(|k| k == planned.kind.as_str()) {
            return Ok(());
        }
        let attempt = self.attempt_mail(&planned).await;
        let done = [Done {
            planned: &planned,
            last: msg.attempt >= self.max_attempts,
            attempt,
        }];
        self.record(env, &done).await?;
        match &done[0].attempt {
            a if a.ok => Ok(()),
            a => Err(Failure::Transient(format!(
                "{}: {}",
                planned.kind.as_str(),
                a.error.clone().unwrap_or_default()
            ))),
        }
    }

    /// An order's invoice was issued (the buyer gets the links) or failed
    /// (the shop's admin is told, once: the event is published once).
    async fn notify_invoice(
        &self,
        msg: &Incoming,
        invoice: &payhub_core::events::InvoiceUpdated,
    ) -> Result<(), Failure> {
        use payhub_core::invoice::InvoiceStatus;
        let env = &msg.envelope;
        let order = env.correlation_id.as_deref().unwrap_or("");
        let planned = match invoice.status {
            InvoiceStatus::Issued => Planned::buyer_mail(
                &invoice.customer_email,
                mail::invoice_issued(
                    order,
                    invoice,
                    &env.order_id
                        .map(|id| self.order_links.url(&self.public_base_url, id))
                        .unwrap_or_default(),
                ),
            ),
            InvoiceStatus::Cancelled => {
                Planned::buyer_mail(&invoice.customer_email, mail::invoice_cancelled(order, invoice))
            }
            InvoiceStatus::Failed | InvoiceStatus::CancelFailed => {
                let shop_id = env
                    .shop_id
                    .ok_or_else(|| Failure::Permanent("invoice.updated without a shop".into()))?;
                let shop = payhub_store::shops::by_id(&self.store, shop_id)
                    .await
                    .map_err(db)?
                    .ok_or_else(|| Failure::Permanent(format!("unknown shop {shop_id}")))?;
                let Some(admin) = shop.admin_email.clone() else {
                    tracing::error!(%shop_id, order, "an invoice failed and the shop has no admin e-mail to tell");
                    return Ok(());
                };
                Planned {
                    kind: Kind::AdminAlert,
                    target: admin.clone(),
                    webhook_id: None,
                    send: Send::Mail {
                        to: admin,
                        mail: mail::invoice_failed(env, order, &shop.name, invoice),
                    },
                }
            }
            InvoiceStatus::Requested => return Ok(()),
        };
        self.mail_once(msg, planned).await
    }

    /// A paid order of a shop that reports no shipping is due its survey
    /// (reporter's sweeper): the buyer is invited, once.
    async fn notify_survey_due(&self, msg: &Incoming, due: &payhub_core::events::SurveyDue) -> Result<(), Failure> {
        let env = &msg.envelope;
        let (Some(order_id), Some(shop_id)) = (env.order_id, env.shop_id) else {
            return Err(Failure::Permanent("survey.due without order or shop".into()));
        };
        let invitation = SurveyInvitee {
            email: &due.customer_email,
            name: &due.customer_name,
            currency: due.amount.currency(),
            days_after_payment: Some(due.days_after_payment),
        };
        let Some(planned) = self.survey_invitation(env, order_id, shop_id, invitation).await? else {
            return Ok(());
        };
        self.mail_once(msg, planned).await
    }

    /// The buyer's one survey invitation for this event, unless it was
    /// delivered already or the order has none to give (after delivery, or
    /// N days after payment for a shop that reports no shipping).
    async fn survey_invitation(
        &self,
        env: &Envelope,
        order_id: Uuid,
        shop_id: Uuid,
        invitee: SurveyInvitee<'_>,
    ) -> Result<Option<Planned>, Failure> {
        if self
            .delivered(env)
            .await?
            .iter()
            .any(|k| k == Kind::SurveyInvitation.as_str())
        {
            return Ok(None);
        }
        let lang = survey::language(invitee.currency);
        let Some(link) = survey::invite(&self.store, &self.survey, order_id, shop_id, lang)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(Planned {
            kind: Kind::SurveyInvitation,
            target: payhub_core::identity::Email::parse(invitee.email)
                .map(|e| e.masked())
                .unwrap_or_else(|_| "invalid".into()),
            webhook_id: None,
            send: Send::Mail {
                to: invitee.email.to_string(),
                mail: survey::mail(
                    env.correlation_id.as_deref().unwrap_or(""),
                    invitee.name,
                    lang,
                    &link,
                    self.survey.valid_for.as_secs() / 86_400,
                    invitee.days_after_payment,
                    &self.order_links.url(&self.public_base_url, order_id),
                ),
            },
        }))
    }

    async fn attempt_mail(&self, planned: &Planned) -> Attempt {
        match &planned.send {
            Send::Mail { to, mail } => self.mailer.send(to, mail).await,
            Send::MailWith {
                to, mail, attachments, ..
            } => self.mailer.send_with(to, mail, attachments).await,
            _ => Attempt {
                ok: false,
                status_code: None,
                error: Some("not an e-mail".into()),
            },
        }
    }

    /// A management report was stored: its list gets it by e-mail, once per
    /// event (a redelivery after the send finds it delivered).
    async fn notify_report(&self, msg: &Incoming, ready: &payhub_core::events::ReportReady) -> Result<(), Failure> {
        let env = &msg.envelope;
        if self
            .delivered(env)
            .await?
            .iter()
            .any(|k| k == Kind::ManagementReport.as_str())
        {
            return Ok(());
        }
        let stored = report::load(&self.store, ready.report_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Failure::Permanent(format!("report.ready for an unknown report {}", ready.report_id)))?;
        let to = match stored.shop_id {
            Some(shop) => report::shop_recipients(&self.store, shop).await.map_err(db)?,
            None if !self.platform_report_emails.is_empty() => self.platform_report_emails.clone(),
            None => self.platform_admin_email.clone().into_iter().collect(),
        };
        if to.is_empty() {
            tracing::error!(report_id = %ready.report_id,
                "a management report has nobody to go to (set the shop's report e-mails or PAYHUB_PLATFORM_REPORT_EMAILS)");
            return Ok(());
        }
        let (mail, attachments) = report::mail(&stored, ready.report_id);
        let html = String::from_utf8_lossy(&stored.html).into_owned();
        let recipients: Vec<&str> = to.iter().map(String::as_str).collect();
        let attempt = self
            .mailer
            .send_parts(&recipients, &mail, Some(&html), &attachments)
            .await;
        let planned = Planned {
            kind: Kind::ManagementReport,
            target: to.join(","),
            webhook_id: None,
            send: Send::Mail { to: to.join(","), mail },
        };
        let done = [Done {
            planned: &planned,
            last: msg.attempt >= self.max_attempts,
            attempt,
        }];
        self.record(env, &done).await?;
        match &done[0].attempt {
            a if a.ok => Ok(()),
            a => Err(Failure::Transient(format!(
                "management report e-mail: {}",
                a.error.clone().unwrap_or_default()
            ))),
        }
    }

    /// A buyer answered the survey: the shop hears it, signed like every
    /// webhook, with the same retry rules.
    async fn notify_survey(&self, msg: &Incoming, answer: &payhub_core::events::SurveyAnswered) -> Result<(), Failure> {
        let env = &msg.envelope;
        let shop_id = env
            .shop_id
            .ok_or_else(|| Failure::Permanent("survey.answered without a shop".into()))?;
        let shop = payhub_store::shops::by_id(&self.store, shop_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Failure::Permanent(format!("unknown shop {shop_id}")))?;
        let Some(url) = shop.webhook_url.clone() else {
            return Ok(());
        };
        let planned = [Planned {
            kind: Kind::ShopWebhook,
            target: url.clone(),
            webhook_id: Some(webhook::webhook_id(env.id)),
            send: Send::Webhook {
                url,
                payload: webhook::survey_payload(env, answer),
            },
        }];
        let last = msg.attempt >= self.max_attempts;
        for (_, attempt) in self.deliver(env, &shop, &planned, last).await? {
            if !attempt.ok {
                return Err(Failure::Transient(format!(
                    "shop webhook: {}",
                    attempt.error.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// A verified Pago Seguro return (issue 11 §2): payhub's own e-mail to
    /// the buyer and to the shop's admin, each once per event (a redelivery
    /// sends only what was not delivered).
    async fn notify_pagoseguro_return(
        &self,
        msg: &Incoming,
        ret: &payhub_core::events::PagoseguroReturned,
    ) -> Result<(), Failure> {
        let env = &msg.envelope;
        let (Some(order_id), Some(shop_id)) = (env.order_id, env.shop_id) else {
            return Err(Failure::Permanent("pagoseguro.returned without order or shop".into()));
        };
        let shop = payhub_store::shops::by_id(&self.store, shop_id)
            .await
            .map_err(db)?
            .ok_or_else(|| Failure::Permanent(format!("unknown shop {shop_id}")))?;
        let order = env.correlation_id.as_deref().unwrap_or("");
        let lang = survey::language(ret.amount.currency());
        let link = self.order_links.url(&self.public_base_url, order_id);
        let mut planned = vec![Planned::buyer_mail(
            &ret.customer_email,
            mail::pagoseguro_return_buyer(order, ret, lang, &link),
        )];
        match shop.admin_email.clone() {
            Some(admin) => planned.push(Planned {
                kind: Kind::AdminAlert,
                target: admin.clone(),
                webhook_id: None,
                send: Send::Mail {
                    to: admin,
                    mail: mail::pagoseguro_return_admin(env, order, &shop.name, ret, lang),
                },
            }),
            None => tracing::warn!(%shop_id, order, "a Pago Seguro return and the shop has no admin e-mail to tell"),
        }
        let last = msg.attempt >= self.max_attempts;
        let failures: Vec<String> = self
            .deliver(env, &shop, &planned, last)
            .await?
            .into_iter()
            .filter(|(_, a)| !a.ok)
            .map(|(kind, a)| format!("{}: {}", kind.as_str(), a.error.unwrap_or_default()))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Failure::Transient(failures.join("; ")))
        }
    }

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
        let Some(url) = shop.webhook_url.clone() else {
            tracing::warn!(shop_id = %shop.id, "an order message was refused and the shop has no webhook URL to tell");
            return Ok(());
        };
        let planned = [Planned {
            kind: Kind::ShopWebhook,
            target: url.clone(),
            webhook_id: Some(webhook::webhook_id(env.id)),
            send: Send::Webhook {
                url,
                payload: webhook::rejected_payload(env, rejected),
            },
        }];
        let last = msg.attempt >= self.max_attempts;
        for (_, attempt) in self.deliver(env, &shop, &planned, last).await? {
            if !attempt.ok {
                return Err(Failure::Transient(format!(
                    "shop webhook: {}",
                    attempt.error.unwrap_or_default()
                )));
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
            EventPayload::AlertRaised(alert) => return self.notify_alert(msg, alert).await,
            EventPayload::SurveyAnswered(answer) => return self.notify_survey(msg, answer).await,
            EventPayload::InvoiceUpdated(invoice) => return self.notify_invoice(msg, invoice).await,
            EventPayload::SurveyDue(due) => return self.notify_survey_due(msg, due).await,
            EventPayload::ReportReady(r) => return self.notify_report(msg, r).await,
            EventPayload::PagoseguroReturned(r) => return self.notify_pagoseguro_return(msg, r).await,
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
        // What an earlier attempt delivered is neither sent nor prepared
        // again (a retry for a shop that is down renders no receipt); read
        // with what the change's messages need from the database.
        let payhub_format = shop.webhook_format == payhub_store::shops::WebhookFormat::Payhub;
        let Context {
            delivered,
            checkout,
            receipt,
        } = self.context(env, change, payhub_format).await?;
        let done_before = |k: Kind| delivered.iter().any(|d| d == k.as_str());

        // Everything this change calls for, sent at once.
        let mut planned = Vec::new();
        let payload = match shop.webhook_format {
            payhub_store::shops::WebhookFormat::Payhub => {
                Some(self.with_links(shop_payload(env, change), env, checkout))
            }
            payhub_store::shops::WebhookFormat::Pixelpay => webhook::pixelpay_payload(env, change, &shop.name),
        };
        if let (Some(url), Some(payload)) = (shop.webhook_url.clone(), payload) {
            planned.push(Planned {
                kind: Kind::ShopWebhook,
                target: url.clone(),
                webhook_id: Some(webhook::webhook_id(env.id)),
                send: Send::Webhook { url, payload },
            });
        }
        let link = env
            .order_id
            .map(|id| self.order_links.url(&self.public_base_url, id))
            .unwrap_or_default();
        if !done_before(Kind::BuyerEmail)
            && let Some(mail) = mail::buyer_mail(env, change, &link)
        {
            let to = change.customer_email.clone();
            // The payment's confirmation carries its receipt (issue 12 §2).
            let send = match self.receipts(env, receipt).await? {
                Some((attachments, receipt)) => Send::MailWith {
                    to,
                    mail,
                    attachments,
                    receipt: Some(receipt),
                },
                None => Send::Mail { to, mail },
            };
            planned.push(Planned {
                kind: Kind::BuyerEmail,
                target: masked(&change.customer_email),
                webhook_id: None,
                send,
            });
        }
        if let Some(admin) = shop.admin_email.clone()
            && matches!(change.to, OrderStatus::Failed | OrderStatus::UnderReview)
        {
            planned.push(Planned {
                kind: Kind::AdminAlert,
                target: admin.clone(),
                webhook_id: None,
                send: Send::Mail {
                    to: admin,
                    mail: mail::admin_alert(env, change, &shop.name),
                },
            });
        }
        // Delivered: the buyer is asked, once, how it went (issue 12 §4).
        if change.to == OrderStatus::Delivered
            && !done_before(Kind::SurveyInvitation)
            && let Some(order_id) = env.order_id
        {
            let invitation = SurveyInvitee {
                email: &change.customer_email,
                name: &change.customer_name,
                currency: change.amount.currency(),
                days_after_payment: None,
            };
            if let Some(p) = self.survey_invitation(env, order_id, shop_id, invitation).await? {
                planned.push(p);
            }
        }
        // Wake Commerce stores learn the outcome through their postback.
        if change.channel == payhub_core::events::OrderChannel::Wake
            && let Some((status, body)) = wake::postback(change)
            && let Some(chave) = env.correlation_id.as_deref()
        {
            let url = format!("{}/api/Custom/{}", self.wake_postback_url, wake::path_segment(chave));
            tracing::debug!(status, "wake postback planned");
            planned.push(Planned {
                kind: Kind::WakePostback,
                target: url.clone(),
                webhook_id: None,
                send: Send::Wake { url, body },
            });
        }

        let mut failures = Vec::new();
        let mut webhook_given_up = None;
        let mut webhook_refused = None;
        for (kind, attempt) in self.deliver_except(env, &shop, &planned, last, &delivered).await? {
            if attempt.ok {
                continue;
            }
            let error = attempt.error.clone().unwrap_or_default();
            if kind == Kind::ShopWebhook {
                let refused = webhook::refused(&attempt);
                if refused {
                    webhook_refused = Some(format!("shop webhook: {error}"));
                } else {
                    failures.push(format!("shop webhook: {error}"));
                }
                if last || refused {
                    webhook_given_up = Some(error);
                }
            } else {
                failures.push(format!("{}: {error}", kind.as_str()));
            }
        }

        // The shop's admin hears of a webhook given up on.
        if let Some(error) = &webhook_given_up
            && let Some(admin) = shop.admin_email.clone()
        {
            let url = shop.webhook_url.as_deref().unwrap_or_default();
            let alert = [Planned {
                kind: Kind::DeliveryFailureAlert,
                target: admin.clone(),
                webhook_id: None,
                send: Send::Mail {
                    to: admin,
                    mail: mail::webhook_failure_alert(env, change, &shop.name, url, msg.attempt, error),
                },
            }];
            for (kind, attempt) in self.deliver(env, &shop, &alert, last).await? {
                if !attempt.ok {
                    failures.push(format!("{}: {}", kind.as_str(), attempt.error.unwrap_or_default()));
                }
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

/// What [`NotifyHandler::context`] read.
struct Context {
    delivered: Vec<String>,
    checkout: Option<(String, time::OffsetDateTime)>,
    receipt: Option<payhub_documents::Receipt>,
}

/// Whom a survey invitation goes to.
struct SurveyInvitee<'a> {
    email: &'a str,
    name: &'a str,
    currency: payhub_core::Currency,
    days_after_payment: Option<u16>,
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        infra.cache_shops();
        let handler = NotifyHandler {
            store: infra.store.clone(),
            webhooks: WebhookSender::new(config.webhook_timeout, config.webhook_urls)?,
            mailer: Mailer::new(&config.smtp_url, &config.mail_from, config.smtp_pool_size)?,
            max_attempts: config.common.topology.retry.max_attempts,
            wake_postback_url: config.wake_postback_url.trim_end_matches('/').to_string(),
            platform_admin_email: config.platform_admin_email.clone(),
            platform_report_emails: config.platform_report_emails.clone(),
            survey: config.survey.clone(),
            order_links: config.order_links.clone(),
            public_base_url: config.public_base_url.trim_end_matches('/').to_string(),
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
