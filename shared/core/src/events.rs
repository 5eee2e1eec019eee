//! The messages the services exchange: one versioned envelope around one
//! serde-tagged payload enum. The routing key of an event is its type name.

use crate::money::Money;
use crate::order::{OrderStatus, Provider};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub const SCHEMA_VERSION: u16 = 1;

/// W3C trace context, carried so that one order is one trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Every event on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUID v7: unique, and sortable by time. Consumers deduplicate on it.
    pub id: Uuid,
    pub schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The payhub order this event concerns, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop_id: Option<Uuid>,
    /// The shop's correlationID of the order, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub trace: TraceContext,
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl Envelope {
    pub fn new(payload: EventPayload) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            schema_version: SCHEMA_VERSION,
            occurred_at: OffsetDateTime::now_utc(),
            order_id: None,
            shop_id: None,
            correlation_id: None,
            trace: TraceContext::default(),
            payload,
        }
    }

    pub fn for_order(payload: EventPayload, order_id: Uuid, shop_id: Uuid, correlation_id: &str) -> Envelope {
        Envelope {
            order_id: Some(order_id),
            shop_id: Some(shop_id),
            correlation_id: Some(correlation_id.to_string()),
            ..Envelope::new(payload)
        }
    }

    /// The event's type name: its routing key and its metric label.
    pub fn kind(&self) -> &'static str {
        self.payload.kind()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventPayload {
    #[serde(rename = "order.accepted")]
    OrderAccepted(OrderAccepted),
    #[serde(rename = "charge.created")]
    ChargeCreated(ChargeCreated),
    #[serde(rename = "charge.failed")]
    ChargeFailed(ChargeFailed),
    #[serde(rename = "payment.reported")]
    PaymentReported(PaymentReported),
    #[serde(rename = "payment.authorized")]
    PaymentAuthorized(PaymentAuthorized),
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged(OrderStatusChanged),
    #[serde(rename = "order.rejected")]
    OrderRejected(OrderRejected),
    #[serde(rename = "alert.raised")]
    AlertRaised(AlertRaised),
    #[serde(rename = "refund.completed")]
    RefundCompleted(RefundCompleted),
    #[serde(rename = "refund.failed")]
    RefundFailed(RefundFailed),
    #[serde(rename = "fulfilment.reported")]
    FulfilmentReported(FulfilmentReported),
    #[serde(rename = "survey.answered")]
    SurveyAnswered(SurveyAnswered),
    /// Issue 12 §3: an order's invoice was issued or failed (charge-creator).
    #[serde(rename = "invoice.updated")]
    InvoiceUpdated(InvoiceUpdated),
    /// Issue 12 §4: a paid order of a shop that reports no shipping is due
    /// its survey invitation (reporter's sweeper).
    #[serde(rename = "survey.due")]
    SurveyDue(SurveyDue),
    #[serde(rename = "report.ready")]
    ReportReady(ReportReady),
    /// Issue 11 §2: charge-creator stored a verified Pago Seguro return
    /// (which never pays an order); notifier sends payhub's own
    /// confirmation e-mail to the buyer and the shop's admin.
    #[serde(rename = "pagoseguro.returned")]
    PagoseguroReturned(PagoseguroReturned),
    /// Issue 12 §3 / 14: an order's invoice must be asked of the shop's
    /// invoicing service (order-updater, in the transaction that moves the
    /// order, only for a shop that invoices through payhub).
    #[serde(rename = "invoice.requested")]
    InvoiceRequested(InvoiceRequested),
}

impl EventPayload {
    pub const KINDS: [&'static str; 17] = [
        "order.accepted",
        "charge.created",
        "charge.failed",
        "payment.reported",
        "payment.authorized",
        "order.status_changed",
        "order.rejected",
        "alert.raised",
        "refund.completed",
        "refund.failed",
        "fulfilment.reported",
        "survey.answered",
        "invoice.updated",
        "survey.due",
        "report.ready",
        "pagoseguro.returned",
        "invoice.requested",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            EventPayload::OrderAccepted(_) => "order.accepted",
            EventPayload::ChargeCreated(_) => "charge.created",
            EventPayload::ChargeFailed(_) => "charge.failed",
            EventPayload::PaymentReported(_) => "payment.reported",
            EventPayload::PaymentAuthorized(_) => "payment.authorized",
            EventPayload::OrderStatusChanged(_) => "order.status_changed",
            EventPayload::OrderRejected(_) => "order.rejected",
            EventPayload::AlertRaised(_) => "alert.raised",
            EventPayload::RefundCompleted(_) => "refund.completed",
            EventPayload::RefundFailed(_) => "refund.failed",
            EventPayload::FulfilmentReported(_) => "fulfilment.reported",
            EventPayload::SurveyAnswered(_) => "survey.answered",
            EventPayload::InvoiceUpdated(_) => "invoice.updated",
            EventPayload::SurveyDue(_) => "survey.due",
            EventPayload::ReportReady(_) => "report.ready",
            EventPayload::PagoseguroReturned(_) => "pagoseguro.returned",
            EventPayload::InvoiceRequested(_) => "invoice.requested",
        }
    }
}

