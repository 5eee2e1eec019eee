//! Provider health (issue 13 §4): every provider account payhub charges
//! under is probed with a cheap authenticated call every
//! `PAYHUB_PROVIDER_PROBE_INTERVAL_MS`; after `PAYHUB_PROVIDER_DOWN_AFTER`
//! probes in a row without a usable answer it is `down` in
//! `provider_health`, and the first good answer makes it `up` again.
//!
//! While an account is down, the charge worker holds the orders it would
//! charge there (no attempt used, no call made; see `ChargeHandler`), and
//! ingress answers 503 with `Retry-After` to the shops that chose `reject`.
//! When the account is back, the held orders are charged once: the charge
//! call is idempotent on the order (OpenPix `return_existing`).
//!
//! Only one replica probes at a time (a PostgreSQL advisory lock). Real
//! traffic is measured too, by `payhub_provider_calls_total` and
//! `payhub_provider_call_duration_seconds` (payhub_connectors::metrics).

use crate::accounts::{Providers, Using};
use payhub_connectors::ConnectorError;
use payhub_connectors::pixelpay::{PixelPayAccount, PixelPayClient};
use payhub_store::Store;
use payhub_store::health::platform_account;
use payhub_telemetry::{ConfigError, Env};
use prometheus::{IntGaugeVec, register_int_gauge_vec};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An arbitrary, fixed key for the prober's advisory lock.
const LOCK_KEY: i64 = 0x7061_7968_7562_4850;

/// Longest `detail` kept.
const DETAIL_MAX: usize = 500;

pub const PROVIDERS: [&str; 2] = ["openpix", "pixelpay"];
pub const STATES: [&str; 3] = ["up", "refused", "down"];

static ACCOUNTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "payhub_provider_accounts",
        "Provider accounts by provider and the state the last probes found (up, refused, down); set by the replica that probes.",
        &["provider", "state"]
    )
    .expect("metric registers once")
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `PAYHUB_PROVIDER_PROBE_INTERVAL_MS` (default 30 s).
    pub interval: Duration,
    /// `PAYHUB_PROVIDER_DOWN_AFTER` (default 2): failed probes in a row
    /// before an account is down.
    pub down_after: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_secs(30),
            down_after: 2,
        }
    }
}

impl ProbeConfig {
    pub fn from_env(env: &Env) -> Result<ProbeConfig, ConfigError> {
        let interval = env.millis("PAYHUB_PROVIDER_PROBE_INTERVAL_MS", Duration::from_secs(30))?;
        if interval.is_zero() {
            return Err(Env::bad("PAYHUB_PROVIDER_PROBE_INTERVAL_MS", "must be above 0"));
        }
        let down_after: u32 = env.parse("PAYHUB_PROVIDER_DOWN_AFTER", 2)?;
        if !(1..=100).contains(&down_after) {
            return Err(Env::bad("PAYHUB_PROVIDER_DOWN_AFTER", "must be from 1 to 100"));
        }
        Ok(ProbeConfig { interval, down_after })
    }
}

/// One account to probe.
struct Target {
    account: String,
    provider: &'static str,
    shop_id: Option<Uuid>,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probed {
    Up,
    Refused(String),
    Failed(String),
}

pub struct Prober {
    pub store: Store,
    pub providers: Arc<Providers>,
    pub pixelpay: PixelPayClient,
    pub platform_pixelpay: Option<PixelPayAccount>,
    pub config: ProbeConfig,
}

impl Prober {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.probe_once().await {
                tracing::warn!(error = %e, "probing the provider accounts failed; trying again next time");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One probe of every account, if no other replica is probing.
    pub async fn probe_once(&self) -> Result<(), sqlx::Error> {
        let mut lock = self.store.pool.acquire().await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *lock)
            .await?;
        if !got {
            return Ok(());
        }
        let result = self.probe_all().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn targets(&self) -> Result<Vec<Target>, sqlx::Error> {
        let mut targets = vec![Target {
            account: platform_account("openpix"),
            provider: "openpix",
            shop_id: None,
        }];
        if self.platform_pixelpay.is_some() {
            targets.push(Target {
                account: platform_account("pixelpay"),
                provider: "pixelpay",
                shop_id: None,
            });
        }
        let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
            "SELECT id, shop_id, provider FROM provider_accounts WHERE provider IN ('openpix', 'pixelpay') ORDER BY id",
        )
        .fetch_all(&self.store.pool)
        .await?;
        for (id, shop_id, provider) in rows {
            let provider = if provider == "openpix" { "openpix" } else { "pixelpay" };
            targets.push(Target {
                account: id.to_string(),
                provider,
                shop_id: Some(shop_id),
            });
        }
        Ok(targets)
    }

