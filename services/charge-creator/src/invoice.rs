//! The invoice of a paid order (issue 12 §3), from `invoice.requested` on
//! charge-creator's queue: charge-creator holds the shops' invoicing
//! credentials as it holds their provider credentials. order-updater
//! publishes it, in the transaction that moves the order to `paid`, only
//! for a shop that invoices through payhub, so charge-creator receives no
//! other status change (issue 14).
//!
//! For a shop that invoices through payhub (`payhubctl shop set-invoicing`)
//! the invoice is built from the stored order and the shop's fiscal
//! profile and handed to its Focus NFe account under the order's own
//! reference (the service's idempotency key). Its state is kept in
//! `invoices`: `requested` before the call, then `issued` or `failed`,
//! each end recorded once with `invoice.updated` in the same transaction
//! (notifier mails the buyer the links, or alerts the shop's admin). The
//! service down, a lost answer or SEFAZ still deciding are transient: the
//! message goes through the queue's retry topology (PixelPay's 5 minutes,
//! 3 attempts), and each attempt first reads back what the service already
//! received, so it is never asked twice. On the last attempt the invoice
//! is `failed` with the reason.

use crate::accounts::{AccountError, Providers, Using};
use payhub_connectors::ConnectorError;
use payhub_connectors::focusnfe::{FocusNfeAccount, FocusNfeClient, InvoiceOrder, InvoiceState, NfeRequest};
use payhub_core::events::{EventPayload, InvoiceAction, InvoiceRequested, InvoiceUpdated};
use payhub_core::invoice::InvoiceStatus;
use payhub_core::order::{Address, Item};
use payhub_core::{Currency, Envelope, Money, PaymentMethod};
use payhub_queue::{Failure, Incoming};
use payhub_service::store_failure as db;
use payhub_store::accounts::Credentials;
use payhub_store::{Store, invoicing, outbox};
use std::sync::Arc;
use uuid::Uuid;

pub struct Invoicer {
    pub store: Store,
    pub outbox: outbox::Outbox,
    pub providers: Arc<Providers>,
    pub client: FocusNfeClient,
    pub max_attempts: u32,
}

/// How one attempt ended.
enum End {
    Issued(InvoiceState),
    Failed(String),
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    correlation_id: String,
    currency: String,
    items: serde_json::Value,
    items_minor: i64,
    tax_minor: i64,
    freight_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    customer_name: String,
    customer_email: String,
    customer_phone: Option<String>,
    customer_tax_id: String,
    shipping_address: Option<serde_json::Value>,
    paid_at: Option<time::OffsetDateTime>,
    method: Option<String>,
}

async fn load_order(store: &Store, order_id: Uuid) -> Result<InvoiceOrder, Failure> {
    let r: OrderRow = sqlx::query_as(
        "SELECT o.correlation_id, o.currency::text AS currency, o.items, o.items_minor, o.tax_minor, o.freight_minor,
                o.discount_minor, o.total_minor, o.customer_name, o.customer_email, o.customer_phone,
                o.customer_tax_id, o.shipping_address, o.paid_at, c.method
         FROM orders o LEFT JOIN charges c ON c.order_id = o.id WHERE o.id = $1",
    )
    .bind(order_id)
    .fetch_one(&store.pool)
    .await
    .map_err(db)?;
    let currency = Currency::parse(r.currency.trim())
        .ok_or_else(|| Failure::Permanent(format!("order {order_id}: unknown currency {}", r.currency)))?;
    let money = |m| Money::from_minor(m, currency);
    let items: Vec<Item> = serde_json::from_value(r.items)
        .map_err(|e| Failure::Permanent(format!("order {order_id}: unreadable items: {e}")))?;
    let shipping_address: Option<Address> = r
        .shipping_address
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Failure::Permanent(format!("order {order_id}: unreadable address: {e}")))?;
    Ok(InvoiceOrder {
        correlation_id: r.correlation_id,
        items,
        items_total: money(r.items_minor),
        tax: money(r.tax_minor),
        freight: money(r.freight_minor),
        discount: money(r.discount_minor),
        total: money(r.total_minor),
        customer_name: r.customer_name,
        customer_email: r.customer_email,
        customer_phone: r.customer_phone,
        customer_tax_id: payhub_core::identity::TaxId::parse(&r.customer_tax_id)
            .unwrap_or_else(|_| payhub_core::identity::TaxId::none()),
        shipping_address,
        method: if r.method.as_deref() == Some(PaymentMethod::Card.as_str()) {
            PaymentMethod::Card
        } else {
            PaymentMethod::Pix
        },
        paid_at: r
            .paid_at
            .ok_or_else(|| Failure::Permanent(format!("order {order_id} is not paid")))?,
    })
}

