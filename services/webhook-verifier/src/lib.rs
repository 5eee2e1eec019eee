//! webhook-verifier: proves provider webhooks genuine, and their payments
//! payhub's own.
//!
//! `POST /webhooks/openpix` checks `x-webhook-signature` over the raw body
//! against the trusted keys. A valid signature proves only who sent the
//! message: OpenPix signs every merchant's webhooks with one key. So a
//! payment fact is then confirmed with the provider through charge-creator
//! (`POST /internal/v1/confirm`, see `payhub_connectors::psync`): it must
//! concern the charge payhub created for that order, under payhub's
//! account, for the stored amount. Only then is `payment.reported` stored
//! (carrying the provider's answer, not the webhook's body) with the
//! webhook in one transaction, published, and answered 200.
//!
//! Every webhook is stored with its verdict:
//! - `rejected`, 401: the signature does not verify (body kept as a capped
//!   prefix, hash and size);
//! - `rejected`, 200: genuine, but not payhub's charge or contradicted by
//!   the provider; the platform's admin is alerted, nothing else changes,
//!   and the provider stops retrying;
//! - `duplicate`, 200: the same (provider, transaction, event) again;
//! - `unconfirmed`, 503: the provider could not be asked; it retries;
//! - `accepted`, `test_call`, `ignored`, `unreadable`.
//!
//! `POST /webhooks/pixelpay/{token}` takes PixelPay's unsigned callbacks at
//! each order's unguessable URL (module `pixelpay`).

mod limit;
mod pagoseguro;
mod pixelpay;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_connectors::internal::{ClaimKind, ConfirmClient, ConfirmRequest, Verdict as ConfirmVerdict};
use payhub_connectors::openpix::{OPENPIX_PUBLIC_KEY_PEM, OpenPixWebhooks, SIGNATURE_HEADER};
use payhub_connectors::rsa::TrustedKeys;
use payhub_connectors::{WebhookEvent, WebhookVerifier};
use payhub_core::events::{AlertAudience, AlertRaised, EventPayload, PaymentReport, PaymentReported, PaymentSource};
use payhub_core::{Envelope, Provider};

use payhub_service::problem::ApiError;
use payhub_service::{CommonConfig, Infra};
use payhub_store::Store;
use payhub_store::outbox::{self, Outbox};
use payhub_telemetry::{ConfigError, Env};
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SERVICE: &str = "webhook-verifier";

/// How much of a rejected webhook's body is kept.
pub const REJECTED_BODY_PREFIX: usize = 1024;

static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_provider_webhooks_total",
        "Provider webhooks received, by provider and verdict.",
        &["provider", "verdict"]
    )
    .expect("metric registers once")
});

static REJECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_provider_webhooks_rejected_total",
        "Provider webhooks rejected, by provider and cause (signature, not_ours, rate_limited, unknown_url).",
        &["provider", "cause"]
    )
    .expect("metric registers once")
});

/// From the payment at the provider (the time its webhook names) to the
/// webhook's arrival, confirmed and accepted: how late providers tell.
static RETURNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_provider_returns_total",
        "Provider returns (Pago Seguro's buyer redirects) received, by verdict (verified, rejected).",
        &["provider", "verdict"]
    )
    .expect("metric registers once")
});

fn count_return(verdict: &str) {
    let verdict = if verdict == "verified" { "verified" } else { "rejected" };
    RETURNS.with_label_values(&["pagoseguro", verdict]).inc();
}

