//! Focus NFe API v2: the invoicing service payhub hands paid orders'
//! invoices to (issue 12 §3; providers-2.md §5.2).
//!
//! Chosen over NFE.io and Nuvem Fiscal for the clearest public contract: one
//! flat JSON layout for the NF-e, an explicit homologation host
//! (`https://homologacao.focusnfe.com.br`), documented status and error
//! tables. Auth is HTTP Basic with the company's token as the user and an
//! empty password; each shop's token is its own (a provider account).
//!
//! Idempotency is Focus's own `ref`, unique per token: payhub sends the
//! order's id. Before every request the client reads `GET /v2/nfe/REF`, so
//! a retry after a lost answer finds the invoice the service already
//! received and never asks for a second one; a request the service refuses
//! because the `ref` is already processing or authorised is read back the
//! same way.

pub mod transformers;

use crate::ConnectorError;
use crate::metrics::Outcome;
use payhub_core::identity::TaxId;
use payhub_core::order::{Address, Item};
use payhub_core::{Money, PaymentMethod};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
pub use transformers::{NfeRequest, NotInvoiceable};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_justification_is_cleaned_and_bounded() {
        assert_eq!(justification("curta"), None);
        assert_eq!(
            justification("Pedido\n p-1   reembolsado\tao comprador").as_deref(),
            Some("Pedido p-1 reembolsado ao comprador")
        );
        let long = "x".repeat(400);
        assert_eq!(justification(&long).map(|j| j.chars().count()), Some(255));
        let accented = "é".repeat(300);
        assert_eq!(justification(&accented).map(|j| j.chars().count()), Some(255));
    }
}

/// What the connector does: NF-e (goods) only; the `ref` is the
/// idempotency key; status read back; cancellation (`DELETE /v2/nfe/REF`);
/// no webhooks (Focus's are unsigned, so payhub reads the status itself).
pub const DOCUMENTS: &[&str] = &["nfe"];
pub const SERVICE: &str = "focusnfe";

/// A paid order as the invoice needs it (read from the stored order).
#[derive(Debug, Clone)]
pub struct InvoiceOrder {
    pub correlation_id: String,
    pub items: Vec<Item>,
    pub items_total: Money,
    pub tax: Money,
    pub freight: Money,
    pub discount: Money,
    pub total: Money,
    pub customer_name: String,
    pub customer_email: String,
    pub customer_phone: Option<String>,
    pub customer_tax_id: TaxId,
    pub shipping_address: Option<Address>,
    pub method: PaymentMethod,
    pub paid_at: time::OffsetDateTime,
}

/// Where an invoice stands at the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceState {
    /// Queued; SEFAZ has not answered yet.
    Processing,
    Issued {
        number: String,
        series: Option<String>,
        access_key: Option<String>,
        pdf_url: Option<String>,
        xml_url: Option<String>,
    },
    /// Refused by SEFAZ (or denied): the reason in its words.
    Rejected { reason: String },
    /// Issued, then cancelled (the cancellation's XML, when given).
    Cancelled { xml_url: Option<String> },
}

/// How a cancellation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelState {
    /// SEFAZ accepted it (now or before).
    Cancelled { xml_url: Option<String> },
    /// Refused (`erro_cancelamento`: past the deadline, ...) or the NF-e was
    /// never authorised: the reason in SEFAZ's or Focus's words.
    Refused { reason: String },
}

/// Focus's bounds on a cancellation's justification, in characters.
pub const JUSTIFICATION_CHARS: std::ops::RangeInclusive<usize> = 15..=255;

/// A justification Focus accepts: control characters become spaces,
/// whitespace is collapsed, and the text is cut to 255 characters; `None`
/// when fewer than 15 remain.
pub fn justification(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cut: String = cleaned.chars().take(*JUSTIFICATION_CHARS.end()).collect();
    let cut = cut.trim_end().to_string();
    JUSTIFICATION_CHARS.contains(&cut.chars().count()).then_some(cut)
}

/// A shop's account at Focus NFe: the host and the token.
#[derive(Clone)]
pub struct FocusNfeAccount {
    pub endpoint: String,
    pub token: SecretString,
}

impl std::fmt::Debug for FocusNfeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FocusNfeAccount")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct FocusNfeClient {
    http: reqwest::Client,
}

