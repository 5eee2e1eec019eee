//! Management reports (issue 13 §3): reporter stores the snapshot and emits
//! `report.ready`; notifier e-mails it once per event, as HTML with its CSV
//! and PDF attached, to the shop's management addresses (its admin when it
//! set none) or the platform's (`PAYHUB_PLATFORM_REPORT_EMAILS`, else
//! `PAYHUB_PLATFORM_ADMIN_EMAIL`). The attachments are the stored bytes.

use crate::mail::{Attachment, Mail};
use payhub_store::Store;
use uuid::Uuid;

/// A snapshot's bodies, as stored.
#[derive(sqlx::FromRow)]
pub struct StoredReport {
    pub title: String,
    pub period: String,
    pub period_start: time::Date,
    pub html: Vec<u8>,
    pub csv: Vec<u8>,
    pub pdf: Vec<u8>,
    pub shop_id: Option<Uuid>,
}

pub async fn load(store: &Store, id: Uuid) -> Result<Option<StoredReport>, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(summary->>'title', 'Relatório') AS title, period, period_start, html, csv, pdf, shop_id
         FROM report_snapshots WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&store.pool)
    .await
}

/// Who gets a shop's report: its management list, else its admin.
pub async fn shop_recipients(store: &Store, shop_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let row: Option<(Vec<String>, Option<String>)> =
        sqlx::query_as("SELECT report_emails, admin_email FROM shops WHERE id = $1")
            .bind(shop_id)
            .fetch_optional(&store.pool)
            .await?;
    Ok(match row {
        Some((list, _)) if !list.is_empty() => list,
        Some((_, Some(admin))) => vec![admin],
        _ => Vec::new(),
    })
}

/// The e-mail and its two attachments.
pub fn mail(r: &StoredReport, id: Uuid) -> (Mail, Vec<Attachment>) {
    let name = format!("relatorio-{}-{}", r.period, r.period_start);
    (
        Mail {
            subject: format!("[payhub] {} ({} {})", r.title, r.period, r.period_start),
            body: format!(
                "{}\n\nO relatório segue em HTML nesta mensagem e em anexo como CSV e PDF.\n\
                 Cópia guardada: relatório {id}; baixe-o de novo, idêntico, em GET /v1/reports/management/{id}.\n",
                r.title
            ),
        },
        vec![
            Attachment {
                filename: format!("{name}.csv"),
                content_type: "text/csv; charset=utf-8",
                bytes: r.csv.clone(),
            },
            Attachment {
                filename: format!("{name}.pdf"),
                content_type: "application/pdf",
                bytes: r.pdf.clone(),
            },
        ],
    )
}

/// `PAYHUB_PLATFORM_REPORT_EMAILS`: comma-separated e-mail addresses.
pub fn parse_list(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let e = payhub_core::identity::Email::parse(a).map_err(|_| format!("{a:?} is not an e-mail address"))?;
        out.push(e.as_str().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_platform_list_is_checked_address_by_address() {
        assert_eq!(
            super::parse_list(" a@x.example.com, b@y.example.com ,").unwrap(),
            vec!["a@x.example.com", "b@y.example.com"]
        );
        assert!(super::parse_list("a@x.example.com, nope").unwrap_err().contains("nope"));
        assert!(super::parse_list("").unwrap().is_empty());
    }
}
