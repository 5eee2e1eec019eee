//! Provider health as charge-creator's probes found it (`provider_health`,
//! written by charge-creator's prober only): which provider accounts are
//! down now, read through a short cache so that a door or a worker asks the
//! database at most once per [`HealthCache`] TTL, not once per order.

use crate::{Store, StoreError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// The `account` of the platform's own account at `provider`.
pub fn platform_account(provider: &str) -> String {
    format!("platform:{provider}")
}

/// One provider account the probes found down.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DownAccount {
    pub account: String,
    pub provider: String,
    /// `None`: the platform's account.
    pub shop_id: Option<Uuid>,
    pub detail: Option<String>,
    pub down_since: Option<OffsetDateTime>,
    pub next_probe_at: OffsetDateTime,
}

impl DownAccount {
    /// Seconds until the next probe may find it up (at least 1): the
    /// `Retry-After` a door answers.
    pub fn retry_after_secs(&self) -> u64 {
        let left = (self.next_probe_at - OffsetDateTime::now_utc()).whole_seconds();
        left.clamp(1, 3600) as u64
    }
}

/// What a shop wants while its provider account is down (`shops.provider_down_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Accept the order; its charge is created once the provider is back.
    Hold,
    /// The HTTP doors answer 503 with `Retry-After`.
    Reject,
}

impl DownPolicy {
    pub fn parse(s: &str) -> Option<DownPolicy> {
        match s {
            "hold" => Some(DownPolicy::Hold),
            "reject" => Some(DownPolicy::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DownPolicy::Hold => "hold",
            DownPolicy::Reject => "reject",
        }
    }
}

/// The accounts down at a moment.
type Snapshot = (Instant, Arc<Vec<DownAccount>>);

/// The accounts down now, cached for `ttl`.
#[derive(Clone)]
pub struct HealthCache {
    store: Store,
    ttl: Duration,
    cached: Arc<Mutex<Option<Snapshot>>>,
}

impl HealthCache {
    pub fn new(store: Store, ttl: Duration) -> HealthCache {
        HealthCache {
            store,
            ttl,
            cached: Arc::default(),
        }
    }

    /// Every account down now.
    pub async fn down(&self) -> Result<Arc<Vec<DownAccount>>, StoreError> {
        {
            let c = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, down)) = c.as_ref()
                && at.elapsed() < self.ttl
            {
                return Ok(down.clone());
            }
        }
        let rows: Vec<DownAccount> = sqlx::query_as(
            "SELECT account, provider, shop_id, detail, down_since, next_probe_at
             FROM provider_health WHERE state = 'down' ORDER BY account",
        )
        .fetch_all(&self.store.pool)
        .await?;
        let rows = Arc::new(rows);
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), rows.clone()));
        Ok(rows)
    }

    /// Whether the account named `account` (`platform:<provider>` or an
    /// account id) is down.
    pub async fn account_down(&self, account: &str) -> Result<Option<DownAccount>, StoreError> {
        Ok(self.down().await?.iter().find(|d| d.account == account).cloned())
    }

    /// Whether the account `shop_id` is charged under at `provider` is down:
    /// the shop's own account, or the platform's when it has none. One
    /// cached read when nothing is down (the usual case).
    pub async fn down_for(&self, shop_id: Uuid, provider: &str) -> Result<Option<DownAccount>, StoreError> {
        let down = self.down().await?;
        if down.is_empty() {
            return Ok(None);
        }
        if let Some(own) = down
            .iter()
            .find(|d| d.shop_id == Some(shop_id) && d.provider == provider)
        {
            return Ok(Some(own.clone()));
        }
        let platform = platform_account(provider);
        let Some(p) = down.iter().find(|d| d.account == platform) else {
            return Ok(None);
        };
        let own: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM provider_accounts WHERE shop_id = $1 AND provider = $2")
                .bind(shop_id)
                .bind(provider)
                .fetch_optional(&self.store.pool)
                .await?;
        Ok(if own.is_some() { None } else { Some(p.clone()) })
    }
}

/// The shop's choice while its provider is down.
pub async fn policy(store: &Store, shop_id: Uuid) -> Result<DownPolicy, StoreError> {
    let (p,): (String,) = sqlx::query_as("SELECT provider_down_policy FROM shops WHERE id = $1")
        .bind(shop_id)
        .fetch_optional(&store.pool)
        .await?
        .ok_or(StoreError::ShopNotFound(shop_id))?;
    Ok(DownPolicy::parse(&p).unwrap_or(DownPolicy::Hold))
}

/// Sets the shop's choice (payhubctl).
pub async fn set_policy(store: &Store, shop_id: Uuid, policy: DownPolicy) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE shops SET provider_down_policy = $2 WHERE id = $1")
        .bind(shop_id)
        .bind(policy.as_str())
        .execute(&store.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::ShopNotFound(shop_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_retry_after() {
        assert_eq!(DownPolicy::parse("hold"), Some(DownPolicy::Hold));
        assert_eq!(DownPolicy::parse("reject"), Some(DownPolicy::Reject));
        assert_eq!(DownPolicy::parse("REJECT"), None);
        let d = DownAccount {
            account: platform_account("openpix"),
            provider: "openpix".into(),
            shop_id: None,
            detail: None,
            down_since: None,
            next_probe_at: OffsetDateTime::now_utc() + time::Duration::seconds(30),
        };
        assert!((29..=30).contains(&d.retry_after_secs()));
        let past = DownAccount {
            next_probe_at: OffsetDateTime::now_utc() - time::Duration::seconds(5),
            ..d
        };
        assert_eq!(past.retry_after_secs(), 1, "never 0: a client would retry at once");
    }
}