/// A card authorisation the provider approved under payhub's credentials
/// (its answer carried the order's `payment_hash` and exactly the amount):
/// the money is held, not taken, until a capture pays the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub provider: Provider,
    /// The provider's id of the authorisation (PixelPay's `payment_uuid`),
    /// which the capture takes.
    pub provider_charge_id: String,
    pub amount: Money,
    /// The account it was made under ([`PaymentConfirmation::account`]).
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// What the provider needs to know about the payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeCustomer {
    pub name: String,
    pub email: String,
    /// CPF or CNPJ digits.
    pub tax_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// ingress stored an order; a charge must be created for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub provider: Provider,
    /// The id payhub gives the provider for this charge (the order's UUID):
    /// unique across shops, so a webhook finds exactly one order.
    pub provider_reference: String,
    pub amount: Money,
    pub customer: ChargeCustomer,
    pub expires_in_secs: u32,
    pub description: String,
    /// A card order is charged by the door that received the card (over
    /// charge-creator's internal card call), never from this event: the
    /// event carries no card.
    #[serde(default)]
    pub method: crate::order::PaymentMethod,
}

/// The view of a charge that the shop and the buyer see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeView {
    pub br_code: String,
    pub qr_code_image_url: String,
    pub payment_link_url: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeCreated {
    pub provider: Provider,
    pub provider_reference: String,
    pub provider_charge_id: String,
    pub amount: Money,
    pub charge: ChargeView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFailed {
    pub provider: Provider,
    pub reason: String,
    /// True when retrying cannot help (the provider refused the request).
    pub permanent: bool,
}

/// How a failed card payment's reason begins when the card was declined.
pub const CARD_DECLINED: &str = "the card was declined: ";
/// How a failed card payment's reason begins when its outcome is unknown
/// (the provider's answer was lost): the buyer may have been charged.
pub const CARD_UNCONFIRMED: &str = "the card payment is not confirmed: ";

/// A payment fact about payhub's own charge, normalised.
///
/// Only a report with a [`PaymentConfirmation`] can move an order: it says
/// that payhub asked the provider, under the account the charge was created
/// with, about the charge it created, and that `report` holds the
/// provider's answer (not what a webhook body claimed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReported {
    pub provider: Provider,
    /// The stored webhook this came from, or the sweep that found it.
    pub webhook_event_id: Uuid,
    /// The reference payhub gave the provider (the order's UUID).
    pub provider_reference: String,
    pub report: PaymentReport,
    /// How payhub confirmed the report with the provider; `None` for a
    /// report nobody confirmed, which changes no order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<PaymentConfirmation>,
    /// What brought the fact to payhub.
    #[serde(default)]
    pub source: PaymentSource,
}

/// The provider's own answer about payhub's charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentConfirmation {
    /// The provider's id of the charge payhub created (stored at creation).
    pub provider_charge_id: String,
    /// Which of payhub's provider accounts was asked (a name, never a secret).
    pub account: String,
    #[serde(with = "time::serde::rfc3339")]
    pub confirmed_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentSource {
    /// A provider webhook, verified and confirmed.
    #[default]
    Webhook,
    /// The sweeper re-checked a stale order with the provider.
    Sweeper,
    /// The provider's own answer to payhub's card sale, under payhub's credentials.
    CardSale,
    /// The provider's own answer to payhub's capture of an authorisation.
    CardCapture,
}

/// Who an alert is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAudience {
    /// The platform's operators (`PAYHUB_PLATFORM_ADMIN_EMAIL`).
    Platform,
    /// The shop's admin (the shop's `admin_email`).
    Shop,
}

/// Something a person must look at. notifier e-mails it once per event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub audience: AlertAudience,
    /// A bounded name: `webhook_rejected`, `stale_order`, ...
    pub kind: String,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentReport {
    Completed {
        /// The charge's value as the provider reports it.
        charge_value: Money,
        /// What the payer actually sent, when the provider says.
        #[serde(skip_serializing_if = "Option::is_none")]
        paid_value: Option<Money>,
        #[serde(skip_serializing_if = "Option::is_none")]
        end_to_end_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        transaction_id: Option<String>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        paid_at: Option<OffsetDateTime>,
    },
    Expired,
}

