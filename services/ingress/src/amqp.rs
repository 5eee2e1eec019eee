//! The AMQP door: shops publish order messages (the same JSON as
//! `POST /v1/orders`, contract in docs/contracts/) to the shop-orders
//! exchange. The shop is the RabbitMQ user that published: RabbitMQ refuses
//! a message whose `user-id` property is not the connection's user, so a
//! shop cannot publish in another's name. An invalid message is refused
//! with field-level reasons delivered to the shop's webhook
//! (`order.rejected`) and parked in the dead-letter queue; nothing of it is
//! stored.

use crate::accept::{self, AcceptError, Accepted};
use payhub_core::events::OrderChannel;
use payhub_core::{NewOrder, ValidationErrors};
use payhub_queue::{Failure, Handler, Incoming, ShopMessage};
use payhub_service::store_failure;
use payhub_store::Store;
use payhub_store::outbox::Outbox;
use payhub_store::shops::{self, Shop};
use serde_json::Value;

pub struct ShopOrderHandler {
    pub store: Store,
    pub outbox: Outbox,
}

impl ShopOrderHandler {
    async fn shop_for(&self, user: &str) -> Result<Option<Shop>, Failure> {
        shops::by_amqp_user(&self.store, user).await.map_err(store_failure)
    }

    /// Tells the shop and parks the message.
    async fn refuse(
        &self,
        shop: &Shop,
        correlation_id: Option<String>,
        reason: &str,
        errors: &ValidationErrors,
    ) -> Failure {
        if let Err(e) = accept::reject(
            &self.store,
            &self.outbox,
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

impl Handler for ShopOrderHandler {
    type Message = ShopMessage;

    async fn handle(&self, msg: &Incoming<ShopMessage>) -> Result<(), Failure> {
        let m = &msg.envelope;
        let Some(user) = m.user_id.as_deref().filter(|u| !u.is_empty()) else {
            return Err(Failure::Permanent(
                "the message has no user-id property: publish with user_id set to your RabbitMQ user".into(),
            ));
        };
        let Some(shop) = self.shop_for(user).await? else {
            return Err(Failure::Permanent(format!(
                "no active shop publishes as RabbitMQ user {user:?}"
            )));
        };
        let json: Value = match serde_json::from_slice(&m.body) {
            Ok(v) => v,
            Err(e) => {
                let mut errs = ValidationErrors::default();
                errs.push("", "json", format!("the message is not JSON: {e}"));
                return Err(self.refuse(&shop, None, "the message cannot be read", &errs).await);
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
                .refuse(&shop, correlation_id, "the message claims another shop", &errs)
                .await);
        }
        let order = match NewOrder::from_json(&json) {
            Ok(o) => o,
            Err(errs) => return Err(self.refuse(&shop, correlation_id, "the order is invalid", &errs).await),
        };
        match accept::accept(&self.store, &shop, &order, OrderChannel::Amqp).await {
            Ok(accepted) => {
                if let Accepted::Replayed(id) = accepted {
                    tracing::info!(order_id = %id, "the same order message again; the first order stands");
                }
                accept::publish(&self.outbox, &accepted).await;
                Ok(())
            }
            Err(AcceptError::Store(e)) => Err(store_failure(e)),
            Err(AcceptError::StockUnavailable(why)) => Err(Failure::Transient(format!("stock service: {why}"))),
            Err(AcceptError::Rules(errs)) => Err(self
                .refuse(&shop, correlation_id, "the order breaks the shop's rules", &errs)
                .await),
            Err(e) => {
                let mut errs = ValidationErrors::default();
                errs.push("correlationID", "conflict", e.to_string());
                Err(self
                    .refuse(&shop, correlation_id, "the order conflicts with an earlier one", &errs)
                    .await)
            }
        }
    }
}
