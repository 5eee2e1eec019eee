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
//! received, so it is never asked twice. On the last attempt, when the
//! service was only slow (still processing, or no answer), the status is
//! read once more after a pause (`final_check_after`) before the invoice
//! is `failed` with the reason: one SEFAZ authorised meanwhile is issued.

use crate::accounts::{AccountError, Providers, Using};
use payhub_connectors::ConnectorError;
use payhub_connectors::focusnfe::{
    CancelState, FocusNfeAccount, FocusNfeClient, InvoiceOrder, InvoiceState, NfeRequest,
};
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

/// The consumer name cancellations are recorded under in `processed_events`.
const CANCEL_CONSUMER: &str = "charge-creator.invoice-cancel";

pub struct Invoicer {
    pub store: Store,
    pub outbox: outbox::Outbox,
    pub providers: Arc<Providers>,
    pub client: FocusNfeClient,
    pub max_attempts: u32,
    /// On the last attempt, when the service was only slow (still
    /// processing, or its answer lost), how long to wait before reading the
    /// invoice's status once more and only then declaring it failed.
    pub final_check_after: std::time::Duration,
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

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The reference the invoicing service knows the order's invoice by.
pub fn reference(order_id: Uuid) -> String {
    order_id.simple().to_string()
}

impl Invoicer {
    pub async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let env = &msg.envelope;
        let legacy;
        let change = match &env.payload {
            EventPayload::InvoiceRequested(change) => change,
            // Queued before the upgrade that retired this binding (issue
            // 14): a move to paid still asks for its invoice; any other
            // status change is acked as the no-op it always was.
            EventPayload::OrderStatusChanged(c) if c.to == payhub_core::OrderStatus::Paid => {
                legacy = InvoiceRequested {
                    action: InvoiceAction::Issue,
                    order_status: c.to,
                    customer_name: c.customer_name.clone(),
                    customer_email: c.customer_email.clone(),
                    amount: c.amount,
                    reason: None,
                };
                &legacy
            }
            EventPayload::OrderStatusChanged(_) => return Ok(()),
            _ => return Err(Failure::Permanent(format!("the invoicer cannot handle {}", env.kind()))),
        };
        let (Some(order_id), Some(shop_id)) = (env.order_id, env.shop_id) else {
            return Err(Failure::Permanent("invoice.requested without order or shop".into()));
        };
        match change.action {
            InvoiceAction::Issue => self.issue(msg, change, order_id, shop_id).await,
            InvoiceAction::Cancel => self.cancel(msg, change, order_id, shop_id).await,
        }
    }

