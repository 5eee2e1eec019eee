//! OpenPix charges: parsing a `POST /api/v1/charge` body, the in-memory book
//! of charges, and the OpenPix wire shapes (charge object, webhook events).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::model::{STATUS_ACTIVE, SandboxCharge};
use crate::util;

/// Who the sandbox pretends to be: the merchant account behind the AppID.
const MERCHANT_NAME: &str = "PAYHUB SANDBOX";
const MERCHANT_CITY: &str = "SAO PAULO";
const COMPANY_ID: &str = "6810ce3b892866f1a0b1c2d3";
const COMPANY_NAME: &str = "payhub sandbox";
const COMPANY_TAX_ID: &str = "11222333000181";
/// The account's PIX key (a random key, as OpenPix accounts use).
const PIX_KEY: &str = "0b9a2c53-6f0e-4d8e-9b8a-5d1f0c2e7a41";
/// The sandbox payer, with a valid CPF.
const PAYER_NAME: &str = "Pagador Sandbox";
const PAYER_CPF: &str = "47043622050";
/// ISPB of the payer's bank in endToEndIds.
const PAYER_ISPB: &str = "18236120";
/// OpenPix's fee. The sandbox charges none so figures reconcile exactly.
const FEE: i64 = 0;

/// Default and minimum `expiresIn`, in seconds.
pub(crate) const DEFAULT_EXPIRES_IN: i64 = 86_400;
pub(crate) const MIN_EXPIRES_IN: i64 = 300;

/// The longest URL the BR Code's merchant account field (26) can carry:
/// 99 characters minus the GUI (`0014br.gov.bcb.pix`, 18) and the `25nn` header (4).
const MAX_LOCATION_LEN: usize = 99 - 18 - 4;

/// A validated `POST /api/v1/charge` body.
#[derive(Debug, Clone)]
pub(crate) struct NewCharge {
    pub correlation_id: String,
    pub value: i64,
    pub comment: String,
    pub expires_in: i64,
    /// The customer in OpenPix's echoed form, or `Value::Null`.
    pub customer: Value,
    pub additional_info: Value,
}

/// Validates a create-charge body the way OpenPix does (approximately); the
/// `Err` text goes into the 400 `{"error": ...}` reply.
pub(crate) fn parse_new_charge(body: &[u8]) -> Result<NewCharge, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let Value::Object(obj) = json else {
        return Err("the request body must be a JSON object".into());
    };

    let correlation_id = match obj.get("correlationID") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err("correlationID is required".into());
        }
        Some(_) => return Err("correlationID must be a string".into()),
    };

    let value = match obj.get("value") {
        None | Some(Value::Null) => return Err("value is required".into()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v > 0 => v,
            _ => return Err("value must be an integer number of centavos greater than 0".into()),
        },
        Some(_) => return Err("value must be an integer number of centavos".into()),
    };

    if let Some(t) = obj.get("type") {
        match t {
            Value::Null => {}
            Value::String(s) if s == "DYNAMIC" => {}
            _ => return Err("type is not supported by the sandbox (only DYNAMIC)".into()),
        }
    }

    let comment = match obj.get("comment") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("comment must be a string".into()),
    };

    // The schema says string, the examples say number: accept both.
    let expires_in = match obj.get("expiresIn") {
        None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| "expiresIn must be an integer number of seconds".to_string())?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| "expiresIn must be an integer number of seconds".to_string())?,
        Some(_) => return Err("expiresIn must be an integer number of seconds".into()),
    };
    if expires_in < MIN_EXPIRES_IN {
        return Err(format!("expiresIn must be at least {MIN_EXPIRES_IN} seconds"));
    }
    // Keep the expiry date representable.
    if expires_in > 10 * 365 * 86_400 {
        return Err("expiresIn is too large".into());
    }

    let customer = match obj.get("customer") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(c)) => parse_customer(c)?,
        Some(_) => return Err("customer must be an object".into()),
    };

    let additional_info = match obj.get("additionalInfo") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(Value::Array(items)) => {
            for item in items {
                let ok =
                    item.get("key").is_some_and(Value::is_string) && item.get("value").is_some_and(Value::is_string);
                if !ok {
                    return Err("additionalInfo items must be {\"key\": string, \"value\": string}".into());
                }
            }
            Value::Array(items.clone())
        }
        Some(_) => return Err("additionalInfo must be an array".into()),
    };

    Ok(NewCharge {
        correlation_id,
        value,
        comment,
        expires_in,
        customer,
        additional_info,
    })
}

