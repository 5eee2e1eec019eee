//! The AMQP door: shops publish order messages (the same JSON as
//! `POST /v1/orders`, contract in docs/contracts/) to the shop-orders
//! exchange. The shop is the RabbitMQ user that published: RabbitMQ refuses
//! a message whose `user-id` property is not the connection's user, so a
//! shop cannot publish in another's name. An invalid message is refused
//! with field-level reasons delivered to the shop's webhook
//! (`order.rejected`) and parked in the dead-letter queue; nothing of it is
//! stored.
//!
//! When payhub republishes a shop's message (the retry queue, dead letters,
//! an operator's replay) the copy carries payhub's own user-id and the
//! shop's user in a header (`payhub_queue::headers::SHOP_USER`), believed
//! only under payhub's own user: see `ShopMessage::publisher`.

use crate::accept::{self, AcceptError, Accepted};
use payhub_core::events::OrderChannel;
use payhub_core::{NewOrder, ValidationErrors};
use payhub_queue::{Failure, Handler, Incoming, ShopMessage};
use payhub_service::store_failure;
use payhub_store::Store;
use payhub_store::outbox::Outbox;
use payhub_store::shops::{self, Shop};
use serde_json::Value;
use uuid::Uuid;

pub struct ShopOrderHandler {
    pub store: Store,
    pub outbox: Outbox,
    pub stock: crate::stock::StockClient,
    /// payhub's own broker user (from `PAYHUB_AMQP_URL`).
    pub own_user: Option<String>,
    /// Attempts a message gets (`PAYHUB_MAX_ATTEMPTS`): the last one that
    /// fails refuses the order instead of retrying.
    pub max_attempts: u32,
    /// Largest order message read (`PAYHUB_MAX_BODY_BYTES`, as over HTTP).
    pub max_body_bytes: usize,
}

/// Namespace of the ids of `order.rejected` events made from messages.
const REJECTION_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_0c2e_9a4d_4f7e_8c3b_5d2a_1e90_7f64);

/// The id of the `order.rejected` event for refusing `msg` of `shop` for
/// `reason`: the same on every redelivery and retry of one message (its
/// message id and body do not change), different for another message.
pub fn rejection_id(shop: Uuid, msg: &ShopMessage, reason: &str) -> Uuid {
    let body_hash = ring::digest::digest(&ring::digest::SHA256, &msg.body);
    let mut name = Vec::with_capacity(128);
    name.extend_from_slice(shop.as_bytes());
    name.extend_from_slice(msg.message_id.as_deref().unwrap_or("").as_bytes());
    name.push(0);
    name.extend_from_slice(body_hash.as_ref());
    name.extend_from_slice(reason.as_bytes());
    Uuid::new_v5(&REJECTION_NAMESPACE, &name)
}

impl ShopOrderHandler {
    async fn shop_for(&self, user: &str) -> Result<Option<Shop>, Failure> {
        shops::by_amqp_user(&self.store, user).await.map_err(store_failure)
    }

    /// Tells the shop and parks the message.
    async fn refuse(
        &self,
        msg: &ShopMessage,
        shop: &Shop,
        correlation_id: Option<String>,
        reason: &str,
        errors: &ValidationErrors,
    ) -> Failure {
        if let Err(e) = accept::reject(
            &self.store,
            &self.outbox,
            rejection_id(shop.id, msg, reason),
            shop.id,
            OrderChannel::Amqp,
            correlation_id,
            reason,
            errors,
        )
        .await
        {
            return store_failure(e);
        }
        tracing::warn!(shop_id = %shop.id, reason, "order message refused");
        Failure::Permanent(format!("{reason}: {errors}"))
    }
}

