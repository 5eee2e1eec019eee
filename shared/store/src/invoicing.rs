//! Invoices (issue 12 §3): each shop's invoicing setting and fiscal profile
//! (`shop_invoicing`, set by payhubctl) and each paid order's invoice
//! (`invoices`, charge-creator's). The invoicing account's token is a
//! provider account (`accounts`, provider `focusnfe`), sealed like every
//! provider secret.

use crate::{Store, StoreError};
use payhub_core::invoice::FiscalProfile;
use time::OffsetDateTime;
use uuid::Uuid;

/// The name invoicing accounts are stored under in `provider_accounts`.
pub const SERVICE: &str = "focusnfe";

/// How a shop invoices.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub profile: FiscalProfile,
}

/// The shop's invoicing settings; `None`: the shop never set them up, so
/// payhub does not invoice for it (the default).
pub async fn settings(store: &Store, shop_id: Uuid) -> Result<Option<Settings>, StoreError> {
    let row: Option<(bool, serde_json::Value)> =
        sqlx::query_as("SELECT enabled, profile FROM shop_invoicing WHERE shop_id = $1")
            .bind(shop_id)
            .fetch_optional(&store.pool)
            .await?;
    row.map(|(enabled, profile)| {
        let profile = serde_json::from_value(profile)
            .map_err(|e| StoreError::Corrupt(format!("shop {shop_id}'s fiscal profile: {e}")))?;
        Ok(Settings { enabled, profile })
    })
    .transpose()
}

/// Sets the shop's fiscal profile and turns invoicing on or off. Turning
/// it on needs a profile (given now or before).
pub async fn set(
    store: &Store,
    shop_id: Uuid,
    enabled: bool,
    profile: Option<&FiscalProfile>,
) -> Result<(), StoreError> {
    let profile = profile
        .map(|p| serde_json::to_value(p).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()?;
    let r = sqlx::query(
        "INSERT INTO shop_invoicing (shop_id, enabled, profile)
         SELECT $1, $2, $3 WHERE $3::jsonb IS NOT NULL AND EXISTS (SELECT 1 FROM shops WHERE id = $1)
         ON CONFLICT (shop_id) DO UPDATE SET enabled = EXCLUDED.enabled, profile = EXCLUDED.profile, updated_at = now()",
    )
    .bind(shop_id)
    .bind(enabled)
    .bind(&profile)
    .execute(&store.pool)
    .await?;
    if r.rows_affected() > 0 {
        return Ok(());
    }
    // No profile given: switch what is there.
    let r = sqlx::query("UPDATE shop_invoicing SET enabled = $2, updated_at = now() WHERE shop_id = $1")
        .bind(shop_id)
        .bind(enabled)
        .execute(&store.pool)
        .await?;
    if r.rows_affected() == 0 {
        if !enabled {
            // Nothing set up: invoicing is off already.
            return Ok(());
        }
        return Err(StoreError::Invalid(
            "a fiscal profile is needed to invoice (--profile FILE)".into(),
        ));
    }
    Ok(())
}

/// An order's invoice as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub service: String,
    pub reference: String,
    pub status: String,
    pub number: Option<String>,
    pub series: Option<String>,
    pub access_key: Option<String>,
    pub pdf_url: Option<String>,
    pub xml_url: Option<String>,
    pub reason: Option<String>,
    pub attempts: i32,
    /// The cancellation (the order refunded in full or cancelled): the
    /// justification sent, why it did not happen, attempts, when it did.
    pub cancel_reason: Option<String>,
    pub cancel_error: Option<String>,
    pub cancel_attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    pub cancel_xml_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const INVOICE_COLUMNS: &str = "SELECT service, reference, status, number, series, access_key, pdf_url, xml_url, reason,
        attempts, cancel_reason, cancel_error, cancel_attempts, cancelled_at, cancel_xml_url, requested_at, updated_at
     FROM invoices WHERE order_id = $1";

pub async fn for_order(store: &Store, order_id: Uuid) -> Result<Option<Invoice>, StoreError> {
    Ok(sqlx::query_as(INVOICE_COLUMNS)
        .bind(order_id)
        .fetch_optional(&store.pool)
        .await?)
}

/// The same, inside a transaction.
pub async fn for_order_in(tx: &mut sqlx::PgConnection, order_id: Uuid) -> Result<Option<Invoice>, StoreError> {
    Ok(sqlx::query_as(INVOICE_COLUMNS)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?)
}

/// The shop's buyers are invited to the survey `days` after payment
/// (`None`: after delivery).
pub async fn set_survey_after_payment(store: &Store, shop_id: Uuid, days: Option<u16>) -> Result<(), StoreError> {
    if let Some(d) = days
        && !(1..=90).contains(&d)
    {
        return Err(StoreError::Invalid("--after-payment-days must be 1 to 90".into()));
    }
    let r = sqlx::query("UPDATE shops SET survey_after_payment_days = $2 WHERE id = $1")
        .bind(shop_id)
        .bind(days.map(i32::from))
        .execute(&store.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("shop {shop_id}")));
    }
    Ok(())
}