/// An optional string field of `obj`, trimmed; empty counts as absent.
fn opt_str(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(format!("customer.{field} must be a string")),
    }
}

/// OpenPix wants a name plus one of taxID, email or phone; it echoes the
/// taxID back as `{"taxID": digits, "type": "BR:CPF"|"BR:CNPJ"}`.
fn parse_customer(c: &Map<String, Value>) -> Result<Value, String> {
    let name = opt_str(c, "name")?.ok_or("customer.name is required")?;
    let email = opt_str(c, "email")?;
    let phone = opt_str(c, "phone")?;
    let tax_id = opt_str(c, "taxID")?;
    if email.is_none() && phone.is_none() && tax_id.is_none() {
        return Err("customer needs a taxID, an email or a phone besides the name".into());
    }
    if let Some(e) = &email {
        let valid = e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
        if !valid {
            return Err("customer.email is not a valid e-mail address".into());
        }
    }

    let mut out = Map::new();
    out.insert("name".into(), Value::String(name));
    if let Some(e) = email {
        out.insert("email".into(), Value::String(e));
    }
    if let Some(p) = phone {
        out.insert("phone".into(), Value::String(p));
    }
    if let Some(t) = tax_id {
        let parsed = payhub_core::identity::TaxId::parse(&t).map_err(|e| format!("customer.taxID {e}"))?;
        let kind = match parsed {
            payhub_core::identity::TaxId::Cpf(_) => "BR:CPF",
            payhub_core::identity::TaxId::Cnpj(_) => "BR:CNPJ",
            // TaxId::parse reads CPFs and CNPJs only.
            payhub_core::identity::TaxId::National(_) => return Err("customer.taxID must be a CPF or a CNPJ".into()),
        };
        out.insert(
            "taxID".into(),
            serde_json::json!({ "taxID": parsed.digits(), "type": kind }),
        );
    }
    let customer_id = match c.get("correlationID") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    out.insert("correlationID".into(), Value::String(customer_id));
    Ok(Value::Object(out))
}

/// Builds the stored charge for a validated request. `base_url` is the
/// sandbox's public base (no trailing slash).
pub(crate) fn build_charge(new: NewCharge, base_url: &str, now: OffsetDateTime) -> SandboxCharge {
    let transaction_id = util::hex32();
    let payment_link_id = uuid::Uuid::new_v4().to_string();
    let expires = now + time::Duration::seconds(new.expires_in);

    // The dynamic code points at a `cob` location URL (scheme-less, as in BR Codes).
    let host = base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .unwrap_or(base_url);
    let mut location = format!("{host}/qr/v1/{transaction_id}");
    if location.len() > MAX_LOCATION_LEN || !location.is_ascii() {
        location = format!("sandbox.payhub.local/qr/v1/{transaction_id}");
    }
    let br_code = payhub_core::brcode::dynamic(
        &location,
        &util::centavos_to_major(new.value),
        MERCHANT_NAME,
        MERCHANT_CITY,
        &transaction_id,
    );

    let created = util::iso_millis(now);
    SandboxCharge {
        correlation_id: new.correlation_id,
        value: new.value,
        status: STATUS_ACTIVE.to_string(),
        br_code,
        payment_link_url: format!("{base_url}/pay/{payment_link_id}"),
        qr_code_image_url: format!("{base_url}/openpix/charge/brcode/image/{payment_link_id}.png"),
        global_id: STANDARD.encode(format!("Charge:{}", util::hex_n(24))),
        transaction_id,
        payment_link_id,
        comment: new.comment,
        expires_in: new.expires_in,
        expires_date: util::iso_millis(expires),
        created_at: created.clone(),
        updated_at: created,
        customer: new.customer,
        additional_info: new.additional_info,
        paid_at: None,
        paid_value: None,
        end_to_end_id: None,
        webhooks_sent: 0,
        extra_payments: Vec::new(),
        refunds: Vec::new(),
    }
}

