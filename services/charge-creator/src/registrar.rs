//! Registers the webhooks payhub needs at every shop's OpenPix account
//! (issue 10 §1, seed 000 §2.1: "criar um webhook dentro da plataforma da
//! OpenPix"), so that setting a shop's AppID is the whole onboarding step.
//!
//! Every `PAYHUB_WEBHOOK_CHECK_INTERVAL_MS` (and once at start) it lists
//! each shop OpenPix account's webhooks, creates the missing ones for
//! [`WEBHOOK_EVENTS`] at `PAYHUB_PUBLIC_WEBHOOK_BASE_URL` + `/webhooks/openpix`,
//! lists again to check they are there, and records each event's state in
//! `provider_webhooks` (shown by `payhubctl shop providers`):
//!
//! - `registered`: OpenPix lists an active webhook for the event and URL;
//! - `missing`: OpenPix accepted the creation but does not list it;
//! - `inactive`: it is there but switched off (payhub does not create a
//!   second one; a person switches it on in OpenPix's dashboard);
//! - `error`: the account could not be opened, listed or written to, with
//!   OpenPix's answer in `detail`; tried again on the next check;
//! - `skipped`: `PAYHUB_PUBLIC_WEBHOOK_BASE_URL` is unset, so payhub has no
//!   URL to give OpenPix.
//!
//! Only one replica checks at a time (a PostgreSQL advisory lock), so two
//! never create the same webhook twice. The platform's own account
//! (`PAYHUB_OPENPIX_APP_ID`) has no row to record a state in; its webhooks
//! are still set up by hand.

use crate::accounts::{AccountError, Providers};
use payhub_connectors::openpix::{NewWebhook, OpenPixClient, OpenPixWebhook, WEBHOOK_EVENTS};
use payhub_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An arbitrary, fixed key for the registrar's advisory lock (not the sweeper's).
const LOCK_KEY: i64 = 0x7061_7968_7562_5752;

/// Longest `detail` kept.
const DETAIL_MAX: usize = 500;

pub struct Registrar {
    pub store: Store,
    pub providers: Arc<Providers>,
    /// `PAYHUB_PUBLIC_WEBHOOK_BASE_URL`.
    pub base_url: Option<String>,
    pub interval: Duration,
}

/// What a check found for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    state: &'static str,
    provider_id: Option<String>,
    detail: Option<String>,
}

impl Found {
    fn new(state: &'static str, detail: Option<String>) -> Found {
        Found {
            state,
            provider_id: None,
            detail,
        }
    }
}

/// The state of `event` given what OpenPix lists.
fn state_in(listed: &[OpenPixWebhook], event: &str, url: &str) -> Option<Found> {
    let mine = listed.iter().filter(|w| w.event == event && w.url == url);
    let mut inactive = None;
    for w in mine {
        if w.is_active {
            return Some(Found {
                state: "registered",
                provider_id: w.id.clone(),
                detail: None,
            });
        }
        inactive = Some(Found {
            state: "inactive",
            provider_id: w.id.clone(),
            detail: Some(
                "the webhook exists at OpenPix but is switched off; switch it on in OpenPix's dashboard".into(),
            ),
        });
    }
    inactive
}

impl Registrar {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.check_once().await {
                tracing::warn!(error = %e, "checking the OpenPix webhooks failed; trying again next time");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One check of every shop OpenPix account, if no other replica is checking.
    pub async fn check_once(&self) -> Result<(), sqlx::Error> {
        let mut lock = self.store.pool.acquire().await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *lock)
            .await?;
        if !got {
            return Ok(());
        }
        let result = self.check_accounts().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        result
    }

    async fn check_accounts(&self) -> Result<(), sqlx::Error> {
        let accounts: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM provider_accounts WHERE provider = 'openpix' ORDER BY id")
                .fetch_all(&self.store.pool)
                .await?;
        for (id,) in accounts {
            let found = self.check_account(id).await;
            for (event, f) in WEBHOOK_EVENTS.iter().zip(found) {
                self.record(id, event, &f).await?;
            }
        }
        Ok(())
    }

