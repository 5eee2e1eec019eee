//! Shops and their credentials.
//!
//! - API keys and the Wake connector's secret are shown once and stored as
//!   SHA-256 hashes; they are 32 random bytes, so a slow hash adds nothing.
//! - Webhook signing secrets must be read back to sign, so they are sealed
//!   with AES-256-GCM under the store's [`Secrets`](crate::Secrets) key, bound
//!   to the shop id. Rows from before encryption are still read from the
//!   plaintext column (see the `shop_credentials` migration).
//! - Rotating the webhook secret keeps the previous one for an overlap, during
//!   which deliveries carry both signatures.

use crate::shop_cache::Alias;
use crate::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use payhub_core::standard_webhooks::WebhookSecret;
use ring::rand::SecureRandom;
use std::time::Duration;
use uuid::Uuid;

/// What a shop's status webhooks look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebhookFormat {
    /// payhub's `order.status_changed` for every status.
    #[default]
    Payhub,
    /// PixelPay's own success and error webhooks (seed 003), for shops that
    /// already integrate PixelPay: only `paid` and `failed` are sent.
    Pixelpay,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Payhub => "payhub",
            WebhookFormat::Pixelpay => "pixelpay",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookFormat> {
        match s {
            "payhub" => Some(WebhookFormat::Payhub),
            "pixelpay" => Some(WebhookFormat::Pixelpay),
            _ => None,
        }
    }
}

/// Sets the body of the shop's status webhooks.
pub async fn set_webhook_format(store: &Store, id: Uuid, format: WebhookFormat) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE shops SET webhook_format = $2 WHERE id = $1")
        .bind(id)
        .bind(format.as_str())
        .execute(&store.pool)
        .await?;
    found(id, r)
}

/// The default (and, for older rows, the only) provider.
pub const DEFAULT_PROVIDER: &str = "openpix";

#[derive(Debug, Clone)]
pub struct Shop {
    pub id: Uuid,
    pub name: String,
    pub webhook_url: Option<String>,
    /// The current signing secret.
    pub webhook_secret: WebhookSecret,
    pub admin_email: Option<String>,
    pub active: bool,
    /// The secret before the last rotation, only while its overlap lasts.
    pub previous_webhook_secret: Option<WebhookSecret>,
    /// Providers the shop may create charges at (`openpix`, ...).
    pub allowed_providers: Vec<String>,
    /// The Wake Commerce store this shop is, when connected to Wake.
    pub wake_store: Option<String>,
    /// Delivery coverage, stock and provider fees (seed 004).
    pub order_rules: payhub_core::rules::OrderRules,
    /// The body of the shop's status webhooks.
    pub webhook_format: WebhookFormat,
    /// False when read by a process without `PAYHUB_SECRETS_KEY` (every
    /// service but the notifier in production): the secret fields then hold
    /// a random stand-in nobody knows and [`Shop::signing_secrets`] is empty.
    pub secrets_opened: bool,
}

impl Shop {
    /// The secrets to sign a delivery with: the current one, then the
    /// previous one while its overlap lasts.
    pub fn signing_secrets(&self) -> Vec<&WebhookSecret> {
        if !self.secrets_opened {
            return Vec::new();
        }
        std::iter::once(&self.webhook_secret)
            .chain(self.previous_webhook_secret.as_ref())
            .collect()
    }

    pub fn allows_provider(&self, provider: &str) -> bool {
        self.allowed_providers.iter().any(|p| p == provider)
    }
}

/// What creating a shop hands back once: the plain credentials. Its `Debug`
/// never shows them.
pub struct NewShopCredentials {
    pub shop: Shop,
    pub api_key: String,
    /// The Wake connector's secret, when the shop was created with a Wake store.
    pub wake_secret: Option<String>,
}