static ARRIVAL_LAG: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_provider_webhook_lag_seconds",
        "Time from a payment at the provider (the time its webhook names) to the webhook accepted by payhub, by provider.",
        &["provider"],
        vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// PEM text of the trusted OpenPix keys (default: OpenPix's published key).
    pub openpix_keys: TrustedKeys,
    /// charge-creator's internal listener, which confirms payments.
    pub charge_creator_url: String,
    pub internal_token: secrecy::SecretString,
    pub confirm_timeout: Duration,
    /// Webhooks per second and burst each source address may send.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Where buyers' checkout pages are (`PAYHUB_PUBLIC_CHECKOUT_BASE_URL`,
    /// ingress): a Pago Seguro return sends the buyer on to its result page.
    pub checkout_base_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let pem = env.string("PAYHUB_OPENPIX_PUBLIC_KEYS", OPENPIX_PUBLIC_KEY_PEM);
        let openpix_keys =
            TrustedKeys::from_pem(&pem).map_err(|e| Env::bad("PAYHUB_OPENPIX_PUBLIC_KEYS", e.to_string()))?;
        if env.is_production() && openpix_keys.contains_sandbox_fixture() {
            // Its private half is in the repository: anyone could sign with it.
            return Err(Env::bad(
                "PAYHUB_OPENPIX_PUBLIC_KEYS",
                "contains the sandbox's public fixture key (tests/fixtures), which PAYHUB_ENV=production refuses to trust",
            ));
        }
        let rate_per_sec: u32 = env.parse("PAYHUB_WEBHOOK_RATE_PER_SEC", 200)?;
        if rate_per_sec == 0 {
            return Err(Env::bad("PAYHUB_WEBHOOK_RATE_PER_SEC", "must be at least 1"));
        }
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:8081")?,
            openpix_keys,
            charge_creator_url: env.url("PAYHUB_CHARGE_CREATOR_URL", "http://127.0.0.1:9101")?,
            internal_token: payhub_service::internal::token(env)?.into(),
            confirm_timeout: env.millis("PAYHUB_CONFIRM_TIMEOUT_MS", Duration::from_secs(15))?,
            rate_per_sec,
            rate_burst: env.parse("PAYHUB_WEBHOOK_RATE_BURST", rate_per_sec.saturating_mul(2))?,
            checkout_base_url: env
                .url("PAYHUB_PUBLIC_CHECKOUT_BASE_URL", "http://127.0.0.1:8080")?
                .trim_end_matches('/')
                .to_string(),
        })
    }
}

#[derive(Clone)]
struct AppState {
    store: Store,
    outbox: Outbox,
    openpix: Arc<OpenPixWebhooks>,
    confirm: ConfirmClient,
}

/// One received webhook, recorded with its verdict whatever it is.
struct Received<'a> {
    id: Uuid,
    /// `openpix` or `pixelpay`.
    provider: &'static str,
    signature: Option<&'a str>,
    body: &'a [u8],
}

/// What payhub concluded about a webhook.
struct Verdict<'a> {
    verdict: &'static str,
    reason: Option<&'a str>,
    event_type: Option<&'a str>,
    reference: Option<&'a str>,
    dedupe_key: Option<&'a str>,
}

impl<'a> Verdict<'a> {
    fn with_reason<'b>(self, reason: Option<&'b str>) -> Verdict<'b>
    where
        'a: 'b,
    {
        Verdict { reason, ..self }
    }

    fn plain(verdict: &'static str, reason: Option<&'a str>) -> Verdict<'a> {
        Verdict {
            verdict,
            reason,
            event_type: None,
            reference: None,
            dedupe_key: None,
        }
    }
}