impl FocusNfeClient {
    pub fn new(timeout: Duration) -> Result<FocusNfeClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payhub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(FocusNfeClient { http })
    }

    async fn call(
        &self,
        operation: &'static str,
        account: &FocusNfeAccount,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String), ConnectorError> {
        let started = std::time::Instant::now();
        let answer = request.basic_auth(account.token.expose_secret(), Some("")).send().await;
        let result = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(text) => Ok((status, text)),
                    Err(e) => Err((e, "reading Focus NFe's answer failed")),
                }
            }
            Err(e) => Err((e, "calling Focus NFe failed")),
        };
        let outcome = match &result {
            Ok((404, _)) if operation == "invoice_status" => Outcome::Ok,
            Ok((status, _)) => Outcome::of_status(*status),
            Err((e, _)) => Outcome::of_error(e),
        };
        crate::metrics::observe(SERVICE, operation, outcome, started.elapsed());
        result.map_err(|(e, what)| ConnectorError::Transient(format!("{what}: {}", crate::openpix::without_url(&e))))
    }

    fn base(account: &FocusNfeAccount) -> &str {
        account.endpoint.trim_end_matches('/')
    }

    /// `GET /v2/nfe/REF`: `None` when the service never received it.
    #[tracing::instrument(skip_all, fields(service = SERVICE, reference = %reference))]
    pub async fn status(
        &self,
        account: &FocusNfeAccount,
        reference: &str,
    ) -> Result<Option<InvoiceState>, ConnectorError> {
        let url = format!("{}/v2/nfe/{reference}", Self::base(account));
        let (status, text) = self.call("invoice_status", account, self.http.get(&url)).await?;
        match status {
            404 => Ok(None),
            200..=299 => transformers::parse_status(&text, Self::base(account))
                .map(Some)
                .map_err(ConnectorError::Permanent),
            _ => Err(refusal(status, &text)),
        }
    }

    /// Asks for the invoice under `reference` unless the service has it
    /// already (or has just failed it, when it may be asked again), and
    /// reads where it stands.
    #[tracing::instrument(skip_all, fields(service = SERVICE, reference = %reference))]
    pub async fn issue(
        &self,
        account: &FocusNfeAccount,
        reference: &str,
        request: &NfeRequest,
    ) -> Result<InvoiceState, ConnectorError> {
        match self.status(account, reference).await? {
            // Received before (a retry after a lost answer): never again.
            Some(InvoiceState::Processing) => return self.settle(account, reference).await,
            Some(state @ InvoiceState::Issued { .. }) => return Ok(state),
            // Failed before: it is not asked again (the shop's admin decides).
            Some(state @ InvoiceState::Rejected { .. }) => return Ok(state),
            // Issued and cancelled already: never issued again.
            Some(state @ InvoiceState::Cancelled { .. }) => return Ok(state),
            None => {}
        }
        let url = format!("{}/v2/nfe?ref={reference}", Self::base(account));
        let (status, text) = self
            .call("invoice_request", account, self.http.post(&url).json(request))
            .await?;
        match status {
            200..=299 => {}
            // The ref is processing or authorised already (a request racing
            // this one): read it back.
            422 if matches!(
                transformers::error_code(&text).as_deref(),
                Some("nfe_autorizada" | "em_processamento" | "already_processed")
            ) => {}
            _ => return Err(refusal(status, &text)),
        }
        self.settle(account, reference).await
    }

    /// Cancels the NF-e under `reference` (`DELETE /v2/nfe/REF` with the
    /// justification, synchronous), unless the status read first says it is
    /// cancelled already (a retry after a lost answer) or was never issued.
    #[tracing::instrument(skip_all, fields(service = SERVICE, reference = %reference))]
    pub async fn cancel(
        &self,
        account: &FocusNfeAccount,
        reference: &str,
        justification: &str,
    ) -> Result<CancelState, ConnectorError> {
        if !JUSTIFICATION_CHARS.contains(&justification.chars().count()) {
            return Err(ConnectorError::Permanent(
                "a cancellation's justification has 15 to 255 characters".into(),
            ));
        }
        match self.status(account, reference).await? {
            Some(InvoiceState::Cancelled { xml_url }) => return Ok(CancelState::Cancelled { xml_url }),
            Some(InvoiceState::Issued { .. }) => {}
            Some(InvoiceState::Processing) => {
                return Err(ConnectorError::Transient(
                    "the NF-e is still being authorised; it is cancelled once it is".into(),
                ));
            }
            Some(InvoiceState::Rejected { reason }) => {
                return Ok(CancelState::Refused {
                    reason: format!("the NF-e was never authorised ({reason})"),
                });
            }
            None => {
                return Ok(CancelState::Refused {
                    reason: "the invoicing service holds no NF-e under this reference".into(),
                });
            }
        }
        let url = format!("{}/v2/nfe/{reference}", Self::base(account));
        let body = serde_json::json!({ "justificativa": justification });
        let (status, text) = self
            .call("invoice_cancel", account, self.http.delete(&url).json(&body))
            .await?;
        match status {
            200..=299 => transformers::parse_cancel(&text, Self::base(account)).map_err(ConnectorError::Permanent),
            _ => Err(refusal(status, &text)),
        }
    }

    /// Reads the status once more: SEFAZ usually answers within the call.
    async fn settle(&self, account: &FocusNfeAccount, reference: &str) -> Result<InvoiceState, ConnectorError> {
        Ok(self
            .status(account, reference)
            .await?
            .unwrap_or(InvoiceState::Processing))
    }
}

/// An unsuccessful answer: 5xx, 429 and 408 are worth another attempt.
fn refusal(status: u16, text: &str) -> ConnectorError {
    let msg = format!("Focus NFe answered {status}: {}", transformers::error_message(text));
    if status >= 500 || status == 429 || status == 408 {
        ConnectorError::Transient(msg)
    } else {
        ConnectorError::Permanent(msg)
    }
}