/// The reference the invoicing service knows the order's invoice by.
pub fn reference(order_id: Uuid) -> String {
    order_id.simple().to_string()
}

impl Invoicer {
    pub async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let env = &msg.envelope;
        let EventPayload::InvoiceRequested(change) = &env.payload else {
            return Err(Failure::Permanent(format!("the invoicer cannot handle {}", env.kind())));
        };
        let (Some(order_id), Some(shop_id)) = (env.order_id, env.shop_id) else {
            return Err(Failure::Permanent("invoice.requested without order or shop".into()));
        };
        match change.action {
            InvoiceAction::Issue => self.issue(msg, change, order_id, shop_id).await,
        }
    }

    /// Issues the invoice of an order just paid.
    async fn issue(
        &self,
        msg: &Incoming,
        change: &InvoiceRequested,
        order_id: Uuid,
        shop_id: Uuid,
    ) -> Result<(), Failure> {
        let env = &msg.envelope;
        // Turned off since the order was paid: nothing is asked.
        let Some(settings) = invoicing::settings(&self.store, shop_id).await.map_err(db)? else {
            return Ok(());
        };
        if !settings.enabled {
            return Ok(());
        }
        let stored: Option<(String, i32)> = sqlx::query_as("SELECT status, attempts FROM invoices WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(db)?;
        if matches!(&stored, Some((s, _)) if s != InvoiceStatus::Requested.as_str()) {
            tracing::info!(%order_id, "the order's invoice is settled already");
            return Ok(());
        }
        let reference = reference(order_id);
        let end = self
            .attempt(msg, order_id, shop_id, &reference, &settings.profile)
            .await?;
        match end {
            Some(end) => self.settle(env, change, order_id, end).await,
            None => Ok(()),
        }
    }

    /// One attempt at the service; `Ok(None)` never happens for a settled
    /// outcome, `Err(Transient)` sends the message round the retry queue.
    async fn attempt(
        &self,
        msg: &Incoming,
        order_id: Uuid,
        shop_id: Uuid,
        reference: &str,
        profile: &payhub_core::invoice::FiscalProfile,
    ) -> Result<Option<End>, Failure> {
        let order = load_order(&self.store, order_id).await?;
        let last = msg.attempt >= self.max_attempts;
        // Requested before the call, so the order view shows it and a
        // crash after the call leaves a trace.
        sqlx::query(
            "INSERT INTO invoices (order_id, shop_id, service, reference, status, attempts)
             VALUES ($1, $2, $3, $4, 'requested', 1)
             ON CONFLICT (order_id) DO UPDATE SET attempts = invoices.attempts + 1, updated_at = now()
             WHERE invoices.status = 'requested'",
        )
        .bind(order_id)
        .bind(shop_id)
        .bind(invoicing::SERVICE)
        .bind(reference)
        .execute(&self.store.pool)
        .await
        .map_err(db)?;
        let request = match NfeRequest::from_order(&order, profile) {
            Ok(r) => r,
            Err(e) => return Ok(Some(End::Failed(format!("the order cannot be invoiced: {e}")))),
        };
        let account = match self.account(shop_id).await {
            Ok(a) => a,
            Err(Failure::Transient(e)) if !last => return Err(Failure::Transient(e)),
            Err(Failure::Transient(e) | Failure::Permanent(e) | Failure::Unavailable(e)) => {
                return Ok(Some(End::Failed(e)));
            }
        };
        match self.client.issue(&account, reference, &request).await {
            Ok(state @ InvoiceState::Issued { .. }) => Ok(Some(End::Issued(state))),
            Ok(InvoiceState::Rejected { reason }) => Ok(Some(End::Failed(reason))),
            Ok(InvoiceState::Processing) if !last => Err(Failure::Transient(
                "the invoicing service is still processing the invoice".into(),
            )),
            Ok(InvoiceState::Processing) => Ok(Some(End::Failed(format!(
                "the invoicing service was still processing the invoice after {} attempts (ref {reference}): check it there",
                msg.attempt
            )))),
            Err(ConnectorError::Transient(e)) if !last => Err(Failure::Transient(e)),
            Err(ConnectorError::Transient(e)) => Ok(Some(End::Failed(format!(
                "the invoicing service stayed unavailable for {} attempts: {e}",
                msg.attempt
            )))),
            Err(ConnectorError::Permanent(e)) => Ok(Some(End::Failed(e))),
        }
    }

    /// The shop's invoicing account, opened (the token never leaves here).
    async fn account(&self, shop_id: Uuid) -> Result<FocusNfeAccount, Failure> {
        match self.providers.for_shop(shop_id, invoicing::SERVICE).await {
            Ok(Using::Shop(a)) => match &a.credentials {
                Credentials::Focusnfe { token, endpoint } => Ok(FocusNfeAccount {
                    endpoint: endpoint.clone(),
                    token: token.clone(),
                }),
                other => Err(Failure::Permanent(format!(
                    "the shop's invoicing account holds {} credentials, not Focus NFe",
                    other.provider()
                ))),
            },
            Ok(Using::Platform) => Err(Failure::Permanent(
                "the shop has no invoicing account (payhubctl shop set-invoicing --token-file)".into(),
            )),
            Err(AccountError::Unavailable(e)) => Err(Failure::Transient(e)),
            Err(e) => Err(Failure::Permanent(e.to_string())),
        }
    }

    /// Records the end once, with `invoice.updated`, in one transaction.
    async fn settle(&self, env: &Envelope, change: &InvoiceRequested, order_id: Uuid, end: End) -> Result<(), Failure> {
        let mut tx = self.store.begin().await.map_err(db)?;
        let (status, payload) = match end {
            End::Issued(InvoiceState::Issued {
                number,
                series,
                access_key,
                pdf_url,
                xml_url,
            }) => {
                let r = sqlx::query(
                    "UPDATE invoices SET status = 'issued', number = $2, series = $3, access_key = $4, pdf_url = $5,
                         xml_url = $6, reason = NULL, updated_at = now()
                     WHERE order_id = $1 AND status = 'requested'",
                )
                .bind(order_id)
                .bind(&number)
                .bind(&series)
                .bind(&access_key)
                .bind(&pdf_url)
                .bind(&xml_url)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tracing::info!(%order_id, %number, "invoice issued");
                (
                    r.rows_affected(),
                    InvoiceUpdated {
                        status: InvoiceStatus::Issued,
                        service: invoicing::SERVICE.into(),
                        number: Some(number),
                        series,
                        access_key,
                        pdf_url,
                        xml_url,
                        reason: None,
                        customer_name: change.customer_name.clone(),
                        customer_email: change.customer_email.clone(),
                        amount: change.amount,
                    },
                )
            }
            End::Issued(_) => return Err(Failure::Permanent("an issued end without an invoice".into())),
            End::Failed(reason) => {
                let reason: String = reason.chars().take(1000).collect();
                let r = sqlx::query(
                    "UPDATE invoices SET status = 'failed', reason = $2, updated_at = now()
                     WHERE order_id = $1 AND status = 'requested'",
                )
                .bind(order_id)
                .bind(&reason)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tracing::warn!(%order_id, %reason, "invoice failed; the shop's admin will be told");
                (
                    r.rows_affected(),
                    InvoiceUpdated {
                        status: InvoiceStatus::Failed,
                        service: invoicing::SERVICE.into(),
                        number: None,
                        series: None,
                        access_key: None,
                        pdf_url: None,
                        xml_url: None,
                        reason: Some(reason),
                        customer_name: change.customer_name.clone(),
                        customer_email: change.customer_email.clone(),
                        amount: change.amount,
                    },
                )
            }
        };
        if status == 0 {
            // Another delivery settled it first.
            return Ok(());
        }
        let mut event = Envelope::new(EventPayload::InvoiceUpdated(payload));
        event.order_id = env.order_id;
        event.shop_id = env.shop_id;
        event.correlation_id = env.correlation_id.clone();
        event.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut tx, &event).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        let _ = self.outbox.publish_now(std::slice::from_ref(&event)).await;
        Ok(())
    }
}
