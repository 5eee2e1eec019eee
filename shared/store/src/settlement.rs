//! The settlement ledger's exports (issue 13 §2): the lines of a shop's
//! paid orders and refunds (written by reporter from `order.status_changed`),
//! exported by date range for a finance system.
//!
//! An export takes the lines of the range that no export carried before,
//! marks them `processed` (their `export_id`) and stores the CSV and the
//! JSON it rendered, with their SHA-256, in the same transaction: exporting
//! the same range again carries no line twice, and an export is downloaded
//! again byte for byte. The same Idempotency-Key again is the same export.

use crate::{Store, StoreError};
use payhub_core::{Currency, Money};
use serde_json::json;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Line {
    pub id: Uuid,
    pub order_id: Uuid,
    pub correlation_id: String,
    pub kind: String,
    pub provider: String,
    pub method: String,
    pub currency: String,
    pub gross_minor: i64,
    pub fee_minor: i64,
    pub net_minor: i64,
    pub settlement_date: Date,
    pub occurred_at: OffsetDateTime,
}

/// An export as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Export {
    pub id: Uuid,
    pub shop_id: Uuid,
    pub date_from: Date,
    pub date_to: Date,
    pub lines: i32,
    pub csv: Vec<u8>,
    pub csv_sha256: Vec<u8>,
    pub json: Vec<u8>,
    pub json_sha256: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl Export {
    /// The export's summary (no bodies), as the API and payhubctl show it.
    pub fn summary(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "shopId": self.shop_id,
            "from": self.date_from.to_string(),
            "to": self.date_to.to_string(),
            "lines": self.lines,
            "csvSha256": hex(&self.csv_sha256),
            "jsonSha256": hex(&self.json_sha256),
            "createdAt": self.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn major(minor: i64, currency: &str) -> String {
    Currency::parse(currency.trim())
        .map(|c| Money::from_minor(minor, c).to_major_string())
        .unwrap_or_else(|| minor.to_string())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str =
    "line_id,settlement_date,kind,order_id,correlation_id,provider,method,currency,gross,fee,net,occurred_at\n";

/// The CSV of `lines`, in their order.
pub fn render_csv(lines: &[Line]) -> Vec<u8> {
    let mut out = String::from(CSV_HEADER);
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            l.id,
            l.settlement_date,
            l.kind,
            l.order_id,
            field(&l.correlation_id),
            l.provider,
            l.method,
            l.currency.trim(),
            major(l.gross_minor, &l.currency),
            major(l.fee_minor, &l.currency),
            major(l.net_minor, &l.currency),
            rfc3339(l.occurred_at),
        ));
    }
    out.into_bytes()
}

/// The JSON of an export of `lines` (keys sorted, so the same lines always
/// give the same bytes).
pub fn render_json(id: Uuid, shop_id: Uuid, from: Date, to: Date, lines: &[Line]) -> Vec<u8> {
    let mut totals: std::collections::BTreeMap<String, (i64, i64, i64)> = std::collections::BTreeMap::new();
    for l in lines {
        let t = totals.entry(l.currency.trim().to_string()).or_default();
        t.0 += l.gross_minor;
        t.1 += l.fee_minor;
        t.2 += l.net_minor;
    }
    let v = json!({
        "exportId": id,
        "shopId": shop_id,
        "from": from.to_string(),
        "to": to.to_string(),
        "totals": totals.iter().map(|(c, (g, f, n))| json!({
            "currency": c, "gross": major(*g, c), "fee": major(*f, c), "net": major(*n, c),
            "grossMinor": g, "feeMinor": f, "netMinor": n,
        })).collect::<Vec<_>>(),
        "lines": lines.iter().map(|l| json!({
            "lineId": l.id,
            "settlementDate": l.settlement_date.to_string(),
            "kind": l.kind,
            "orderId": l.order_id,
            "correlationID": l.correlation_id,
            "provider": l.provider,
            "method": l.method,
            "currency": l.currency.trim(),
            "gross": major(l.gross_minor, &l.currency),
            "fee": major(l.fee_minor, &l.currency),
            "net": major(l.net_minor, &l.currency),
            "grossMinor": l.gross_minor,
            "feeMinor": l.fee_minor,
            "netMinor": l.net_minor,
            "occurredAt": rfc3339(l.occurred_at),
        })).collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&v).expect("JSON serialises");
    out.push(b'\n');
    out
}

const EXPORT_COLUMNS: &str = "id, shop_id, date_from, date_to, lines, csv, csv_sha256, json, json_sha256, created_at";

/// What [`export`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exported {
    /// A new export, its lines now processed.
    New(Export),
    /// The same Idempotency-Key as an earlier export: that export.
    Again(Export),
    /// No unexported line in the range: nothing stored.
    Nothing,
}

