//! The sandbox's shared state and the provider-side operations (pay, expire,
//! resend, deliver) that both the library API and the control routes use.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::charges::{self, ChargeBook, SentWebhook};
use crate::faults::{FaultPlan, ProviderFault};
use crate::model::{ReceivedEmail, STATUS_ACTIVE, STATUS_COMPLETED, STATUS_EXPIRED, SandboxCharge, WebhookAttempt};
use crate::shop::ShopState;
use crate::signing::Signer;
use crate::util;

/// Locks a mutex, recovering the data if another thread panicked while
/// holding it (the records stay usable; a test panic must not cascade).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the servers and the [`crate::Sandbox`] handle share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub app_id: String,
    pub provider_addr: SocketAddr,
    pub shop_addr: SocketAddr,
    pub smtp_addr: SocketAddr,
    /// Base of `paymentLinkUrl` / `qrCodeImage`, no trailing slash.
    pub public_base_url: String,
    pub signer: Signer,
    /// Client for outgoing webhooks (10 s timeout, no proxy).
    pub http: reqwest::Client,
    pub webhook_target: RwLock<Option<String>>,
    /// payhub's account: the charges made with `app_id`.
    pub charges: Mutex<ChargeBook>,
    /// Another merchant's account at the same provider
    /// ([`crate::OTHER_MERCHANT_APP_ID`]): a buyer with an account of their
    /// own. Its webhooks are signed with the same key, as OpenPix signs
    /// every merchant's.
    pub other_charges: Mutex<ChargeBook>,
    pub shop: Arc<Mutex<ShopState>>,
    pub emails: Arc<Mutex<Vec<ReceivedEmail>>>,
    /// `POST /api/v1/charge` calls received, whatever their outcome.
    pub charge_requests: AtomicUsize,
    /// The spawned servers, awaited by [`crate::Sandbox::stopped`].
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Cancelled when the sandbox stops; ends held (faulted) requests.
    pub shutdown: CancellationToken,
    /// The active fault of `POST /api/v1/charge`.
    pub provider_fault: Mutex<FaultPlan<ProviderFault>>,
    /// The active fault of the re-queries (`GET` charge and transaction).
    pub query_fault: Mutex<FaultPlan<ProviderFault>>,
    /// Re-queries received (`GET` charge and transaction).
    pub queries: AtomicUsize,
    /// `POST /api/v1/charge/{id}/refund` calls received, whatever their outcome.
    pub refund_requests: AtomicUsize,
    /// The active fault of the refund API.
    pub refund_fault: Mutex<FaultPlan<ProviderFault>>,
    /// Messages the next refund requests are refused with (400), in order.
    pub refund_refusals: Mutex<std::collections::VecDeque<String>>,
    /// How many of the next refunds answer `IN_PROCESSING` instead of settling.
    pub refunds_in_processing: AtomicUsize,
    /// Webhooks held back instead of sent.
    pub held: Mutex<HeldWebhooks>,
    /// The PixelPay-compatible API's merchants, transactions, faults and
    /// collection-webhook deliveries.
    pub pixelpay: crate::pixelpay::PixelPayState,
    /// OpenPix's webhook registration API: each account's webhooks.
    pub openpix_webhooks: crate::webhook_api::WebhookApiState,
    /// Providers in a simulated outage (see `outage.rs`).
    pub outages: Mutex<std::collections::BTreeSet<String>>,
    /// How the charge listing disagrees with the charges (see `listing.rs`).
    pub listing: Mutex<crate::listing::ListingFaults>,
    /// The Focus NFe-compatible invoicing API's invoices and faults.
    pub focusnfe: Mutex<crate::focusnfe::FocusState>,
}

/// While `hold` is set, pay/expire/resend queue their webhook here.
#[derive(Debug, Default)]
pub(crate) struct HeldWebhooks {
    pub hold: bool,
    /// In arrival order.
    pub queue: Vec<HeldWebhook>,
}

/// One queued webhook.
#[derive(Debug, Clone)]
pub(crate) struct HeldWebhook {
    pub correlation_id: String,
    pub sent: SentWebhook,
}

/// What pay/expire/resend return for a webhook that was queued.
fn held_attempt() -> WebhookAttempt {
    WebhookAttempt {
        status: 0,
        body: "held".to_string(),
    }
}

