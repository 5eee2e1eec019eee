//! PostgreSQL access shared by the services: the pool, the migrations, the
//! transactional outbox, processed-event records, shop credentials and the
//! master key that seals secrets at rest ([`secrets`]).
//! Each service keeps the SQL for the tables it owns in its own crate.

pub mod accounts;
pub mod figures;
pub mod health;
pub mod invoicing;
pub mod outbox;
pub mod receipts;
pub mod reports;
pub mod roles;
pub mod secrets;
pub mod settlement;
pub mod shop_cache;
pub mod shops;

pub use secrets::Secrets;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

pub use sqlx;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The secrets key is missing or bad, or a stored secret does not open.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    #[error("no shop {0}")]
    ShopNotFound(Uuid),
    #[error("no {0}")]
    NotFound(String),
    /// A value refused before it was stored (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// A stored value is unreadable (the message says which row, never its content).
    #[error("{0}")]
    Corrupt(String),
    /// A uniqueness rule refused the change (the message says which).
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// Connection trouble, timeouts, serialization failures and deadlocks
    /// are worth another attempt; constraint violations are not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                matches!(
                    e.code().as_deref(),
                    Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08003" | "08000")
                )
            }
            StoreError::Db(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

/// The connection pool, and the master key that seals secrets at rest.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: PgPool,
    secrets: Secrets,
    shops: shop_cache::ShopCache,
}

impl Store {
    /// A lazy pool: services start (and report not-ready) while the
    /// database is down, and connect as soon as it is up.
    ///
    /// The secrets key comes from `PAYHUB_SECRETS_KEY` (see [`secrets`]):
    /// unset, the development key is used with a warning, or, with
    /// `PAYHUB_ENV=production`, the store has no key and opens no secret
    /// (shops are read with [`shops::Shop::secrets_opened`] false). The
    /// notifier and payhubctl, which do open them, require the key at start.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let secrets = Secrets::for_store_from_env()?;
        if secrets.is_development() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "PAYHUB_SECRETS_KEY is not set: shop webhook secrets are sealed with the PUBLIC development key. \
                     Set PAYHUB_SECRETS_KEY (base64 of 32 random bytes) everywhere but on a developer machine; \
                     PAYHUB_ENV=production refuses to start without it"
                );
            });
        }
        let mut opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
        // Which service a connection belongs to, in pg_stat_activity and the
        // server's log (`%a`), unless the URL names one.
        if !url.contains("application_name")
            && let Some(name) = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        {
            opts = opts.application_name(&name);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts);
        Ok(Store {
            pool,
            secrets,
            shops: shop_cache::ShopCache::default(),
        })
    }

    /// The same pool with another secrets key (tests, tools).
    pub fn with_secrets(self, secrets: Secrets) -> Store {
        Store { secrets, ..self }
    }

    /// The shops read through this store's cache; see [`shop_cache`].
    pub fn shop_cache(&self) -> &shop_cache::ShopCache {
        &self.shops
    }

    /// The key that seals and opens secrets at rest.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// The kinds of delivery already made for an event, as a text array: the
/// event's id is the placeholder given (`"$1"`). One definition for every
/// read that needs it beside other columns (notifier's, before it sends).
#[macro_export]
macro_rules! delivered_kinds {
    ($event_id:literal) => {
        concat!(
            "ARRAY(SELECT kind FROM deliveries WHERE event_id = ",
            $event_id,
            " AND status = 'delivered')"
        )
    };
}

/// Records that `consumer` processed `event_id`, inside the transaction of
/// the effect. Returns false when it had been processed already: the caller
/// then rolls back and acks.
pub async fn mark_processed(tx: &mut sqlx::PgConnection, consumer: &str, event_id: Uuid) -> Result<bool, StoreError> {
    let r = sqlx::query("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event_id)
        .execute(tx)
        .await?;
    Ok(r.rows_affected() == 1)
}