/// A webhook body already sent for a charge, kept for byte-identical resends.
#[derive(Debug, Clone)]
pub(crate) struct SentWebhook {
    pub body: Vec<u8>,
    pub signature: String,
}

#[derive(Debug)]
struct Entry {
    charge: SandboxCharge,
    last_webhook: Option<SentWebhook>,
}

/// Every charge, in creation order, indexed by correlationID.
#[derive(Debug, Default)]
pub(crate) struct ChargeBook {
    entries: Vec<Entry>,
    by_correlation: HashMap<String, usize>,
}

impl ChargeBook {
    pub(crate) fn get(&self, correlation_id: &str) -> Option<&SandboxCharge> {
        self.by_correlation
            .get(correlation_id)
            .map(|&i| &self.entries[i].charge)
    }

    pub(crate) fn get_mut(&mut self, correlation_id: &str) -> Option<&mut SandboxCharge> {
        self.by_correlation
            .get(correlation_id)
            .map(|&i| &mut self.entries[i].charge)
    }

    /// Every charge, in creation order, borrowed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SandboxCharge> {
        self.entries.iter().map(|e| &e.charge)
    }

    /// By correlationID or transactionID, as `GET /api/v1/charge/{id}` allows.
    pub(crate) fn find(&self, id: &str) -> Option<&SandboxCharge> {
        self.get(id)
            .or_else(|| self.entries.iter().map(|e| &e.charge).find(|c| c.transaction_id == id))
    }

    /// The payment with this endToEndId, as `GET /api/v1/transaction/{id}`
    /// finds it: the charge it paid, its value and time.
    pub(crate) fn find_payment(&self, end_to_end_id: &str) -> Option<(&SandboxCharge, i64, String)> {
        self.entries.iter().map(|e| &e.charge).find_map(|c| {
            if c.end_to_end_id.as_deref() == Some(end_to_end_id) {
                let time = c.paid_at.clone().unwrap_or_else(|| c.updated_at.clone());
                return Some((c, c.paid_value.unwrap_or(c.value), time));
            }
            c.extra_payments
                .iter()
                .find(|p| p.end_to_end_id == end_to_end_id)
                .map(|p| (c, p.value, p.time.clone()))
        })
    }

    pub(crate) fn find_by_payment_link(&self, payment_link_id: &str) -> Option<&SandboxCharge> {
        self.entries
            .iter()
            .map(|e| &e.charge)
            .find(|c| c.payment_link_id == payment_link_id)
    }

    /// Adds a charge whose correlationID is not yet in the book.
    pub(crate) fn insert(&mut self, charge: SandboxCharge) {
        self.by_correlation
            .insert(charge.correlation_id.clone(), self.entries.len());
        self.entries.push(Entry {
            charge,
            last_webhook: None,
        });
    }

    pub(crate) fn all(&self) -> Vec<SandboxCharge> {
        self.entries.iter().map(|e| e.charge.clone()).collect()
    }

    pub(crate) fn last_webhook(&self, correlation_id: &str) -> Option<&SentWebhook> {
        let &i = self.by_correlation.get(correlation_id)?;
        self.entries[i].last_webhook.as_ref()
    }

    /// Remembers the last body sent for a charge and counts the send.
    pub(crate) fn record_webhook(&mut self, correlation_id: &str, sent: SentWebhook) {
        if let Some(&i) = self.by_correlation.get(correlation_id) {
            self.entries[i].last_webhook = Some(sent);
            self.entries[i].charge.webhooks_sent += 1;
        }
    }

    /// Counts a resend of the stored body.
    pub(crate) fn count_resend(&mut self, correlation_id: &str) {
        if let Some(&i) = self.by_correlation.get(correlation_id) {
            self.entries[i].charge.webhooks_sent += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// OpenPix wire shapes. Structs (not `json!`) so field order matches the
// documented examples whatever serde_json features the workspace enables.

/// `charge.paymentMethods.pix`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PixMethodView<'a> {
    method: &'static str,
    tx_id: &'a str,
    value: i64,
    status: &'a str,
    fee: i64,
    br_code: &'a str,
    #[serde(rename = "transactionID")]
    transaction_id: &'a str,
    identifier: &'a str,
    qr_code_image: &'a str,
}

#[derive(Serialize)]
struct PaymentMethodsView<'a> {
    pix: PixMethodView<'a>,
}

