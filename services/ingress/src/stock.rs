//! The shop's stock service (`"stock": {"kind": "callback", "url": ...}`):
//! a URL the shop chose, so it is called under the same SSRF policy and
//! through the same address-filtering resolver as shop webhooks
//! (`payhub_service::outbound`), with a capped answer. Whatever goes wrong,
//! the caller (and through it the buyer) hears one of a few fixed words;
//! the URL, the address and the error itself stay in payhub's logs.

use crate::accept::AcceptError;
use payhub_core::url_safety::WebhookUrlPolicy;
use payhub_core::{NewOrder, ValidationErrors};
use payhub_service::outbound;
use std::time::Duration;
use uuid::Uuid;

/// Largest answer read from a stock service; a longer one is not an answer.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The fixed reasons a stock check can fail with, as the caller sees them.
pub mod reason {
    pub const TIMEOUT: &str = "timeout";
    /// Refused by the URL policy, not reachable, or not answering HTTP: one
    /// word for all, so the answer tells nothing about what lies behind.
    pub const UNREACHABLE: &str = "unreachable";
    pub const BAD_ANSWER: &str = "bad answer";
}

#[derive(Clone)]
pub struct StockClient {
    http: reqwest::Client,
    policy: WebhookUrlPolicy,
}

impl StockClient {
    pub fn new(policy: WebhookUrlPolicy) -> Result<StockClient, reqwest::Error> {
        let http = outbound::client_builder(policy)
            .user_agent(concat!("payhub-stock/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(StockClient { http, policy })
    }

    /// Asks the shop's stock service whether the items are available:
    /// `POST {url}` `{"items":[{"code","qty"}]}` answered by
    /// `{"unavailable":["<code>", ...]}` (an empty list or no field: all there).
    pub async fn ask(
        &self,
        shop: Uuid,
        url: &str,
        timeout_ms: u64,
        order: &NewOrder,
    ) -> Result<ValidationErrors, AcceptError> {
        let fail = |public: &'static str, detail: String| {
            // The detail (URL, address, error) is for the operator only.
            tracing::warn!(shop_id = %shop, stock_url = url, detail, "the shop's stock service could not be asked");
            AcceptError::StockUnavailable(public.to_string())
        };
        if let Err(e) = outbound::check_url(&self.policy, url) {
            return Err(fail(reason::UNREACHABLE, format!("unsafe stock URL: {e}")));
        }
        let items: Vec<serde_json::Value> = order
            .items
            .iter()
            .map(|i| serde_json::json!({"code": i.code, "qty": i.qty}))
            .collect();
        let timeout = Duration::from_millis(timeout_ms);
        let call = async {
            let resp = self
                .http
                .post(url)
                .json(&serde_json::json!({"correlationID": order.correlation_id.as_str(), "items": items}))
                .send()
                .await
                .map_err(|e| {
                    let detail = match outbound::refusal(&e) {
                        Some(r) => format!("unsafe stock URL: {r}"),
                        None => format!("{e:#}"),
                    };
                    let public = if e.is_timeout() {
                        reason::TIMEOUT
                    } else {
                        reason::UNREACHABLE
                    };
                    (public, detail)
                })?;
            let status = resp.status();
            if !status.is_success() {
                return Err((reason::BAD_ANSWER, format!("answered {status}")));
            }
            match outbound::read_capped(resp, MAX_ANSWER_BYTES).await {
                Ok(Some(body)) => Ok(body),
                Ok(None) => Err((reason::BAD_ANSWER, format!("answer over {MAX_ANSWER_BYTES} bytes"))),
                Err(e) if e.is_timeout() => Err((reason::TIMEOUT, format!("{e:#}"))),
                Err(e) => Err((reason::BAD_ANSWER, format!("{e:#}"))),
            }
        };
        // One deadline for the whole exchange, answer included.
        let body = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(fail(reason::TIMEOUT, format!("no answer within {timeout:?}"))),
            Ok(Err((public, detail))) => return Err(fail(public, detail)),
            Ok(Ok(body)) => body,
        };
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| fail(reason::BAD_ANSWER, format!("the answer is not JSON: {e}")))?;
        let unavailable: Vec<&str> = answer["unavailable"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut errs = ValidationErrors::default();
        for (i, item) in order.items.iter().enumerate() {
            if item.code.as_deref().is_some_and(|c| unavailable.contains(&c)) {
                errs.push(
                    format!("items[{i}].qty"),
                    "unavailable",
                    format!("item {} is not available", item.code.as_deref().unwrap_or("")),
                );
            }
        }
        Ok(errs)
    }
}
