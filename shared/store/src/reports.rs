//! Management reports' snapshots (issue 13 §3), as reporter stored them:
//! never changed (a trigger refuses it), downloaded byte for byte.

use crate::Store;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// A stored snapshot (with or without its bodies).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Snapshot {
    pub id: Uuid,
    pub shop_id: Option<Uuid>,
    pub period: String,
    pub period_start: Date,
    pub period_end: Date,
    pub utc_offset_hours: i16,
    pub trigger: String,
    pub summary: Value,
    pub html_sha256: Vec<u8>,
    pub csv_sha256: Vec<u8>,
    pub pdf_sha256: Vec<u8>,
    pub content_sha256: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl Snapshot {
    pub fn to_json(&self) -> Value {
        let hex = payhub_documents::hex;
        json!({
            "id": self.id,
            "scope": if self.shop_id.is_some() { "shop" } else { "platform" },
            "shopId": self.shop_id,
            "period": self.period,
            "from": self.period_start.to_string(),
            "to": self.period_end.to_string(),
            "utcOffsetHours": self.utc_offset_hours,
            "trigger": self.trigger,
            "summary": self.summary,
            "htmlSha256": hex(&self.html_sha256),
            "csvSha256": hex(&self.csv_sha256),
            "pdfSha256": hex(&self.pdf_sha256),
            "contentSha256": hex(&self.content_sha256),
            "createdAt": self.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        })
    }
}

pub const SNAPSHOT_COLUMNS: &str = "id, shop_id, period, period_start, period_end, utc_offset_hours, trigger, summary,
     html_sha256, csv_sha256, pdf_sha256, content_sha256, created_at";

/// Lists snapshots, newest first (`shop`: one shop's; `None`: the platform's).
pub async fn list(store: &Store, shop: Option<Uuid>) -> Result<Vec<Snapshot>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM report_snapshots
         WHERE scope_key = COALESCE($1::text, 'platform') ORDER BY period_start DESC, period, id LIMIT 500"
    )))
    .bind(shop.map(|s| s.to_string()))
    .fetch_all(&store.pool)
    .await
}

/// One body of a snapshot, as stored: (bytes, sha256).
pub async fn body(
    store: &Store,
    shop: Option<Uuid>,
    id: Uuid,
    format: &str,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, sqlx::Error> {
    let column = match format {
        "html" => "html, html_sha256",
        "csv" => "csv, csv_sha256",
        "pdf" => "pdf, pdf_sha256",
        _ => return Ok(None),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {column} FROM report_snapshots WHERE id = $1 AND scope_key = COALESCE($2::text, 'platform')"
    )))
    .bind(id)
    .bind(shop.map(|s| s.to_string()))
    .fetch_optional(&store.pool)
    .await
}

pub fn content_type(format: &str) -> &'static str {
    match format {
        "html" => "text/html; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        _ => "application/pdf",
    }
}
