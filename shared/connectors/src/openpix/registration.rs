//! Registering payhub's webhooks at an OpenPix account (providers.md §1.3,
//! providers-2.md §1.5a): `GET /api/v1/webhook` lists the account's
//! webhooks, `POST /api/v1/webhook` creates one. One registration carries
//! one event, so an account needs one per event payhub acts on
//! ([`WEBHOOK_EVENTS`]). OpenPix answers a creation only after a test call
//! to the URL got 200 (webhook-verifier answers it as `test_call`).

use super::{OpenPixClient, refusal, transformers};
use crate::ConnectorError;
use secrecy::SecretString;

/// The events payhub needs at every OpenPix account: a charge paid, a
/// charge expired, and payhub's own refunds settled or refused (the refund
/// events the docs name for a merchant refunding its buyer).
pub const WEBHOOK_EVENTS: [&str; 4] = [
    "OPENPIX:CHARGE_COMPLETED",
    "OPENPIX:CHARGE_EXPIRED",
    "PIX_TRANSACTION_REFUND_SENT_CONFIRMED",
    "PIX_TRANSACTION_REFUND_SENT_REJECTED",
];

/// Most pages of webhooks read from one account (100 each).
const MAX_PAGES: usize = 20;
const PAGE: usize = 100;

/// A webhook to create. `Debug` never shows the authorization.
#[derive(Clone)]
pub struct NewWebhook {
    /// Shown in OpenPix's dashboard.
    pub name: String,
    pub event: String,
    pub url: String,
    /// The static value OpenPix echoes in the webhook's headers, if any.
    pub authorization: Option<SecretString>,
}

impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("name", &self.name)
            .field("event", &self.event)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A webhook as the account has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPixWebhook {
    /// OpenPix's id of the webhook, when its answer gives one.
    pub id: Option<String>,
    pub name: Option<String>,
    pub event: String,
    pub url: String,
    pub is_active: bool,
}

impl OpenPixClient {
    /// Every webhook of the account (`GET /api/v1/webhook`, page by page).
    #[tracing::instrument(skip_all, fields(provider = "openpix"))]
    pub async fn list_webhooks(&self) -> Result<Vec<OpenPixWebhook>, ConnectorError> {
        let mut all = Vec::new();
        for page in 0..MAX_PAGES {
            let url = format!("{}/api/v1/webhook?skip={}&limit={PAGE}", self.base_url, page * PAGE);
            let (status, text) = self.call("list_webhooks", self.http.get(&url)).await?;
            if !status.is_success() {
                return Err(refusal(status, &text));
            }
            let (webhooks, more) = transformers::parse_webhook_list(&text)?;
            let full = webhooks.len() >= PAGE;
            all.extend(webhooks);
            if !more && !full {
                break;
            }
        }
        Ok(all)
    }

    /// The health probe: one cheap authenticated read (the first webhook of
    /// the account, `GET /api/v1/webhook?limit=1`). `Ok`: OpenPix answered
    /// under these credentials; [`ConnectorError::Transient`]: no usable
    /// answer (down); [`ConnectorError::Permanent`]: it refused the AppID.
    #[tracing::instrument(skip_all, fields(provider = "openpix", operation = "probe"))]
    pub async fn probe(&self) -> Result<(), ConnectorError> {
        let url = format!("{}/api/v1/webhook?skip=0&limit=1", self.base_url);
        let (status, text) = self.call("probe", self.http.get(&url)).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(refusal(status, &text))
    }

    /// Creates one webhook (`POST /api/v1/webhook`). A refusal (4xx, e.g.
    /// the URL did not answer OpenPix's test call) is
    /// [`ConnectorError::Permanent`] with OpenPix's message.
    #[tracing::instrument(skip_all, fields(provider = "openpix", event = %req.event))]
    pub async fn register_webhook(&self, req: &NewWebhook) -> Result<OpenPixWebhook, ConnectorError> {
        let url = format!("{}/api/v1/webhook", self.base_url);
        let body = transformers::NewWebhookBody::from_request(req);
        let (status, text) = self.call("register_webhook", self.http.post(&url).json(&body)).await?;
        if !status.is_success() {
            return Err(refusal(status, &text));
        }
        transformers::parse_created_webhook(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listings_and_creations_and_sends_the_documented_body() {
        let listed = r#"{"webhooks": [
            {"id": "W1", "name": "payhub", "event": "OPENPIX:CHARGE_COMPLETED", "url": "https://h/webhooks/openpix",
             "authorization": "s3cret", "isActive": true},
            {"id": "W2", "event": "OPENPIX:CHARGE_EXPIRED", "url": "https://h/webhooks/openpix", "isActive": false},
            {"id": "W3", "url": "https://h/no-event"}
        ], "pageInfo": {"skip": 0, "limit": 100, "hasNextPage": true}}"#;
        let (hooks, more) = transformers::parse_webhook_list(listed).unwrap();
        assert!(more);
        assert_eq!(hooks.len(), 2, "a webhook without an event is skipped");
        assert_eq!(hooks[0].id.as_deref(), Some("W1"));
        assert!(hooks[0].is_active && !hooks[1].is_active);
        // The Node SDK's name for the list.
        let (sdk, more) = transformers::parse_webhook_list(r#"{"pixQrCodes": []}"#).unwrap();
        assert!(sdk.is_empty() && !more);
        assert!(transformers::parse_webhook_list(r#"{"error": "x"}"#).is_err());

        let created = transformers::parse_created_webhook(
            r#"{"webhook": {"id": "W4", "event": "OPENPIX:CHARGE_EXPIRED", "url": "https://h/webhooks/openpix"}}"#,
        )
        .unwrap();
        assert_eq!(created.id.as_deref(), Some("W4"));
        assert!(
            created.is_active,
            "created webhooks are on unless OpenPix says otherwise"
        );

        let req = NewWebhook {
            name: "payhub OPENPIX:CHARGE_EXPIRED".into(),
            event: "OPENPIX:CHARGE_EXPIRED".into(),
            url: "https://h/webhooks/openpix".into(),
            authorization: None,
        };
        let body = serde_json::to_value(transformers::NewWebhookBody::from_request(&req)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"webhook": {"name": "payhub OPENPIX:CHARGE_EXPIRED", "event": "OPENPIX:CHARGE_EXPIRED",
                                           "url": "https://h/webhooks/openpix", "isActive": true}})
        );
        let with_secret = NewWebhook {
            authorization: Some(SecretString::from("s3cret")),
            ..req
        };
        assert!(!format!("{with_secret:?}").contains("s3cret"));
    }
}
