//! OpenPix / Woovi: PIX charges and their webhooks (providers.md §1).

mod registration;
mod transformers;

pub use registration::{NewWebhook, OpenPixWebhook, WEBHOOK_EVENTS};

use crate::capabilities::{Capabilities, Flow, Operation};
use crate::metrics::Outcome;
use crate::psync::{PaymentQuery, ProviderCharge, ProviderTransaction};
use crate::rsa::TrustedKeys;
use crate::{
    ChargeConnector, ChargeRequest, ConnectorError, CreatedCharge, WebhookEvent, WebhookRejection, WebhookVerifier,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use payhub_core::Money;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// OpenPix's published webhook key (RSA-1024; the same for production and
/// sandbox). The default trust set of the webhook verifier.
pub const OPENPIX_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC/+NtIkjzevvqD+I3MMv3bLXDt
pvxBjY4BsRrSdca3rtAwMcRYYvxSnd7jagVLpctMiOxQO8ieUCKLSWHpsMAjO/zZ
WMKbqoG8MNpi/u3fp6zz0mcHCOSqYsPUUG19buW8bis5ZZ2IZgBObWSpTvJ0cnj6
HKBAA82Jln+lGwS1MwIDAQAB
-----END PUBLIC KEY-----
";

pub const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// A push payment: a PIX charge now, the webhook later; refunds whole or in
/// part; charges re-queried; webhooks registered through the API.
pub const CAPABILITIES: Capabilities = Capabilities {
    provider: payhub_core::Provider::Openpix,
    flow: Flow::Push,
    operations: &[
        Operation::CreateCharge,
        Operation::Status,
        Operation::Refund,
        Operation::PartialRefund,
        Operation::RegisterWebhooks,
    ],
    currencies: &[payhub_core::Currency::Brl],
    account_currencies: false,
};

/// The charge API client.
#[derive(Clone)]
pub struct OpenPixClient {
    http: reqwest::Client,
    base_url: String,
    app_id: SecretString,
}

impl std::fmt::Debug for OpenPixClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPixClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl OpenPixClient {
    pub fn new(base_url: &str, app_id: SecretString, timeout: Duration) -> Result<OpenPixClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payhub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OpenPixClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            app_id,
        })
    }

    /// The same client (connection pool, timeouts, base URL) under another
    /// account's AppID: a shop's own OpenPix account.
    pub fn with_app_id(&self, app_id: SecretString) -> OpenPixClient {
        OpenPixClient {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            app_id,
        }
    }
}

impl ChargeConnector for OpenPixClient {
    #[tracing::instrument(skip_all, fields(provider = "openpix", reference = %req.provider_reference))]
    async fn create_charge(&self, req: &ChargeRequest) -> Result<CreatedCharge, ConnectorError> {
        let body = transformers::ChargeBody::from_request(req);
        // return_existing makes a repeat (after a crash or a retry) return the
        // charge already created instead of failing: the provider side of
        // our idempotency.
        let url = format!("{}/api/v1/charge?return_existing=true", self.base_url);
        let (status, text) = self.call("create_charge", self.http.post(&url).json(&body)).await?;
        if status.is_success() {
            return transformers::parse_created(&text, req.amount.currency());
        }
        Err(refusal(status, &text))
    }
}

impl OpenPixClient {
    /// Sends `request` under the AppID and reads the whole answer; the call
    /// is timed and counted under `operation` ([`crate::metrics`]).
    pub(crate) async fn call(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), ConnectorError> {
        let started = std::time::Instant::now();
        let answer = self.call_unmeasured(request).await;
        let outcome = match &answer {
            Ok((status, _)) if status.as_u16() == 404 && operation.starts_with("query") => Outcome::Ok,
            Ok((status, _)) => Outcome::of_status(status.as_u16()),
            Err((_, outcome)) => *outcome,
        };
        crate::metrics::observe("openpix", operation, outcome, started.elapsed());
        answer.map_err(|(e, _)| e)
    }

