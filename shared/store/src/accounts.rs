//! Each shop's own provider accounts (issue 10 §1).
//!
//! A shop's credentials at a provider are sealed with AES-256-GCM under the
//! provider key ([`KeyKind::Provider`], `PAYHUB_PROVIDER_KEY`), bound to the
//! account's id, so a ciphertext copied onto another shop's row does not
//! open. Only charge-creator (which calls providers) and payhubctl (which
//! sets them) hold that key. What may be shown (`public_id`, `endpoint`) is
//! stored in the clear; the secrets are never printed back.
//!
//! A shop without an account at a provider is charged under the platform's
//! account (the service's settings), for single-merchant installs. The
//! account a charge was created under is recorded with the charge
//! (`charges.provider_account`: [`PLATFORM`] or the account's id), and every
//! re-query, refund and reconciliation of that charge uses the same account.

use crate::secrets::{KeyKind, Secrets, SecretsError};
use crate::{Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name recorded with charges created under the platform's account.
pub const PLATFORM: &str = "platform";

/// A shop's secrets at one provider. `Debug` never shows a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Credentials {
    /// OpenPix / Woovi: the AppID sent as `Authorization`.
    Openpix {
        #[serde(with = "secret")]
        app_id: SecretString,
    },
    /// PixelPay: Key ID (numeric merchant id), Secret Key, and the endpoint
    /// (`https://pixelpay.app` or a bank's white-label host).
    Pixelpay {
        key_id: String,
        #[serde(with = "secret")]
        secret_key: SecretString,
        endpoint: String,
    },
    /// Pago Seguro: Account ID and API key.
    Pagoseguro {
        account_id: String,
        #[serde(with = "secret")]
        api_key: SecretString,
    },
    /// Focus NFe, the shop's invoicing service (issue 12 §3): the
    /// company's API token (HTTP Basic user, empty password) and the host
    /// (`https://homologacao.focusnfe.com.br` or `https://api.focusnfe.com.br`).
    Focusnfe {
        #[serde(with = "secret")]
        token: SecretString,
        endpoint: String,
    },
}

mod secret {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        Ok(SecretString::from(String::deserialize(d)?))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Openpix { .. } => f.debug_struct("Openpix").field("app_id", &"<redacted>").finish(),
            Credentials::Pixelpay { key_id, endpoint, .. } => f
                .debug_struct("Pixelpay")
                .field("key_id", key_id)
                .field("secret_key", &"<redacted>")
                .field("endpoint", endpoint)
                .finish(),
            Credentials::Pagoseguro { account_id, .. } => f
                .debug_struct("Pagoseguro")
                .field("account_id", account_id)
                .field("api_key", &"<redacted>")
                .finish(),
            Credentials::Focusnfe { endpoint, .. } => f
                .debug_struct("Focusnfe")
                .field("token", &"<redacted>")
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

impl Credentials {
    /// The provider's name as orders and charges spell it.
    pub fn provider(&self) -> &'static str {
        match self {
            Credentials::Openpix { .. } => "openpix",
            Credentials::Pixelpay { .. } => "pixelpay",
            Credentials::Pagoseguro { .. } => "pagoseguro",
            Credentials::Focusnfe { .. } => "focusnfe",
        }
    }

    /// What may be shown of the account: PixelPay's Key ID, Pago Seguro's
    /// Account ID; OpenPix's AppID is all secret.
    pub fn public_id(&self) -> Option<&str> {
        match self {
            Credentials::Openpix { .. } => None,
            Credentials::Pixelpay { key_id, .. } => Some(key_id),
            Credentials::Pagoseguro { account_id, .. } => Some(account_id),
            Credentials::Focusnfe { .. } => None,
        }
    }

    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Credentials::Pixelpay { endpoint, .. } | Credentials::Focusnfe { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }

    /// Field-level checks before anything is stored.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let blank = |s: &SecretString| s.expose_secret().trim().is_empty();
        match self {
            Credentials::Openpix { app_id } if blank(app_id) => Err(("app_id", "must not be empty".into())),
            Credentials::Openpix { app_id } if app_id.expose_secret().len() > 512 => {
                Err(("app_id", "is longer than 512 characters".into()))
            }
            Credentials::Pixelpay { key_id, .. }
                if key_id.is_empty() || !key_id.chars().all(|c| c.is_ascii_digit()) =>
            {
                Err(("key_id", "must be PixelPay's numeric Key ID".into()))
            }
            Credentials::Pixelpay { secret_key, .. } if blank(secret_key) => {
                Err(("secret_key", "must not be empty".into()))
            }
            Credentials::Pixelpay { endpoint, .. } => host(
                endpoint,
                "must be the PixelPay host, e.g. https://pixelpay.app or https://<bank>.pixelpay.app",
            ),
            Credentials::Pagoseguro { account_id, .. } if account_id.trim().is_empty() => {
                Err(("account_id", "must not be empty".into()))
            }
            Credentials::Pagoseguro { api_key, .. } if blank(api_key) => Err(("api_key", "must not be empty".into())),
            Credentials::Focusnfe { token, .. } if blank(token) || token.expose_secret().len() > 512 => {
                Err(("token", "must be the Focus NFe API token (1 to 512 characters)".into()))
            }
            Credentials::Focusnfe { endpoint, .. } => host(
                endpoint,
                "must be the Focus NFe host, e.g. https://homologacao.focusnfe.com.br",
            ),
            _ => Ok(()),
        }
    }
}

