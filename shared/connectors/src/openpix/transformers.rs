//! OpenPix wire types and their conversion to and from payhub's domain.

use crate::psync::{ChargeStatus, ProviderCharge, ProviderTransaction};
use crate::{ChargeRequest, ConnectorError, CreatedCharge, WebhookEvent};
use payhub_core::events::{ChargeView, PaymentReport};
use payhub_core::{Currency, Money};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChargeBody<'a> {
    #[serde(rename = "correlationID")]
    correlation_id: &'a str,
    /// Centavos.
    value: i64,
    comment: String,
    expires_in: u32,
    customer: CustomerBody<'a>,
    additional_info: Vec<KeyValue<'a>>,
}

#[derive(Debug, Serialize)]
struct CustomerBody<'a> {
    name: &'a str,
    email: &'a str,
    #[serde(rename = "taxID")]
    tax_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

impl<'a> ChargeBody<'a> {
    pub(super) fn from_request(req: &'a ChargeRequest) -> ChargeBody<'a> {
        ChargeBody {
            correlation_id: &req.provider_reference,
            value: req.amount.minor(),
            // OpenPix shows the comment to the payer; it is limited to 140.
            comment: req.description.chars().take(140).collect(),
            expires_in: req.expires_in_secs,
            customer: CustomerBody {
                name: &req.customer.name,
                email: &req.customer.email,
                tax_id: &req.customer.tax_id,
                phone: req.customer.phone.as_deref(),
            },
            additional_info: vec![KeyValue {
                key: "payhub",
                value: &req.provider_reference,
            }],
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreatedResponse {
    charge: ChargeWire,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChargeWire {
    value: i64,
    #[serde(rename = "transactionID")]
    transaction_id: Option<String>,
    identifier: Option<String>,
    #[serde(rename = "correlationID")]
    correlation_id: Option<String>,
    br_code: String,
    payment_link_url: String,
    qr_code_image: String,
    expires_date: Option<String>,
}

pub(super) fn parse_created(text: &str, currency: Currency) -> Result<CreatedCharge, ConnectorError> {
    let r: CreatedResponse = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not a charge: {e}")))?;
    let c = r.charge;
    let id = c
        .transaction_id
        .or(c.identifier)
        .or(c.correlation_id)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's charge has no id".into()))?;
    Ok(CreatedCharge {
        provider_charge_id: id,
        amount: Money::from_minor(c.value, currency),
        view: ChargeView {
            br_code: c.br_code,
            qr_code_image_url: c.qr_code_image,
            payment_link_url: c.payment_link_url,
            expires_at: c.expires_date.and_then(|d| OffsetDateTime::parse(&d, &Rfc3339).ok()),
        },
    })
}

/// `GET /api/v1/charge/{id}`: `{"charge": {...}}`.
pub(super) fn parse_queried_charge(text: &str) -> Result<ProviderCharge, ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    let c = v
        .get("charge")
        .filter(|c| c.is_object())
        .ok_or_else(|| ConnectorError::Transient("OpenPix's answer has no charge".into()))?;
    charge_of(c)
}

/// `GET /api/v1/charge?start&end` (the listing): `{"charges": [...],
/// "pageInfo": {"hasNextPage"}}`; returns the page's charges and whether
/// another page follows.
pub(super) fn parse_charge_list(text: &str) -> Result<(Vec<ProviderCharge>, bool), ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    let list = v
        .get("charges")
        .and_then(Value::as_array)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's listing has no charges".into()))?;
    let charges = list.iter().map(charge_of).collect::<Result<Vec<_>, _>>()?;
    let more = v
        .get("pageInfo")
        .and_then(|p| p.get("hasNextPage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((charges, more))
}

fn charge_of(c: &Value) -> Result<ProviderCharge, ConnectorError> {
    let id = c
        .get("transactionID")
        .or_else(|| c.get("identifier"))
        .and_then(Value::as_str)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's charge has no id".into()))?;
    let value =
        money(c.get("value")).ok_or_else(|| ConnectorError::Transient("OpenPix's charge has no value".into()))?;
    Ok(ProviderCharge {
        charge_id: id.to_string(),
        correlation_id: c.get("correlationID").and_then(Value::as_str).map(str::to_string),
        status: ChargeStatus::parse(c.get("status").and_then(Value::as_str).unwrap_or("")),
        value,
        paid_at: c
            .get("paidAt")
            .and_then(Value::as_str)
            .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok()),
    })
}

/// `GET /api/v1/transaction/{id}`: `{"transaction": {...}}`.
pub(super) fn parse_queried_transaction(text: &str) -> Result<ProviderTransaction, ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    let t = v
        .get("transaction")
        .filter(|t| t.is_object())
        .ok_or_else(|| ConnectorError::Transient("OpenPix's answer has no transaction".into()))?;
    let e2e = t
        .get("endToEndId")
        .and_then(Value::as_str)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's transaction has no endToEndId".into()))?;
    let value =
        money(t.get("value")).ok_or_else(|| ConnectorError::Transient("OpenPix's transaction has no value".into()))?;
    let charge = t.get("charge").filter(|c| c.is_object());
    Ok(ProviderTransaction {
        end_to_end_id: e2e.to_string(),
        value,
        charge_id: charge
            .and_then(|c| c.get("transactionID").or_else(|| c.get("identifier")))
            .and_then(Value::as_str)
            .map(str::to_string),
        correlation_id: charge
            .and_then(|c| c.get("correlationID"))
            .and_then(Value::as_str)
            .map(str::to_string),
        time: t
            .get("time")
            .and_then(Value::as_str)
            .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok()),
    })
}

/// `POST /api/v1/charge/{id}/refund` body: the refund's own correlationID,
/// the value in centavos and an optional comment.
#[derive(Debug, Serialize)]
pub(super) struct RefundBody<'a> {
    #[serde(rename = "correlationID")]
    correlation_id: &'a str,
    value: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

impl<'a> RefundBody<'a> {
    pub(super) fn from_request(req: &'a super::RefundRequest) -> RefundBody<'a> {
        RefundBody {
            correlation_id: &req.correlation_id,
            value: req.amount.minor(),
            comment: req
                .comment
                .as_deref()
                .map(|c| c.chars().filter(|ch| !ch.is_control()).take(140).collect()),
        }
    }
}

/// `{"refund": {"status", "value", "correlationID", "endToEndId", ...}}`.
pub(super) fn parse_refund(text: &str, currency: Currency) -> Result<super::OpenPixRefund, ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    let r = v
        .get("refund")
        .filter(|r| r.is_object())
        .ok_or_else(|| ConnectorError::Transient("OpenPix's answer has no refund".into()))?;
    let raw_status = r.get("status").and_then(Value::as_str).unwrap_or("").to_string();
    let status = match raw_status.as_str() {
        "CONFIRMED" => super::RefundStatus::Confirmed,
        "REJECTED" => super::RefundStatus::Rejected,
        _ => super::RefundStatus::InProcessing,
    };
    let value = r
        .get("value")
        .and_then(Value::as_i64)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's refund has no value".into()))?;
    let text_of = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(super::OpenPixRefund {
        status,
        raw_status,
        amount: Money::from_minor(value, currency),
        correlation_id: text_of("correlationID"),
        end_to_end_id: text_of("endToEndId"),
    })
}

pub(super) fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

fn money(v: Option<&Value>) -> Option<Money> {
    v.and_then(Value::as_i64).map(|c| Money::from_minor(c, Currency::Brl))
}

/// `POST /api/v1/webhook` body: `{"webhook": {name, event, url,
/// authorization?, isActive}}` (providers.md §1.3).
#[derive(Debug, Serialize)]
pub(super) struct NewWebhookBody<'a> {
    webhook: NewWebhookWire<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NewWebhookWire<'a> {
    name: &'a str,
    event: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization: Option<&'a str>,
    is_active: bool,
}

impl<'a> NewWebhookBody<'a> {
    pub(super) fn from_request(req: &'a super::NewWebhook) -> NewWebhookBody<'a> {
        NewWebhookBody {
            webhook: NewWebhookWire {
                name: &req.name,
                event: &req.event,
                url: &req.url,
                authorization: req.authorization.as_ref().map(secrecy::ExposeSecret::expose_secret),
                is_active: true,
            },
        }
    }
}

/// One webhook of a listing or a creation answer. `authorization` is never
/// read: payhub does not keep OpenPix's copy of a secret.
fn webhook_of(w: &Value) -> Option<super::OpenPixWebhook> {
    let text = |k: &str| w.get(k).and_then(Value::as_str).map(str::to_string);
    Some(super::OpenPixWebhook {
        id: text("id").or_else(|| text("_id")),
        name: text("name"),
        event: text("event")?,
        url: text("url")?,
        // A webhook whose answer does not say is taken as switched on, as
        // OpenPix creates them.
        is_active: w.get("isActive").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// `GET /api/v1/webhook`: `{"webhooks": [...], "pageInfo": {...}}` (the
/// Node SDK types the list as `pixQrCodes`; both are read). Returns the
/// page's webhooks and whether another page follows.
pub(super) fn parse_webhook_list(text: &str) -> Result<(Vec<super::OpenPixWebhook>, bool), ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    let list = v
        .get("webhooks")
        .or_else(|| v.get("pixQrCodes"))
        .and_then(Value::as_array)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's answer has no webhook list".into()))?;
    let more = v
        .get("pageInfo")
        .and_then(|p| p.get("hasNextPage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((list.iter().filter_map(webhook_of).collect(), more))
}

/// `POST /api/v1/webhook`: `{"webhook": {...}}`.
pub(super) fn parse_created_webhook(text: &str) -> Result<super::OpenPixWebhook, ConnectorError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConnectorError::Transient(format!("OpenPix's answer is not JSON: {e}")))?;
    v.get("webhook")
        .and_then(webhook_of)
        .ok_or_else(|| ConnectorError::Transient("OpenPix's answer has no webhook".into()))
}

pub(super) fn parse_webhook(body: &[u8]) -> Result<WebhookEvent, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    // Older payloads say `evento`, newer `event`.
    let event = v
        .get("event")
        .or_else(|| v.get("evento"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let charge = v.get("charge").filter(|c| c.is_object());
    if event == "teste_webhook" {
        return Ok(WebhookEvent::TestCall);
    }
    let Some(charge) = charge else {
        // The registration test call carries an event name but no charge.
        if event == "OPENPIX:CHARGE_COMPLETED" || event.is_empty() {
            return Ok(WebhookEvent::TestCall);
        }
        return Ok(WebhookEvent::Ignored {
            event_type: event,
            why: "no charge in the payload".into(),
        });
    };
    let reference = charge
        .get("correlationID")
        .and_then(Value::as_str)
        .ok_or("the charge has no correlationID")?
        .to_string();
    let status = charge.get("status").and_then(Value::as_str).unwrap_or("");
    match (event.as_str(), status) {
        ("OPENPIX:CHARGE_COMPLETED" | "OPENPIX:TRANSACTION_RECEIVED", "COMPLETED") => {
            let pix = v.get("pix").filter(|p| p.is_object());
            let charge_value = money(charge.get("value")).ok_or("the charge has no integer value")?;
            let report = PaymentReport::Completed {
                charge_value,
                paid_value: money(pix.and_then(|p| p.get("value"))),
                end_to_end_id: pix
                    .and_then(|p| p.get("endToEndId"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                transaction_id: charge.get("transactionID").and_then(Value::as_str).map(str::to_string),
                paid_at: charge
                    .get("paidAt")
                    .and_then(Value::as_str)
                    .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok()),
            };
            Ok(WebhookEvent::Payment {
                event_type: event,
                provider_reference: reference,
                report,
            })
        }
        ("OPENPIX:CHARGE_EXPIRED", _) => Ok(WebhookEvent::Payment {
            event_type: event,
            provider_reference: reference,
            report: PaymentReport::Expired,
        }),
        _ => Ok(WebhookEvent::Ignored {
            event_type: event,
            why: format!("charge status {status:?} needs no action"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openpix::{RefundRequest, RefundStatus};

    #[test]
    fn a_refund_goes_out_with_its_own_correlation_id_and_a_bounded_comment() {
        let req = RefundRequest {
            correlation_id: "refund-1".into(),
            amount: Money::from_minor(1000, Currency::Brl),
            comment: Some(format!("defeito\n{}", "x".repeat(200))),
        };
        let body = serde_json::to_value(RefundBody::from_request(&req)).unwrap();
        assert_eq!(body["correlationID"], "refund-1");
        assert_eq!(body["value"], 1000);
        let comment = body["comment"].as_str().unwrap();
        assert_eq!(comment.chars().count(), 140);
        assert!(!comment.contains('\n'));
    }

    #[test]
    fn refund_answers_map_to_their_status() {
        let answer = |status: &str| {
            format!(
                r#"{{"refund":{{"status":"{status}","value":100,"correlationID":"r-1","endToEndId":"E2311444720230418","time":"2023-04-18T14:00:00.000Z","comment":"c"}}}}"#
            )
        };
        let r = parse_refund(&answer("CONFIRMED"), Currency::Brl).unwrap();
        assert_eq!(r.status, RefundStatus::Confirmed);
        assert_eq!(r.amount.minor(), 100);
        assert_eq!(r.correlation_id.as_deref(), Some("r-1"));
        assert_eq!(r.end_to_end_id.as_deref(), Some("E2311444720230418"));
        assert_eq!(
            parse_refund(&answer("REJECTED"), Currency::Brl).unwrap().status,
            RefundStatus::Rejected
        );
        assert_eq!(
            parse_refund(&answer("IN_PROCESSING"), Currency::Brl).unwrap().status,
            RefundStatus::InProcessing
        );
        // A status the docs do not name is never taken as settled.
        assert_eq!(
            parse_refund(&answer("SOMETHING_NEW"), Currency::Brl).unwrap().status,
            RefundStatus::InProcessing
        );
        assert!(
            parse_refund(r#"{"charge":{}}"#, Currency::Brl)
                .unwrap_err()
                .is_transient()
        );
        assert!(parse_refund("not json", Currency::Brl).unwrap_err().is_transient());
    }
}