/// Exports the shop's unexported lines with a settlement date from `from`
/// to `to` (inclusive). Two exports at once never carry the same line (the
/// lines are locked; a concurrent export skips them).
pub async fn export(
    store: &Store,
    shop_id: Uuid,
    from: Date,
    to: Date,
    idempotency_key: Option<&str>,
    created_by: &str,
) -> Result<Exported, StoreError> {
    if let Some(key) = idempotency_key
        && let Some(e) = by_key(store, shop_id, key).await?
    {
        return Ok(Exported::Again(e));
    }
    let mut tx = store.begin().await?;
    let lines: Vec<Line> = sqlx::query_as(
        "SELECT id, order_id, correlation_id, kind, provider, method, currency::text AS currency, gross_minor,
                fee_minor, net_minor, settlement_date, occurred_at
         FROM ledger_lines
         WHERE shop_id = $1 AND settlement_date BETWEEN $2 AND $3 AND export_id IS NULL
         ORDER BY settlement_date, occurred_at, id
         FOR UPDATE SKIP LOCKED",
    )
    .bind(shop_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    if lines.is_empty() {
        tx.rollback().await?;
        return Ok(Exported::Nothing);
    }
    let id = Uuid::now_v7();
    let csv = render_csv(&lines);
    let body = render_json(id, shop_id, from, to, &lines);
    let inserted: Option<Export> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ledger_exports (id, shop_id, date_from, date_to, lines, csv, csv_sha256, json, json_sha256,
                                     idempotency_key, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (shop_id, idempotency_key) DO NOTHING
         RETURNING {EXPORT_COLUMNS}"
    )))
    .bind(id)
    .bind(shop_id)
    .bind(from)
    .bind(to)
    .bind(lines.len() as i32)
    .bind(&csv)
    .bind(sha256(&csv))
    .bind(&body)
    .bind(sha256(&body))
    .bind(idempotency_key)
    .bind(created_by)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(export) = inserted else {
        // The same key was used by a concurrent request: that export stands.
        tx.rollback().await?;
        let key = idempotency_key.unwrap_or_default();
        return by_key(store, shop_id, key)
            .await?
            .map(Exported::Again)
            .ok_or_else(|| StoreError::NotFound(format!("export with key {key}")));
    };
    let ids: Vec<Uuid> = lines.iter().map(|l| l.id).collect();
    sqlx::query("UPDATE ledger_lines SET export_id = $1 WHERE id = ANY($2) AND export_id IS NULL")
        .bind(id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Exported::New(export))
}

async fn by_key(store: &Store, shop_id: Uuid, key: &str) -> Result<Option<Export>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EXPORT_COLUMNS} FROM ledger_exports WHERE shop_id = $1 AND idempotency_key = $2"
    )))
    .bind(shop_id)
    .bind(key)
    .fetch_optional(&store.pool)
    .await?)
}

/// One of the shop's exports.
pub async fn get(store: &Store, shop_id: Uuid, id: Uuid) -> Result<Option<Export>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EXPORT_COLUMNS} FROM ledger_exports WHERE shop_id = $1 AND id = $2"
    )))
    .bind(shop_id)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?)
}

/// The shop's exports, newest first.
pub async fn list(store: &Store, shop_id: Uuid) -> Result<Vec<Export>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EXPORT_COLUMNS} FROM ledger_exports WHERE shop_id = $1 ORDER BY created_at DESC, id DESC LIMIT 500"
    )))
    .bind(shop_id)
    .fetch_all(&store.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &str, gross: i64, fee: i64) -> Line {
        Line {
            id: Uuid::nil(),
            order_id: Uuid::nil(),
            correlation_id: "order, \"1\"".into(),
            kind: kind.into(),
            provider: "openpix".into(),
            method: "pix".into(),
            currency: "BRL".into(),
            gross_minor: gross,
            fee_minor: fee,
            net_minor: gross - fee,
            settlement_date: time::macros::date!(2026 - 12 - 02),
            occurred_at: time::macros::datetime!(2026-12-02 12:00 UTC),
        }
    }

    #[test]
    fn csv_and_json_are_the_same_bytes_every_time_and_quote_what_they_must() {
        let lines = vec![line("payment", 22779, 450), line("refund", -1000, 0)];
        let csv = String::from_utf8(render_csv(&lines)).unwrap();
        assert!(csv.starts_with(CSV_HEADER));
        assert!(
            csv.contains(",\"order, \"\"1\"\"\",openpix,pix,BRL,227.79,4.50,223.29,2026-12-02T12:00:00Z\n"),
            "{csv}"
        );
        assert!(csv.contains(",refund,"), "{csv}");
        assert_eq!(render_csv(&lines), render_csv(&lines));
        let d = time::macros::date!(2026 - 12 - 02);
        let a = render_json(Uuid::nil(), Uuid::nil(), d, d, &lines);
        assert_eq!(a, render_json(Uuid::nil(), Uuid::nil(), d, d, &lines));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["totals"][0]["netMinor"], 22779 - 450 - 1000);
        assert_eq!(v["lines"][0]["fee"], "4.50");
    }
}