    /// What each of [`WEBHOOK_EVENTS`] is at one account, after creating
    /// the missing ones.
    async fn check_account(&self, id: Uuid) -> Vec<Found> {
        let all = |state, detail: String| vec![Found::new(state, Some(detail)); WEBHOOK_EVENTS.len()];
        let Some(url) = self.url() else {
            return all(
                "skipped",
                "PAYHUB_PUBLIC_WEBHOOK_BASE_URL is not set: payhub has no URL to give OpenPix".into(),
            );
        };
        let client = match self.client(id).await {
            Ok(c) => c,
            Err(e) => return all("error", format!("the account cannot be used: {e}")),
        };
        let listed = match client.list_webhooks().await {
            Ok(l) => l,
            Err(e) => return all("error", format!("listing the webhooks failed: {e}")),
        };
        let mut found = Vec::with_capacity(WEBHOOK_EVENTS.len());
        let mut created = false;
        for event in WEBHOOK_EVENTS {
            if let Some(f) = state_in(&listed, event, &url) {
                found.push(f);
                continue;
            }
            let req = NewWebhook {
                name: format!("payhub {event}"),
                event: event.to_string(),
                url: url.clone(),
                authorization: None,
            };
            match client.register_webhook(&req).await {
                Ok(w) => {
                    tracing::info!(account = %id, event, webhook = w.id.as_deref(), "OpenPix webhook registered");
                    created = true;
                    found.push(Found {
                        state: "registered",
                        provider_id: w.id,
                        detail: None,
                    });
                }
                Err(e) => {
                    tracing::warn!(account = %id, event, error = %e, "registering an OpenPix webhook failed");
                    found.push(Found::new(
                        "error",
                        Some(format!("registering the webhook failed: {e}")),
                    ));
                }
            }
        }
        if created {
            // Created is not yet there: OpenPix's own list says.
            match client.list_webhooks().await {
                Ok(again) => {
                    for (event, f) in WEBHOOK_EVENTS.iter().zip(found.iter_mut()) {
                        if f.state != "registered" {
                            continue;
                        }
                        *f = state_in(&again, event, &url).unwrap_or_else(|| {
                            Found::new(
                                "missing",
                                Some("OpenPix accepted the webhook but does not list it".into()),
                            )
                        });
                    }
                }
                Err(e) => tracing::warn!(account = %id, error = %e, "listing the webhooks again failed"),
            }
        }
        found
    }

    fn url(&self) -> Option<String> {
        self.base_url
            .as_deref()
            .map(payhub_service::callbacks::openpix_webhook_url)
    }

    async fn client(&self, id: Uuid) -> Result<OpenPixClient, AccountError> {
        let using = self.providers.named(&id.to_string()).await?;
        self.providers.openpix(&using)
    }

    async fn record(&self, account: Uuid, event: &str, f: &Found) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO provider_webhooks (account_id, event, url, state, provider_id, detail, checked_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (account_id, event) DO UPDATE
                SET url = EXCLUDED.url, state = EXCLUDED.state,
                    provider_id = COALESCE(EXCLUDED.provider_id, provider_webhooks.provider_id),
                    detail = EXCLUDED.detail, checked_at = now()",
        )
        .bind(account)
        .bind(event)
        .bind(self.url().unwrap_or_default())
        .bind(f.state)
        .bind(&f.provider_id)
        .bind(
            f.detail
                .as_ref()
                .map(|d| d.chars().take(DETAIL_MAX).collect::<String>()),
        )
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(event: &str, url: &str, active: bool) -> OpenPixWebhook {
        OpenPixWebhook {
            id: Some(format!("{event}-{active}")),
            name: None,
            event: event.into(),
            url: url.into(),
            is_active: active,
        }
    }

    #[test]
    fn a_webhook_counts_for_its_event_and_url_only() {
        let url = "https://h.example/webhooks/openpix";
        let listed = [
            hook("OPENPIX:CHARGE_COMPLETED", url, true),
            hook("OPENPIX:CHARGE_EXPIRED", "https://elsewhere.example/hook", true),
            hook("PIX_TRANSACTION_REFUND_SENT_CONFIRMED", url, false),
        ];
        assert_eq!(
            state_in(&listed, "OPENPIX:CHARGE_COMPLETED", url).map(|f| f.state),
            Some("registered")
        );
        assert_eq!(state_in(&listed, "OPENPIX:CHARGE_EXPIRED", url), None);
        assert_eq!(
            state_in(&listed, "PIX_TRANSACTION_REFUND_SENT_CONFIRMED", url).map(|f| f.state),
            Some("inactive")
        );
        // An active copy beside an inactive one counts.
        let both = [
            hook("OPENPIX:CHARGE_EXPIRED", url, false),
            hook("OPENPIX:CHARGE_EXPIRED", url, true),
        ];
        assert_eq!(
            state_in(&both, "OPENPIX:CHARGE_EXPIRED", url).map(|f| f.state),
            Some("registered")
        );
    }
}