    async fn call_unmeasured(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), (ConnectorError, Outcome)> {
        let resp = request
            .header("Authorization", self.app_id.expose_secret())
            .send()
            .await
            .map_err(|e| {
                (
                    ConnectorError::Transient(format!("calling OpenPix failed: {}", without_url(&e))),
                    Outcome::of_error(&e),
                )
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            (
                ConnectorError::Transient(format!("reading OpenPix's answer failed: {}", without_url(&e))),
                Outcome::of_error(&e),
            )
        })?;
        Ok((status, text))
    }

    /// `GET {path}` under the AppID: `Ok(None)` on 404.
    async fn get_json(&self, operation: &'static str, path: &str) -> Result<Option<String>, ConnectorError> {
        let url = format!("{}{path}", self.base_url);
        let (status, text) = self.call(operation, self.http.get(&url)).await?;
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if status.is_success() {
            return Ok(Some(text));
        }
        Err(refusal(status, &text))
    }
}

/// An unsuccessful answer: 5xx, 429 and 408 are worth another attempt.
fn refusal(status: reqwest::StatusCode, text: &str) -> ConnectorError {
    let msg = format!(
        "OpenPix answered {}: {}",
        status.as_u16(),
        transformers::error_message(text)
    );
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        ConnectorError::Transient(msg)
    } else {
        ConnectorError::Permanent(msg)
    }
}

/// What payhub asks OpenPix to give back of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The refund's own idempotency key at OpenPix (not the charge's):
    /// the same key again is the same refund.
    pub correlation_id: String,
    pub amount: Money,
    /// Shown with the refund; OpenPix keeps at most 140 characters.
    pub comment: Option<String>,
}

/// Where a refund stands at OpenPix (`IN_PROCESSING|CONFIRMED|REJECTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Accepted and on its way; not yet settled. Any status OpenPix's
    /// documentation does not name is taken as this (never as settled).
    InProcessing,
    Confirmed,
    Rejected,
}

/// OpenPix's answer to a charge refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPixRefund {
    pub status: RefundStatus,
    /// The status as OpenPix wrote it.
    pub raw_status: String,
    pub amount: Money,
    pub correlation_id: Option<String>,
    /// The refund's PIX endToEndId (`D…`): the refund webhooks name it.
    pub end_to_end_id: Option<String>,
}

impl OpenPixClient {
    /// `POST /api/v1/charge/{chargeCorrelationID}/refund` (providers-2.md
    /// §1.3 a): gives `req.amount` of the charge back to the payer. OpenPix
    /// refuses (4xx, [`ConnectorError::Permanent`] with its message) what it
    /// will not do, e.g. more than the charge has left. A timeout or 5xx is
    /// [`ConnectorError::Transient`]: the refund may or may not exist, and the
    /// same `correlation_id` again asks about the same refund.
    #[tracing::instrument(skip_all, fields(provider = "openpix", refund = %req.correlation_id))]
    pub async fn refund_charge(
        &self,
        charge_correlation_id: &str,
        req: &RefundRequest,
    ) -> Result<OpenPixRefund, ConnectorError> {
        let body = transformers::RefundBody::from_request(req);
        let url = format!(
            "{}/api/v1/charge/{}/refund",
            self.base_url,
            segment(charge_correlation_id)
        );
        let (status, text) = self.call("refund", self.http.post(&url).json(&body)).await?;
        if status.is_success() {
            return transformers::parse_refund(&text, req.amount.currency());
        }
        Err(refusal(status, &text))
    }
}