/// The OpenPix `charge` object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChargeView<'a> {
    value: i64,
    comment: &'a str,
    identifier: &'a str,
    #[serde(rename = "transactionID")]
    transaction_id: &'a str,
    status: &'a str,
    additional_info: &'a Value,
    fee: i64,
    discount: i64,
    value_with_discount: i64,
    expires_date: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "correlationID")]
    correlation_id: &'a str,
    #[serde(rename = "paymentLinkID")]
    payment_link_id: &'a str,
    created_at: &'a str,
    updated_at: &'a str,
    customer: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<&'a str>,
    payer: Value,
    #[serde(rename = "ensureSameTaxID")]
    ensure_same_tax_id: bool,
    br_code: &'a str,
    expires_in: i64,
    pix_key: &'static str,
    payment_link_url: &'a str,
    qr_code_image: &'a str,
    #[serde(rename = "globalID")]
    global_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_methods: Option<PaymentMethodsView<'a>>,
}

/// Renders a charge as OpenPix does; `payment_methods` adds the
/// `paymentMethods.pix` block (present on `charge`, absent on `pix.charge`).
pub(crate) fn charge_view(c: &SandboxCharge, payment_methods: bool) -> ChargeView<'_> {
    ChargeView {
        value: c.value,
        comment: &c.comment,
        identifier: &c.transaction_id,
        transaction_id: &c.transaction_id,
        status: &c.status,
        additional_info: &c.additional_info,
        fee: FEE,
        discount: 0,
        value_with_discount: c.value,
        expires_date: &c.expires_date,
        kind: "DYNAMIC",
        correlation_id: &c.correlation_id,
        payment_link_id: &c.payment_link_id,
        created_at: &c.created_at,
        updated_at: &c.updated_at,
        customer: &c.customer,
        paid_at: c.paid_at.as_deref(),
        payer: Value::Null,
        ensure_same_tax_id: false,
        br_code: &c.br_code,
        expires_in: c.expires_in,
        pix_key: PIX_KEY,
        payment_link_url: &c.payment_link_url,
        qr_code_image: &c.qr_code_image_url,
        global_id: &c.global_id,
        payment_methods: payment_methods.then(|| PaymentMethodsView {
            pix: PixMethodView {
                method: "PIX_COB",
                tx_id: &c.transaction_id,
                value: c.value,
                status: &c.status,
                fee: FEE,
                br_code: &c.br_code,
                transaction_id: &c.transaction_id,
                identifier: &c.transaction_id,
                qr_code_image: &c.qr_code_image_url,
            },
        }),
    }
}

/// The `pix` object of a `CHARGE_COMPLETED` event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PixView<'a> {
    customer: &'a Value,
    payer: Value,
    charge: ChargeView<'a>,
    value: i64,
    time: &'a str,
    end_to_end_id: &'a str,
    #[serde(rename = "transactionID")]
    transaction_id: &'a str,
    info_pagador: &'a str,
    status: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: &'a str,
    #[serde(rename = "globalID")]
    global_id: String,
}

