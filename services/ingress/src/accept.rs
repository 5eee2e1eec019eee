//! Accepting a validated order, whichever door it came through: the order,
//! its first history entry and `order.accepted` commit together; the same
//! (shop, correlationID) again returns the first order, never a second.

use crate::stock::StockClient;
use payhub_core::events::{ChargeCustomer, EventPayload, OrderAccepted, OrderChannel, OrderRejected};
use payhub_core::{Currency, Envelope, NewOrder, OrderStatus, ValidationErrors};
use payhub_store::outbox::Outbox;
use payhub_store::shops::Shop;
use payhub_store::{Store, StoreError};
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::sync::LazyLock;
use uuid::Uuid;

/// Orders received, whichever door: `door` is the order's channel (a fixed
/// word per door), `outcome` one of a fixed set. No shop label.
static ORDERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_orders_received_total",
        "Orders received, by door (api, amqp, wake, ...) and outcome (accepted, replayed, invalid, conflict, provider_not_allowed, unsupported, rules, stock_unavailable, provider_down, error).",
        &["door", "outcome"]
    )
    .expect("metric registers once")
});

/// Counts one order received at `door` with `outcome`.
pub fn count(door: OrderChannel, outcome: &'static str) {
    ORDERS.with_label_values(&[door.as_str(), outcome]).inc();
}

/// Counts an order refused at `door` before it reached [`accept`]:
/// unreadable or invalid fields.
pub fn count_invalid(door: OrderChannel) {
    count(door, "invalid");
}

#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// A new order, just stored; its `order.accepted` is committed to the
    /// outbox and must be handed to [`publish`] once the caller's answer is
    /// ready (the relay publishes it anyway if the caller dies first).
    Created(Uuid, Box<Envelope>),
    /// The same order again: the first one stands.
    Replayed(Uuid),
}

impl Accepted {
    pub fn id(&self) -> Uuid {
        match self {
            Accepted::Created(id, _) | Accepted::Replayed(id) => *id,
        }
    }
}

/// Publishes a just-accepted order's event now (best effort: the outbox
/// relay publishes it if the broker is away).
pub async fn publish(outbox: &Outbox, accepted: &Accepted) {
    if let Accepted::Created(_, event) = accepted
        && let Err(e) = outbox.publish_now(std::slice::from_ref(event.as_ref())).await
    {
        tracing::warn!(error = %e, "publish after commit failed; the outbox relay will publish it");
    }
}

