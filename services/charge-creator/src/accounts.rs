//! Which provider account a call goes out under (issue 10 §1).
//!
//! A shop with its own account at a provider is charged, re-queried and
//! refunded under it; a shop without one under the platform's account (the
//! service's settings). Accounts are read through a short cache (one query a
//! shop and provider per [`Providers::ttl`], not one per charge), so a
//! rotation takes effect within that time.

use payhub_connectors::openpix::OpenPixClient;
use payhub_connectors::pixelpay::PixelPayAccount;
use payhub_store::accounts::{self, Account, Credentials, PLATFORM};
use payhub_store::{Secrets, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The account a charge is created under: the shop's own, or the platform's.
#[derive(Debug, Clone)]
pub enum Using {
    Platform,
    Shop(Arc<Account>),
}

impl Using {
    /// The name recorded with the charge (`charges.provider_account`).
    pub fn name(&self) -> String {
        match self {
            Using::Platform => PLATFORM.to_string(),
            Using::Shop(a) => a.name(),
        }
    }
}

/// Why no client could be made for an account.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The database could not be read: worth another attempt.
    #[error("the provider accounts could not be read: {0}")]
    Unavailable(String),
    /// The account cannot be used (unreadable, missing, another provider).
    #[error("{0}")]
    Unusable(String),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> AccountError {
        if e.is_transient() || matches!(e, StoreError::Db(_)) {
            AccountError::Unavailable(e.to_string())
        } else {
            AccountError::Unusable(e.to_string())
        }
    }
}

type Cached = (Instant, Option<Arc<Account>>);

/// The provider clients and the accounts they act for.
pub struct Providers {
    store: Store,
    key: Secrets,
    /// OpenPix under the platform's AppID; a shop's AppID gets a clone.
    openpix: OpenPixClient,
    ttl: Duration,
    by_shop: Mutex<HashMap<(Uuid, &'static str), Cached>>,
    by_id: Mutex<HashMap<Uuid, Cached>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Providers {
    pub fn new(store: Store, key: Secrets, openpix: OpenPixClient, ttl: Duration) -> Providers {
        Providers {
            store,
            key,
            openpix,
            ttl,
            by_shop: Mutex::default(),
            by_id: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The account `shop_id` is charged under at `provider`.
    pub async fn for_shop(&self, shop_id: Uuid, provider: &'static str) -> Result<Using, AccountError> {
        let now = Instant::now();
        if let Some((at, account)) = lock(&self.by_shop).get(&(shop_id, provider))
            && now.duration_since(*at) < self.ttl
        {
            return Ok(account.clone().map_or(Using::Platform, Using::Shop));
        }
        let account = accounts::for_shop(&self.store, &self.key, shop_id, provider)
            .await?
            .map(Arc::new);
        lock(&self.by_shop).insert((shop_id, provider), (now, account.clone()));
        Ok(account.map_or(Using::Platform, Using::Shop))
    }

    /// The account recorded with a charge (`platform` or an account id).
    pub async fn named(&self, name: &str) -> Result<Using, AccountError> {
        if name == PLATFORM {
            return Ok(Using::Platform);
        }
        let id = Uuid::parse_str(name)
            .map_err(|_| AccountError::Unusable(format!("the charge names an unknown account {name:?}")))?;
        let now = Instant::now();
        if let Some((at, Some(account))) = lock(&self.by_id).get(&id)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(Using::Shop(account.clone()));
        }
        let account = accounts::by_id(&self.store, &self.key, id)
            .await?
            .map(Arc::new)
            .ok_or_else(|| AccountError::Unusable(format!("the charge's account {id} no longer exists")))?;
        lock(&self.by_id).insert(id, (now, Some(account.clone())));
        Ok(Using::Shop(account))
    }

    /// The PixelPay credentials of `using`: the shop's own account, or the
    /// platform's (`platform`, from the settings) when the shop has none.
    pub fn pixelpay(&self, using: &Using, platform: Option<&PixelPayAccount>) -> Result<PixelPayAccount, AccountError> {
        match using {
            Using::Platform => platform.cloned().ok_or_else(|| {
                AccountError::Unusable(
                    "the shop has no PixelPay account (payhubctl shop set-provider <shop> pixelpay) and the platform has none"
                        .into(),
                )
            }),
            Using::Shop(account) => match &account.credentials {
                Credentials::Pixelpay {
                    key_id,
                    secret_key,
                    endpoint,
                } => {
                    let mut currencies = Vec::new();
                    for code in account.currencies.iter().flatten() {
                        currencies.push(payhub_core::Currency::parse(code).ok_or_else(|| {
                            AccountError::Unusable(format!("account {} declares an unknown currency {code:?}", account.id))
                        })?);
                    }
                    Ok(PixelPayAccount::new(endpoint.clone(), key_id.clone(), secret_key.clone())
                        .with_currencies(currencies))
                }
                other => Err(AccountError::Unusable(format!(
                    "account {} holds {} credentials, not PixelPay",
                    account.id,
                    other.provider()
                ))),
            },
        }
    }

    /// The shop's Pago Seguro Account ID and API key. There is no platform
    /// account: a Pago Seguro order is paid to the shop's own account.
    pub fn pagoseguro(&self, using: &Using) -> Result<(String, secrecy::SecretString), AccountError> {
        match using {
            Using::Platform => Err(AccountError::Unusable(
                "the shop has no Pago Seguro account (payhubctl shop set-provider <shop> pagoseguro --account-id ... --api-key ...)"
                    .into(),
            )),
            Using::Shop(account) => match &account.credentials {
                Credentials::Pagoseguro { account_id, api_key } => Ok((account_id.clone(), api_key.clone())),
                other => Err(AccountError::Unusable(format!(
                    "account {} holds {} credentials, not Pago Seguro",
                    account.id,
                    other.provider()
                ))),
            },
        }
    }

    /// The OpenPix client acting for `using`.
    pub fn openpix(&self, using: &Using) -> Result<OpenPixClient, AccountError> {
        match using {
            Using::Platform => Ok(self.openpix.clone()),
            Using::Shop(account) => match &account.credentials {
                Credentials::Openpix { app_id } => Ok(self.openpix.with_app_id(app_id.clone())),
                other => Err(AccountError::Unusable(format!(
                    "account {} holds {} credentials, not OpenPix",
                    account.id,
                    other.provider()
                ))),
            },
        }
    }
}