/// Why a provider-side operation failed. Control routes map it to a status.
#[derive(Debug)]
pub(crate) enum OpError {
    /// No charge with that correlationID.
    NotFound(String),
    /// The charge is not in a state that allows the operation.
    Conflict(String),
    /// A caller-supplied argument is invalid.
    Invalid(String),
    /// The state changed but no webhook target is configured to tell.
    NoTarget,
    /// The webhook POST did not get an HTTP answer (connection, timeout).
    Delivery(String),
    /// Building or signing the body failed.
    Internal(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::NotFound(m)
            | OpError::Conflict(m)
            | OpError::Invalid(m)
            | OpError::Delivery(m)
            | OpError::Internal(m) => f.write_str(m),
            OpError::NoTarget => f.write_str("no webhook target is configured"),
        }
    }
}

impl std::error::Error for OpError {}

impl OpError {
    pub(crate) fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) | OpError::NoTarget => StatusCode::CONFLICT,
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::Delivery(_) => StatusCode::BAD_GATEWAY,
            OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Which merchant account at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Account {
    Payhub,
    Other,
}

impl Inner {
    pub(crate) fn book(&self, account: Account) -> &Mutex<ChargeBook> {
        match account {
            Account::Payhub => &self.charges,
            Account::Other => &self.other_charges,
        }
    }

    /// A further payment to a charge that is already `COMPLETED`: a new
    /// endToEndId, then the signed `OPENPIX:TRANSACTION_RECEIVED`.
    pub(crate) async fn pay_again(&self, correlation_id: &str) -> Result<WebhookAttempt, OpError> {
        let now = OffsetDateTime::now_utc();
        let sent = {
            let mut book = lock(&self.charges);
            let c = book
                .get_mut(correlation_id)
                .ok_or_else(|| OpError::NotFound(format!("no charge with correlationID {correlation_id:?}")))?;
            if c.status != STATUS_COMPLETED {
                return Err(OpError::Conflict(format!(
                    "charge {correlation_id:?} is {}, not {STATUS_COMPLETED}",
                    c.status
                )));
            }
            c.extra_payments.push(crate::model::ExtraPayment {
                end_to_end_id: charges::new_end_to_end_id(now),
                value: c.value,
                time: util::iso_millis(now),
            });
            let body = charges::extra_payment_event(c)
                .map_err(|e| OpError::Internal(format!("rendering the webhook: {e}")))?;
            let signature = self
                .signer
                .sign(&body)
                .map_err(|e| OpError::Internal(format!("signing the webhook: {e}")))?;
            let sent = SentWebhook { body, signature };
            book.record_webhook(correlation_id, sent.clone());
            sent
        };
        tracing::info!(correlation_id, "sandbox charge paid again");
        self.dispatch(correlation_id, sent).await
    }