impl std::fmt::Debug for NewShopCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewShopCredentials")
            .field("shop", &self.shop)
            .field("api_key", &"<redacted>")
            .field("wake_secret", &self.wake_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything a new shop may be created with.
#[derive(Debug, Clone, Default)]
pub struct CreateShop {
    pub name: String,
    pub webhook_url: Option<String>,
    pub admin_email: Option<String>,
    /// Empty means [`DEFAULT_PROVIDER`] only.
    pub allowed_providers: Vec<String>,
    /// Connects the shop to this Wake Commerce store and issues its secret.
    pub wake_store: Option<String>,
}

fn sha256(text: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source failed");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b))
}

pub fn hash_api_key(key: &str) -> Vec<u8> {
    sha256(key)
}

pub fn generate_api_key() -> String {
    random_token("phk_")
}

/// The SHA-256 stored for a Wake connector secret.
pub fn hash_wake_secret(secret: &str) -> Vec<u8> {
    sha256(secret)
}

/// A fresh Wake connector secret: 32 random bytes.
pub fn generate_wake_secret() -> String {
    random_token("pwk_")
}

/// Associated data binding a sealed webhook secret to its shop.
fn secret_context(id: Uuid) -> Vec<u8> {
    let mut ctx = b"payhub/shops.webhook_secret/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

fn seal_secret(store: &Store, id: Uuid, secret: &WebhookSecret) -> Result<Vec<u8>, StoreError> {
    Ok(store.secrets().seal(secret.expose().as_bytes(), &secret_context(id))?)
}

fn decode_error(id: Uuid, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(sqlx::Error::Decode(format!("shop {id} {what}: {e}").into()))
}

fn open_secret(store: &Store, id: Uuid, what: &str, sealed: &[u8]) -> Result<WebhookSecret, StoreError> {
    let plain = store
        .secrets()
        .open(sealed, &secret_context(id))
        .map_err(|e| decode_error(id, what, e))?;
    let text = String::from_utf8(plain).map_err(|_| decode_error(id, what, "is not text"))?;
    WebhookSecret::parse(&text).map_err(|e| decode_error(id, what, e))
}

/// The current secret: sealed, or (rows from before encryption) plaintext.
fn current_secret(
    store: &Store,
    id: Uuid,
    sealed: Option<&[u8]>,
    plaintext: Option<&str>,
) -> Result<WebhookSecret, StoreError> {
    match (sealed, plaintext) {
        (Some(sealed), _) => open_secret(store, id, "webhook secret", sealed),
        (None, Some(text)) => WebhookSecret::parse(text).map_err(|e| decode_error(id, "webhook secret", e)),
        (None, None) => Err(decode_error(id, "webhook secret", "is missing")),
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    webhook_secret_enc: Option<Vec<u8>>,
    /// NULL once the overlap is over.
    previous_enc: Option<Vec<u8>>,
    admin_email: Option<String>,
    active: bool,
    allowed_providers: Vec<String>,
    wake_store: Option<String>,
    wake_secret_hash: Option<Vec<u8>>,
    order_rules: serde_json::Value,
    webhook_format: String,
}

fn from_row(store: &Store, r: Row) -> Result<Shop, StoreError> {
    let secrets_opened = store.secrets().has_key();
    let (webhook_secret, previous_webhook_secret) = if secrets_opened {
        let current = current_secret(
            store,
            r.id,
            r.webhook_secret_enc.as_deref(),
            r.webhook_secret.as_deref(),
        )?;
        let previous = r
            .previous_enc
            .as_deref()
            .map(|sealed| open_secret(store, r.id, "previous webhook secret", sealed))
            .transpose()?;
        (current, previous)
    } else {
        // This process holds no key and signs nothing: a random stand-in.
        (WebhookSecret::generate(), None)
    };
    Ok(Shop {
        id: r.id,
        name: r.name,
        webhook_url: r.webhook_url,
        webhook_secret,
        admin_email: r.admin_email,
        active: r.active,
        previous_webhook_secret,
        allowed_providers: r.allowed_providers,
        wake_store: r.wake_store,
        order_rules: serde_json::from_value(r.order_rules)
            .map_err(|e| StoreError::Db(sqlx::Error::Decode(format!("shop {} order rules: {e}", r.id).into())))?,
        webhook_format: WebhookFormat::parse(&r.webhook_format).unwrap_or_default(),
        secrets_opened,
    })
}

macro_rules! select_shops {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, webhook_url, webhook_secret, webhook_secret_enc,
                    CASE WHEN webhook_secret_prev_valid_until > now() THEN webhook_secret_prev_enc END AS previous_enc,
                    admin_email, active, allowed_providers, wake_store, wake_secret_hash, order_rules,
                    webhook_format
             FROM shops ",
            $rest
        )
    };
}

/// A unique violation as a clear conflict; anything else as is.
fn conflict(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("23505")
    {
        return match d.constraint() {
            Some("shops_wake_store") => StoreError::Conflict("that Wake store is connected to another shop".into()),
            Some(c) => StoreError::Conflict(format!("already taken ({c})")),
            None => StoreError::Conflict("already taken".into()),
        };
    }
    StoreError::Db(e)
}

fn providers_or_default(providers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in providers {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        out.push(DEFAULT_PROVIDER.to_string());
    }
    out
}

pub async fn create(
    store: &Store,
    name: &str,
    webhook_url: Option<&str>,
    admin_email: Option<&str>,
) -> Result<NewShopCredentials, StoreError> {
    create_with(
        store,
        &CreateShop {
            name: name.into(),
            webhook_url: webhook_url.map(Into::into),
            admin_email: admin_email.map(Into::into),
            ..CreateShop::default()
        },
    )
    .await
}

/// Creates a shop; its API key, webhook secret and (with a Wake store) Wake
/// secret are in the result, and only there.
pub async fn create_with(store: &Store, new: &CreateShop) -> Result<NewShopCredentials, StoreError> {
    let id = Uuid::now_v7();
    let api_key = generate_api_key();
    let secret = WebhookSecret::generate();
    let allowed_providers = providers_or_default(&new.allowed_providers);
    let wake_secret = new.wake_store.as_ref().map(|_| generate_wake_secret());
    sqlx::query(
        "INSERT INTO shops (id, name, api_key_hash, webhook_url, webhook_secret_enc, admin_email, allowed_providers,
                            wake_store, wake_secret_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&new.name)
    .bind(hash_api_key(&api_key))
    .bind(new.webhook_url.as_deref())
    .bind(seal_secret(store, id, &secret)?)
    .bind(new.admin_email.as_deref())
    .bind(&allowed_providers)
    .bind(new.wake_store.as_deref())
    .bind(wake_secret.as_deref().map(hash_wake_secret))
    .execute(&store.pool)
    .await
    .map_err(conflict)?;
    Ok(NewShopCredentials {
        shop: Shop {
            id,
            name: new.name.clone(),
            webhook_url: new.webhook_url.clone(),
            webhook_secret: secret,
            admin_email: new.admin_email.clone(),
            active: true,
            previous_webhook_secret: None,
            allowed_providers,
            wake_store: new.wake_store.clone(),
            order_rules: Default::default(),
            webhook_format: WebhookFormat::Payhub,
            secrets_opened: true,
        },
        api_key,
        wake_secret,
    })
}

/// The active shop holding this API key, if any.
pub async fn by_api_key(store: &Store, api_key: &str) -> Result<Option<Shop>, StoreError> {
    let hash = hash_api_key(api_key);
    cached(store, Lookup::Alias(Alias::ApiKey(hash.clone())), || {
        sqlx::query_as(select_shops!("WHERE api_key_hash = $1 AND active"))
            .bind(hash)
            .fetch_optional(&store.pool)
    })
    .await
}

/// The active shop that publishes order messages as RabbitMQ user `user`.
pub async fn by_amqp_user(store: &Store, user: &str) -> Result<Option<Shop>, StoreError> {
    cached(store, Lookup::Alias(Alias::AmqpUser(user.to_string())), || {
        sqlx::query_as(select_shops!("WHERE amqp_user = $1 AND active"))
            .bind(user)
            .fetch_optional(&store.pool)
    })
    .await
}

/// What a shop is looked up by.
enum Lookup {
    Id(Uuid),
    Alias(Alias),
}

/// A shop from the store's cache (when it is live, see [`crate::shop_cache`]),
/// else from `read`, which then fills the cache.
async fn cached<F, Fut>(store: &Store, key: Lookup, read: F) -> Result<Option<Shop>, StoreError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Row>, sqlx::Error>>,
{
    let cache = store.shop_cache();
    let hit = match &key {
        Lookup::Id(id) => cache.get(*id),
        Lookup::Alias(alias) => cache.get_alias(alias),
    };
    if hit.is_some() {
        return Ok(hit);
    }
    let generation = cache.generation();
    let shop = read().await?.map(|r| from_row(store, r)).transpose()?;
    if let Some(shop) = &shop {
        let alias = match key {
            Lookup::Id(_) => None,
            Lookup::Alias(alias) => Some(alias),
        };
        cache.fill(generation, shop, alias);
    }
    Ok(shop)
}

/// The active shop whose Wake connector secret this is, if any. Found by the
/// secret's hash, then the stored hash is compared in constant time.
pub async fn by_wake_secret(store: &Store, secret: &str) -> Result<Option<Shop>, StoreError> {
    let hash = hash_wake_secret(secret);
    let row: Option<Row> = sqlx::query_as(select_shops!("WHERE wake_secret_hash = $1 AND active"))
        .bind(&hash)
        .fetch_optional(&store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let stored = row.wake_secret_hash.as_deref().unwrap_or_default();
    // ring 0.17 deprecates this export (it moved to an internal module with
    // no side-channel promise); it is still its constant-time comparison. The
    // values compared are hashes of 256-bit random secrets, so even a timing
    // leak would reveal nothing usable.
    #[allow(deprecated)]
    let equal = ring::constant_time::verify_slices_are_equal(stored, &hash).is_ok();
    if !equal {
        return Ok(None);
    }
    from_row(store, row).map(Some)
}

/// The shop, active or not.
pub async fn by_id(store: &Store, id: Uuid) -> Result<Option<Shop>, StoreError> {
    cached(store, Lookup::Id(id), || {
        sqlx::query_as(select_shops!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&store.pool)
    })
    .await
}

pub async fn list(store: &Store) -> Result<Vec<Shop>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(select_shops!("ORDER BY created_at"))
        .fetch_all(&store.pool)
        .await?;
    rows.into_iter().map(|r| from_row(store, r)).collect()
}

fn found(id: Uuid, r: sqlx::postgres::PgQueryResult) -> Result<(), StoreError> {
    if r.rows_affected() == 0 {
        return Err(StoreError::ShopNotFound(id));
    }
    Ok(())
}

/// Issues a new API key; the old one stops working at once. Returns the new
/// key, to show once.
pub async fn rotate_api_key(store: &Store, id: Uuid) -> Result<String, StoreError> {
    let api_key = generate_api_key();
    let r = sqlx::query("UPDATE shops SET api_key_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(hash_api_key(&api_key))
        .execute(&store.pool)
        .await?;
    found(id, r)?;
    Ok(api_key)
}

/// Issues a new webhook signing secret. The current one becomes the previous
/// one and is still signed with for `overlap` (none when zero); a previous
/// one from an earlier rotation is dropped. Returns the new secret, to show once.
pub async fn rotate_webhook_secret(store: &Store, id: Uuid, overlap: Duration) -> Result<WebhookSecret, StoreError> {
    let mut tx = store.begin().await?;
    let row: Option<(Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT webhook_secret_enc, webhook_secret FROM shops WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((sealed, plaintext)) = row else {
        return Err(StoreError::ShopNotFound(id));
    };
    let current = current_secret(store, id, sealed.as_deref(), plaintext.as_deref())?;
    let new = WebhookSecret::generate();
    let previous = (!overlap.is_zero())
        .then(|| seal_secret(store, id, &current))
        .transpose()?;
    sqlx::query(
        "UPDATE shops SET webhook_secret_enc = $2, webhook_secret = NULL, webhook_secret_prev_enc = $3,
                webhook_secret_prev_valid_until = CASE WHEN $3::bytea IS NULL THEN NULL
                                                       ELSE now() + make_interval(secs => $4) END
         WHERE id = $1",
    )
    .bind(id)
    .bind(seal_secret(store, id, &new)?)
    .bind(previous)
    .bind(overlap.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(new)
}

/// Connects the shop to a Wake Commerce store and issues the secret Wake
/// sends; a previous Wake secret stops working at once. Returns the secret,
/// to show once (only its SHA-256 is kept).
pub async fn set_wake_secret(store: &Store, id: Uuid, wake_store: &str) -> Result<String, StoreError> {
    let secret = generate_wake_secret();
    let r = sqlx::query("UPDATE shops SET wake_store = $2, wake_secret_hash = $3 WHERE id = $1")
        .bind(id)
        .bind(wake_store)
        .bind(hash_wake_secret(&secret))
        .execute(&store.pool)
        .await
        .map_err(conflict)?;
    found(id, r)?;
    Ok(secret)
}

/// Enables or disables the shop. A disabled shop's API key and Wake secret
/// are refused at once; its orders stay.
pub async fn set_active(store: &Store, id: Uuid, active: bool) -> Result<(), StoreError> {
    let r = sqlx::query(
        "UPDATE shops SET active = $2,
                disabled_at = CASE WHEN $2 THEN NULL ELSE coalesce(disabled_at, now()) END
         WHERE id = $1",
    )
    .bind(id)
    .bind(active)
    .execute(&store.pool)
    .await?;
    found(id, r)
}

/// Changes where the shop's webhooks go (`None`: no webhooks). The caller
/// checks the URL is safe to call (`payhub_core::url_safety`).
pub async fn set_webhook_url(store: &Store, id: Uuid, webhook_url: Option<&str>) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE shops SET webhook_url = $2 WHERE id = $1")
        .bind(id)
        .bind(webhook_url)
        .execute(&store.pool)
        .await?;
    found(id, r)
}

/// Seals every webhook secret still stored in plaintext (rows from before
/// encryption) and clears the plaintext. Idempotent; returns how many rows
/// it sealed.
pub async fn encrypt_plaintext_secrets(store: &Store) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, webhook_secret FROM shops
         WHERE webhook_secret_enc IS NULL AND webhook_secret IS NOT NULL FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut sealed = 0;
    for (id, text) in rows {
        let secret = WebhookSecret::parse(&text).map_err(|e| decode_error(id, "webhook secret", e))?;
        sealed += sqlx::query("UPDATE shops SET webhook_secret_enc = $2, webhook_secret = NULL WHERE id = $1")
            .bind(id)
            .bind(seal_secret(store, id, &secret)?)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(sealed)
}

/// Replaces the shop's order rules (validated first).
pub async fn set_order_rules(
    store: &Store,
    id: Uuid,
    rules: &payhub_core::rules::OrderRules,
) -> Result<(), StoreError> {
    rules.validate().map_err(StoreError::Conflict)?;
    let r = sqlx::query("UPDATE shops SET order_rules = $2 WHERE id = $1")
        .bind(id)
        .bind(serde_json::to_value(rules).expect("rules serialise"))
        .execute(&store.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::ShopNotFound(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_random_and_hash_stably() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with("phk_") && a.len() > 40);
        assert_eq!(hash_api_key(&a), hash_api_key(&a));
        assert_eq!(hash_api_key(&a).len(), 32);
        let w = generate_wake_secret();
        assert!(w.starts_with("pwk_") && w.len() > 40 && w != generate_wake_secret());
        assert_eq!(hash_wake_secret(&w).len(), 32);
    }

    #[test]
    fn providers_default_to_openpix_without_duplicates() {
        assert_eq!(providers_or_default(&[]), ["openpix"]);
        assert_eq!(
            providers_or_default(&["openpix".into(), "wake".into(), "openpix".into()]),
            ["openpix", "wake"]
        );
    }

    fn shop_with(previous: Option<WebhookSecret>) -> Shop {
        Shop {
            id: Uuid::now_v7(),
            name: "Loja".into(),
            webhook_url: None,
            webhook_secret: WebhookSecret::generate(),
            admin_email: None,
            active: true,
            previous_webhook_secret: previous,
            allowed_providers: vec!["openpix".into()],
            wake_store: None,
            order_rules: Default::default(),
            webhook_format: WebhookFormat::Payhub,
            secrets_opened: true,
        }
    }

    #[test]
    fn signs_with_the_previous_secret_only_while_it_is_kept() {
        assert_eq!(shop_with(None).signing_secrets().len(), 1);
        let shop = shop_with(Some(WebhookSecret::generate()));
        let secrets = shop.signing_secrets();
        assert_eq!(secrets.len(), 2);
        let unopened = Shop {
            secrets_opened: false,
            ..shop_with(Some(WebhookSecret::generate()))
        };
        assert!(
            unopened.signing_secrets().is_empty(),
            "a process without the key signs nothing"
        );
        assert_eq!(secrets[0].expose(), shop.webhook_secret.expose());
    }

    #[test]
    fn credentials_never_print() {
        let creds = NewShopCredentials {
            shop: shop_with(Some(WebhookSecret::generate())),
            api_key: generate_api_key(),
            wake_secret: Some(generate_wake_secret()),
        };
        let debug = format!("{creds:?}");
        assert!(!debug.contains(&creds.api_key), "{debug}");
        assert!(!debug.contains(creds.wake_secret.as_deref().unwrap()), "{debug}");
        assert!(!debug.contains(&creds.shop.webhook_secret.expose()), "{debug}");
        assert!(!debug.contains("whsec_"), "{debug}");
    }
}