/// Publishes a just-accepted order's event without holding up the caller:
/// an HTTP answer need not wait for the broker's confirm, since the event
/// is committed in the outbox and the relay publishes it if this fails.
pub fn publish_in_background(outbox: &Outbox, accepted: &Accepted) {
    if let Accepted::Created(..) = accepted {
        let (outbox, accepted) = (outbox.clone(), accepted.clone());
        tokio::spawn(async move { publish(&outbox, &accepted).await });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("correlationID {0} already names a different order of this shop")]
    Conflict(String),
    #[error("provider {0} is not enabled for this shop")]
    ProviderNotAllowed(String),
    /// The provider cannot do what the order asks (a currency it does not
    /// settle for this shop): field errors, nothing stored.
    #[error("the provider cannot take this order: {0}")]
    Unsupported(ValidationErrors),
    /// The order breaks one of the shop's own rules (coverage, stock).
    #[error("the order breaks the shop's rules: {0}")]
    Rules(ValidationErrors),
    /// The shop's stock service could not say; worth trying again. The
    /// reason is one of `stock::reason`'s fixed words, never the URL or
    /// the error.
    #[error("the shop's stock service did not answer ({0})")]
    StockUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AcceptError {
    fn from(e: sqlx::Error) -> Self {
        AcceptError::Store(e.into())
    }
}

/// Whether the provider settles the order's currency for this shop
/// (payhub_connectors::capabilities): its documented currencies, or those
/// the shop's account declares. The account is read only for a currency
/// outside the documented ones, so an ordinary order costs no query.
async fn check_currency(store: &Store, shop: &Shop, order: &NewOrder) -> Result<(), AcceptError> {
    let caps = payhub_connectors::capabilities::of(order.provider);
    if caps.settles(order.currency, None) {
        return Ok(());
    }
    let declared: Option<Vec<Currency>> = if caps.account_currencies {
        payhub_store::accounts::declared_currencies(store, shop.id, order.provider.as_str())
            .await?
            .map(|codes| codes.iter().filter_map(|c| Currency::parse(c)).collect())
    } else {
        None
    };
    caps.require_currency(order.currency, declared.as_deref(), "currency")
        .map_err(AcceptError::Unsupported)
}

fn fingerprint(order: &NewOrder) -> Vec<u8> {
    let canonical = serde_json::to_vec(order).expect("a validated order serialises");
    ring::digest::digest(&ring::digest::SHA256, &canonical)
        .as_ref()
        .to_vec()
}

/// Stores `order` for `shop` with its `order.accepted` in the outbox.
/// Returns once the order is durable.
pub async fn accept(
    store: &Store,
    stock: &StockClient,
    shop: &Shop,
    order: &NewOrder,
    channel: OrderChannel,
) -> Result<Accepted, AcceptError> {
    accept_with(store, stock, shop, order, channel, None).await
}

/// [`accept`], recording the order number the shop's platform gave it
/// (Wake's `pedido`).
pub async fn accept_with(
    store: &Store,
    stock: &StockClient,
    shop: &Shop,
    order: &NewOrder,
    channel: OrderChannel,
    external_order_number: Option<&str>,
) -> Result<Accepted, AcceptError> {
    let result = accept_counted(store, stock, shop, order, channel, external_order_number).await;
    count(
        channel,
        match &result {
            Ok(Accepted::Created(..)) => "accepted",
            Ok(Accepted::Replayed(_)) => "replayed",
            Err(AcceptError::Conflict(_)) => "conflict",
            Err(AcceptError::ProviderNotAllowed(_)) => "provider_not_allowed",
            Err(AcceptError::Unsupported(_)) => "unsupported",
            Err(AcceptError::Rules(_)) => "rules",
            Err(AcceptError::StockUnavailable(_)) => "stock_unavailable",
            Err(AcceptError::Store(_)) => "error",
        },
    );
    result
}

async fn accept_counted(
    store: &Store,
    stock: &StockClient,
    shop: &Shop,
    order: &NewOrder,
    channel: OrderChannel,
    external_order_number: Option<&str>,
) -> Result<Accepted, AcceptError> {
    if !shop.allows_provider(order.provider.as_str()) {
        return Err(AcceptError::ProviderNotAllowed(order.provider.as_str().to_string()));
    }
    check_currency(store, shop, order).await?;
    // A Pago Seguro buyer reaches Pago Seguro's page only from payhub's
    // hosted checkout, which the order API and the AMQP door open (each
    // refuses a Pago Seguro order without a checkout block); Wake's
    // checkout is Wake's own.
    if order.provider == payhub_core::Provider::Pagoseguro && channel == OrderChannel::Wake {
        let mut errors = ValidationErrors::default();
        errors.push(
            "provider",
            "unsupported",
            "a Pago Seguro order is paid on payhub's hosted checkout: send it to POST /v1/orders or over AMQP with a checkout block",
        );
        return Err(AcceptError::Unsupported(errors));
    }
    let rules = &shop.order_rules;
    let mut broken = rules.check(order);
    if broken.is_empty()
        && let Some((url, timeout_ms)) = rules.stock_callback()
    {
        broken = stock.ask(shop.id, url, timeout_ms, order).await?;
    }
    if !broken.is_empty() {
        return Err(AcceptError::Rules(broken));
    }
    let fee = rules.fee_for(order.provider.as_str(), order.total);
    let hash = fingerprint(order);
    let order_id = Uuid::now_v7();
    let mut event = Envelope::for_order(
        EventPayload::OrderAccepted(OrderAccepted {
            provider: order.provider,
            provider_reference: order_id.to_string(),
            amount: order.total,
            customer: ChargeCustomer {
                name: order.customer.name.clone(),
                email: order.customer.email.as_str().to_string(),
                tax_id: order.customer.tax_id.digits().to_string(),
                phone: order.customer.phone.clone(),
            },
            expires_in_secs: order.expires_in_secs,
            description: order.summary(),
            method: order.provider.method(),
        }),
        order_id,
        shop.id,
        order.correlation_id.as_str(),
    );
    event.trace = payhub_telemetry::trace::current_context();
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "-- The order, its first history line and its event in one statement: one
         -- round trip and one commit, all or nothing (a replay inserts none of them).
         WITH created AS (
         INSERT INTO orders (id, shop_id, correlation_id, provider, channel, currency, items_minor, tax_minor, freight_minor,
             discount_minor, total_minor, status, customer_name, customer_email, customer_tax_id, customer_phone,
             customer_birth_date, shipping_address, items, summary, expires_in_secs, request_hash, external_order_number,
             provider_fee_minor, extra, callback_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
                 $25,
                 -- The unguessable key of the order's PixelPay callback URL (244 random bits); PIX orders have none.
                 CASE WHEN $4 = 'pixelpay'
                      THEN replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '') END)
         ON CONFLICT (shop_id, correlation_id) DO NOTHING
         RETURNING id, status
         ), history AS (
             INSERT INTO order_history (order_id, from_status, to_status, actor, details)
             SELECT id, NULL, status, 'ingress', $26 FROM created
         ), event AS (
             INSERT INTO outbox (id, routing_key, body) SELECT $27, $28, $29 FROM created
         )
         SELECT id FROM created",
    )
    .bind(order_id)
    .bind(shop.id)
    .bind(order.correlation_id.as_str())
    .bind(order.provider.as_str())
    .bind(channel.as_str())
    .bind(order.currency.code())
    .bind(order.items.iter().map(|i| i.total.minor()).sum::<i64>())
    .bind(order.tax.minor())
    .bind(order.freight.minor())
    .bind(order.discount.minor())
    .bind(order.total.minor())
    .bind(OrderStatus::Accepted.as_str())
    .bind(&order.customer.name)
    .bind(order.customer.email.as_str())
    .bind(order.customer.tax_id.digits())
    .bind(order.customer.phone.as_deref())
    .bind(order.customer.birth_date)
    .bind(order.shipping_address.as_ref().map(|a| serde_json::to_value(a).expect("serialises")))
    .bind(serde_json::to_value(&order.items).expect("serialises"))
    .bind(order.summary())
    .bind(order.expires_in_secs as i32)
    .bind(&hash)
    .bind(external_order_number)
    .bind(fee.minor())
    .bind(serde_json::to_value(&order.extra).expect("serialises"))
    .bind(serde_json::json!({"channel": channel.as_str()}))
    .bind(event.id)
    .bind(event.kind())
    .bind(event.to_json())
    .fetch_optional(&store.pool)
    .await?;

    if inserted.is_none() {
        let (existing_id, existing_hash): (Uuid, Vec<u8>) =
            sqlx::query_as("SELECT id, request_hash FROM orders WHERE shop_id = $1 AND correlation_id = $2")
                .bind(shop.id)
                .bind(order.correlation_id.as_str())
                .fetch_one(&store.pool)
                .await?;
        if existing_hash != hash {
            return Err(AcceptError::Conflict(order.correlation_id.to_string()));
        }
        return Ok(Accepted::Replayed(existing_id));
    }

    tracing::info!(order_id = %order_id, channel = channel.as_str(), total = %order.total, customer = %order.customer.email.masked(), "order accepted");
    Ok(Accepted::Created(order_id, Box::new(event)))
}