impl Received<'_> {
    /// Stores the webhook; `false` when an accepted webhook with the same
    /// dedupe key exists (nothing was stored).
    async fn record<'e, E: sqlx::PgExecutor<'e>>(&self, ex: E, v: Verdict<'_>) -> Result<bool, ApiError> {
        self.record_with(ex, v, None).await
    }

    /// [`Self::record`], and `event` into the outbox in the same statement
    /// when the webhook is stored (one round trip, one commit: the webhook
    /// and its event are stored together or not at all).
    async fn record_with<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        ex: E,
        v: Verdict<'_>,
        event: Option<&Envelope>,
    ) -> Result<bool, ApiError> {
        // Only what payhub acts on is kept whole.
        let keep_whole = matches!(
            v.verdict,
            "accepted" | "duplicate" | "test_call" | "ignored" | "unconfirmed" | "provider_error"
        );
        let kept = if keep_whole {
            self.body
        } else {
            &self.body[..self.body.len().min(REJECTED_BODY_PREFIX)]
        };
        macro_rules! store {
            () => {
                "INSERT INTO webhook_events (id, provider, verdict, reason, event_type, provider_reference, signature,
                                             body, dedupe_key, body_sha256, body_size, body_truncated)
                 VALUES ($1, $12, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (provider, dedupe_key) WHERE verdict = 'accepted' AND dedupe_key IS NOT NULL DO NOTHING"
            };
        }
        const STORE: &str = store!();
        const STORE_WITH_EVENT: &str = concat!(
            "WITH stored AS (",
            store!(),
            " RETURNING id) INSERT INTO outbox (id, routing_key, body) SELECT $13, $14, $15 FROM stored"
        );
        let q = sqlx::query(if event.is_some() { STORE_WITH_EVENT } else { STORE })
            .bind(self.id)
            .bind(v.verdict)
            .bind(v.reason.map(|r| r.chars().take(500).collect::<String>()))
            .bind(v.event_type.map(|t| t.chars().take(100).collect::<String>()))
            .bind(v.reference.map(|t| t.chars().take(100).collect::<String>()))
            .bind(self.signature.map(|s| s.chars().take(1024).collect::<String>()))
            .bind(kept)
            .bind(v.dedupe_key)
            .bind(Sha256::digest(self.body).as_slice())
            .bind(i32::try_from(self.body.len()).unwrap_or(i32::MAX))
            .bind(kept.len() < self.body.len())
            .bind(self.provider);
        let q = match event {
            Some(env) => q.bind(env.id).bind(env.kind()).bind(env.to_json()),
            None => q,
        };
        let r = q.execute(ex).await?;
        if r.rows_affected() == 1 {
            WEBHOOKS.with_label_values(&[self.provider, v.verdict]).inc();
        }
        Ok(r.rows_affected() == 1)
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The identity of a payment fact: the same (transaction, event) twice is
/// one fact.
fn dedupe_key(report: &PaymentReport, reference: &str) -> String {
    match report {
        PaymentReport::Completed {
            end_to_end_id,
            transaction_id,
            ..
        } => format!(
            "paid:{}",
            end_to_end_id
                .as_deref()
                .or(transaction_id.as_deref())
                .unwrap_or(reference)
        ),
        PaymentReport::Expired => format!("expired:{reference}"),
    }
}

#[tracing::instrument(skip_all, fields(provider = "openpix", webhook_id))]
async fn openpix_webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    tracing::Span::current().record("webhook_id", tracing::field::display(id));
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let received = Received {
        id,
        provider: "openpix",
        signature,
        body: &body,
    };
    if let Err(why) = st.openpix.verify(signature, &body) {
        tracing::warn!(reason = %why, "webhook refused");
        REJECTIONS.with_label_values(&["openpix", "signature"]).inc();
        received
            .record(&st.store.pool, Verdict::plain("rejected", Some(&why.to_string())))
            .await?;
        return Err(ApiError::Unauthorized(format!("webhook refused: {why}")));
    }
    let parsed = match st.openpix.parse(&body) {
        Ok(p) => p,
        Err(why) => {
            received
                .record(&st.store.pool, Verdict::plain("unreadable", Some(&why)))
                .await?;
            return Err(ApiError::BadRequest(why));
        }
    };
    match parsed {
        WebhookEvent::TestCall => {
            received
                .record(&st.store.pool, Verdict::plain("test_call", None))
                .await?;
            Ok(reply(StatusCode::OK, json!({"status": "ok"})))
        }
        WebhookEvent::Ignored { event_type, why } => {
            let v = Verdict {
                event_type: Some(&event_type),
                ..Verdict::plain("ignored", Some(&why))
            };
            received.record(&st.store.pool, v).await?;
            Ok(reply(StatusCode::OK, json!({"status": "ignored"})))
        }
        WebhookEvent::Payment {
            event_type,
            provider_reference,
            report,
        } => payment(&st, &received, &event_type, &provider_reference, report).await,
    }
}