/// The provider gave money of a paid order back to the buyer (charge-creator,
/// after the provider confirmed the refund under the charge's account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundCompleted {
    pub provider: Provider,
    /// payhub's id of the refund (`refunds.id`); also the refund's
    /// correlationID at the provider.
    pub refund_id: Uuid,
    /// The shop's key for this refund.
    pub idempotency_key: String,
    pub amount: Money,
    /// Every confirmed refund of the order, this one included.
    pub refunded_total: Money,
    /// What the buyer paid (the charge).
    pub paid: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_refund_id: Option<String>,
    /// The shop's reason, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The provider refused a refund; nothing was given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFailed {
    pub provider: Provider,
    pub refund_id: Uuid,
    pub idempotency_key: String,
    pub amount: Money,
    /// Why, in the provider's words.
    pub reason: String,
}

/// A shop reported where its paid order stands (ingress, from the order
/// API or an AMQP fulfilment message); order-updater moves the order if
/// the move is legal, and refuses it (`order.rejected`) if not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentReported {
    pub channel: OrderChannel,
    pub update: crate::fulfilment::FulfilmentUpdate,
}

/// A buyer answered the satisfaction survey of an order (ingress's survey
/// page; one answer per order). The shop is told by webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyAnswered {
    /// 0 to 10: would the buyer recommend the shop.
    pub score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The page's language (`pt-BR`, `es`).
    pub language: String,
}

/// An order's invoice reached an end: issued (number, series, access key,
/// DANFE and XML links) or failed (the reason). notifier e-mails the buyer
/// the links, or alerts the shop's admin, once per event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceUpdated {
    pub status: crate::invoice::InvoiceStatus,
    /// The invoicing service (`focusnfe`).
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub customer_name: String,
    pub customer_email: String,
    pub amount: Money,
}

/// What an `invoice.requested` asks of the invoicing service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceAction {
    /// The order was paid: issue its invoice.
    #[default]
    Issue,
    /// The paid order was refunded in full or cancelled: cancel its
    /// issued invoice (NF-e cancellation, within SEFAZ's deadline).
    Cancel,
}

/// An order's invoice must be acted on (charge-creator, which holds the
/// shops' invoicing credentials): published by order-updater with the move
/// that needs it, so that charge-creator receives no other status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRequested {
    pub action: InvoiceAction,
    /// The order's status after the move that asked for it.
    pub order_status: OrderStatus,
    pub customer_name: String,
    pub customer_email: String,
    pub amount: Money,
    /// Why the order moved (the refund's or the shop's reason): the
    /// cancellation's justification is made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A paid order is due its survey invitation N days after payment (a shop
/// that reports no shipping); notifier invites the buyer once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyDue {
    pub customer_name: String,
    pub customer_email: String,
    pub amount: Money,
    /// The days after payment the shop chose.
    pub days_after_payment: u16,
}

/// A management report was stored as an immutable snapshot (issue 13 §3):
/// notifier e-mails it, with its CSV and PDF, to the shop's management
/// list (`shop_id` set) or the platform's (`shop_id` unset), once per event.
/// The bytes stay in `report_snapshots`; the event carries only their id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReady {
    pub report_id: Uuid,
    /// `daily` or `monthly`.
    pub period: String,
    /// The period's first day, `YYYY-MM-DD`.
    pub period_start: String,
}

/// A Pago Seguro return whose `sign` verified under the shop's API key, for
/// the order's reference and amount (issue 11 §2). It changes no order: the
/// sign does not cover `status`, and no status query exists to confirm it
/// with, so `status` is what the return *says*, not a confirmed payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagoseguroReturned {
    /// payhub's id of the stored return (`pagoseguro_returns.id`).
    pub return_id: Uuid,
    /// What the return says: `authorised` (22), `rejected` (17) or `pending`.
    pub status: String,
    /// The return's own `status` code, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    /// The purchase reference payhub gave Pago Seguro (`txnid`).
    pub reference: String,
    /// Pago Seguro's approval number, when the return carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    pub amount: Money,
    pub customer_name: String,
    pub customer_email: String,
    pub summary: String,
}

/// The shipment an order's status change carries (`shipped` and after),
/// and the delivery date promised at payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentNotice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
    /// The shop's local date the order is to be delivered by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promised_delivery_on: Option<time::Date>,
    /// The shop's local date it was delivered on (`delivered` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_on: Option<time::Date>,
    /// The shop's note with the report (why returned, cancelled, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who moved the order (`shop:api:maria`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// A refund as an order's status change tells it (the shop's webhook, the
