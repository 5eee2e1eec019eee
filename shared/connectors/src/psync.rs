//! Payment sync ("PSync"): before an order counts as paid (or expired),
//! payhub asks the provider, under the account the charge was created with,
//! about the charge payhub itself created, and believes the provider's
//! answer rather than the webhook's body.
//!
//! A valid webhook signature proves only who sent the message. OpenPix signs
//! every merchant's webhooks with one key, so anyone with an OpenPix account
//! can obtain a genuinely signed `CHARGE_COMPLETED` for a charge of their
//! own that carries a payhub order's `correlationID`. [`confirm`] closes that
//! door: the charge must be the one stored at creation, known to payhub's
//! account, for the stored amount, in the state claimed; a payment must be a
//! transaction of payhub's account that belongs to that charge.

use crate::ConnectorError;
use payhub_core::Money;
use payhub_core::events::PaymentReport;
use std::future::Future;
use time::OffsetDateTime;

/// A charge's state as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Active,
    Completed,
    Expired,
    Other(String),
}

impl ChargeStatus {
    pub fn parse(s: &str) -> ChargeStatus {
        match s {
            "ACTIVE" => ChargeStatus::Active,
            "COMPLETED" => ChargeStatus::Completed,
            "EXPIRED" => ChargeStatus::Expired,
            other => ChargeStatus::Other(other.chars().take(40).collect()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ChargeStatus::Active => "ACTIVE",
            ChargeStatus::Completed => "COMPLETED",
            ChargeStatus::Expired => "EXPIRED",
            ChargeStatus::Other(s) => s,
        }
    }
}

/// The provider's record of one charge (`GET /api/v1/charge/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCharge {
    pub charge_id: String,
    pub correlation_id: Option<String>,
    pub status: ChargeStatus,
    pub value: Money,
    pub paid_at: Option<OffsetDateTime>,
}

/// The provider's record of one incoming payment (`GET /api/v1/transaction/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTransaction {
    pub end_to_end_id: String,
    pub value: Money,
    /// The charge it paid, by the provider's charge id and our reference.
    pub charge_id: Option<String>,
    pub correlation_id: Option<String>,
    pub time: Option<OffsetDateTime>,
}

/// Asks one provider account about charges and payments.
pub trait PaymentQuery: Send + Sync + 'static {
    /// `Ok(None)`: the account has no such charge.
    fn query_charge(
        &self,
        charge_id: &str,
    ) -> impl Future<Output = Result<Option<ProviderCharge>, ConnectorError>> + Send;
    /// `Ok(None)`: the account received no such payment.
    fn query_transaction(
        &self,
        end_to_end_id: &str,
    ) -> impl Future<Output = Result<Option<ProviderTransaction>, ConnectorError>> + Send;
}

/// What payhub stored when it created the charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCharge {
    /// The order's id, sent to the provider as the correlationID.
    pub provider_reference: String,
    pub provider_charge_id: String,
    pub amount: Money,
}

/// What a webhook claims happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Paid {
        /// The PIX endToEndId the webhook names, if any.
        end_to_end_id: Option<String>,
    },
    Expired,
    /// No claim: what does the provider say now? (the sweeper's question)
    Status,
}

/// Why a claim was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// The provider contradicts the claim, or the charge is not payhub's.
    #[error("{0}")]
    Rejected(String),
    /// The provider could not be asked; ask again later.
    #[error("{0}")]
    Unavailable(String),
}

/// The provider's answer, when it confirms something. `report` carries the
/// provider's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    Report(PaymentReport),
    /// Only for [`Claim::Status`]: the charge is still waiting.
    StillActive,
}

fn unavailable(e: ConnectorError) -> ConfirmError {
    match e {
        ConnectorError::Transient(m) => ConfirmError::Unavailable(m),
        ConnectorError::Permanent(m) => ConfirmError::Unavailable(format!("the provider refused the re-query: {m}")),
    }
}

