//! Shops read through an in-process cache that PostgreSQL keeps current.
//!
//! Every change to a `shops` row notifies channel [`CHANNEL`] with the
//! shop's id (a trigger, so every writer counts: `payhubctl`, a migration, a
//! hand-made `UPDATE`). A service that runs [`ShopCache::listen`] drops the
//! shop on each notification, so a new webhook URL or secret reaches it a
//! few milliseconds after the change commits. That lag is why only services
//! that route by shop (notifier) listen; those that authenticate shops or
//! apply their rules read the database every time. While the listening connection is down the
//! cache is emptied and bypassed: every read goes to the database, as it
//! does in processes that never listen (`payhubctl`).
//!
//! A read that started before a change and finishes after its
//! notification would store the old row; a generation counter, raised by
//! every notification, keeps such a read out of the cache. Entries also
//! expire after [`MAX_AGE`]: what the database computes at read time (the
//! previous webhook secret's overlap ending) is read again at least that
//! often.

use crate::shops::Shop;
use crate::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the `shops` trigger notifies.
pub const CHANNEL: &str = "payhub_shops";

/// How long a cached shop is used before it is read again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Beyond this many shops the cache starts over (it holds active shops
/// only, so this is a bound, not a working size).
const MAX_SHOPS: usize = 10_000;

/// What a shop is looked up by besides its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Alias {
    /// The SHA-256 of an API key.
    ApiKey(Vec<u8>),
    /// The RabbitMQ user a shop publishes order messages as.
    AmqpUser(String),
}

#[derive(Default)]
struct Entries {
    shops: HashMap<Uuid, (std::time::Instant, Shop)>,
    aliases: HashMap<Alias, Uuid>,
}

#[derive(Default)]
struct Inner {
    live: AtomicBool,
    generation: AtomicU64,
    entries: Mutex<Entries>,
}

/// See the module documentation. Cloning shares the cache.
#[derive(Clone, Default)]
pub struct ShopCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShopCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopCache")
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

fn fresh(entry: Option<&(std::time::Instant, Shop)>) -> Option<Shop> {
    entry
        .filter(|(at, _)| at.elapsed() < MAX_AGE)
        .map(|(_, shop)| shop.clone())
}

impl ShopCache {
    /// Whether the cache is in use (its listener is connected).
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Acquire)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, id: Uuid) -> Option<Shop> {
        if !self.is_live() {
            return None;
        }
        fresh(self.entries().shops.get(&id))
    }

    pub(crate) fn get_alias(&self, alias: &Alias) -> Option<Shop> {
        if !self.is_live() {
            return None;
        }
        let entries = self.entries();
        let id = entries.aliases.get(alias)?;
        fresh(entries.shops.get(id))
    }

    /// A token to take before reading the database for a fill.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Stores what a read found, unless a change was notified since the
    /// read began (its `generation`).
    pub(crate) fn fill(&self, generation: u64, shop: &Shop, alias: Option<Alias>) {
        if !self.is_live() {
            return;
        }
        let mut entries = self.entries();
        if self.generation() != generation {
            return;
        }
        if entries.shops.len() >= MAX_SHOPS {
            entries.shops.clear();
            entries.aliases.clear();
        }
        entries.shops.insert(shop.id, (std::time::Instant::now(), shop.clone()));
        if let Some(alias) = alias {
            entries.aliases.insert(alias, shop.id);
        }
    }

    /// Forgets one shop (its row changed).
    pub fn invalidate(&self, id: Uuid) {
        let mut entries = self.entries();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        entries.shops.remove(&id);
        entries.aliases.retain(|_, shop| *shop != id);
    }

    /// Forgets everything (a notification may have been missed).
    pub fn clear(&self) {
        let mut entries = self.entries();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        entries.shops.clear();
        entries.aliases.clear();
    }

    fn set_live(&self, live: bool) {
        // Emptied on every change of state: nothing read while not
        // listening is trusted afterwards.
        self.clear();
        self.inner.live.store(live, Ordering::Release);
    }

    /// Listens for shop changes until `shutdown`, reconnecting after a
    /// failure; the cache is in use only while the listener is connected.
    pub async fn listen(self, store: Store, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.listen_once(&store, &shutdown).await {
                tracing::warn!(error = %e, "shop cache listener lost; reading shops from the database until it is back");
            }
            self.set_live(false);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn listen_once(&self, store: &Store, shutdown: &CancellationToken) -> Result<(), StoreError> {
        // Holds one of the pool's connections while it listens.
        let mut listener = sqlx::postgres::PgListener::connect_with(&store.pool).await?;
        listener.listen(CHANNEL).await?;
        self.set_live(true);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.try_recv() => n?,
            };
            match next {
                Some(n) => match Uuid::parse_str(n.payload()) {
                    Ok(id) => self.invalidate(id),
                    Err(_) => self.clear(),
                },
                // The connection was lost: notifications may have been
                // missed in between, so this listener ends (and the cache
                // empties) rather than reconnecting silently.
                None => return Err(StoreError::Db(sqlx::Error::PoolClosed)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::standard_webhooks::WebhookSecret;

    fn shop(id: Uuid) -> Shop {
        Shop {
            id,
            name: "shop".into(),
            webhook_url: None,
            webhook_secret: WebhookSecret::generate(),
            admin_email: None,
            active: true,
            previous_webhook_secret: None,
            allowed_providers: vec!["openpix".into()],
            wake_store: None,
            order_rules: Default::default(),
            webhook_format: crate::shops::WebhookFormat::Payhub,
            secrets_opened: true,
        }
    }

    #[test]
    fn bypassed_until_live_and_emptied_when_it_goes_down() {
        let cache = ShopCache::default();
        let id = Uuid::now_v7();
        cache.fill(cache.generation(), &shop(id), None);
        assert!(cache.get(id).is_none(), "not listening: nothing cached");
        cache.set_live(true);
        cache.fill(cache.generation(), &shop(id), Some(Alias::ApiKey(vec![1])));
        assert_eq!(cache.get(id).map(|s| s.id), Some(id));
        assert_eq!(cache.get_alias(&Alias::ApiKey(vec![1])).map(|s| s.id), Some(id));
        cache.set_live(false);
        assert!(cache.get(id).is_none());
        cache.set_live(true);
        assert!(cache.get(id).is_none(), "what was cached before the gap is gone");
    }

    #[test]
    fn a_change_drops_the_shop_and_its_aliases() {
        let cache = ShopCache::default();
        cache.set_live(true);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        cache.fill(cache.generation(), &shop(a), Some(Alias::AmqpUser("a".into())));
        cache.fill(cache.generation(), &shop(b), Some(Alias::AmqpUser("b".into())));
        cache.invalidate(a);
        assert!(cache.get(a).is_none());
        assert!(cache.get_alias(&Alias::AmqpUser("a".into())).is_none());
        assert_eq!(cache.get(b).map(|s| s.id), Some(b), "other shops stay");
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_stored() {
        let cache = ShopCache::default();
        cache.set_live(true);
        let id = Uuid::now_v7();
        let before = cache.generation();
        cache.invalidate(id);
        cache.fill(before, &shop(id), None);
        assert!(cache.get(id).is_none(), "the old row stays out");
    }
}