    /// Cancels the issued invoice of an order refunded in full or cancelled.
    /// An invoice still `requested` is cancelled by the issue path when it
    /// settles (it reads the order's status then); one that failed or was
    /// never asked for has nothing to cancel.
    async fn cancel(
        &self,
        msg: &Incoming,
        change: &InvoiceRequested,
        order_id: Uuid,
        shop_id: Uuid,
    ) -> Result<(), Failure> {
        let env = &msg.envelope;
        let last = msg.attempt >= self.max_attempts;
        let stored: Option<(String, String)> =
            sqlx::query_as("SELECT status, reference FROM invoices WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db)?;
        let reference = match stored {
            Some((status, reference)) if status == InvoiceStatus::Issued.as_str() => reference,
            // Being issued: a later attempt finds it issued; after the last,
            // the issue path cancels it when it settles (it sees the order).
            Some((status, _)) if status == InvoiceStatus::Requested.as_str() && !last => {
                return Err(Failure::Transient(
                    "the invoice is still being issued; it is cancelled once it is".into(),
                ));
            }
            other => {
                tracing::info!(%order_id, status = ?other.map(|(s, _)| s), "no issued invoice to cancel");
                return Ok(());
            }
        };
        let order = env.correlation_id.as_deref().unwrap_or("");
        let why = match change.order_status {
            payhub_core::OrderStatus::Cancelled => "cancelado pela loja",
            _ => "reembolsado ao comprador",
        };
        let text = match change.reason.as_deref() {
            Some(r) if !r.trim().is_empty() => format!("Pedido {order} {why}: {r}"),
            _ => format!("Pedido {order} {why}; venda desfeita"),
        };
        let justification = payhub_connectors::focusnfe::justification(&text)
            .unwrap_or_else(|| "Venda desfeita: pedido reembolsado ou cancelado".into());
        sqlx::query(
            "UPDATE invoices SET cancel_attempts = cancel_attempts + 1, cancel_reason = $2, updated_at = now()
             WHERE order_id = $1 AND status = 'issued'",
        )
        .bind(order_id)
        .bind(&justification)
        .execute(&self.store.pool)
        .await
        .map_err(db)?;
        let end = match self.account(shop_id).await {
            Ok(account) => match self.client.cancel(&account, &reference, &justification).await {
                Ok(CancelState::Cancelled { xml_url }) => Ok(xml_url),
                Ok(CancelState::Refused { reason }) => Err(reason),
                Err(ConnectorError::Transient(e)) if !last => return Err(Failure::Transient(e)),
                Err(ConnectorError::Transient(e)) => Err(format!(
                    "the invoicing service stayed unavailable for {} attempts: {e}",
                    msg.attempt
                )),
                Err(ConnectorError::Permanent(e)) => Err(e),
            },
            Err(Failure::Transient(e)) if !last => return Err(Failure::Transient(e)),
            Err(Failure::Transient(e) | Failure::Permanent(e) | Failure::Unavailable(e)) => Err(e),
        };
        self.settle_cancel(env, change, order_id, end).await
    }

    /// Records a cancellation's end once (per request event), with
    /// `invoice.updated`, in one transaction: `cancelled`, or the invoice
    /// stays `issued` with the reason and the shop's admin is told.
    async fn settle_cancel(
        &self,
        env: &Envelope,
        change: &InvoiceRequested,
        order_id: Uuid,
        end: Result<Option<String>, String>,
    ) -> Result<(), Failure> {
        let mut tx = self.store.begin().await.map_err(db)?;
        if !payhub_store::mark_processed(&mut tx, CANCEL_CONSUMER, env.id)
            .await
            .map_err(db)?
        {
            return Ok(());
        }
        let (changed, status, reason) = match end {
            Ok(xml_url) => {
                let r = sqlx::query(
                    "UPDATE invoices SET status = 'cancelled', cancelled_at = now(), cancel_xml_url = $2,
                         cancel_error = NULL, updated_at = now()
                     WHERE order_id = $1 AND status = 'issued'",
                )
                .bind(order_id)
                .bind(&xml_url)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tracing::info!(%order_id, "invoice cancelled");
                (r.rows_affected(), InvoiceStatus::Cancelled, None)
            }
            Err(reason) => {
                let reason: String = reason.chars().take(1000).collect();
                let r = sqlx::query(
                    "UPDATE invoices SET cancel_error = $2, updated_at = now() WHERE order_id = $1 AND status = 'issued'",
                )
                .bind(order_id)
                .bind(&reason)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tracing::warn!(%order_id, %reason, "invoice not cancelled; the shop's admin will be told");
                (r.rows_affected(), InvoiceStatus::CancelFailed, Some(reason))
            }
        };
        if changed == 0 {
            // Cancelled by another request first.
            tx.commit().await.map_err(db)?;
            return Ok(());
        }
        let invoice = invoicing::for_order_in(&mut tx, order_id).await.map_err(db)?;
        let mut event = Envelope::new(EventPayload::InvoiceUpdated(InvoiceUpdated {
            status,
            service: invoicing::SERVICE.into(),
            number: invoice.as_ref().and_then(|i| i.number.clone()),
            series: invoice.as_ref().and_then(|i| i.series.clone()),
            access_key: invoice.as_ref().and_then(|i| i.access_key.clone()),
            pdf_url: invoice.as_ref().and_then(|i| i.pdf_url.clone()),
            xml_url: invoice
                .as_ref()
                .and_then(|i| i.cancel_xml_url.clone().or(i.xml_url.clone())),
            reason,
            customer_name: change.customer_name.clone(),
            customer_email: change.customer_email.clone(),
            amount: change.amount,
        }));
        event.order_id = env.order_id;
        event.shop_id = env.shop_id;
        event.correlation_id = env.correlation_id.clone();
        event.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut tx, &event).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        let _ = self.outbox.publish_now(std::slice::from_ref(&event)).await;
        Ok(())
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
            Ok(InvoiceState::Cancelled { .. }) => Ok(Some(End::Failed(format!(
                "the NF-e under reference {reference} was cancelled at the invoicing service"
            )))),
            Ok(InvoiceState::Processing) if !last => Err(Failure::Transient(
                "the invoicing service is still processing the invoice".into(),
            )),
            Ok(InvoiceState::Processing) => Ok(Some(
                self.final_check(&account, reference, || {
                    format!(
                        "the invoicing service was still processing the invoice after {} attempts (ref {reference}): check it there",
                        msg.attempt
                    )
                })
                .await,
            )),
            Err(ConnectorError::Transient(e)) if !last => Err(Failure::Transient(e)),
            Err(ConnectorError::Transient(e)) => Ok(Some(
                self.final_check(&account, reference, || {
                    format!(
                        "the invoicing service stayed unavailable for {} attempts: {e}",
                        msg.attempt
                    )
                })
                .await,
            )),
            Err(ConnectorError::Permanent(e)) => Ok(Some(End::Failed(e))),
        }
    }

    /// The last attempt found the service only slow (still processing, or
    /// no answer): after a pause, its status is read once more (`GET
    /// /v2/nfe/REF`) so that an invoice SEFAZ authorised meanwhile is
    /// recorded issued, not failed. `failed` words the failure otherwise.
    async fn final_check(&self, account: &FocusNfeAccount, reference: &str, failed: impl FnOnce() -> String) -> End {
        tokio::time::sleep(self.final_check_after).await;
        let after = humantime_secs(self.final_check_after);
        match self.client.status(account, reference).await {
            Ok(Some(state @ InvoiceState::Issued { .. })) => {
                tracing::info!(
                    reference,
                    "the last attempt's final status read found the invoice issued"
                );
                End::Issued(state)
            }
            Ok(Some(InvoiceState::Rejected { reason })) => End::Failed(reason),
            Ok(Some(InvoiceState::Cancelled { .. })) => End::Failed(format!(
                "the NF-e under reference {reference} was cancelled at the invoicing service"
            )),
            Ok(Some(InvoiceState::Processing)) => {
                End::Failed(format!("{}; still processing when read again {after} later", failed()))
            }
            Ok(None) => End::Failed(format!(
                "{}; the service holds no invoice under ref {reference} when read again {after} later",
                failed()
            )),
            Err(e) => End::Failed(format!("{}; reading it again {after} later failed: {e}", failed())),
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
        let issued = payload.status == InvoiceStatus::Issued;
        let mut event = Envelope::new(EventPayload::InvoiceUpdated(payload));
        event.order_id = env.order_id;
        event.shop_id = env.shop_id;
        event.correlation_id = env.correlation_id.clone();
        event.trace = payhub_telemetry::trace::current_context();
        outbox::add(&mut tx, &event).await.map_err(db)?;
        let mut events = vec![event];
        if issued {
            // Refunded in full or cancelled while its invoice was being
            // issued: the cancellation that found it `requested` left it to
            // this moment. Asked on the same queue, with its own retries.
            let (status, reason): (String, Option<String>) =
                sqlx::query_as("SELECT status, status_reason FROM orders WHERE id = $1")
                    .bind(order_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if let Some(undone @ (payhub_core::OrderStatus::Refunded | payhub_core::OrderStatus::Cancelled)) =
                payhub_core::OrderStatus::parse(&status)
            {
                let mut cancel = Envelope::new(EventPayload::InvoiceRequested(InvoiceRequested {
                    action: InvoiceAction::Cancel,
                    order_status: undone,
                    customer_name: change.customer_name.clone(),
                    customer_email: change.customer_email.clone(),
                    amount: change.amount,
                    reason,
                }));
                cancel.order_id = env.order_id;
                cancel.shop_id = env.shop_id;
                cancel.correlation_id = env.correlation_id.clone();
                cancel.trace = payhub_telemetry::trace::current_context();
                outbox::add(&mut tx, &cancel).await.map_err(db)?;
                tracing::info!(%order_id, status, "the order was undone while its invoice was issued; cancelling it");
                events.push(cancel);
            }
        }
        tx.commit().await.map_err(db)?;
        let _ = self.outbox.publish_now(&events).await;
        Ok(())
    }
}