    pub(crate) fn webhook_target(&self) -> Option<String> {
        self.webhook_target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_webhook_target(&self, url: Option<String>) {
        *self.webhook_target.write().unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// Changes an `ACTIVE` charge with `mutate`, renders its events with
    /// `render`, signs them and records them (the last one is what resends
    /// repeat), all under one lock so concurrent calls cannot both succeed.
    /// The change is committed only when rendering and signing worked.
    fn transition(
        &self,
        account: Account,
        correlation_id: &str,
        mutate: impl FnOnce(&mut SandboxCharge),
        render: fn(&SandboxCharge) -> Result<Vec<Vec<u8>>, serde_json::Error>,
    ) -> Result<Vec<SentWebhook>, OpError> {
        let mut book = lock(self.book(account));
        let current = book
            .get(correlation_id)
            .ok_or_else(|| OpError::NotFound(format!("no charge with correlationID {correlation_id:?}")))?;
        if current.status != STATUS_ACTIVE {
            return Err(OpError::Conflict(format!(
                "charge {correlation_id:?} is {}, not {STATUS_ACTIVE}",
                current.status
            )));
        }
        let mut next = current.clone();
        mutate(&mut next);
        let bodies = render(&next).map_err(|e| OpError::Internal(format!("rendering the webhook: {e}")))?;
        let mut sent = Vec::with_capacity(bodies.len());
        for body in bodies {
            let signature = self
                .signer
                .sign(&body)
                .map_err(|e| OpError::Internal(format!("signing the webhook: {e}")))?;
            sent.push(SentWebhook { body, signature });
        }
        if let Some(slot) = book.get_mut(correlation_id) {
            *slot = next;
        }
        for webhook in &sent {
            book.record_webhook(correlation_id, webhook.clone());
        }
        Ok(sent)
    }

    /// The payer pays: `ACTIVE` → `COMPLETED`, then the signed
    /// `OPENPIX:CHARGE_COMPLETED` webhook goes to the target. The payment
    /// stands even when the delivery fails (resend it later).
    pub(crate) async fn pay(&self, correlation_id: &str, paid_value: Option<i64>) -> Result<WebhookAttempt, OpError> {
        self.pay_events(Account::Payhub, correlation_id, paid_value, false)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| OpError::Internal("no webhook was rendered".into()))
    }

    /// [`Inner::pay`]; with `transaction_received` the payment is reported
    /// twice, as `OPENPIX:CHARGE_COMPLETED` and then
    /// `OPENPIX:TRANSACTION_RECEIVED` (same pix). Both deliveries are tried;
    /// the first failure is the error.
    pub(crate) async fn pay_events(
        &self,
        account: Account,
        correlation_id: &str,
        paid_value: Option<i64>,
        transaction_received: bool,
    ) -> Result<Vec<WebhookAttempt>, OpError> {
        if let Some(v) = paid_value
            && v <= 0
        {
            return Err(OpError::Invalid(
                "the paid value must be greater than 0 centavos".into(),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let render: fn(&SandboxCharge) -> Result<Vec<Vec<u8>>, serde_json::Error> = if transaction_received {
            charges::completed_and_received_events
        } else {
            |c| Ok(vec![charges::completed_event(c)?])
        };
        let sent = self.transition(
            account,
            correlation_id,
            |c| {
                let at = util::iso_millis(now);
                c.status = STATUS_COMPLETED.to_string();
                c.paid_value = Some(paid_value.unwrap_or(c.value));
                c.end_to_end_id = Some(charges::new_end_to_end_id(now));
                c.paid_at = Some(at.clone());
                c.updated_at = at;
            },
            render,
        )?;
        tracing::info!(correlation_id, transaction_received, "sandbox charge paid");
        let mut attempts = Vec::with_capacity(sent.len());
        let mut first_error = None;
        for webhook in sent {
            match self.dispatch(correlation_id, webhook).await {
                Ok(attempt) => attempts.push(attempt),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(attempts),
        }
    }

    /// `ACTIVE` → `EXPIRED`, then the signed `OPENPIX:CHARGE_EXPIRED` webhook.
    pub(crate) async fn expire(&self, correlation_id: &str) -> Result<WebhookAttempt, OpError> {
        let now = OffsetDateTime::now_utc();
        let mut sent = self.transition(
            Account::Payhub,
            correlation_id,
            |c| {
                c.status = STATUS_EXPIRED.to_string();
                c.updated_at = util::iso_millis(now);
            },
            |c| Ok(vec![charges::expired_event(c)?]),
        )?;
        tracing::info!(correlation_id, "sandbox charge expired");
        let webhook = sent
            .pop()
            .ok_or_else(|| OpError::Internal("no webhook was rendered".into()))?;
        self.dispatch(correlation_id, webhook).await
    }

    /// Sends the last webhook of a charge again, byte for byte.
    pub(crate) async fn resend_last(&self, correlation_id: &str) -> Result<WebhookAttempt, OpError> {
        let sent = {
            let mut book = lock(&self.charges);
            if book.get(correlation_id).is_none() {
                return Err(OpError::NotFound(format!(
                    "no charge with correlationID {correlation_id:?}"
                )));
            }
            let sent = book
                .last_webhook(correlation_id)
                .cloned()
                .ok_or_else(|| OpError::Conflict(format!("no webhook was sent yet for charge {correlation_id:?}")))?;
            book.count_resend(correlation_id);
            sent
        };
        self.dispatch(correlation_id, sent).await
    }

    /// Sends a charge's webhook now, or queues it while webhooks are held.
    async fn dispatch(&self, correlation_id: &str, sent: SentWebhook) -> Result<WebhookAttempt, OpError> {
        {
            let mut held = lock(&self.held);
            if held.hold {
                held.queue.push(HeldWebhook {
                    correlation_id: correlation_id.to_string(),
                    sent,
                });
                tracing::info!(correlation_id, queued = held.queue.len(), "webhook held");
                return Ok(held_attempt());
            }
        }
        self.deliver_to_target(&sent.body, Some(&sent.signature)).await
    }

    /// Holds webhooks back (or sends them directly again; the queue stays).
    pub(crate) fn set_hold(&self, hold: bool) -> usize {
        let mut held = lock(&self.held);
        held.hold = hold;
        held.queue.len()
    }

    /// Sends the queued webhooks one after the other, in arrival order or
    /// reversed, whether or not webhooks are still held. Stops at the first
    /// one that gets no HTTP answer; it and the unsent ones go back to the
    /// front of the queue (in arrival order).
    pub(crate) async fn release_held(&self, reverse: bool) -> Result<Vec<WebhookAttempt>, OpError> {
        let mut batch = std::mem::take(&mut lock(&self.held).queue);
        if reverse {
            batch.reverse();
        }
        let Some(target) = self.webhook_target() else {
            self.requeue(batch, reverse);
            return Err(OpError::NoTarget);
        };
        let total = batch.len();
        let mut attempts = Vec::with_capacity(total);
        let mut pending = batch.into_iter();
        while let Some(webhook) = pending.next() {
            tracing::info!(correlation_id = %webhook.correlation_id, "releasing a held webhook");
            match self
                .deliver(&target, &webhook.sent.body, Some(&webhook.sent.signature))
                .await
            {
                Ok(attempt) => attempts.push(attempt),
                Err(e) => {
                    let delivered = attempts.len();
                    let rest = std::iter::once(webhook).chain(pending).collect();
                    self.requeue(rest, reverse);
                    return Err(OpError::Delivery(format!(
                        "{delivered} of {total} held webhooks delivered, the rest stay queued: {e}"
                    )));
                }
            }
        }
        Ok(attempts)
    }

    /// Puts unsent webhooks (in release order) back at the queue's front.
    fn requeue(&self, mut rest: Vec<HeldWebhook>, reversed: bool) {
        if reversed {
            rest.reverse();
        }
        let mut held = lock(&self.held);
        held.queue.splice(0..0, rest);
    }

    /// The queued webhooks, for the control routes: correlationID and event.
    pub(crate) fn held_summary(&self) -> (bool, Vec<serde_json::Value>) {
        let held = lock(&self.held);
        let queue = held
            .queue
            .iter()
            .map(|w| {
                let event = serde_json::from_slice::<serde_json::Value>(&w.sent.body)
                    .ok()
                    .and_then(|v| v.get("event").cloned())
                    .unwrap_or(serde_json::Value::Null);
                serde_json::json!({ "correlationID": w.correlation_id, "event": event })
            })
            .collect();
        (held.hold, queue)
    }

    /// POSTs `body` to the configured webhook target.
    pub(crate) async fn deliver_to_target(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<WebhookAttempt, OpError> {
        let target = self.webhook_target().ok_or(OpError::NoTarget)?;
        self.deliver(&target, body, signature).await
    }

    /// One webhook POST as OpenPix makes it. Any HTTP answer is an `Ok`
    /// (the caller looks at the status); no answer at all is an `Err`.
    async fn deliver(&self, target: &str, body: &[u8], signature: Option<&str>) -> Result<WebhookAttempt, OpError> {
        let mut request = self
            .http
            .post(target)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "node-fetch")
            .body(body.to_vec());
        if let Some(sig) = signature {
            request = request.header("x-webhook-signature", sig);
        }
        let response = request.send().await.map_err(|e| {
            let cause = util::error_chain(&e);
            tracing::warn!(target, error = %cause, "webhook delivery failed");
            OpError::Delivery(format!("POST {target} failed: {cause}"))
        })?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| {
            let cause = util::error_chain(&e);
            tracing::warn!(target, status, error = %cause, "reading the webhook answer failed");
            OpError::Delivery(format!("reading the answer of {target} failed: {cause}"))
        })?;
        tracing::info!(target, status, "webhook delivered");
        Ok(WebhookAttempt { status, body })
    }
}