#[derive(Serialize)]
struct CompanyView {
    id: &'static str,
    name: &'static str,
    #[serde(rename = "taxID")]
    tax_id: &'static str,
}

#[derive(Serialize)]
struct AccountView {
    environment: &'static str,
}

#[derive(Serialize)]
struct EventView<'a> {
    event: &'static str,
    charge: ChargeView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pix: Option<PixView<'a>>,
    company: CompanyView,
    account: AccountView,
}

fn company() -> CompanyView {
    CompanyView {
        id: COMPANY_ID,
        name: COMPANY_NAME,
        tax_id: COMPANY_TAX_ID,
    }
}

/// A fresh PIX endToEndId: `E` + ISPB (8) + `yyyyMMddHHmm` + 11 alphanumerics = 32 chars.
pub(crate) fn new_end_to_end_id(now: OffsetDateTime) -> String {
    format!("E{PAYER_ISPB}{}{}", util::compact_minutes(now), util::hex_n(11))
}

/// Event names of a payment.
pub(crate) const EVENT_CHARGE_COMPLETED: &str = "OPENPIX:CHARGE_COMPLETED";
pub(crate) const EVENT_TRANSACTION_RECEIVED: &str = "OPENPIX:TRANSACTION_RECEIVED";

/// One PIX payment's identity, shared by every event that reports it.
struct PixIdentity {
    payer: Value,
    global_id: String,
}

impl PixIdentity {
    fn new() -> PixIdentity {
        PixIdentity {
            payer: serde_json::json!({
                "name": PAYER_NAME,
                "taxID": { "taxID": PAYER_CPF, "type": "BR:CPF" },
                "correlationID": uuid::Uuid::new_v4().to_string(),
            }),
            global_id: STANDARD.encode(format!("PixTransaction:{}", util::hex_n(24))),
        }
    }
}

/// An event with `charge` and `pix` for a charge already marked paid
/// (`paid_at`, `paid_value`, `end_to_end_id` set).
fn paid_event(c: &SandboxCharge, event: &'static str, pix: &PixIdentity) -> Result<Vec<u8>, serde_json::Error> {
    payment_event(
        c,
        event,
        pix,
        c.paid_at.as_deref().unwrap_or(&c.updated_at),
        c.paid_value.unwrap_or(c.value),
        c.end_to_end_id.as_deref().unwrap_or_default(),
    )
}

/// The `OPENPIX:TRANSACTION_RECEIVED` body of a charge's last extra payment.
pub(crate) fn extra_payment_event(c: &SandboxCharge) -> Result<Vec<u8>, serde_json::Error> {
    let p = c.extra_payments.last().cloned().unwrap_or(crate::model::ExtraPayment {
        end_to_end_id: String::new(),
        value: c.value,
        time: c.updated_at.clone(),
    });
    payment_event(
        c,
        EVENT_TRANSACTION_RECEIVED,
        &PixIdentity::new(),
        &p.time,
        p.value,
        &p.end_to_end_id,
    )
}

/// `GET /api/v1/transaction/{id}`'s `transaction` object.
pub(crate) fn transaction_view(c: &SandboxCharge, value: i64, time: &str, end_to_end_id: &str) -> Value {
    serde_json::json!({
        "charge": charge_view(c, false),
        "value": value,
        "time": time,
        "endToEndId": end_to_end_id,
        "transactionID": c.transaction_id,
        "infoPagador": c.comment,
        "type": "PAYMENT",
        "globalID": STANDARD.encode(format!("PixTransaction:{end_to_end_id}")),
    })
}

