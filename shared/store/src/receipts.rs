//! Payment receipts (issue 12 §2): read from the stored order, rendered by
//! `payhub-documents`, kept in `receipts` with their SHA-256 (notifier
//! stores them when it e-mails the buyer's confirmation; every reader gets
//! the stored bytes, or the same bytes rendered from the same data).

use crate::{Store, StoreError};
use payhub_core::order::Item;
use payhub_core::{Currency, Money};
use payhub_documents::{Layout, Proof, Receipt, Rendered};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct Row {
    shop_name: String,
    correlation_id: String,
    currency: String,
    items: serde_json::Value,
    items_minor: i64,
    tax_minor: i64,
    freight_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    provider: String,
    paid_at: Option<OffsetDateTime>,
    end_to_end_id: Option<String>,
    customer_name: String,
    customer_tax_id: String,
    order_rules: serde_json::Value,
    provider_charge_id: Option<String>,
    method: Option<String>,
    card_masked: Option<String>,
    card_brand: Option<String>,
    auth_code: Option<String>,
    transaction_id: Option<String>,
}

/// The receipt of `order_id` from what is stored; `None` until it is paid.
pub async fn load(store: &Store, order_id: Uuid) -> Result<Option<Receipt>, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.name AS shop_name, o.correlation_id, o.currency::text AS currency, o.items, o.items_minor,
                o.tax_minor, o.freight_minor, o.discount_minor, o.total_minor, o.provider, o.paid_at,
                o.end_to_end_id, o.customer_name, o.customer_tax_id, s.order_rules,
                c.provider_charge_id, c.method, c.card_masked, c.card_brand, c.auth_code, c.transaction_id
         FROM orders o JOIN shops s ON s.id = o.shop_id LEFT JOIN charges c ON c.order_id = o.id
         WHERE o.id = $1",
    )
    .bind(order_id)
    .fetch_optional(&store.pool)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let Some(paid_at) = r.paid_at else {
        return Ok(None);
    };
    let currency = Currency::parse(r.currency.trim())
        .ok_or_else(|| StoreError::Db(sqlx::Error::Protocol(format!("unknown currency {:?}", r.currency))))?;
    let money = |m: i64| Money::from_minor(m, currency);
    let items: Vec<Item> = serde_json::from_value(r.items)
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("order {order_id} items: {e}"))))?;
    let rules: payhub_core::rules::OrderRules = serde_json::from_value(r.order_rules).unwrap_or_default();
    let card = r.method.as_deref() == Some(payhub_core::PaymentMethod::Card.as_str());
    Ok(Some(Receipt {
        shop_name: r.shop_name,
        correlation_id: r.correlation_id,
        order_id: order_id.to_string(),
        items,
        items_total: money(r.items_minor),
        tax: money(r.tax_minor),
        freight: money(r.freight_minor),
        discount: money(r.discount_minor),
        total: money(r.total_minor),
        proof: if card {
            Proof::Card {
                brand: r.card_brand,
                masked: r.card_masked,
                auth_code: r.auth_code,
                transaction_id: r.transaction_id,
            }
        } else {
            Proof::Pix {
                end_to_end_id: r.end_to_end_id,
            }
        },
        provider: r.provider,
        provider_charge_id: r.provider_charge_id,
        customer_name: r.customer_name,
        customer_tax_id: payhub_core::identity::TaxId::parse(&r.customer_tax_id)
            .map(|t| t.masked())
            .unwrap_or_else(|_| "-".into()),
        paid_at,
        utc_offset_hours: rules
            .delivery_time
            .map(|d| d.utc_offset_hours)
            .unwrap_or_else(|| payhub_documents::default_utc_offset_hours(currency)),
    }))
}

/// The stored receipt, if one was stored.
pub async fn stored(store: &Store, order_id: Uuid, layout: Layout) -> Result<Option<Rendered>, StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT pdf, sha256 FROM receipts WHERE order_id = $1 AND layout = $2")
            .bind(order_id)
            .bind(layout.as_str())
            .fetch_optional(&store.pool)
            .await?;
    Ok(row.map(|(bytes, sha256)| Rendered { bytes, sha256 }))
}

/// Renders the order's receipt from what is stored; `None` until paid.
pub async fn render(store: &Store, order_id: Uuid, layout: Layout) -> Result<Option<Rendered>, StoreError> {
    let Some(receipt) = load(store, order_id).await? else {
        return Ok(None);
    };
    // Laying out and subsetting the font is CPU work: off the async workers.
    tokio::task::spawn_blocking(move || payhub_documents::render(&receipt, layout))
        .await
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("the receipt renderer stopped: {e}"))))?
        .map(Some)
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(e.to_string())))
}

/// The stored receipt, or else the same rendered from the stored order.
pub async fn get(store: &Store, order_id: Uuid, layout: Layout) -> Result<Option<Rendered>, StoreError> {
    match stored(store, order_id, layout).await? {
        Some(r) => Ok(Some(r)),
        None => render(store, order_id, layout).await,
    }
}

/// Stores a rendered receipt (notifier's). The first stored stays: the
/// stored bytes returned, so the caller sends what every reader will get.
pub async fn record(store: &Store, order_id: Uuid, layout: Layout, r: &Rendered) -> Result<Rendered, StoreError> {
    sqlx::query(
        "INSERT INTO receipts (order_id, layout, sha256, pdf) VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id, layout) DO NOTHING",
    )
    .bind(order_id)
    .bind(layout.as_str())
    .bind(&r.sha256)
    .bind(&r.bytes)
    .execute(&store.pool)
    .await?;
    Ok(stored(store, order_id, layout).await?.unwrap_or_else(|| r.clone()))
}