/// Confirms `claim` about `stored` with the provider behind `query`.
pub async fn confirm<Q: PaymentQuery>(
    query: &Q,
    stored: &StoredCharge,
    claim: &Claim,
) -> Result<Confirmed, ConfirmError> {
    let charge = query
        .query_charge(&stored.provider_charge_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ConfirmError::Rejected(format!(
                "the provider's account has no charge {}",
                stored.provider_charge_id
            ))
        })?;
    if charge.charge_id != stored.provider_charge_id {
        return Err(ConfirmError::Rejected(format!(
            "the provider answered for charge {} instead of {}",
            charge.charge_id, stored.provider_charge_id
        )));
    }
    if let Some(c) = &charge.correlation_id
        && c != &stored.provider_reference
    {
        return Err(ConfirmError::Rejected(format!(
            "the provider's charge belongs to reference {c}, not {}",
            stored.provider_reference
        )));
    }
    if charge.value != stored.amount {
        return Err(ConfirmError::Rejected(format!(
            "the provider's charge is for {}, payhub created it for {}",
            charge.value, stored.amount
        )));
    }
    let want_paid = match claim {
        Claim::Paid { .. } => true,
        Claim::Expired => false,
        Claim::Status => match charge.status {
            ChargeStatus::Completed => true,
            ChargeStatus::Expired => false,
            ChargeStatus::Active => return Ok(Confirmed::StillActive),
            ChargeStatus::Other(ref s) => {
                return Err(ConfirmError::Rejected(format!("the provider says the charge is {s}")));
            }
        },
    };
    if !want_paid {
        return if charge.status == ChargeStatus::Expired {
            Ok(Confirmed::Report(PaymentReport::Expired))
        } else {
            Err(ConfirmError::Rejected(format!(
                "the webhook says expired, the provider says the charge is {}",
                charge.status.as_str()
            )))
        };
    }
    let named = match claim {
        Claim::Paid { end_to_end_id } => end_to_end_id.clone(),
        _ => None,
    };
    // A second payment can arrive for a charge that is already complete, so
    // the named transaction is checked even when the charge says COMPLETED.
    if let Some(e2e) = named {
        let tx = query
            .query_transaction(&e2e)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ConfirmError::Rejected(format!("the provider's account received no payment {e2e}")))?;
        let ours = tx.charge_id.as_deref() == Some(stored.provider_charge_id.as_str())
            || (tx.charge_id.is_none() && tx.correlation_id.as_deref() == Some(stored.provider_reference.as_str()));
        if tx.end_to_end_id != e2e || !ours {
            return Err(ConfirmError::Rejected(format!(
                "payment {e2e} did not pay payhub's charge {}",
                stored.provider_charge_id
            )));
        }
        if tx.value.currency() != stored.amount.currency() {
            return Err(ConfirmError::Rejected(format!(
                "payment {e2e} is in {}, the charge in {}",
                tx.value.currency().code(),
                stored.amount.currency().code()
            )));
        }
        if charge.status != ChargeStatus::Completed {
            return Err(ConfirmError::Rejected(format!(
                "the provider says the charge is {}",
                charge.status.as_str()
            )));
        }
        return Ok(Confirmed::Report(PaymentReport::Completed {
            charge_value: charge.value,
            paid_value: Some(tx.value),
            end_to_end_id: Some(tx.end_to_end_id),
            transaction_id: Some(charge.charge_id),
            paid_at: tx.time.or(charge.paid_at),
        }));
    }
    if charge.status != ChargeStatus::Completed {
        return Err(ConfirmError::Rejected(format!(
            "the webhook says paid, the provider says the charge is {}",
            charge.status.as_str()
        )));
    }
    // A completed dynamic charge is paid in full for its value.
    Ok(Confirmed::Report(PaymentReport::Completed {
        charge_value: charge.value,
        paid_value: Some(charge.value),
        end_to_end_id: None,
        transaction_id: Some(charge.charge_id),
        paid_at: charge.paid_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::Currency;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        charges: HashMap<String, ProviderCharge>,
        txs: HashMap<String, ProviderTransaction>,
        down: bool,
    }

    impl PaymentQuery for Fake {
        async fn query_charge(&self, id: &str) -> Result<Option<ProviderCharge>, ConnectorError> {
            if self.down {
                return Err(ConnectorError::Transient("down".into()));
            }
            Ok(self.charges.get(id).cloned())
        }
        async fn query_transaction(&self, id: &str) -> Result<Option<ProviderTransaction>, ConnectorError> {
            Ok(self.txs.get(id).cloned())
        }
    }

    fn brl(v: i64) -> Money {
        Money::from_minor(v, Currency::Brl)
    }

    fn stored() -> StoredCharge {
        StoredCharge {
            provider_reference: "order-1".into(),
            provider_charge_id: "ch-1".into(),
            amount: brl(1000),
        }
    }

    fn fake(status: ChargeStatus) -> Fake {
        let mut f = Fake::default();
        f.charges.insert(
            "ch-1".into(),
            ProviderCharge {
                charge_id: "ch-1".into(),
                correlation_id: Some("order-1".into()),
                status,
                value: brl(1000),
                paid_at: None,
            },
        );
        f.txs.insert(
            "E1".into(),
            ProviderTransaction {
                end_to_end_id: "E1".into(),
                value: brl(1000),
                charge_id: Some("ch-1".into()),
                correlation_id: Some("order-1".into()),
                time: None,
            },
        );
        f.txs.insert(
            "E-other".into(),
            ProviderTransaction {
                end_to_end_id: "E-other".into(),
                value: brl(1000),
                charge_id: Some("ch-attacker".into()),
                correlation_id: Some("order-1".into()),
                time: None,
            },
        );
        f
    }

    fn paid(e2e: Option<&str>) -> Claim {
        Claim::Paid {
            end_to_end_id: e2e.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn a_completed_charge_with_its_payment_confirms_with_the_providers_values() {
        let f = fake(ChargeStatus::Completed);
        match confirm(&f, &stored(), &paid(Some("E1"))).await.unwrap() {
            Confirmed::Report(PaymentReport::Completed {
                paid_value,
                end_to_end_id,
                ..
            }) => {
                assert_eq!(paid_value, Some(brl(1000)));
                assert_eq!(end_to_end_id.as_deref(), Some("E1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn claims_the_provider_contradicts_are_rejected() {
        let active = fake(ChargeStatus::Active);
        assert!(matches!(
            confirm(&active, &stored(), &paid(Some("E1"))).await,
            Err(ConfirmError::Rejected(_))
        ));
        assert!(matches!(
            confirm(&active, &stored(), &paid(None)).await,
            Err(ConfirmError::Rejected(_))
        ));
        assert!(matches!(
            confirm(&active, &stored(), &Claim::Expired).await,
            Err(ConfirmError::Rejected(_))
        ));
        let done = fake(ChargeStatus::Completed);
        // A payment to someone else's charge, and one the account never got.
        assert!(matches!(
            confirm(&done, &stored(), &paid(Some("E-other"))).await,
            Err(ConfirmError::Rejected(_))
        ));
        assert!(matches!(
            confirm(&done, &stored(), &paid(Some("E-unknown"))).await,
            Err(ConfirmError::Rejected(_))
        ));
        // A charge the account does not know, or for another amount.
        let mut other = stored();
        other.provider_charge_id = "ch-attacker".into();
        assert!(matches!(
            confirm(&done, &other, &paid(None)).await,
            Err(ConfirmError::Rejected(_))
        ));
        let mut dearer = stored();
        dearer.amount = brl(999);
        assert!(matches!(
            confirm(&done, &dearer, &paid(None)).await,
            Err(ConfirmError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn expiry_and_status_questions() {
        let expired = fake(ChargeStatus::Expired);
        assert_eq!(
            confirm(&expired, &stored(), &Claim::Expired).await,
            Ok(Confirmed::Report(PaymentReport::Expired))
        );
        assert_eq!(
            confirm(&expired, &stored(), &Claim::Status).await,
            Ok(Confirmed::Report(PaymentReport::Expired))
        );
        assert_eq!(
            confirm(&fake(ChargeStatus::Active), &stored(), &Claim::Status).await,
            Ok(Confirmed::StillActive)
        );
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_unavailable_not_rejected() {
        let mut f = fake(ChargeStatus::Completed);
        f.down = true;
        assert!(matches!(
            confirm(&f, &stored(), &paid(Some("E1"))).await,
            Err(ConfirmError::Unavailable(_))
        ));
    }
}