/// buyer's e-mail, the daily figures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub refund_id: Uuid,
    pub idempotency_key: String,
    /// This refund's amount.
    pub amount: Money,
    /// Every confirmed refund of the order, this one included.
    pub refunded_total: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which door an order came in through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderChannel {
    /// `POST /v1/orders`.
    #[default]
    Api,
    /// An order message on the shop-orders exchange.
    Amqp,
    /// Wake Commerce's "pagamento customizado" connector.
    Wake,
}

impl OrderChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderChannel::Api => "api",
            OrderChannel::Amqp => "amqp",
            OrderChannel::Wake => "wake",
        }
    }

    pub fn parse(s: &str) -> OrderChannel {
        match s {
            "amqp" => OrderChannel::Amqp,
            "wake" => OrderChannel::Wake,
            _ => OrderChannel::Api,
        }
    }
}

/// One field-level reason an order was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedField {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// An order message was refused; the shop is told why (nothing was stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub channel: OrderChannel,
    /// The message's correlationID, when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub reason: String,
    pub errors: Vec<RejectedField>,
}

/// order-updater moved an order; everything notifier and reporter need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusChanged {
    #[serde(default)]
    pub channel: OrderChannel,
    pub provider: Provider,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub customer_name: String,
    pub customer_email: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<ChargeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub order_created_at: OffsetDateTime,
    /// The refund that moved the order (to `partially_refunded` or
    /// `refunded`); absent for every other change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundNotice>,
    /// What the shop's webhook carries beyond the status (issue 10 §5).
    /// Absent in events from before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<OrderDetails>>,
    /// The shipment and the promised delivery date (issue 12), once the
    /// order is paid. Absent in events from before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Box<ShipmentNotice>>,
}

/// The order as a merchant needs it with each status: items, tax, buyer,
/// times, the provider's ids, the masked card, the payment link, and the
/// shop's own `extra` metadata, unchanged. Never a card number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    #[serde(default)]
    pub items: Vec<crate::order::Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_phone: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// The provider's id of payhub's charge (OpenPix charge id, PixelPay `payment_uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_charge_id: Option<String>,
    /// The provider's transaction id (PixelPay `transaction_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The issuer's authorisation code, for cards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<String>,
    /// `4234 •••• •••• 1234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_masked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_link_url: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn round_trips_with_type_tag() {
        let env = Envelope::for_order(
            EventPayload::ChargeFailed(ChargeFailed {
                provider: Provider::Openpix,
                reason: "down".into(),
                permanent: false,
            }),
            Uuid::now_v7(),
            Uuid::now_v7(),
            "c-1",
        );
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["type"], "charge.failed");
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["data"]["reason"], "down");
        assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn payment_report_shape() {
        let p = EventPayload::PaymentReported(PaymentReported {
            provider: Provider::Openpix,
            webhook_event_id: Uuid::nil(),
            provider_reference: "r".into(),
            report: PaymentReport::Completed {
                charge_value: Money::from_minor(100, Currency::Brl),
                paid_value: None,
                end_to_end_id: Some("E1".into()),
                transaction_id: None,
                paid_at: None,
            },
            confirmation: None,
            source: PaymentSource::Webhook,
        });
        let env = Envelope::new(p);
        let back = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back.kind(), "payment.reported");
        assert_eq!(back, env);
    }

    #[test]
    fn an_invoice_request_round_trips_under_its_kind() {
        let env = Envelope::new(EventPayload::InvoiceRequested(InvoiceRequested {
            action: InvoiceAction::Issue,
            order_status: OrderStatus::Paid,
            customer_name: "Maria".into(),
            customer_email: "maria@example.com".into(),
            amount: Money::from_minor(22779, Currency::Brl),
            reason: None,
        }));
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["type"], "invoice.requested");
        assert_eq!(json["data"]["action"], "issue");
        assert!(EventPayload::KINDS.contains(&env.kind()));
        assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn refund_events_round_trip_under_their_kinds() {
        let brl = |m| Money::from_minor(m, Currency::Brl);
        for payload in [
            EventPayload::RefundCompleted(RefundCompleted {
                provider: Provider::Openpix,
                refund_id: Uuid::nil(),
                idempotency_key: "r-1".into(),
                amount: brl(1000),
                refunded_total: brl(1000),
                paid: brl(22779),
                provider_refund_id: Some("D123".into()),
                reason: None,
            }),
            EventPayload::RefundFailed(RefundFailed {
                provider: Provider::Pixelpay,
                refund_id: Uuid::nil(),
                idempotency_key: "r-2".into(),
                amount: brl(1000),
                reason: "no".into(),
            }),
        ] {
            let env = Envelope::new(payload);
            let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
            assert_eq!(json["type"], env.kind());
            assert!(EventPayload::KINDS.contains(&env.kind()));
            assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
        }
    }
}