fn payment_event(
    c: &SandboxCharge,
    event: &'static str,
    pix: &PixIdentity,
    paid_at: &str,
    value: i64,
    end_to_end_id: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    let info = if c.comment.is_empty() {
        "payhub sandbox"
    } else {
        &c.comment
    };
    let event = EventView {
        event,
        charge: charge_view(c, true),
        pix: Some(PixView {
            customer: &c.customer,
            payer: pix.payer.clone(),
            charge: charge_view(c, false),
            value,
            time: paid_at,
            end_to_end_id,
            transaction_id: &c.transaction_id,
            info_pagador: info,
            status: "CONFIRMED",
            kind: "PAYMENT",
            created_at: paid_at,
            global_id: pix.global_id.clone(),
        }),
        company: company(),
        account: AccountView { environment: "TESTING" },
    };
    serde_json::to_vec(&event)
}

/// The `OPENPIX:CHARGE_COMPLETED` body for a charge already marked paid
/// (`paid_at`, `paid_value`, `end_to_end_id` set).
pub(crate) fn completed_event(c: &SandboxCharge) -> Result<Vec<u8>, serde_json::Error> {
    paid_event(c, EVENT_CHARGE_COMPLETED, &PixIdentity::new())
}

/// The two bodies OpenPix sends for one paid charge: `OPENPIX:CHARGE_COMPLETED`
/// and `OPENPIX:TRANSACTION_RECEIVED`, with the same charge and the same pix
/// (endToEndId, payer, globalID).
pub(crate) fn completed_and_received_events(c: &SandboxCharge) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    let pix = PixIdentity::new();
    Ok(vec![
        paid_event(c, EVENT_CHARGE_COMPLETED, &pix)?,
        paid_event(c, EVENT_TRANSACTION_RECEIVED, &pix)?,
    ])
}