/// A genuine payment fact: confirm it with the provider, then store and publish it.
async fn payment(
    st: &AppState,
    received: &Received<'_>,
    event_type: &str,
    reference: &str,
    report: PaymentReport,
) -> Result<Response, ApiError> {
    let key = dedupe_key(&report, reference);
    let verdict = |verdict: &'static str| Verdict {
        event_type: Some(event_type),
        reference: Some(reference),
        ..Verdict::plain(verdict, None)
    };
    // The same fact again: acknowledged, nothing changes.
    let seen: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM webhook_events WHERE provider = 'openpix' AND dedupe_key = $1 AND verdict = 'accepted'",
    )
    .bind(&key)
    .fetch_optional(&st.store.pool)
    .await?;
    if let Some((first,)) = seen {
        received
            .record(
                &st.store.pool,
                verdict("duplicate").with_reason(Some("the same payment fact was accepted before")),
            )
            .await?;
        tracing::info!(first = %first, "the same payment fact again; nothing changes");
        return Ok(reply(StatusCode::OK, json!({"status": "duplicate", "id": first})));
    }
    let Ok(order_id) = Uuid::parse_str(reference) else {
        let why = format!("{reference:?} is not a reference payhub gives");
        return reject(st, received, event_type, reference, &why).await;
    };
    let (claim, charge_id, e2e) = match &report {
        PaymentReport::Completed {
            end_to_end_id,
            transaction_id,
            ..
        } => (ClaimKind::Paid, transaction_id.clone(), end_to_end_id.clone()),
        PaymentReport::Expired => (ClaimKind::Expired, None, None),
    };
    let req = ConfirmRequest {
        order_id,
        claim,
        provider_charge_id: charge_id,
        end_to_end_id: e2e,
        pixelpay: None,
    };
    let answer = match st.confirm.confirm(&req).await {
        Ok(a) => a,
        Err(why) => {
            received
                .record(&st.store.pool, verdict("unconfirmed").with_reason(Some(&why)))
                .await?;
            tracing::warn!(reason = %why, "the payment could not be confirmed now; the provider will retry");
            return Err(ApiError::Unavailable(
                "the payment could not be confirmed with the provider yet; retry later".into(),
            ));
        }
    };
    let (ConfirmVerdict::Confirmed, Some(confirmed), Some(confirmation)) =
        (answer.verdict, answer.report, answer.confirmation)
    else {
        let why = answer
            .reason
            .unwrap_or_else(|| "the provider did not confirm the payment".into());
        return reject(st, received, event_type, reference, &why).await;
    };
    let mut env = Envelope::new(EventPayload::PaymentReported(PaymentReported {
        provider: Provider::Openpix,
        webhook_event_id: received.id,
        provider_reference: reference.to_string(),
        report: confirmed,
        confirmation: Some(confirmation),
        source: PaymentSource::Webhook,
    }));
    env.order_id = Some(order_id);
    env.trace = payhub_telemetry::trace::current_context();
    let fact = (event_type, reference, key.as_str());
    if !accept_reported(st, received, fact, &env, "the same payment fact was accepted before").await? {
        return Ok(reply(StatusCode::OK, json!({"status": "duplicate"})));
    }
    tracing::info!(reference, event_type, "payment confirmed and reported");
    Ok(reply(StatusCode::OK, json!({"status": "accepted", "id": received.id})))
}

/// Stores a confirmed payment webhook (event type, reference, dedupe key) as `accepted`
/// with its `payment.reported` in one transaction, and hands the event to
/// the broker before the provider is answered (otherwise the provider
/// retries, and the relay publishes it meanwhile). `Ok(false)`: another copy
/// was accepted before; this one is stored as `duplicate` and changes nothing.
pub(crate) async fn accept_reported(
    st: &AppState,
    received: &Received<'_>,
    (event_type, reference, key): (&str, &str, &str),
    env: &Envelope,
    duplicate_reason: &str,
) -> Result<bool, ApiError> {
    let verdict = |verdict: &'static str| Verdict {
        event_type: Some(event_type),
        reference: Some(reference),
        ..Verdict::plain(verdict, None)
    };
    let v = Verdict {
        dedupe_key: Some(key),
        ..verdict("accepted")
    };
    if !received.record_with(&st.store.pool, v, Some(env)).await? {
        received
            .record(&st.store.pool, verdict("duplicate").with_reason(Some(duplicate_reason)))
            .await?;
        return Ok(false);
    }
    if let EventPayload::PaymentReported(PaymentReported {
        provider,
        report: PaymentReport::Completed {
            paid_at: Some(paid_at), ..
        },
        ..
    }) = &env.payload
    {
        let lag = (time::OffsetDateTime::now_utc() - *paid_at).as_seconds_f64().max(0.0);
        ARRIVAL_LAG.with_label_values(&[provider.as_str()]).observe(lag);
    }
    st.outbox
        .publish_now(std::slice::from_ref(env))
        .await
        .map_err(|e| ApiError::Unavailable(format!("could not hand the event to the broker: {e}")))?;
    Ok(true)
}

