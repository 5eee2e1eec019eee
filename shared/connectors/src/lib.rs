//! Payment-provider connectors: one module per provider behind one trait.
//!
//! Each module declares what it supports ([`capabilities`]): a push
//! payment (PIX), a synchronous card payment, or a redirect checkout, with
//! its operations and currencies.
//!
//! A connector creates the charge, verifies a webhook and parses it into a
//! normalised event. Provider wire types live only in each module's
//! `transformers.rs`. Webhook verification has no default: a provider with
//! no way to prove a webhook genuine cannot be wired in by accident.

pub mod capabilities;
pub mod focusnfe;
pub mod internal;
pub mod metrics;
pub mod openpix;
pub mod pagoseguro;
pub mod pixelpay;
pub mod psync;
pub mod rsa;

use payhub_core::Money;
use payhub_core::events::{ChargeCustomer, ChargeView, PaymentReport};
use std::future::Future;

/// What payhub asks a provider to charge.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Unique across payhub: the order's id. The provider's idempotency key.
    pub provider_reference: String,
    pub amount: Money,
    pub description: String,
    pub expires_in_secs: u32,
    pub customer: ChargeCustomer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCharge {
    pub provider_charge_id: String,
    pub amount: Money,
    pub view: ChargeView,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Network trouble, timeout, 5xx, 429: worth another attempt.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request; retrying will not change that.
    #[error("provider refused: {0}")]
    Permanent(String),
}

impl ConnectorError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

/// Creates charges at one provider.
pub trait ChargeConnector: Send + Sync + 'static {
    fn create_charge(&self, req: &ChargeRequest) -> impl Future<Output = Result<CreatedCharge, ConnectorError>> + Send;
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    #[error("the signature header is missing")]
    MissingSignature,
    #[error("the signature header is malformed")]
    MalformedSignature,
    #[error("the signature does not match any trusted key")]
    BadSignature,
}

/// A verified webhook, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// The provider's registration test call: answer 200, change nothing.
    TestCall,
    /// A payment fact about one charge.
    Payment {
        event_type: String,
        provider_reference: String,
        report: PaymentReport,
    },
    /// A genuine event payhub does not act on.
    Ignored { event_type: String, why: String },
}

/// Verifies and parses one provider's webhooks.
pub trait WebhookVerifier: Send + Sync + 'static {
    /// Checks the signature over the raw body, before any parsing.
    fn verify(&self, signature_header: Option<&str>, body: &[u8]) -> Result<(), WebhookRejection>;
    /// Parses a verified body; `Err` means genuine but unreadable.
    fn parse(&self, body: &[u8]) -> Result<WebhookEvent, String>;
}
