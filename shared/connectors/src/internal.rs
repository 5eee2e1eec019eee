//! The internal confirmation call: webhook-verifier and reporter's sweeper
//! ask charge-creator (the one service that holds provider credentials) to
//! confirm a payment fact with the provider. `POST /internal/v1/confirm`,
//! authenticated with the shared internal token, on charge-creator's
//! listener (not exposed outside the cluster).

use payhub_core::events::{PaymentConfirmation, PaymentReport};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

pub const CONFIRM_PATH: &str = "/internal/v1/confirm";

/// What the caller wants confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Paid,
    Expired,
    /// "What is the state of this order's charge?" (the sweeper).
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    pub order_id: Uuid,
    pub claim: ClaimKind,
    /// The provider's charge id as the webhook names it; must be payhub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_charge_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The provider confirmed: `report` is its answer.
    Confirmed,
    /// The charge is still waiting for payment (only for `status`).
    Pending,
    /// Not payhub's charge, or the provider contradicts the claim.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmAnswer {
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PaymentReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<PaymentConfirmation>,
}

impl ConfirmAnswer {
    pub fn rejected(reason: impl Into<String>) -> ConfirmAnswer {
        ConfirmAnswer {
            verdict: Verdict::Rejected,
            reason: Some(reason.into()),
            report: None,
            confirmation: None,
        }
    }
}

/// The client side, for webhook-verifier and reporter.
#[derive(Clone)]
pub struct ConfirmClient {
    http: reqwest::Client,
    url: String,
    token: SecretString,
}

impl std::fmt::Debug for ConfirmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ConfirmClient {
    pub fn new(
        charge_creator_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<ConfirmClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(ConfirmClient {
            http,
            url: format!("{}{CONFIRM_PATH}", charge_creator_url.trim_end_matches('/')),
            token,
        })
    }

    /// `Err` when the answer could not be had (charge-creator or the
    /// provider unavailable): ask again later.
    pub async fn confirm(&self, req: &ConfirmRequest) -> Result<ConfirmAnswer, String> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose_secret())
            .json(req)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "charge-creator did not answer in time".to_string()
                } else {
                    "charge-creator could not be reached".to_string()
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "charge-creator answered {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            ));
        }
        resp.json::<ConfirmAnswer>()
            .await
            .map_err(|e| format!("charge-creator's answer is unreadable: {e}"))
    }
}
