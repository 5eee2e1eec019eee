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
    /// The provider's id of the charge payhub created for the order.
    pub charge_id: Option<String>,
    /// The PIX endToEndId that paid the order, once paid.
    pub end_to_end_id: Option<String>,
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
            charge_id: None,
            end_to_end_id: None,
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
    /// A shop's report that cannot apply (an illegal move): the shop is
    /// told why, and nothing changes.
    Refuse(String),
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
            Authorized => move_to(
                Failed,
                Some(format!("the authorisation could not be captured: {}", f.reason)),
                json!({"permanent": f.permanent}),
            ),
            _ => Decision::Ignore("the order is past charge creation"),
        },
        // The amount is held on the buyer's card; a capture pays the order.
        EventPayload::PaymentAuthorized(a) => match facts.status {
            Accepted if a.amount == facts.total => move_to(
                Authorized,
                None,
                json!({"providerChargeId": a.provider_charge_id, "authCode": a.auth_code,
                       "transactionId": a.transaction_id, "account": a.account}),
            ),
            Accepted => move_to(
                UnderReview,
                Some(format!(
                    "amount mismatch: order total {}, authorised {}",
                    facts.total, a.amount
                )),
                json!({"providerChargeId": a.provider_charge_id}),
            ),
            _ => Decision::Ignore("an authorisation for an order that is not waiting for one"),
        },
        // A payment counts only when payhub confirmed it with the provider,
        // about the charge payhub created for this very order.
        EventPayload::PaymentReported(p) if p.confirmation.is_none() => {
            Decision::Ignore("an unconfirmed payment report changes nothing")
        }
        EventPayload::PaymentReported(_) if facts.charge_id.is_none() => {
            Decision::Ignore("payhub created no charge for this order; no report can pay it")
        }
        EventPayload::PaymentReported(p)
            if p.confirmation.as_ref().map(|c| &c.provider_charge_id) != facts.charge_id.as_ref() =>
        {
            Decision::Ignore("the confirmed charge is not the one payhub created for this order")
        }
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
                    // Money received twice must be visible to a person.
                    s if (s.is_after_payment() || matches!(s, PartiallyRefunded | Refunded))
                        && end_to_end_id.is_some()
                        && facts.end_to_end_id.is_some()
                        && *end_to_end_id != facts.end_to_end_id =>
                    {
                        move_to(
                            UnderReview,
                            Some(format!(
                                "a second payment ({}) arrived for an order already paid ({})",
                                end_to_end_id.as_deref().unwrap_or_default(),
                                facts.end_to_end_id.as_deref().unwrap_or_default()
                            )),
                            details,
                        )
                    }
                    Paid | PartiallyRefunded | Refunded | Fulfilling | Shipped | Delivered | Returned | Cancelled => {
                        Decision::Ignore("already paid; a repeated payment notice changes nothing")
                    }
                    UnderReview => Decision::Ignore("already flagged for review"),
                    Failed => move_to(
                        UnderReview,
                        Some("a payment arrived for an order whose charge had failed".into()),
                        details,
                    ),
                    Accepted | AwaitingPayment | Authorized | Expired => {
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
        // Money given back: every confirmed refund is one move (its own
        // history row and notice), even when the status stays the same (a
        // second partial refund). The status only ever advances: a refund
        // confirmed late never takes a refunded order back to partial.
        EventPayload::RefundCompleted(r) => {
            if r.amount.currency() != facts.total.currency() || r.refunded_total.currency() != facts.total.currency() {
                return Decision::Ignore("a refund in another currency than the order's changes nothing");
            }
            let details = json!({
                "refundId": r.refund_id,
                "idempotencyKey": r.idempotency_key,
                "amountMinor": r.amount.minor(),
                "refundedMinor": r.refunded_total.minor(),
                "providerRefundId": r.provider_refund_id,
            });
            let what = format!(
                "refund of {} confirmed ({} of {} refunded)",
                r.amount, r.refunded_total, facts.total
            );
            let reason = match r.reason.as_deref() {
                Some(why) if !why.is_empty() => format!("{what}: {why}"),
                _ => what,
            };
            match facts.status {
                // After payment (shipped, returned, cancelled, ...) money
                // may be given back too; the refund then says where it stands.
                Paid | PartiallyRefunded | Refunded | Fulfilling | Shipped | Delivered | Returned | Cancelled => {
                    let to = if facts.status == Refunded || r.refunded_total.minor() >= facts.total.minor() {
                        Refunded
                    } else {
                        PartiallyRefunded
                    };
                    move_to(to, Some(reason), details)
                }
                // A person is looking at the order already; the refund is on
                // its record for them.
                UnderReview => move_to(UnderReview, Some(reason), details),
                Accepted | AwaitingPayment | Authorized | Expired | Failed => {
                    Decision::Ignore("a refund of an order that was never paid changes nothing")
                }
            }
        }
        EventPayload::RefundFailed(_) => Decision::Ignore("a refused refund gives nothing back"),
        EventPayload::FulfilmentReported(f) => match payhub_core::fulfilment::check_move(facts.status, f.update.to) {
            Ok(()) => move_to(
                f.update.to,
                f.update.note.clone(),
                json!({
                    "channel": f.channel.as_str(),
                    "carrier": f.update.carrier,
                    "trackingCode": f.update.tracking_code,
                    "trackingUrl": f.update.tracking_url,
                    "by": f.update.by,
                }),
            ),
            Err(why) => Decision::Refuse(why),
        },
        EventPayload::OrderAccepted(_)
        | EventPayload::OrderStatusChanged(_)
        | EventPayload::OrderRejected(_)
        | EventPayload::AlertRaised(_)
        | EventPayload::SurveyAnswered(_)
        | EventPayload::InvoiceUpdated(_)
        | EventPayload::InvoiceRequested(_)
        | EventPayload::SurveyDue(_)
        | EventPayload::ReportReady(_)
        | EventPayload::PagoseguroReturned(_) => Decision::Ignore("not an order-updater event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::events::{ChargeFailed, PaymentConfirmation, PaymentReported, RefundCompleted, RefundFailed};
    use uuid::Uuid;

    fn facts(status: OrderStatus) -> OrderFacts {
        OrderFacts {
            status,
            total: Money::from_minor(1000, Currency::Brl),
            provider: Provider::Openpix,
            charge_id: Some("ch-1".into()),
            end_to_end_id: (status == OrderStatus::Paid).then(|| "E1".to_string()),
        }
    }

    fn confirmed() -> Option<PaymentConfirmation> {
        Some(PaymentConfirmation {
            provider_charge_id: "ch-1".into(),
            account: "platform".into(),
            confirmed_at: OffsetDateTime::UNIX_EPOCH,
        })
    }

    fn paid_with(e2e: &str) -> EventPayload {
        let mut p = paid(1000, Some(1000));
        if let EventPayload::PaymentReported(r) = &mut p
            && let PaymentReport::Completed { end_to_end_id, .. } = &mut r.report
        {
            *end_to_end_id = Some(e2e.into());
        }
        p
    }

    #[test]
    fn only_a_confirmed_report_about_the_orders_own_charge_pays() {
        let mut unconfirmed = paid(1000, Some(1000));
        if let EventPayload::PaymentReported(r) = &mut unconfirmed {
            r.confirmation = None;
        }
        assert_eq!(to(&decide(&facts(OrderStatus::AwaitingPayment), &unconfirmed)), None);
        let mut other_charge = paid(1000, Some(1000));
        if let EventPayload::PaymentReported(r) = &mut other_charge {
            r.confirmation.as_mut().unwrap().provider_charge_id = "ch-attacker".into();
        }
        assert_eq!(to(&decide(&facts(OrderStatus::AwaitingPayment), &other_charge)), None);
        let mut no_charge = facts(OrderStatus::Accepted);
        no_charge.charge_id = None;
        assert_eq!(to(&decide(&no_charge, &paid(1000, Some(1000)))), None);
    }

    fn authorised(minor: i64) -> EventPayload {
        EventPayload::PaymentAuthorized(payhub_core::events::PaymentAuthorized {
            provider: Provider::Pixelpay,
            provider_charge_id: "ch-1".into(),
            amount: Money::from_minor(minor, Currency::Brl),
            account: "platform".into(),
            auth_code: Some("123456".into()),
            transaction_id: None,
        })
    }

    #[test]
    fn an_authorisation_holds_the_order_until_its_confirmed_capture_pays_it() {
        use OrderStatus::*;
        assert_eq!(to(&decide(&facts(Accepted), &authorised(1000))), Some(Authorized));
        assert_eq!(to(&decide(&facts(Accepted), &authorised(999))), Some(UnderReview));
        assert_eq!(to(&decide(&facts(Authorized), &authorised(1000))), None, "once");
        assert_eq!(to(&decide(&facts(Paid), &authorised(1000))), None);
        // The capture's confirmed report pays; an unconfirmed one does not.
        assert_eq!(to(&decide(&facts(Authorized), &paid(1000, Some(1000)))), Some(Paid));
        let mut unconfirmed = paid(1000, Some(1000));
        if let EventPayload::PaymentReported(r) = &mut unconfirmed {
            r.confirmation = None;
        }
        assert_eq!(to(&decide(&facts(Authorized), &unconfirmed)), None);
        // A declined capture fails the order; an expiry notice changes nothing.
        let failed = EventPayload::ChargeFailed(ChargeFailed {
            provider: Provider::Pixelpay,
            reason: "declined".into(),
            permanent: true,
        });
        assert_eq!(to(&decide(&facts(Authorized), &failed)), Some(Failed));
        assert_eq!(to(&decide(&facts(Authorized), &expired())), None);
    }

    #[test]
    fn a_second_payment_on_a_paid_order_goes_to_review() {
        assert_eq!(to(&decide(&facts(OrderStatus::Paid), &paid_with("E1"))), None);
        assert_eq!(
            to(&decide(&facts(OrderStatus::Paid), &paid_with("E2"))),
            Some(OrderStatus::UnderReview)
        );
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
            confirmation: confirmed(),
            source: Default::default(),
        })
    }

    fn expired() -> EventPayload {
        EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Openpix,
            webhook_event_id: Uuid::nil(),
            provider_reference: "r".into(),
            report: PaymentReport::Expired,
            confirmation: confirmed(),
            source: Default::default(),
        })
    }

    fn to(d: &Decision) -> Option<OrderStatus> {
        match d {
            Decision::Move { to, .. } => Some(*to),
            Decision::Ignore(_) | Decision::Refuse(_) => None,
        }
    }

    fn report(to: OrderStatus) -> EventPayload {
        EventPayload::FulfilmentReported(payhub_core::events::FulfilmentReported {
            channel: payhub_core::events::OrderChannel::Api,
            update: payhub_core::fulfilment::FulfilmentUpdate {
                to,
                carrier: None,
                tracking_code: None,
                tracking_url: None,
                by: Some("maria".into()),
                note: None,
            },
        })
    }

    #[test]
    fn fulfilment_moves_a_paid_order_and_refuses_illegal_moves_with_the_reason() {
        assert_eq!(
            to(&decide(&facts(OrderStatus::Paid), &report(OrderStatus::Fulfilling))),
            Some(OrderStatus::Fulfilling)
        );
        assert_eq!(
            to(&decide(&facts(OrderStatus::Shipped), &report(OrderStatus::Delivered))),
            Some(OrderStatus::Delivered)
        );
        match decide(&facts(OrderStatus::AwaitingPayment), &report(OrderStatus::Shipped)) {
            Decision::Refuse(why) => assert!(why.contains("not paid"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&facts(OrderStatus::Delivered), &report(OrderStatus::Shipped)),
            Decision::Refuse(_)
        ));
        // A shipped order that is paid again is money received twice.
        let mut shipped = facts(OrderStatus::Shipped);
        shipped.end_to_end_id = Some("E1".into());
        assert_eq!(to(&decide(&shipped, &paid_with("E1"))), None);
        assert_eq!(to(&decide(&shipped, &paid_with("E2"))), Some(OrderStatus::UnderReview));
        // A returned order can be refunded.
        assert_eq!(
            to(&decide(&facts(OrderStatus::Returned), &refunded(1000, 1000))),
            Some(OrderStatus::Refunded)
        );
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

    fn refunded(amount: i64, total: i64) -> EventPayload {
        EventPayload::RefundCompleted(RefundCompleted {
            provider: Provider::Openpix,
            refund_id: Uuid::nil(),
            idempotency_key: "r-1".into(),
            amount: Money::from_minor(amount, Currency::Brl),
            refunded_total: Money::from_minor(total, Currency::Brl),
            paid: Money::from_minor(1000, Currency::Brl),
            provider_refund_id: Some("D1".into()),
            reason: Some("defeito".into()),
        })
    }

    #[test]
    fn a_refund_of_part_then_the_rest_moves_to_partially_refunded_then_refunded() {
        let d = decide(&facts(OrderStatus::Paid), &refunded(300, 300));
        assert_eq!(to(&d), Some(OrderStatus::PartiallyRefunded));
        let Decision::Move { reason, details, .. } = d else {
            panic!("a move");
        };
        assert!(reason.as_deref().unwrap().contains("BRL 3.00"), "{reason:?}");
        assert!(reason.as_deref().unwrap().ends_with(": defeito"), "{reason:?}");
        assert_eq!(details["refundedMinor"], 300);
        // A second partial refund is a move of its own, in the same status.
        assert_eq!(
            to(&decide(&facts(OrderStatus::PartiallyRefunded), &refunded(200, 500))),
            Some(OrderStatus::PartiallyRefunded)
        );
        assert_eq!(
            to(&decide(&facts(OrderStatus::PartiallyRefunded), &refunded(500, 1000))),
            Some(OrderStatus::Refunded)
        );
        // All at once.
        assert_eq!(
            to(&decide(&facts(OrderStatus::Paid), &refunded(1000, 1000))),
            Some(OrderStatus::Refunded)
        );
    }

    #[test]
    fn a_refund_never_takes_an_order_back_and_never_touches_an_unpaid_one() {
        // Confirmed late (after the refund that completed it): recorded, still refunded.
        assert_eq!(
            to(&decide(&facts(OrderStatus::Refunded), &refunded(300, 300))),
            Some(OrderStatus::Refunded)
        );
        for unpaid in [
            OrderStatus::Accepted,
            OrderStatus::AwaitingPayment,
            OrderStatus::Expired,
            OrderStatus::Failed,
        ] {
            assert_eq!(to(&decide(&facts(unpaid), &refunded(1000, 1000))), None, "{unpaid:?}");
        }
        assert_eq!(
            to(&decide(&facts(OrderStatus::UnderReview), &refunded(1000, 1000))),
            Some(OrderStatus::UnderReview)
        );
        let mut usd = refunded(1000, 1000);
        if let EventPayload::RefundCompleted(r) = &mut usd {
            r.amount = Money::from_minor(1000, Currency::Usd);
        }
        assert_eq!(to(&decide(&facts(OrderStatus::Paid), &usd)), None);
    }

    #[test]
    fn a_refused_refund_changes_nothing() {
        let failed = EventPayload::RefundFailed(RefundFailed {
            provider: Provider::Openpix,
            refund_id: Uuid::nil(),
            idempotency_key: "r-1".into(),
            amount: Money::from_minor(1000, Currency::Brl),
            reason: "saldo insuficiente".into(),
        });
        for status in OrderStatus::ALL {
            assert_eq!(to(&decide(&facts(status), &failed)), None, "{status:?}");
        }
        // And a payment notice after a refund does not pay the order again.
        assert_eq!(
            to(&decide(&facts(OrderStatus::Refunded), &paid(1000, Some(1000)))),
            None
        );
    }
}
