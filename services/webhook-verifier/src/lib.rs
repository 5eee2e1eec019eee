//! webhook-verifier: proves provider webhooks genuine.
//!
//! `POST /webhooks/openpix` checks `x-webhook-signature` over the raw body
//! against the trusted keys, stores every webhook with its verdict, and for a
//! payment fact stores `payment.reported` in the same transaction, publishes
//! it, and answers 200 only once the broker confirmed it. Anything
//! unverified is answered 401, stored as rejected, and reaches no order.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payhub_connectors::openpix::{OPENPIX_PUBLIC_KEY_PEM, OpenPixWebhooks, SIGNATURE_HEADER};
use payhub_connectors::rsa::TrustedKeys;
use payhub_connectors::{WebhookEvent, WebhookVerifier};
use payhub_core::events::{EventPayload, PaymentReported};
use payhub_core::{Envelope, Provider};

use payhub_service::problem::ApiError;
use payhub_service::{CommonConfig, Infra};
use payhub_store::Store;
use payhub_store::outbox::{self, Outbox};
use payhub_telemetry::{ConfigError, Env};
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SERVICE: &str = "webhook-verifier";

static WEBHOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_provider_webhooks_total",
        "Provider webhooks received, by provider and verdict.",
        &["provider", "verdict"]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// PEM text of the trusted OpenPix keys (default: OpenPix's published key).
    pub openpix_keys: TrustedKeys,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let pem = env.string("PAYHUB_OPENPIX_PUBLIC_KEYS", OPENPIX_PUBLIC_KEY_PEM);
        let openpix_keys =
            TrustedKeys::from_pem(&pem).map_err(|e| Env::bad("PAYHUB_OPENPIX_PUBLIC_KEYS", e.to_string()))?;
        Ok(Config {
            common: CommonConfig::from_env(env, "0.0.0.0:8081")?,
            openpix_keys,
        })
    }
}

#[derive(Clone)]
struct AppState {
    store: Store,
    outbox: Outbox,
    openpix: Arc<OpenPixWebhooks>,
}

/// One received webhook, recorded with its verdict whatever it is.
struct Received<'a> {
    id: Uuid,
    signature: Option<&'a str>,
    body: &'a [u8],
}

/// What payhub concluded about a webhook.
struct Verdict<'a> {
    verdict: &'static str,
    reason: Option<&'a str>,
    event_type: Option<&'a str>,
    reference: Option<&'a str>,
}

impl<'a> Verdict<'a> {
    fn plain(verdict: &'static str, reason: Option<&'a str>) -> Verdict<'a> {
        Verdict {
            verdict,
            reason,
            event_type: None,
            reference: None,
        }
    }
}

impl Received<'_> {
    async fn record<'e, E: sqlx::PgExecutor<'e>>(&self, ex: E, v: Verdict<'_>) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO webhook_events (id, provider, verdict, reason, event_type, provider_reference, signature, body)
             VALUES ($1, 'openpix', $2, $3, $4, $5, $6, $7)",
        )
        .bind(self.id)
        .bind(v.verdict)
        .bind(v.reason)
        .bind(v.event_type)
        .bind(v.reference)
        .bind(self.signature.map(|s| s.chars().take(1024).collect::<String>()))
        .bind(self.body)
        .execute(ex)
        .await?;
        WEBHOOKS.with_label_values(&["openpix", v.verdict]).inc();
        Ok(())
    }
}

#[tracing::instrument(skip_all, fields(provider = "openpix", webhook_id))]
async fn openpix_webhook(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    tracing::Span::current().record("webhook_id", tracing::field::display(id));
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let received = Received {
        id,
        signature,
        body: &body,
    };
    if let Err(why) = st.openpix.verify(signature, &body) {
        tracing::warn!(reason = %why, "webhook refused");
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
            Ok((StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response())
        }
        WebhookEvent::Ignored { event_type, why } => {
            let v = Verdict {
                verdict: "ignored",
                reason: Some(&why),
                event_type: Some(&event_type),
                reference: None,
            };
            received.record(&st.store.pool, v).await?;
            Ok((StatusCode::OK, axum::Json(json!({"status": "ignored"}))).into_response())
        }
        WebhookEvent::Payment {
            event_type,
            provider_reference,
            report,
        } => {
            let mut env = Envelope::new(EventPayload::PaymentReported(PaymentReported {
                provider: Provider::Openpix,
                webhook_event_id: id,
                provider_reference: provider_reference.clone(),
                report,
            }));
            // payhub gives the provider the order's id as reference.
            env.order_id = Uuid::parse_str(&provider_reference).ok();
            env.trace = payhub_telemetry::trace::current_context();
            let mut tx = st.store.begin().await?;
            let v = Verdict {
                verdict: "accepted",
                reason: None,
                event_type: Some(&event_type),
                reference: Some(&provider_reference),
            };
            received.record(&mut *tx, v).await?;
            outbox::add(&mut tx, &env).await?;
            tx.commit().await?;
            // 200 only once the broker holds the event; otherwise the
            // provider retries (and the relay publishes it meanwhile).
            st.outbox
                .publish_now(std::slice::from_ref(&env))
                .await
                .map_err(|e| ApiError::Unavailable(format!("could not hand the event to the broker: {e}")))?;
            tracing::info!(reference = %provider_reference, event_type, "payment reported");
            Ok((StatusCode::OK, axum::Json(json!({"status": "accepted", "id": id}))).into_response())
        }
    }
}

/// The running service; see [`payhub_service::App`].
pub struct Application(payhub_service::App);

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Application> {
        let mut infra = Infra::start(SERVICE, &config.common, shutdown)?;
        let outbox = infra.spawn_outbox();
        let state = AppState {
            store: infra.store.clone(),
            outbox,
            openpix: Arc::new(OpenPixWebhooks::new(config.openpix_keys.clone())),
        };
        let routes = Router::new()
            .route("/webhooks/openpix", post(openpix_webhook))
            .layer(DefaultBodyLimit::max(1024 * 1024))
            .with_state(state);
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