/// An account's endpoint: an http(s) host URL without query or fragment.
fn host(endpoint: &str, why: &str) -> Result<(), (&'static str, String)> {
    let ok = (endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        && !endpoint.contains(['?', '#', ' '])
        && endpoint.len() <= 200;
    if ok { Ok(()) } else { Err(("endpoint", why.into())) }
}

/// A shop's account at one provider, opened.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub shop_id: Uuid,
    pub credentials: Credentials,
    pub rotated_at: time::OffsetDateTime,
    /// The currency codes the account declares it settles; `None`: the
    /// provider's documented ones.
    pub currencies: Option<Vec<String>>,
}

impl Account {
    /// The name recorded with a charge created under this account.
    pub fn name(&self) -> String {
        self.id.to_string()
    }
}

/// What may be listed of an account: no secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    pub id: Uuid,
    pub shop_id: Uuid,
    pub provider: String,
    pub public_id: Option<String>,
    pub endpoint: Option<String>,
    pub currencies: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub rotated_at: time::OffsetDateTime,
}

fn context(id: Uuid) -> Vec<u8> {
    let mut ctx = b"payhub/provider_accounts.credentials/".to_vec();
    ctx.extend_from_slice(id.as_bytes());
    ctx
}

fn open(key: &Secrets, id: Uuid, provider: &str, sealed: &[u8]) -> Result<Credentials, StoreError> {
    let plain = key.open(sealed, &context(id)).map_err(|e| match e {
        SecretsError::NoKey => StoreError::Secrets(SecretsError::NoKey),
        other => StoreError::Corrupt(format!("provider account {id}: {other}")),
    })?;
    let creds: Credentials = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt(format!("provider account {id}: the sealed credentials are unreadable")))?;
    if creds.provider() != provider {
        return Err(StoreError::Corrupt(format!(
            "provider account {id}: credentials for {} on a {provider} row",
            creds.provider()
        )));
    }
    Ok(creds)
}

/// The provider key of this process, from the environment: the configured
/// `PAYHUB_PROVIDER_KEY`, or the development stand-in outside production.
pub fn key_from_env() -> Result<Secrets, SecretsError> {
    let env = payhub_telemetry::Env::process();
    Secrets::from_settings_of(KeyKind::Provider, |name| env.raw(name))
}

/// Sets (or rotates, keeping the account's id) a shop's account at the
/// credentials' provider, with the currencies it declares (`None` keeps
/// what was declared; an empty list goes back to the provider's documented
/// currencies). Returns the account's id.
pub async fn set(
    store: &Store,
    key: &Secrets,
    shop_id: Uuid,
    credentials: &Credentials,
    currencies: Option<&[String]>,
) -> Result<Uuid, StoreError> {
    if let Err((field, why)) = credentials.validate() {
        return Err(StoreError::Invalid(format!("{field} {why}")));
    }
    let provider = credentials.provider();
    let mut tx = store.begin().await?;
    let existing: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM provider_accounts WHERE shop_id = $1 AND provider = $2 FOR UPDATE")
            .bind(shop_id)
            .bind(provider)
            .fetch_optional(&mut *tx)
            .await?;
    let id = existing.map(|(id,)| id).unwrap_or_else(Uuid::new_v4);
    let plain = serde_json::to_vec(credentials).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sealed = key.seal(&plain, &context(id))?;
    let r = sqlx::query(
        "INSERT INTO provider_accounts (id, shop_id, provider, public_id, endpoint, credentials_enc, currencies)
         SELECT $1, $2, $3, $4, $5, $6, NULLIF($7::text[], '{}') WHERE EXISTS (SELECT 1 FROM shops WHERE id = $2)
         ON CONFLICT (id) DO UPDATE SET public_id = EXCLUDED.public_id, endpoint = EXCLUDED.endpoint,
             credentials_enc = EXCLUDED.credentials_enc, rotated_at = now(),
             currencies = CASE WHEN $7::text[] IS NULL THEN provider_accounts.currencies
                               ELSE NULLIF($7::text[], '{}') END",
    )
    .bind(id)
    .bind(shop_id)
    .bind(provider)
    .bind(credentials.public_id())
    .bind(credentials.endpoint())
    .bind(&sealed)
    .bind(currencies)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("shop {shop_id}")));
    }
    tx.commit().await?;
    Ok(id)
}