impl ShopOrderHandler {
    /// A shop's fulfilment message: checked like over HTTP; a bad or
    /// illegal one is refused with the reason (`order.rejected`) and parked.
    async fn fulfilment(
        &self,
        m: &ShopMessage,
        shop: &Shop,
        correlation_id: Option<String>,
        json: &Value,
    ) -> Result<(), Failure> {
        let update = payhub_core::fulfilment::FulfilmentUpdate::from_message(json);
        let (update, cid) = match (update, correlation_id.clone()) {
            (Ok(u), Some(cid)) => (u, cid),
            (u, cid) => {
                let mut errs = u.err().unwrap_or_default();
                if cid.is_none() {
                    errs.push(
                        "correlationID",
                        "required",
                        "is required: the order the message is about",
                    );
                }
                return Err(self
                    .refuse(m, shop, correlation_id, "the fulfilment message is invalid", &errs)
                    .await);
            }
        };
        // The same message, redelivered or retried, is the same report.
        let event_id = rejection_id(shop.id, m, "fulfilment.reported");
        let outcome = crate::fulfilment::submit(
            &self.store,
            &self.outbox,
            shop.id,
            &cid,
            update,
            OrderChannel::Amqp,
            event_id,
        )
        .await
        .map_err(store_failure)?;
        let (field, code, reason, message) = match outcome {
            crate::fulfilment::Outcome::Reported { .. } | crate::fulfilment::Outcome::AlreadyThere { .. } => {
                return Ok(());
            }
            crate::fulfilment::Outcome::NoOrder => (
                "correlationID",
                "not_found",
                "the fulfilment message names no order",
                format!("no order {cid} for this shop"),
            ),
            crate::fulfilment::Outcome::Illegal { reason, .. } => (
                "status",
                "illegal_transition",
                "the fulfilment report cannot apply",
                reason,
            ),
        };
        let mut errs = ValidationErrors::default();
        errs.push(field, code, message);
        Err(self.refuse(m, shop, correlation_id, reason, &errs).await)
    }
}

impl Handler for ShopOrderHandler {
    type Message = ShopMessage;

