//! Shops and their credentials. API keys are shown once and stored as
//! SHA-256 hashes; they are 32 random bytes, so a slow hash adds nothing.

use crate::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use payhub_core::standard_webhooks::WebhookSecret;
use ring::rand::SecureRandom;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Shop {
    pub id: Uuid,
    pub name: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: WebhookSecret,
    pub admin_email: Option<String>,
    pub active: bool,
}

/// What creating a shop hands back once: the plain credentials.
#[derive(Debug)]
pub struct NewShopCredentials {
    pub shop: Shop,
    pub api_key: String,
}

pub fn hash_api_key(key: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .to_vec()
}

pub fn generate_api_key() -> String {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source failed");
    format!("phk_{}", URL_SAFE_NO_PAD.encode(b))
}

type Row = (Uuid, String, Option<String>, String, Option<String>, bool);

fn from_row(r: Row) -> Result<Shop, StoreError> {
    let secret = WebhookSecret::parse(&r.3)
        .map_err(|e| StoreError::Db(sqlx::Error::Decode(format!("shop {} webhook secret {e}", r.0).into())))?;
    Ok(Shop {
        id: r.0,
        name: r.1,
        webhook_url: r.2,
        webhook_secret: secret,
        admin_email: r.4,
        active: r.5,
    })
}

macro_rules! select_shops {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, webhook_url, webhook_secret, admin_email, active FROM shops ",
            $rest
        )
    };
}

pub async fn create(
    store: &Store,
    name: &str,
    webhook_url: Option<&str>,
    admin_email: Option<&str>,
) -> Result<NewShopCredentials, StoreError> {
    let id = Uuid::now_v7();
    let api_key = generate_api_key();
    let secret = WebhookSecret::generate();
    sqlx::query("INSERT INTO shops (id, name, api_key_hash, webhook_url, webhook_secret, admin_email) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(name)
        .bind(hash_api_key(&api_key))
        .bind(webhook_url)
        .bind(secret.expose())
        .bind(admin_email)
        .execute(&store.pool)
        .await?;
    Ok(NewShopCredentials {
        shop: Shop {
            id,
            name: name.into(),
            webhook_url: webhook_url.map(Into::into),
            webhook_secret: secret,
            admin_email: admin_email.map(Into::into),
            active: true,
        },
        api_key,
    })
}

/// The active shop holding this API key, if any.
pub async fn by_api_key(store: &Store, api_key: &str) -> Result<Option<Shop>, StoreError> {
    let row: Option<Row> = sqlx::query_as(select_shops!("WHERE api_key_hash = $1 AND active"))
        .bind(hash_api_key(api_key))
        .fetch_optional(&store.pool)
        .await?;
    row.map(from_row).transpose()
}

pub async fn by_id(store: &Store, id: Uuid) -> Result<Option<Shop>, StoreError> {
    let row: Option<Row> = sqlx::query_as(select_shops!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    row.map(from_row).transpose()
}

pub async fn list(store: &Store) -> Result<Vec<Shop>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(select_shops!("ORDER BY created_at"))
        .fetch_all(&store.pool)
        .await?;
    rows.into_iter().map(from_row).collect()
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
    }
}