/// Path segments are percent-encoded: ids come from stored data and
/// webhooks, and must never change the path.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PaymentQuery for OpenPixClient {
    #[tracing::instrument(skip_all, fields(provider = "openpix"))]
    async fn query_charge(&self, charge_id: &str) -> Result<Option<ProviderCharge>, ConnectorError> {
        match self
            .get_json("query_charge", &format!("/api/v1/charge/{}", segment(charge_id)))
            .await?
        {
            None => Ok(None),
            Some(text) => transformers::parse_queried_charge(&text).map(Some),
        }
    }

    #[tracing::instrument(skip_all, fields(provider = "openpix"))]
    async fn query_transaction(&self, end_to_end_id: &str) -> Result<Option<ProviderTransaction>, ConnectorError> {
        match self
            .get_json(
                "query_transaction",
                &format!("/api/v1/transaction/{}", segment(end_to_end_id)),
            )
            .await?
        {
            None => Ok(None),
            Some(text) => transformers::parse_queried_transaction(&text).map(Some),
        }
    }
}

impl OpenPixClient {
    /// The account's charges created from `start` to `end` (OpenPix's
    /// listing for reconciliation, `GET /api/v1/charge?start&end`, 100 a
    /// page, at most 50 pages: narrow the window beyond that).
    #[tracing::instrument(skip_all, fields(provider = "openpix", operation = "list_charges"))]
    pub async fn list_charges(
        &self,
        start: time::OffsetDateTime,
        end: time::OffsetDateTime,
    ) -> Result<Vec<ProviderCharge>, ConnectorError> {
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let mut all = Vec::new();
        for page in 0..50 {
            let url = reqwest::Url::parse_with_params(
                &format!("{}/api/v1/charge", self.base_url),
                &[
                    ("start", fmt(start)),
                    ("end", fmt(end)),
                    ("skip", (page * 100).to_string()),
                    ("limit", "100".to_string()),
                ],
            )
            .map_err(|e| ConnectorError::Permanent(format!("the listing URL: {e}")))?;
            let (status, text) = self.call("list_charges", self.http.get(url)).await?;
            if !status.is_success() {
                return Err(refusal(status, &text));
            }
            let (charges, more) = transformers::parse_charge_list(&text)?;
            all.extend(charges);
            if !more {
                return Ok(all);
            }
        }
        Err(ConnectorError::Permanent(
            "more than 5000 charges in the window: narrow it".into(),
        ))
    }
}

/// Describes a transport error without echoing the URL (which is ours, but
/// keeps logs free of anything a query string might carry).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request error"
    };
    let mut detail = e.to_string();
    if let Some(u) = e.url() {
        detail = detail.replace(u.as_str(), "<openpix>");
    }
    format!("{kind} ({detail})")
}

/// Verifies `x-webhook-signature`: base64 RSA-SHA256 (PKCS#1 v1.5) over the
/// raw body, against any trusted key.
#[derive(Debug, Clone)]
pub struct OpenPixWebhooks {
    keys: TrustedKeys,
}

impl OpenPixWebhooks {
    pub fn new(keys: TrustedKeys) -> OpenPixWebhooks {
        OpenPixWebhooks { keys }
    }

    /// Trusting OpenPix's published key only.
    pub fn published() -> OpenPixWebhooks {
        OpenPixWebhooks {
            keys: TrustedKeys::from_pem(OPENPIX_PUBLIC_KEY_PEM).expect("the compiled-in key parses"),
        }
    }
}

impl WebhookVerifier for OpenPixWebhooks {
    fn verify(&self, signature_header: Option<&str>, body: &[u8]) -> Result<(), WebhookRejection> {
        let sig = signature_header
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(WebhookRejection::MissingSignature)?;
        let raw = STANDARD.decode(sig).map_err(|_| WebhookRejection::MalformedSignature)?;
        if raw.len() < 64 {
            return Err(WebhookRejection::MalformedSignature);
        }
        if self.keys.verify(body, &raw) {
            Ok(())
        } else {
            Err(WebhookRejection::BadSignature)
        }
    }