    async fn handle(&self, msg: &Incoming<ShopMessage>) -> Result<(), Failure> {
        let m = &msg.envelope;
        let Some(user) = m.publisher(self.own_user.as_deref()) else {
            return Err(Failure::Permanent(
                "the message has no user-id property: publish with user_id set to your RabbitMQ user".into(),
            ));
        };
        if self.own_user.as_deref() == Some(user) {
            return Err(Failure::Permanent(
                "the message was published as payhub's own RabbitMQ user, which no shop is".into(),
            ));
        }
        let Some(shop) = self.shop_for(user).await? else {
            return Err(Failure::Permanent(format!(
                "no active shop publishes as RabbitMQ user {user:?}"
            )));
        };
        // Refused unread: its size is all that is looked at.
        if m.body.len() > self.max_body_bytes {
            let mut errs = ValidationErrors::default();
            errs.push(
                "",
                "too_large",
                format!(
                    "the message is {} bytes, over the body limit of {} bytes",
                    m.body.len(),
                    self.max_body_bytes
                ),
            );
            return Err(self
                .refuse(m, &shop, None, "the message is over the body limit", &errs)
                .await);
        }
        let json: Value = match serde_json::from_slice(&m.body) {
            Ok(v) => v,
            Err(e) => {
                let mut errs = ValidationErrors::default();
                errs.push("", "json", format!("the message is not JSON: {e}"));
                return Err(self.refuse(m, &shop, None, "the message cannot be read", &errs).await);
            }
        };
        let correlation_id = json.get("correlationID").and_then(Value::as_str).map(str::to_string);
        if let Some(claimed) = json.get("shopId")
            && claimed.as_str() != Some(shop.id.to_string().as_str())
        {
            let mut errs = ValidationErrors::default();
            errs.push(
                "shopId",
                "forbidden",
                format!("this message was published by RabbitMQ user {user:?}, which belongs to another shop"),
            );
            return Err(self
                .refuse(m, &shop, correlation_id, "the message claims another shop", &errs)
                .await);
        }
        if json.get("card").is_some_and(|c| !c.is_null()) {
            // A shop put a card on a queue. payhub refuses it and, unlike
            // every other refusal, does not park the message: a dead letter
            // would keep the card. The shop hears why.
            let mut errs = ValidationErrors::default();
            errs.push(
                "card",
                "forbidden",
                "card data is never taken over AMQP (it would rest in queues); send card orders to POST /v1/orders",
            );
            return match self
                .refuse(m, &shop, correlation_id, "the message carries card data", &errs)
                .await
            {
                Failure::Permanent(_) => {
                    tracing::warn!(shop_id = %shop.id, "an order message carried card data; refused and dropped, not parked");
                    Ok(())
                }
                // The shop could not be told yet (database away): try again.
                other => Err(other),
            };
        }
        // A fulfilment message (`order.shipped`, ...) reports on an order
        // already paid; any other message is an order.
        if json
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("order."))
        {
            return self.fulfilment(m, &shop, correlation_id, &json).await;
        }
        // The hosted checkout (issue 11 §1): its URL reaches the shop in the
        // order's first webhook (`awaiting_payment`, `data.checkout.url`).
        let (order, checkout) = match (NewOrder::from_json(&json), crate::checkout::parse(&json)) {
            (Ok(o), Ok(c)) => (Ok(o), c),
            (o, c) => {
                let mut errs = o.err().unwrap_or_default();
                errs.0.extend(c.err().unwrap_or_default().0);
                (Err(errs), None)
            }
        };
        let order = match order {
            Ok(o) if o.provider == payhub_core::Provider::Pagoseguro && checkout.is_none() => {
                let mut errs = ValidationErrors::default();
                errs.push(
                    "checkout",
                    "required",
                    "a Pago Seguro order is paid on Pago Seguro's page, reached from payhub's checkout: \
                     send checkout {returnUrl, cancelUrl}",
                );
                return Err(self
                    .refuse(m, &shop, correlation_id, "the order is invalid", &errs)
                    .await);
            }
            Ok(o) if o.provider.method() == payhub_core::PaymentMethod::Card => {
                let mut errs = ValidationErrors::default();
                errs.push(
                    "provider",
                    "unsupported",
                    "card payments are taken only by POST /v1/orders, with the card",
                );
                return Err(self
                    .refuse(m, &shop, correlation_id, "the order is invalid", &errs)
                    .await);
            }
            Ok(o) => o,
            Err(errs) => {
                return Err(self
                    .refuse(m, &shop, correlation_id, "the order is invalid", &errs)
                    .await);
            }
        };
        match accept::accept(&self.store, &self.stock, &shop, &order, OrderChannel::Amqp).await {
            Ok(accepted) => {
                if let Accepted::Replayed(id) = accepted {
                    tracing::info!(order_id = %id, "the same order message again; the first order stands");
                }
                // Opened before the order's event is published, so that its
                // first webhook finds it (a redelivery after a failure here
                // opens it on the replay).
                if let Some(checkout) = &checkout {
                    crate::checkout::open(&self.store, accepted.id(), checkout)
                        .await
                        .map_err(store_failure)?;
                }
                accept::publish(&self.outbox, &accepted).await;
                Ok(())
            }
            Err(AcceptError::Store(e)) => Err(store_failure(e)),
            Err(AcceptError::StockUnavailable(why)) if msg.attempt < self.max_attempts => {
                Err(Failure::Transient(format!("stock service: {why}")))
            }
            Err(AcceptError::StockUnavailable(why)) => {
                // The last attempt: the shop hears of it rather than the
                // message dying silently in the dead-letter queue.
                tracing::warn!(
                    attempt = msg.attempt,
                    why,
                    "the stock service never answered; refusing the order"
                );
                let mut errs = ValidationErrors::default();
                errs.push(
                    "items",
                    "stock_unavailable",
                    format!(
                        "the shop's stock service could not confirm the items after {} attempts",
                        msg.attempt
                    ),
                );
                Err(self
                    .refuse(
                        m,
                        &shop,
                        correlation_id,
                        "the shop's stock service did not answer",
                        &errs,
                    )
                    .await)
            }
            Err(AcceptError::Rules(errs)) => Err(self
                .refuse(m, &shop, correlation_id, "the order breaks the shop's rules", &errs)
                .await),
            Err(AcceptError::Unsupported(errs)) => Err(self
                .refuse(m, &shop, correlation_id, "the provider cannot take this order", &errs)
                .await),
            Err(e) => {
                let mut errs = ValidationErrors::default();
                errs.push("correlationID", "conflict", e.to_string());
                Err(self
                    .refuse(
                        m,
                        &shop,
                        correlation_id,
                        "the order conflicts with an earlier one",
                        &errs,
                    )
                    .await)
            }
        }
    }
}
