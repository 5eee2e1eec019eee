//! The order state machine, as a pure function of the order's facts and
//! one event, so that every rule is unit-tested without a database.

use payhub_core::events::{EventPayload, PaymentReport};
use payhub_core::{Currency, Money, OrderStatus, Provider};
use serde_json::{Value, json};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub status: OrderStatus,
    pub total: Money,
    pub provider: Provider,
}

impl OrderFacts {
    pub fn from_row(status: &str, currency: &str, total_minor: i64, provider: &str) -> Result<OrderFacts, String> {
        Ok(OrderFacts {
            status: OrderStatus::parse(status).ok_or_else(|| format!("unknown order status {status:?}"))?,
            total: Money::from_minor(
                total_minor,
                Currency::parse(currency.trim()).ok_or_else(|| format!("unknown currency {currency:?}"))?,
            ),
            provider: Provider::parse(provider).map_err(|e| format!("provider {provider:?} {e}"))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidFacts {
    pub end_to_end_id: Option<String>,
    pub paid_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Move {
        to: OrderStatus,
        reason: Option<String>,
        details: Value,
        paid: Option<PaidFacts>,
    },
    Ignore(&'static str),
}

fn move_to(to: OrderStatus, reason: Option<String>, details: Value) -> Decision {
    Decision::Move {
        to,
        reason,
        details,
        paid: None,
    }
}

/// What `event` does to an order in state `facts`.
pub fn decide(facts: &OrderFacts, event: &EventPayload) -> Decision {
    use OrderStatus::*;
    match event {
        EventPayload::ChargeCreated(c) => match facts.status {
            Accepted => move_to(AwaitingPayment, None, json!({"providerChargeId": c.provider_charge_id})),
            _ => Decision::Ignore("the charge was already recorded"),
        },
        EventPayload::ChargeFailed(f) => match facts.status {
            Accepted => move_to(
                Failed,
                Some(format!("the charge could not be created: {}", f.reason)),
                json!({"permanent": f.permanent}),
            ),
            _ => Decision::Ignore("the order is past charge creation"),
        },
        EventPayload::PaymentReported(p) => match &p.report {
            PaymentReport::Completed {
                charge_value,
                paid_value,
                end_to_end_id,
                transaction_id,
                paid_at,
            } => {
                let details = json!({
                    "webhookEventId": p.webhook_event_id,
                    "chargeValueMinor": charge_value.minor(),
                    "paidValueMinor": paid_value.map(|m| m.minor()),
                    "endToEndId": end_to_end_id,
                    "transactionId": transaction_id,
                });
                match facts.status {
                    Paid => Decision::Ignore("already paid; a repeated payment notice changes nothing"),
                    UnderReview => Decision::Ignore("already flagged for review"),
                    Failed => move_to(
                        UnderReview,
                        Some("a payment arrived for an order whose charge had failed".into()),
                        details,
                    ),
                    Accepted | AwaitingPayment | Expired => {
                        let paid_amount = paid_value.unwrap_or(*charge_value);
                        if charge_value.currency() != facts.total.currency()
                            || *charge_value != facts.total
                            || paid_amount != facts.total
                        {
                            move_to(
                                UnderReview,
                                Some(format!(
                                    "amount mismatch: order total {}, charge {}, paid {}",
                                    facts.total, charge_value, paid_amount
                                )),
                                details,
                            )
                        } else {
                            // A payment after an expiry notice (webhooks can arrive
                            // out of order) is still money received: paid.
                            Decision::Move {
                                to: Paid,
                                reason: None,
                                details,
                                paid: Some(PaidFacts {
                                    end_to_end_id: end_to_end_id.clone(),
                                    paid_at: *paid_at,
                                }),
                            }
                        }
                    }
                }
            }
            PaymentReport::Expired => match facts.status {
                Accepted | AwaitingPayment => move_to(
                    Expired,
                    Some("the charge expired unpaid".into()),
                    json!({"webhookEventId": p.webhook_event_id}),
                ),
                _ => Decision::Ignore("an expiry notice for an order that is no longer waiting"),
            },
        },
        EventPayload::OrderAccepted(_) | EventPayload::OrderStatusChanged(_) | EventPayload::OrderRejected(_) => {
            Decision::Ignore("not an order-updater event")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::events::{ChargeFailed, PaymentReported};
    use uuid::Uuid;

    fn facts(status: OrderStatus) -> OrderFacts {
        OrderFacts {
            status,
            total: Money::from_minor(1000, Currency::Brl),
            provider: Provider::Openpix,
        }
    }

    fn paid(charge: i64, paid: Option<i64>) -> EventPayload {
        EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Openpix,
            webhook_event_id: Uuid::nil(),
            provider_reference: "r".into(),
            report: PaymentReport::Completed {
                charge_value: Money::from_minor(charge, Currency::Brl),
                paid_value: paid.map(|p| Money::from_minor(p, Currency::Brl)),
                end_to_end_id: Some("E1".into()),
                transaction_id: None,
                paid_at: None,
            },
        })
    }

    fn expired() -> EventPayload {
        EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Openpix,
            webhook_event_id: Uuid::nil(),
            provider_reference: "r".into(),
            report: PaymentReport::Expired,
        })
    }

    fn to(d: &Decision) -> Option<OrderStatus> {
        match d {
            Decision::Move { to, .. } => Some(*to),
            Decision::Ignore(_) => None,
        }
    }

    #[test]
    fn exact_payment_pays_once() {
        assert_eq!(
            to(&decide(&facts(OrderStatus::AwaitingPayment), &paid(1000, Some(1000)))),
            Some(OrderStatus::Paid)
        );
        assert_eq!(to(&decide(&facts(OrderStatus::Paid), &paid(1000, Some(1000)))), None);
    }

    #[test]
    fn mismatched_amounts_are_flagged_not_paid() {
        for (c, p) in [(999, Some(999)), (1000, Some(1)), (1000, Some(2000))] {
            let d = decide(&facts(OrderStatus::AwaitingPayment), &paid(c, p));
            assert_eq!(to(&d), Some(OrderStatus::UnderReview), "{c}/{p:?}");
        }
    }

    #[test]
    fn expiry_rules() {
        assert_eq!(
            to(&decide(&facts(OrderStatus::AwaitingPayment), &expired())),
            Some(OrderStatus::Expired)
        );
        assert_eq!(to(&decide(&facts(OrderStatus::Paid), &expired())), None);
        // Out of order: the payment notice after the expiry still pays.
        assert_eq!(
            to(&decide(&facts(OrderStatus::Expired), &paid(1000, None))),
            Some(OrderStatus::Paid)
        );
    }

    #[test]
    fn failed_charge_blocks_the_order() {
        let f = EventPayload::ChargeFailed(ChargeFailed {
            provider: Provider::Openpix,
            reason: "down".into(),
            permanent: false,
        });
        assert_eq!(
            to(&decide(&facts(OrderStatus::Accepted), &f)),
            Some(OrderStatus::Failed)
        );
        assert_eq!(to(&decide(&facts(OrderStatus::Paid), &f)), None);
        assert_eq!(
            to(&decide(&facts(OrderStatus::Failed), &paid(1000, None))),
            Some(OrderStatus::UnderReview)
        );
    }
}