    fn parse(&self, body: &[u8]) -> Result<WebhookEvent, String> {
        transformers::parse_webhook(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::events::PaymentReport;

    const BODY: &[u8] = include_bytes!("../../../../tests/fixtures/openpix/charge-completed.json");
    const SIG: &str = include_str!("../../../../tests/fixtures/openpix/charge-completed.json.sandbox-sig");
    const SANDBOX_KEY: &str = include_str!("../../../../tests/fixtures/sandbox-openpix-public.pem");

    fn sandbox() -> OpenPixWebhooks {
        OpenPixWebhooks::new(TrustedKeys::from_pem(SANDBOX_KEY).unwrap())
    }

    #[test]
    fn valid_signature_verifies() {
        assert_eq!(sandbox().verify(Some(SIG), BODY), Ok(()));
    }

    #[test]
    fn tampered_body_fails() {
        let mut body = BODY.to_vec();
        let pos = body.windows(7).position(|w| w == b"\"value\"").unwrap();
        body[pos + 9] = b'9';
        assert_eq!(sandbox().verify(Some(SIG), &body), Err(WebhookRejection::BadSignature));
    }

    #[test]
    fn wrong_key_fails() {
        assert_eq!(
            OpenPixWebhooks::published().verify(Some(SIG), BODY),
            Err(WebhookRejection::BadSignature)
        );
    }

    #[test]
    fn malformed_and_missing_headers_fail() {
        assert_eq!(sandbox().verify(None, BODY), Err(WebhookRejection::MissingSignature));
        assert_eq!(
            sandbox().verify(Some("  "), BODY),
            Err(WebhookRejection::MissingSignature)
        );
        assert_eq!(
            sandbox().verify(Some("not base64 !!"), BODY),
            Err(WebhookRejection::MalformedSignature)
        );
        assert_eq!(
            sandbox().verify(Some("AAAA"), BODY),
            Err(WebhookRejection::MalformedSignature)
        );
    }

    #[test]
    fn either_of_two_trusted_keys_verifies() {
        let both =
            OpenPixWebhooks::new(TrustedKeys::from_pem(&format!("{OPENPIX_PUBLIC_KEY_PEM}{SANDBOX_KEY}")).unwrap());
        assert_eq!(both.verify(Some(SIG), BODY), Ok(()));
    }

    #[test]
    fn parses_documented_payloads() {
        let w = OpenPixWebhooks::published();
        match w.parse(BODY).unwrap() {
            WebhookEvent::Payment {
                provider_reference,
                report:
                    PaymentReport::Completed {
                        charge_value,
                        paid_value,
                        end_to_end_id,
                        ..
                    },
                ..
            } => {
                assert_eq!(provider_reference, "3f2a2690-8224-4aae-a1ba-ed26d4d61f81");
                assert_eq!(charge_value.minor(), 1);
                assert_eq!(paid_value.map(|m| m.minor()), Some(1));
                assert_eq!(end_to_end_id.as_deref(), Some("E18236120202509241507s0123456789"));
            }
            other => panic!("{other:?}"),
        }
        let expired = include_bytes!("../../../../tests/fixtures/openpix/charge-expired.json");
        assert!(matches!(
            w.parse(expired).unwrap(),
            WebhookEvent::Payment {
                report: PaymentReport::Expired,
                ..
            }
        ));
        let test_call = include_bytes!("../../../../tests/fixtures/openpix/webhook-test-call.json");
        assert_eq!(w.parse(test_call).unwrap(), WebhookEvent::TestCall);
        assert_eq!(
            w.parse(br#"{"data_criacao":"x","event":"OPENPIX:CHARGE_COMPLETED"}"#)
                .unwrap(),
            WebhookEvent::TestCall
        );
        assert!(matches!(
            w.parse(br#"{"event":"OPENPIX:MOVEMENT_CONFIRMED"}"#).unwrap(),
            WebhookEvent::Ignored { .. }
        ));
        assert!(w.parse(b"not json").is_err());
    }
}