/// Stores a genuine webhook that is not payhub's, or that the provider
/// contradicts, alerts the platform's admin, and answers 200 so the
/// provider stops retrying. Nothing else changes.
async fn reject(
    st: &AppState,
    received: &Received<'_>,
    event_type: &str,
    reference: &str,
    why: &str,
) -> Result<Response, ApiError> {
    REJECTIONS.with_label_values(&["openpix", "not_ours"]).inc();
    tracing::warn!(reason = why, "a genuinely signed webhook was rejected");
    let v = Verdict {
        event_type: Some(event_type),
        reference: Some(reference),
        ..Verdict::plain("rejected", Some(why))
    };
    let alert = Envelope::new(EventPayload::AlertRaised(AlertRaised {
        audience: AlertAudience::Platform,
        kind: "webhook_rejected".into(),
        subject: "A signed provider webhook was rejected".into(),
        detail: format!(
            "Webhook {} ({event_type}) for reference {reference} was genuinely signed but rejected: {why}. \
             No order changed. Someone may be trying to pay an order with a charge that is not payhub's.",
            received.id
        ),
    }));
    let mut tx = st.store.begin().await?;
    received.record(&mut *tx, v).await?;
    outbox::add(&mut tx, &alert).await?;
    tx.commit().await?;
    let _ = st.outbox.publish_now(std::slice::from_ref(&alert)).await;
    Ok(reply(StatusCode::OK, json!({"status": "rejected", "reason": why})))
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let confirm = ConfirmClient::new(
            &config.charge_creator_url,
            config.internal_token.clone(),
            config.confirm_timeout,
        )?;
        let state = AppState {
            store: infra.store.clone(),
            outbox,
            openpix: Arc::new(OpenPixWebhooks::new(config.openpix_keys.clone())),
            confirm,
        };
        let limiter = limit::PerSource::new(config.rate_per_sec, config.rate_burst);
        let returns = axum::Router::new()
            .route(
                "/returns/pagoseguro/{token}",
                axum::routing::get(pagoseguro::door).post(pagoseguro::door),
            )
            .with_state(pagoseguro::ReturnState {
                client: payhub_connectors::internal::RedirectClient::new(
                    &config.charge_creator_url,
                    config.internal_token.clone(),
                    config.confirm_timeout,
                )?,
                checkout_base_url: config.checkout_base_url.trim_end_matches('/').to_string(),
            });
        let routes = Router::new()
            .route("/webhooks/openpix", post(openpix_webhook))
            .route("/webhooks/pixelpay/{token}", post(pixelpay::webhook))
            .with_state(state)
            .merge(returns)
            .layer(DefaultBodyLimit::max(1024 * 1024))
            .layer(axum::middleware::from_fn_with_state(limiter, limit::enforce));
        Ok(Application(
            payhub_service::App::start(infra, config.common.http_addr, routes).await?,
        ))
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
    use payhub_core::{Currency, Money};

    const FIXTURE_PEM: &str = include_str!("../../../tests/fixtures/sandbox-openpix-public.pem");

    fn production(keys: Option<&str>) -> Result<Config, ConfigError> {
        let mut pairs = vec![
            ("PAYHUB_ENV", "production".to_string()),
            ("PAYHUB_DATABASE_URL", "postgres://db/payhub".into()),
            ("PAYHUB_AMQP_URL", "amqps://mq/%2f".into()),
            ("PAYHUB_INTERNAL_TOKEN", "a-long-enough-random-token-value".into()),
        ];
        if let Some(k) = keys {
            pairs.push(("PAYHUB_OPENPIX_PUBLIC_KEYS", k.to_string()));
        }
        Config::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn production_refuses_to_trust_the_sandbox_fixture_key() {
        let e = production(Some(FIXTURE_PEM)).unwrap_err();
        assert_eq!(e.name, "PAYHUB_OPENPIX_PUBLIC_KEYS");
        assert!(e.reason.contains("sandbox"), "{e}");
        // Alongside OpenPix's key (a "rotation") too.
        let both = format!("{OPENPIX_PUBLIC_KEY_PEM}\n{FIXTURE_PEM}");
        assert_eq!(production(Some(&both)).unwrap_err().name, "PAYHUB_OPENPIX_PUBLIC_KEYS");
        // OpenPix's published key (the default) is fine.
        assert_eq!(production(None).unwrap().openpix_keys.len(), 1);
        // Outside production the demo trusts the fixture.
        let dev = Config::from_env(&Env::from_pairs([("PAYHUB_OPENPIX_PUBLIC_KEYS", FIXTURE_PEM)])).unwrap();
        assert!(dev.openpix_keys.contains_sandbox_fixture());
    }

    #[test]
    fn dedupe_keys_name_the_transaction_and_the_event() {
        let paid = |e2e: Option<&str>| PaymentReport::Completed {
            charge_value: Money::from_minor(1, Currency::Brl),
            paid_value: None,
            end_to_end_id: e2e.map(str::to_string),
            transaction_id: Some("tx".into()),
            paid_at: None,
        };
        assert_eq!(dedupe_key(&paid(Some("E1")), "r"), "paid:E1");
        assert_eq!(dedupe_key(&paid(None), "r"), "paid:tx");
        assert_ne!(dedupe_key(&paid(Some("E1")), "r"), dedupe_key(&paid(Some("E2")), "r"));
        assert_eq!(dedupe_key(&PaymentReport::Expired, "r"), "expired:r");
    }
}