/// Tells the shop (through notifier) that an order message was refused.
/// Nothing else is stored: the event lives in the outbox until published.
///
/// `event_id` is derived from the message (see
/// `amqp::rejection_id`), so a redelivered or retried message that is
/// refused again yields the same event: the outbox keeps one row, and the
/// notifier, which records every event id it handled, sends one webhook
/// under one `webhook-id`.
#[allow(clippy::too_many_arguments)]
pub async fn reject(
    store: &Store,
    outbox: &Outbox,
    event_id: Uuid,
    shop_id: Uuid,
    channel: OrderChannel,
    correlation_id: Option<String>,
    reason: &str,
    errors: &ValidationErrors,
) -> Result<(), StoreError> {
    count_invalid(channel);
    let mut event = Envelope::new(EventPayload::OrderRejected(OrderRejected {
        channel,
        correlation_id: correlation_id.clone(),
        reason: reason.to_string(),
        errors: errors.to_rejected(),
    }));
    event.id = event_id;
    event.shop_id = Some(shop_id);
    event.correlation_id = correlation_id;
    event.trace = payhub_telemetry::trace::current_context();
    let mut tx = store.begin().await?;
    // The same refusal again (a redelivery) is already in the outbox.
    sqlx::query("INSERT INTO outbox (id, routing_key, body) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
        .bind(event.id)
        .bind(event.kind())
        .bind(event.to_json())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let _ = outbox.publish_now(std::slice::from_ref(&event)).await;
    Ok(())
}