    async fn probe(&self, t: &Target) -> Probed {
        let using = if t.shop_id.is_none() {
            Ok(Using::Platform)
        } else {
            self.providers.named(&t.account).await
        };
        let using = match using {
            Ok(u) => u,
            Err(e) => return Probed::Refused(format!("the account cannot be used: {e}")),
        };
        let answer = match t.provider {
            "openpix" => match self.providers.openpix(&using) {
                Ok(client) => client.probe().await,
                Err(e) => return Probed::Refused(e.to_string()),
            },
            _ => match self.providers.pixelpay(&using, self.platform_pixelpay.as_ref()) {
                Ok(account) => self.pixelpay.probe(&account).await,
                Err(e) => return Probed::Refused(e.to_string()),
            },
        };
        match answer {
            Ok(()) => Probed::Up,
            Err(ConnectorError::Permanent(e)) => Probed::Refused(e),
            Err(ConnectorError::Transient(e)) => Probed::Failed(e),
        }
    }

    async fn probe_all(&self) -> Result<(), sqlx::Error> {
        let targets = self.targets().await?;
        let found = futures::future::join_all(targets.iter().map(|t| self.probe(t))).await;
        for (t, probed) in targets.iter().zip(found) {
            self.record(t, &probed).await?;
        }
        // The gauge: every provider and state, zeros included (an alert on
        // `down` must see it go back to 0).
        let counts: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT provider, state, count(*) FROM provider_health GROUP BY provider, state")
                .fetch_all(&self.store.pool)
                .await?;
        for p in PROVIDERS {
            for s in STATES {
                let n = counts
                    .iter()
                    .find(|(cp, cs, _)| cp == p && cs == s)
                    .map_or(0, |(_, _, n)| *n);
                ACCOUNTS.with_label_values(&[p, s]).set(n);
            }
        }
        Ok(())
    }

    async fn record(&self, t: &Target, probed: &Probed) -> Result<(), sqlx::Error> {
        let (ok, refused, detail) = match probed {
            Probed::Up => (true, false, None),
            Probed::Refused(e) => (false, true, Some(e.chars().take(DETAIL_MAX).collect::<String>())),
            Probed::Failed(e) => (false, false, Some(e.chars().take(DETAIL_MAX).collect::<String>())),
        };
        // The new state follows from the stored failures: up at the first
        // good answer, down after `down_after` failures in a row, refused
        // when the provider answers but refuses the credentials.
        let (state, was): (String, Option<String>) = sqlx::query_as(
            "WITH old AS (SELECT state, failures FROM provider_health WHERE account = $1),
             new AS (
                SELECT CASE WHEN $4 THEN 'up'
                            WHEN $5 THEN 'refused'
                            WHEN COALESCE((SELECT failures FROM old), 0) + 1 >= $7 THEN 'down'
                            ELSE COALESCE((SELECT state FROM old), 'up') END AS state,
                       CASE WHEN $4 OR $5 THEN 0 ELSE COALESCE((SELECT failures FROM old), 0) + 1 END AS failures)
             INSERT INTO provider_health AS h (account, provider, shop_id, state, failures, detail, down_since,
                                               checked_at, next_probe_at)
             SELECT $1, $2, $3, new.state, new.failures, $6,
                    CASE WHEN new.state = 'down' THEN now() END, now(), now() + make_interval(secs => $8)
             FROM new
             ON CONFLICT (account) DO UPDATE
                SET state = EXCLUDED.state, failures = EXCLUDED.failures, detail = EXCLUDED.detail,
                    down_since = CASE WHEN EXCLUDED.state <> 'down' THEN NULL
                                      ELSE COALESCE(h.down_since, now()) END,
                    checked_at = now(), next_probe_at = EXCLUDED.next_probe_at, shop_id = EXCLUDED.shop_id
             RETURNING h.state, (SELECT state FROM old)",
        )
        .bind(&t.account)
        .bind(t.provider)
        .bind(t.shop_id)
        .bind(ok)
        .bind(refused)
        .bind(detail.as_deref())
        .bind(self.config.down_after as i32)
        .bind(self.config.interval.as_secs_f64())
        .fetch_one(&self.store.pool)
        .await?;
        if was.as_deref() != Some(state.as_str()) {
            match state.as_str() {
                "down" => {
                    tracing::error!(account = %t.account, provider = t.provider, detail = detail.as_deref().unwrap_or(""), "provider account is down")
                }
                "refused" => {
                    tracing::warn!(account = %t.account, provider = t.provider, detail = detail.as_deref().unwrap_or(""), "provider refuses the account's credentials")
                }
                _ => tracing::info!(account = %t.account, provider = t.provider, "provider account is up"),
            }
        }
        Ok(())
    }
}