/// The shop's account at `provider`, opened; `None` when the shop uses the
/// platform's account there.
pub async fn for_shop(
    store: &Store,
    key: &Secrets,
    shop_id: Uuid,
    provider: &str,
) -> Result<Option<Account>, StoreError> {
    let row: Option<AccountRow> = sqlx::query_as(
        "SELECT id, shop_id, provider, credentials_enc, rotated_at, currencies FROM provider_accounts
         WHERE shop_id = $1 AND provider = $2",
    )
    .bind(shop_id)
    .bind(provider)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|r| r.open(key)).transpose()
}

/// One account by the id recorded with a charge, opened.
pub async fn by_id(store: &Store, key: &Secrets, id: Uuid) -> Result<Option<Account>, StoreError> {
    let row: Option<AccountRow> = sqlx::query_as(
        "SELECT id, shop_id, provider, credentials_enc, rotated_at, currencies FROM provider_accounts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|r| r.open(key)).transpose()
}

/// A `provider_accounts` row, still sealed.
#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    shop_id: Uuid,
    provider: String,
    credentials_enc: Vec<u8>,
    rotated_at: time::OffsetDateTime,
    currencies: Option<Vec<String>>,
}

impl AccountRow {
    fn open(self, key: &Secrets) -> Result<Account, StoreError> {
        Ok(Account {
            credentials: open(key, self.id, &self.provider, &self.credentials_enc)?,
            id: self.id,
            shop_id: self.shop_id,
            rotated_at: self.rotated_at,
            currencies: self.currencies,
        })
    }
}

/// The currencies the shop's account at `provider` declares it settles:
/// `None` when it declares none, or the shop has no account there (the
/// provider's documented currencies apply). No key needed: nothing secret.
pub async fn declared_currencies(
    store: &Store,
    shop_id: Uuid,
    provider: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let row: Option<(Option<Vec<String>>,)> =
        sqlx::query_as("SELECT currencies FROM provider_accounts WHERE shop_id = $1 AND provider = $2")
            .bind(shop_id)
            .bind(provider)
            .fetch_optional(&store.pool)
            .await?;
    Ok(row.and_then(|(c,)| c))
}

/// Every account of a shop (or of all shops), without secrets.
pub async fn list(store: &Store, shop_id: Option<Uuid>) -> Result<Vec<AccountSummary>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, shop_id, provider, public_id, endpoint, currencies, created_at, rotated_at FROM provider_accounts
         WHERE $1::uuid IS NULL OR shop_id = $1 ORDER BY shop_id, provider",
    )
    .bind(shop_id)
    .fetch_all(&store.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_their_secrets() {
        let all = [
            Credentials::Openpix {
                app_id: SecretString::from("Q2xpZW50X0lkXzEyMzQ="),
            },
            Credentials::Pixelpay {
                key_id: "1234567890".into(),
                secret_key: SecretString::from("@s4ndb0x-abcd-1234-n1l4-p1x3l"),
                endpoint: "https://pixelpay.app".into(),
            },
            Credentials::Pagoseguro {
                account_id: "508029".into(),
                api_key: SecretString::from("4Vj8eK4rloUd272L48hsrarnUA"),
            },
        ];
        for c in &all {
            let shown = format!("{c:?}");
            for secret in ["Q2xpZW50X0lkXzEyMzQ=", "@s4ndb0x", "4Vj8eK4rloUd272L48hsrarnUA"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(c.validate().is_ok(), "{c:?}");
            let sealed = serde_json::to_vec(c).unwrap();
            let back: Credentials = serde_json::from_slice(&sealed).unwrap();
            assert_eq!(back.provider(), c.provider());
        }
        assert_eq!(all[1].public_id(), Some("1234567890"));
        assert_eq!(all[0].public_id(), None);
    }

    #[test]
    fn credentials_are_checked_field_by_field() {
        let bad_key = Credentials::Pixelpay {
            key_id: "abc".into(),
            secret_key: SecretString::from("s"),
            endpoint: "https://pixelpay.app".into(),
        };
        assert_eq!(bad_key.validate().unwrap_err().0, "key_id");
        let bad_endpoint = Credentials::Pixelpay {
            key_id: "1".into(),
            secret_key: SecretString::from("s"),
            endpoint: "ftp://x".into(),
        };
        assert_eq!(bad_endpoint.validate().unwrap_err().0, "endpoint");
        let empty = Credentials::Openpix {
            app_id: SecretString::from(" "),
        };
        assert_eq!(empty.validate().unwrap_err().0, "app_id");
    }

    #[test]
    fn a_sealed_account_opens_only_on_its_own_row_and_under_the_provider_key() {
        let key = Secrets::development_of(KeyKind::Provider);
        let id = Uuid::new_v4();
        let c = Credentials::Openpix {
            app_id: SecretString::from("app"),
        };
        let sealed = key.seal(&serde_json::to_vec(&c).unwrap(), &context(id)).unwrap();
        assert!(open(&key, id, "openpix", &sealed).is_ok());
        assert!(open(&key, Uuid::new_v4(), "openpix", &sealed).is_err(), "another row");
        assert!(
            open(&Secrets::development(), id, "openpix", &sealed).is_err(),
            "the shop key"
        );
        assert!(open(&key, id, "pixelpay", &sealed).is_err(), "another provider's row");
    }
}
