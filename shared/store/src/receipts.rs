//! Payment receipts (issue 12 §2): read from the stored order, rendered by
//! `payhub-documents`, recorded in `receipts` by their SHA-256 (notifier
//! records them when it e-mails the buyer's confirmation); every reader
//! gets the same bytes rendered again from the same data, checked against
//! the recorded hash.

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
    Ok(load_noting_delivered(store, order_id, None).await?.1)
}

/// [`load`], and in the same read the kinds of delivery already made for
/// `event_id` (notifier's, which needs both before it mails a paid order's
/// receipt: one round trip instead of two).
pub async fn load_noting_delivered(
    store: &Store,
    order_id: Uuid,
    event_id: Option<Uuid>,
) -> Result<(Vec<String>, Option<Receipt>), StoreError> {
    let row: Option<(Vec<String>, Row)> = sqlx::query_as::<_, DeliveredAndRow>(concat!(
        "SELECT ",
        crate::delivered_kinds!("$2"),
        " AS delivered,
                s.name AS shop_name, o.correlation_id, o.currency::text AS currency, o.items, o.items_minor,
                o.tax_minor, o.freight_minor, o.discount_minor, o.total_minor, o.provider, o.paid_at,
                o.end_to_end_id, o.customer_name, o.customer_tax_id, s.order_rules,
                c.provider_charge_id, c.method, c.card_masked, c.card_brand, c.auth_code, c.transaction_id
         FROM orders o JOIN shops s ON s.id = o.shop_id LEFT JOIN charges c ON c.order_id = o.id
         WHERE o.id = $1"
    ))
    .bind(order_id)
    .bind(event_id)
    .fetch_optional(&store.pool)
    .await?
    .map(|r| (r.delivered, r.row));
    let Some((delivered, r)) = row else {
        return Ok((Vec::new(), None));
    };
    Ok((delivered, from_row(order_id, r)?))
}

#[derive(sqlx::FromRow)]
struct DeliveredAndRow {
    delivered: Vec<String>,
    #[sqlx(flatten)]
    row: Row,
}

fn from_row(order_id: Uuid, r: Row) -> Result<Option<Receipt>, StoreError> {
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

/// What is recorded of a receipt: its hash, and its bytes for receipts
/// stored before hashes alone were recorded.
async fn recorded(
    store: &Store,
    order_id: Uuid,
    layout: Layout,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT sha256, pdf FROM receipts WHERE order_id = $1 AND layout = $2")
            .bind(order_id)
            .bind(layout.as_str())
            .fetch_optional(&store.pool)
            .await?,
    )
}

/// Renders at a time in this process: one per CPU. Laying out and
/// subsetting a font is CPU work; more at once only adds threads, memory
/// and context switches (a notifier with hundreds of paid orders in flight
/// had as many blocking threads rendering, and its memory doubled).
static RENDERING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

/// Laying out and subsetting the font is CPU work: off the async workers,
/// at most [`RENDERING`] at once.
async fn render_blocking(receipt: Receipt, layouts: Vec<Layout>) -> Result<Vec<(Layout, Rendered)>, StoreError> {
    let _turn = RENDERING
        .acquire()
        .await
        .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("the receipt renderer stopped: {e}"))))?;
    tokio::task::spawn_blocking(move || {
        layouts
            .into_iter()
            .map(|l| payhub_documents::render(&receipt, l).map(|r| (l, r)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| StoreError::Db(sqlx::Error::Protocol(format!("the receipt renderer stopped: {e}"))))?
    .map_err(|e| StoreError::Db(sqlx::Error::Protocol(e.to_string())))
}

/// Renders the order's receipt from what is stored; `None` until paid.
pub async fn render(store: &Store, order_id: Uuid, layout: Layout) -> Result<Option<Rendered>, StoreError> {
    let Some(receipt) = load(store, order_id).await? else {
        return Ok(None);
    };
    Ok(render_blocking(receipt, vec![layout]).await?.pop().map(|(_, r)| r))
}

/// Renders a loaded receipt in every layout (notifier's, for the buyer's
/// confirmation).
pub async fn render_all(receipt: Receipt) -> Result<Vec<(Layout, Rendered)>, StoreError> {
    render_blocking(receipt, Layout::ALL.to_vec()).await
}

/// The order's receipt, the same bytes on every fetch: rendered again from
/// the stored order and checked against the hash notifier recorded when it
/// e-mailed it (or, for receipts stored before hashes alone were recorded,
/// the stored bytes). Until notifier has recorded it, the render is the
/// same bytes notifier will record. A render that no longer matches its
/// recorded hash is refused rather than served as the same receipt.
pub async fn get(store: &Store, order_id: Uuid, layout: Layout) -> Result<Option<Rendered>, StoreError> {
    let recorded = recorded(store, order_id, layout).await?;
    if let Some((sha256, Some(bytes))) = &recorded {
        return Ok(Some(Rendered {
            bytes: bytes.clone(),
            sha256: sha256.clone(),
        }));
    }
    let Some(rendered) = render(store, order_id, layout).await? else {
        return Ok(None);
    };
    match recorded {
        Some((sha256, _)) if sha256 != rendered.sha256 => Err(StoreError::Corrupt(format!(
            "the {} receipt of order {order_id} no longer renders to its recorded hash {}",
            layout.as_str(),
            payhub_documents::hex(&sha256)
        ))),
        _ => Ok(Some(rendered)),
    }
}