/// The `OPENPIX:CHARGE_EXPIRED` body: the charge, no `pix`.
pub(crate) fn expired_event(c: &SandboxCharge) -> Result<Vec<u8>, serde_json::Error> {
    let event = EventView {
        event: "OPENPIX:CHARGE_EXPIRED",
        charge: charge_view(c, true),
        pix: None,
        company: company(),
        account: AccountView { environment: "TESTING" },
    };
    serde_json::to_vec(&event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NewCharge, String> {
        parse_new_charge(v.to_string().as_bytes())
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse(json!({
            "correlationID": "9134e286-6f71-427a-bf00-241681624587", "value": 100, "comment": "good",
            "customer": {"name": "Dan", "taxID": "31324227036", "email": "email0@example.com", "phone": "5511999999999"},
            "additionalInfo": [{"key": "Order", "value": "302"}]
        }))
        .expect("valid");
        assert_eq!(c.value, 100);
        assert_eq!(c.expires_in, DEFAULT_EXPIRES_IN);
        assert_eq!(c.customer["taxID"], json!({"taxID": "31324227036", "type": "BR:CPF"}));
        assert_eq!(c.customer["name"], "Dan");
        assert!(c.customer["correlationID"].is_string());
    }

    #[test]
    fn rejects_bad_bodies() {
        for (body, needle) in [
            (json!({"value": 100}), "correlationID"),
            (json!({"correlationID": "", "value": 100}), "correlationID"),
            (json!({"correlationID": 5, "value": 100}), "correlationID"),
            (json!({"correlationID": "a"}), "value"),
            (json!({"correlationID": "a", "value": 0}), "value"),
            (json!({"correlationID": "a", "value": -1}), "value"),
            (json!({"correlationID": "a", "value": 1.5}), "value"),
            (json!({"correlationID": "a", "value": "100"}), "value"),
            (json!({"correlationID": "a", "value": 1, "expiresIn": 299}), "expiresIn"),
            (
                json!({"correlationID": "a", "value": 1, "customer": {"name": "x"}}),
                "customer",
            ),
            (
                json!({"correlationID": "a", "value": 1, "customer": {"email": "a@b.c"}}),
                "customer.name",
            ),
            (
                json!({"correlationID": "a", "value": 1, "customer": {"name": "x", "taxID": "12345678901"}}),
                "taxID",
            ),
            (
                json!({"correlationID": "a", "value": 1, "additionalInfo": [{"key": 1}]}),
                "additionalInfo",
            ),
            (json!([1, 2]), "object"),
        ] {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert!(err.contains(needle), "{body}: {err}");
        }
        assert!(parse_new_charge(b"{not json").is_err());
    }

    #[test]
    fn accepts_string_expires_in_and_cnpj() {
        let c = parse(json!({"correlationID": "a", "value": 1, "expiresIn": "600",
            "customer": {"name": "ACME", "taxID": "44.720.743/0001-01"}}))
        .expect("valid");
        assert_eq!(c.expires_in, 600);
        assert_eq!(
            c.customer["taxID"],
            json!({"taxID": "44720743000101", "type": "BR:CNPJ"})
        );
    }

    #[test]
    fn built_charges_carry_a_valid_br_code() {
        let new = parse(json!({"correlationID": "order-1", "value": 1234})).expect("valid");
        let now = OffsetDateTime::now_utc();
        let c = build_charge(new.clone(), "http://127.0.0.1:8090", now);
        assert!(payhub_core::brcode::is_valid(&c.br_code), "{}", c.br_code);
        assert!(c.br_code.contains("540512.34"));
        assert!(c.br_code.contains("127.0.0.1:8090/qr/v1/"));
        assert_eq!(c.transaction_id.len(), 32);
        // A base URL too long for the BR Code falls back to a short location.
        let long = format!("https://{}.example.com", "x".repeat(80));
        let c = build_charge(new, &long, now);
        assert!(payhub_core::brcode::is_valid(&c.br_code), "{}", c.br_code);
        assert!(c.payment_link_url.starts_with(&long));
    }

    #[test]
    fn events_have_the_documented_shape() {
        let new = parse(json!({"correlationID": "order-1", "value": 500,
            "customer": {"name": "Dan", "taxID": "31324227036"}}))
        .expect("valid");
        let now = OffsetDateTime::now_utc();
        let mut c = build_charge(new, "http://127.0.0.1:1", now);
        c.status = crate::model::STATUS_COMPLETED.into();
        c.paid_at = Some(util::iso_millis(now));
        c.paid_value = Some(400);
        c.end_to_end_id = Some(new_end_to_end_id(now));
        let v: Value = serde_json::from_slice(&completed_event(&c).expect("serializes")).expect("json");
        assert_eq!(v["event"], "OPENPIX:CHARGE_COMPLETED");
        assert_eq!(v["charge"]["status"], "COMPLETED");
        assert_eq!(v["charge"]["value"], 500);
        assert_eq!(v["charge"]["correlationID"], "order-1");
        assert_eq!(v["charge"]["customer"]["taxID"]["type"], "BR:CPF");
        assert_eq!(v["pix"]["value"], 400);
        assert_eq!(v["pix"]["status"], "CONFIRMED");
        assert_eq!(v["pix"]["type"], "PAYMENT");
        assert_eq!(v["pix"]["endToEndId"].as_str().map(str::len), Some(32));
        assert_eq!(v["pix"]["transactionID"], v["charge"]["transactionID"]);
        assert!(v["pix"]["charge"].get("paymentMethods").is_none());
        assert_eq!(v["account"]["environment"], "TESTING");

        let both = completed_and_received_events(&c).expect("serializes");
        let [completed, received] = [&both[0], &both[1]].map(|b| serde_json::from_slice::<Value>(b).expect("json"));
        assert_eq!(completed["event"], EVENT_CHARGE_COMPLETED);
        assert_eq!(received["event"], EVENT_TRANSACTION_RECEIVED);
        assert_eq!(received["charge"], completed["charge"]);
        assert_eq!(received["pix"], completed["pix"]);

        c.status = crate::model::STATUS_EXPIRED.into();
        let v: Value = serde_json::from_slice(&expired_event(&c).expect("serializes")).expect("json");
        assert_eq!(v["event"], "OPENPIX:CHARGE_EXPIRED");
        assert_eq!(v["charge"]["status"], "EXPIRED");
        assert!(v.get("pix").is_none());
    }
}
