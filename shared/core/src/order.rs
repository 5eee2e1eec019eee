//! An order as a shop submits it, parsed and validated into domain types.
//!
//! Items follow PixelPay's `content` rules (seed 003): `title` 3..60,
//! `price` and `total` required, `qty` an integer above zero, `tax` the line's
//! total tax, and `total` = `price` × `qty` without tax. The order's `total`
//! must equal Σ item totals + Σ item taxes + freight − discount.

use crate::identity::{CorrelationId, Email, TaxId, check_visible_text, parse_cep, parse_phone, parse_uf};
use crate::money::{Currency, Money};
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The payment providers payhub creates charges at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// PIX through OpenPix / Woovi.
    Openpix,
    /// Cards through PixelPay's Direct API (sale, authorise and capture).
    Pixelpay,
    /// Pago Seguro's web checkout (Colombia): the buyer's browser posts a
    /// signed form to Pago Seguro and comes back with an untrusted return.
    Pagoseguro,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openpix => "openpix",
            Provider::Pixelpay => "pixelpay",
            Provider::Pagoseguro => "pagoseguro",
        }
    }

    /// How the provider is paid: a PIX charge, or a card charged at once.
    pub fn method(self) -> PaymentMethod {
        match self {
            Provider::Openpix => PaymentMethod::Pix,
            Provider::Pixelpay => PaymentMethod::Card,
            Provider::Pagoseguro => PaymentMethod::Redirect,
        }
    }

    pub fn parse(s: &str) -> Result<Provider, &'static str> {
        match s {
            "openpix" => Ok(Provider::Openpix),
            "pixelpay" => Ok(Provider::Pixelpay),
            "pagoseguro" => Ok(Provider::Pagoseguro),
            _ => Err("must be one of: openpix, pixelpay, pagoseguro"),
        }
    }
}

/// How a buyer pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentMethod {
    /// A PIX charge the buyer pays later; a webhook says when.
    #[default]
    Pix,
    /// A card charged while the order is placed. The card itself is never
    /// part of an order, an event or a stored row.
    Card,
    /// The buyer pays on the provider's own page (Pago Seguro's web
    /// checkout), reached from payhub's hosted checkout.
    Redirect,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Pix => "pix",
            PaymentMethod::Card => "card",
            PaymentMethod::Redirect => "redirect",
        }
    }
}

/// Where an order stands. The order history records every move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stored and waiting for its charge.
    Accepted,
    /// The charge exists at the provider; the buyer can pay.
    AwaitingPayment,
    /// A card authorisation holds the amount at the provider; the order is
    /// paid once it is captured (Wake's `/authorize`, then `/capture`).
    Authorized,
    /// Paid in full. Final for the payment; a refund may follow.
    Paid,
    /// The charge expired unpaid. Final.
    Expired,
    /// The charge could not be created; the order is blocked. Final.
    Failed,
    /// A payment arrived that does not match the order; a person must look.
    UnderReview,
    /// Paid, and part of the money was given back (refunds confirmed by the
    /// provider); more may still be refunded.
    PartiallyRefunded,
    /// Paid, and all of the money was given back. Final.
    Refunded,
    /// Paid and forwarded for delivery: the shop is preparing it.
    Fulfilling,
    /// Handed to a carrier (carrier and tracking code on the order).
    Shipped,
    /// The buyer received it.
    Delivered,
    /// Sent back to the shop after shipping.
    Returned,
    /// Paid, then cancelled before it shipped (a refund may follow).
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 14] = [
        OrderStatus::Accepted,
        OrderStatus::AwaitingPayment,
        OrderStatus::Authorized,
        OrderStatus::Paid,
        OrderStatus::Expired,
        OrderStatus::Failed,
        OrderStatus::UnderReview,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
        OrderStatus::Fulfilling,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Returned,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Accepted => "accepted",
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Authorized => "authorized",
            OrderStatus::Paid => "paid",
            OrderStatus::Expired => "expired",
            OrderStatus::Failed => "failed",
            OrderStatus::UnderReview => "under_review",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
            OrderStatus::Fulfilling => "fulfilling",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Returned => "returned",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Paid, and in the order's life after payment (fulfilment, delivery,
    /// return, cancellation): money was received for it.
    pub fn is_after_payment(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Fulfilling
                | OrderStatus::Shipped
                | OrderStatus::Delivered
                | OrderStatus::Returned
                | OrderStatus::Cancelled
        )
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::Expired | OrderStatus::Failed | OrderStatus::Refunded
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub code: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub unit_price: Money,
    pub qty: i64,
    /// The line's total tax.
    pub tax: Money,
    /// `unit_price` × `qty`, without tax.
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: Email,
    pub tax_id: TaxId,
    pub phone: Option<String>,
    pub birth_date: Option<time::Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub number: String,
    pub complement: Option<String>,
    pub neighborhood: Option<String>,
    pub city: String,
    pub state: String,
    pub zipcode: String,
}

/// A validated order, ready to store. Every amount is in `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub correlation_id: CorrelationId,
    pub provider: Provider,
    pub currency: Currency,
    pub items: Vec<Item>,
    pub freight: Money,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
    pub customer: Customer,
    pub shipping_address: Option<Address>,
    /// Seconds the PIX charge stays payable.
    pub expires_in_secs: u32,
    /// The shop's own metadata for the order, returned unchanged in its
    /// webhooks (as PixelPay's `extra`): at most 20 keys of 1 to 40
    /// characters, values of at most 200 visible characters.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// Most keys of an order's `extra`.
pub const MAX_EXTRA_KEYS: usize = 20;

fn parse_extra(r: &mut Reader<'_>, v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return out;
    };
    let Some(obj) = v.as_object() else {
        r.err("extra", "type", "must be an object of strings");
        return out;
    };
    if obj.len() > MAX_EXTRA_KEYS {
        r.err("extra", "size", format!("must have at most {MAX_EXTRA_KEYS} keys"));
        return out;
    }
    for (k, v) in obj {
        let field = format!("extra.{}", k.chars().take(40).collect::<String>());
        if k.is_empty() || k.chars().count() > 40 || check_visible_text(k).is_err() {
            r.err(field, "format", "keys must be 1 to 40 visible characters");
            continue;
        }
        match v.as_str() {
            Some(s) if s.chars().count() > 200 => r.err(field, "length", "must be at most 200 characters"),
            Some(s) => match check_visible_text(s) {
                Ok(()) => {
                    out.insert(k.clone(), s.to_string());
                }
                Err(e) => r.err(field, "format", e),
            },
            None => r.err(field, "type", "must be a string"),
        }
    }
    out
}

pub const MAX_ITEMS: usize = 200;
/// Longest string any field takes, whatever its own cap (those are lower).
pub const MAX_TEXT_CHARS: usize = 1000;
pub const DEFAULT_EXPIRES_IN_SECS: u32 = 86_400;

/// Reads fields out of a JSON object, recording field-level errors.
struct Reader<'a> {
    errors: &'a mut ValidationErrors,
}

impl Reader<'_> {
    fn err(&mut self, field: impl Into<String>, code: &'static str, msg: impl Into<String>) {
        self.errors.push(field, code, msg);
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str, required: bool) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.err(path, "required", "is required");
                }
                None
            }
            Some(Value::String(s)) => {
                let t = s.trim();
                // Every string is free text to someone (an e-mail, a dashboard,
                // the provider's charge): nothing invisible, nothing unbounded.
                if let Err(why) = check_visible_text(t) {
                    self.err(path, "characters", why);
                    return None;
                }
                if t.chars().count() > MAX_TEXT_CHARS {
                    self.err(
                        path,
                        "length",
                        format!("must be at most {MAX_TEXT_CHARS} characters long"),
                    );
                    return None;
                }
                if t.is_empty() {
                    if required {
                        self.err(path, "required", "is required");
                    }
                    None
                } else {
                    Some(t.to_string())
                }
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                self.err(path, "type", "must be a string");
                None
            }
        }
    }

    fn money(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        currency: Currency,
        required: bool,
    ) -> Option<Money> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.err(path, "required", "is required");
                    None
                } else {
                    Some(Money::zero(currency))
                }
            }
            Some(v) => match Money::from_json(v, currency) {
                Ok(m) if m.minor() < 0 => {
                    self.err(path, "negative", "must not be negative");
                    None
                }
                Ok(m) => Some(m),
                Err(e) => {
                    self.err(path, "amount", format!("{e}"));
                    None
                }
            },
        }
    }
}

fn text_len_ok(reader: &mut Reader<'_>, path: &str, value: &str, min: usize, max: usize) -> bool {
    let n = value.chars().count();
    if n < min || n > max {
        reader.err(
            path,
            "length",
            format!("must be {min} to {max} characters long, is {n}"),
        );
        false
    } else {
        true
    }
}

impl NewOrder {
    /// Parses and validates a `POST /v1/orders` body. Every problem found is
    /// reported, each against the field it concerns.
    pub fn from_json(body: &Value) -> Result<NewOrder, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.push("", "type", "the order must be a JSON object");
            return Err(errors);
        };
        let mut r = Reader { errors: &mut errors };

        let correlation_id =
            r.string(obj, "correlationID", "correlationID", true)
                .and_then(|s| match CorrelationId::parse(&s) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        r.err("correlationID", "format", e);
                        None
                    }
                });
        let provider = r.string(obj, "provider", "provider", true).and_then(|s| {
            Provider::parse(&s)
                .map_err(|e| r.err("provider", "unsupported", e))
                .ok()
        });
        let currency = match r.string(obj, "currency", "currency", false) {
            None => Some(Currency::Brl),
            Some(code) => {
                // Which of them the provider settles for this shop is the
                // door's question (payhub_connectors::capabilities): a
                // provider's accounts may differ.
                let c = Currency::parse(&code);
                if c.is_none() {
                    let names: Vec<&str> = Currency::ALL.iter().map(|c| c.code()).collect();
                    r.err(
                        "currency",
                        "unsupported",
                        format!("must be one of: {}", names.join(", ")),
                    );
                }
                c
            }
        };
        let cur = currency.unwrap_or(Currency::Brl);

        let items = parse_items(&mut r, obj.get("items"), cur);
        let freight = r.money(obj, "freight", "freight", cur, false);
        let discount = r.money(obj, "discount", "discount", cur, false);
        let total = r.money(obj, "total", "total", cur, true);
        let customer = parse_customer(&mut r, obj.get("customer"), cur);
        let shipping_address = match obj.get("shippingAddress") {
            None | Some(Value::Null) => Some(None),
            Some(v) => parse_address(&mut r, v, "shippingAddress").map(Some),
        };
        let expires_in_secs = match obj.get("expiresIn") {
            None | Some(Value::Null) => Some(DEFAULT_EXPIRES_IN_SECS),
            Some(v) => match v.as_u64() {
                Some(s) if (300..=2_592_000).contains(&s) => Some(s as u32),
                _ => {
                    r.err("expiresIn", "range", "must be whole seconds from 300 to 2592000");
                    None
                }
            },
        };

        let extra = parse_extra(&mut r, obj.get("extra"));

        // The sums are checked only when every part parsed.
        let mut tax = None;
        if let (Some(items), Some(freight), Some(discount), Some(total)) = (&items, freight, discount, total) {
            let items_total = items
                .iter()
                .try_fold(Money::zero(cur), |acc, i| acc.checked_add(i.total));
            let items_tax = items.iter().try_fold(Money::zero(cur), |acc, i| acc.checked_add(i.tax));
            match (items_total, items_tax) {
                (Some(items_total), Some(items_tax)) => {
                    tax = Some(items_tax);
                    let expected = items_total
                        .checked_add(items_tax)
                        .and_then(|m| m.checked_add(freight))
                        .and_then(|m| m.checked_sub(discount));
                    match expected {
                        Some(expected) if expected != total => r.err(
                            "total",
                            "total_mismatch",
                            format!(
                                "is {} but items ({}) + tax ({}) + freight ({}) - discount ({}) = {}",
                                total.to_major_string(),
                                items_total.to_major_string(),
                                items_tax.to_major_string(),
                                freight.to_major_string(),
                                discount.to_major_string(),
                                expected.to_major_string()
                            ),
                        ),
                        None => r.err("total", "amount", "is too large"),
                        Some(_) => {}
                    }
                }
                _ => r.err("items", "amount", "the item amounts add up to too much"),
            }
            if total.minor() <= 0 {
                r.err("total", "positive", "must be greater than zero");
            }
            if discount.minor() > items_total.map(Money::minor).unwrap_or(0) + freight.minor() {
                r.err("discount", "range", "must not exceed the items plus freight");
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        // Every `None` above recorded an error, so these all hold values.
        match (
            correlation_id,
            provider,
            currency,
            items,
            freight,
            discount,
            tax,
            total,
            customer,
            shipping_address,
            expires_in_secs,
        ) {
            (
                Some(correlation_id),
                Some(provider),
                Some(currency),
                Some(items),
                Some(freight),
                Some(discount),
                Some(tax),
                Some(total),
                Some(customer),
                Some(shipping_address),
                Some(expires_in_secs),
            ) => Ok(NewOrder {
                correlation_id,
                provider,
                currency,
                items,
                freight,
                discount,
                tax,
                total,
                customer,
                shipping_address,
                expires_in_secs,
                extra,
            }),
            _ => {
                errors.push("", "invalid", "the order is incomplete");
                Err(errors)
            }
        }
    }

    /// A one-line summary for e-mails and the charge comment.
    pub fn summary(&self) -> String {
        let first = self.items.first().map(|i| i.title.as_str()).unwrap_or("");
        if self.items.len() > 1 {
            format!("{first} and {} more item(s)", self.items.len() - 1)
        } else {
            first.to_string()
        }
    }
}

fn parse_items(r: &mut Reader<'_>, value: Option<&Value>, cur: Currency) -> Option<Vec<Item>> {
    let list = match value {
        None | Some(Value::Null) => {
            r.err("items", "required", "is required");
            return None;
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            r.err("items", "type", "must be a list of items");
            return None;
        }
    };
    if list.is_empty() {
        r.err("items", "required", "must hold at least one item");
        return None;
    }
    if list.len() > MAX_ITEMS {
        r.err("items", "length", format!("must hold at most {MAX_ITEMS} items"));
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut all_ok = true;
    for (i, v) in list.iter().enumerate() {
        let p = |f: &str| format!("items[{i}].{f}");
        let Some(obj) = v.as_object() else {
            r.err(format!("items[{i}]"), "type", "must be an object");
            all_ok = false;
            continue;
        };
        let title = r
            .string(obj, "title", &p("title"), true)
            .filter(|t| text_len_ok(r, &p("title"), t, 3, 60));
        let code = r.string(obj, "code", &p("code"), false).filter(|c| {
            let ok = c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric());
            if !ok {
                r.err(p("code"), "format", "may contain only letters and digits (at most 64)");
            }
            ok
        });
        let description = r
            .string(obj, "description", &p("description"), false)
            .filter(|d| text_len_ok(r, &p("description"), d, 1, 500));
        let price = r.money(obj, "price", &p("price"), cur, true);
        let qty = match obj.get("qty") {
            None | Some(Value::Null) => {
                r.err(p("qty"), "required", "is required");
                None
            }
            Some(v) => match v.as_i64() {
                Some(q) if (1..=1_000_000).contains(&q) => Some(q),
                _ => {
                    r.err(p("qty"), "range", "must be a whole number from 1 to 1000000");
                    None
                }
            },
        };
        let tax = r.money(obj, "tax", &p("tax"), cur, false);
        let total = r.money(obj, "total", &p("total"), cur, true);
        if let (Some(price), Some(qty), Some(total)) = (price, qty, total) {
            match price.checked_mul(qty) {
                Some(expected) if expected != total => {
                    r.err(
                        p("total"),
                        "total_mismatch",
                        format!(
                            "is {} but price × qty = {} × {qty} = {}",
                            total.to_major_string(),
                            price.to_major_string(),
                            expected.to_major_string()
                        ),
                    );
                    all_ok = false;
                }
                None => {
                    r.err(p("total"), "amount", "is too large");
                    all_ok = false;
                }
                Some(_) => {}
            }
        }
        match (title, price, qty, tax, total) {
            (Some(title), Some(unit_price), Some(qty), Some(tax), Some(total)) => out.push(Item {
                code,
                title,
                description,
                unit_price,
                qty,
                tax,
                total,
            }),
            _ => all_ok = false,
        }
    }
    all_ok.then_some(out)
}

/// `currency` decides what `taxID` is: a CPF or CNPJ, required, for a sale
/// in reais (PIX and Brazilian invoicing need it); for other currencies the
/// buyer's national id, optional (a Honduran buyer has no CPF).
fn parse_customer(r: &mut Reader<'_>, value: Option<&Value>, currency: Currency) -> Option<Customer> {
    let obj = match value {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => {
            r.err("customer", "required", "is required");
            return None;
        }
        Some(_) => {
            r.err("customer", "type", "must be an object");
            return None;
        }
    };
    let name = r
        .string(obj, "name", "customer.name", true)
        .filter(|n| text_len_ok(r, "customer.name", n, 3, 120));
    let email = r
        .string(obj, "email", "customer.email", true)
        .and_then(|e| Email::parse(&e).map_err(|m| r.err("customer.email", "format", m)).ok());
    let brazilian = currency == Currency::Brl;
    let tax_id = match r.string(obj, "taxID", "customer.taxID", brazilian) {
        None if !brazilian => Some(TaxId::none()),
        None => None,
        Some(t) if brazilian => TaxId::parse(&t).map_err(|m| r.err("customer.taxID", "invalid", m)).ok(),
        Some(t) => TaxId::parse_national(&t)
            .map_err(|m| r.err("customer.taxID", "invalid", m))
            .ok(),
    };
    let phone = match r.string(obj, "phone", "customer.phone", false) {
        None => Some(None),
        Some(p) => parse_phone(&p)
            .map(Some)
            .map_err(|m| r.err("customer.phone", "format", m))
            .ok(),
    };
    let birth_date = match r.string(obj, "birthDate", "customer.birthDate", false) {
        None => Some(None),
        Some(d) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            match time::Date::parse(&d, fmt) {
                Ok(date) if date < time::OffsetDateTime::now_utc().date() && date.year() >= 1900 => Some(Some(date)),
                Ok(_) => {
                    r.err("customer.birthDate", "range", "must be a past date after 1900");
                    None
                }
                Err(_) => {
                    r.err("customer.birthDate", "format", "must be a date as YYYY-MM-DD");
                    None
                }
            }
        }
    };
    match (name, email, tax_id, phone, birth_date) {
        (Some(name), Some(email), Some(tax_id), Some(phone), Some(birth_date)) => Some(Customer {
            name,
            email,
            tax_id,
            phone,
            birth_date,
        }),
        _ => None,
    }
}

fn parse_address(r: &mut Reader<'_>, value: &Value, prefix: &str) -> Option<Address> {
    let Some(obj) = value.as_object() else {
        r.err(prefix, "type", "must be an object");
        return None;
    };
    let p = |f: &str| format!("{prefix}.{f}");
    let street = r
        .string(obj, "street", &p("street"), true)
        .filter(|s| text_len_ok(r, &p("street"), s, 2, 200));
    let number = r
        .string(obj, "number", &p("number"), true)
        .filter(|s| text_len_ok(r, &p("number"), s, 1, 20));
    let mut optional_ok = true;
    let complement = r.string(obj, "complement", &p("complement"), false).filter(|s| {
        let ok = text_len_ok(r, &p("complement"), s, 1, 100);
        optional_ok &= ok;
        ok
    });
    let neighborhood = r.string(obj, "neighborhood", &p("neighborhood"), false).filter(|s| {
        let ok = text_len_ok(r, &p("neighborhood"), s, 1, 100);
        optional_ok &= ok;
        ok
    });
    let city = r
        .string(obj, "city", &p("city"), true)
        .filter(|s| text_len_ok(r, &p("city"), s, 2, 100));
    let state = r
        .string(obj, "state", &p("state"), true)
        .and_then(|s| parse_uf(&s).map_err(|m| r.err(p("state"), "format", m)).ok());
    let zipcode = r
        .string(obj, "zipcode", &p("zipcode"), true)
        .and_then(|s| parse_cep(&s).map_err(|m| r.err(p("zipcode"), "format", m)).ok());
    match (street, number, city, state, zipcode) {
        (Some(street), Some(number), Some(city), Some(state), Some(zipcode)) if optional_ok => Some(Address {
            street,
            number,
            complement,
            neighborhood,
            city,
            state,
            zipcode,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn valid_order() -> Value {
        json!({
            "correlationID": "order-1001",
            "provider": "openpix",
            "items": [
                {"code": "0000123", "title": "Camiseta Roja", "description": "Talla: XS", "tax": 9.99, "price": 99.99, "qty": 1, "total": 99.99},
                {"title": "Jeans Pepe", "price": 123.99, "qty": 2, "total": 247.98}
            ],
            "freight": 15.00,
            "discount": 10,
            "total": 362.96,
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "313.242.270-36", "phone": "(11) 99999-9999", "birthDate": "1990-05-01"},
            "shippingAddress": {"street": "Rua Encantado", "number": "860", "city": "Dez de Maio", "state": "PR", "zipcode": "85920-970"}
        })
    }

    #[test]
    fn a_consistent_order_parses() {
        let o = NewOrder::from_json(&valid_order()).unwrap();
        assert_eq!(o.total.minor(), 36296);
        assert_eq!(o.tax.minor(), 999);
        assert_eq!(o.items[1].total.minor(), 24798);
        assert_eq!(o.customer.tax_id.digits(), "31324227036");
        assert_eq!(o.customer.phone.as_deref(), Some("5511999999999"));
        assert_eq!(o.shipping_address.as_ref().unwrap().zipcode, "85920970");
        assert_eq!(o.expires_in_secs, DEFAULT_EXPIRES_IN_SECS);
    }

    #[test]
    fn seed_003_item_list_is_rejected_for_its_first_total() {
        let mut body = valid_order();
        body["items"] = json!([
            {"code": "0000123", "title": "Camiseta Roja", "description": "Talla: XS", "tax": 9.99, "price": 99.99, "qty": 1, "total": 9.99},
            {"code": "0000123", "title": "Jeans Pepe", "description": "Talla: 32", "tax": 0.00, "price": 123.99, "qty": 1, "total": 123.99}
        ]);
        let errs = NewOrder::from_json(&body).unwrap_err();
        assert!(errs.has("items[0].total", "total_mismatch"), "{errs}");
        let msg = &errs.0.iter().find(|e| e.field == "items[0].total").unwrap().message;
        assert_eq!(msg, "is 9.99 but price × qty = 99.99 × 1 = 99.99");
    }

    #[test]
    fn order_total_must_add_up() {
        let mut body = valid_order();
        body["total"] = json!(362.95);
        let errs = NewOrder::from_json(&body).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(errs.has("total", "total_mismatch"));
    }

    #[test]
    fn item_rules() {
        let mut body = valid_order();
        body["items"] = json!([
            {"title": "ab", "price": 1, "qty": 0, "total": 0},
            {"title": "x".repeat(61), "price": -1, "qty": 1.5, "total": 1},
            {"title": "Fine item", "code": "has space", "price": "1.001", "qty": 1, "total": 1},
            "not an object"
        ]);
        let errs = NewOrder::from_json(&body).unwrap_err();
        for (f, c) in [
            ("items[0].title", "length"),
            ("items[0].qty", "range"),
            ("items[1].title", "length"),
            ("items[1].price", "negative"),
            ("items[1].qty", "range"),
            ("items[2].code", "format"),
            ("items[2].price", "amount"),
            ("items[3]", "type"),
        ] {
            assert!(errs.has(f, c), "missing {f}/{c} in {errs}");
        }
    }

    #[test]
    fn every_missing_field_is_named() {
        let errs = NewOrder::from_json(&json!({})).unwrap_err();
        for f in ["correlationID", "provider", "items", "total", "customer"] {
            assert!(errs.has(f, "required"), "{f}: {errs}");
        }
        let errs = NewOrder::from_json(&json!({"customer": {}})).unwrap_err();
        for f in ["customer.name", "customer.email", "customer.taxID"] {
            assert!(errs.has(f, "required"), "{f}: {errs}");
        }
    }

    #[test]
    fn customer_and_address_checks() {
        let mut body = valid_order();
        body["customer"]["taxID"] = json!("12345678976");
        body["customer"]["email"] = json!("nope");
        body["customer"]["birthDate"] = json!("01/05/1990");
        body["shippingAddress"]["state"] = json!("XX");
        body["shippingAddress"]["zipcode"] = json!("123");
        let errs = NewOrder::from_json(&body).unwrap_err();
        for (f, c) in [
            ("customer.taxID", "invalid"),
            ("customer.email", "format"),
            ("customer.birthDate", "format"),
            ("shippingAddress.state", "format"),
            ("shippingAddress.zipcode", "format"),
        ] {
            assert!(errs.has(f, c), "missing {f}/{c} in {errs}");
        }
    }

    #[test]
    fn provider_and_currency() {
        let mut body = valid_order();
        // Which currencies a provider settles is checked at the door
        // (tests/tests/http_doors.rs); here, a currency payhub knows.
        body["provider"] = json!("pixelpay");
        body["currency"] = json!("USD");
        let order = NewOrder::from_json(&body).unwrap();
        assert_eq!((order.provider, order.currency), (Provider::Pixelpay, Currency::Usd));
        assert_eq!(order.provider.method(), PaymentMethod::Card);
        body["currency"] = json!("XYZ");
        let errs = NewOrder::from_json(&body).unwrap_err();
        assert!(errs.has("currency", "unsupported"), "{errs}");
        assert!(errs.to_string().contains("BRL, HNL, USD, NIO, COP"), "{errs}");
        body["provider"] = json!("pagoseguro");
        body["currency"] = json!("COP");
        let order = NewOrder::from_json(&body).unwrap();
        assert_eq!(order.provider.method(), PaymentMethod::Redirect);
        body["provider"] = json!("payu");
        assert!(NewOrder::from_json(&body).unwrap_err().has("provider", "unsupported"));
    }

    #[test]
    fn a_buyer_outside_brazil_needs_no_cpf() {
        let mut body = valid_order();
        body["provider"] = json!("pixelpay");
        body["currency"] = json!("HNL");
        body["customer"]["taxID"] = json!("0801-1990-12345");
        let o = NewOrder::from_json(&body).unwrap();
        assert_eq!(o.customer.tax_id, TaxId::National("0801199012345".into()));
        body["customer"].as_object_mut().unwrap().remove("taxID");
        assert_eq!(NewOrder::from_json(&body).unwrap().customer.tax_id, TaxId::none());
        body["customer"]["taxID"] = json!("x");
        assert!(NewOrder::from_json(&body).unwrap_err().has("customer.taxID", "invalid"));
        // In reais a CPF or CNPJ stays required and checked.
        body["currency"] = json!("BRL");
        body["customer"]["taxID"] = json!("0801-1990-12345");
        assert!(NewOrder::from_json(&body).unwrap_err().has("customer.taxID", "invalid"));
        body["customer"].as_object_mut().unwrap().remove("taxID");
        assert!(
            NewOrder::from_json(&body)
                .unwrap_err()
                .has("customer.taxID", "required")
        );
    }

    #[test]
    fn free_text_refuses_hidden_characters_field_by_field() {
        let mut body = valid_order();
        body["items"][0]["title"] = json!("Camiseta\u{202E}aJor");
        body["items"][1]["description"] = json!("Jeans\u{200B}");
        body["customer"]["name"] = json!("Dan\u{0007}Silva");
        body["shippingAddress"]["street"] = json!("Rua\nEncantado");
        body["shippingAddress"]["complement"] = json!("\u{FEFF}apto 1");
        body["shippingAddress"]["neighborhood"] = json!("Centro\u{2066}");
        body["shippingAddress"]["city"] = json!("Dez\u{AD}de Maio");
        let errs = NewOrder::from_json(&body).unwrap_err();
        for f in [
            "items[0].title",
            "items[1].description",
            "customer.name",
            "shippingAddress.street",
            "shippingAddress.complement",
            "shippingAddress.neighborhood",
            "shippingAddress.city",
        ] {
            assert!(errs.has(f, "characters"), "missing {f}/characters in {errs}");
        }
        assert_eq!(errs.0.len(), 7, "{errs}");
        // Accents, dashes and emoji are ordinary text.
        let mut body = valid_order();
        body["customer"]["name"] = json!("João da Conceição — 🎉");
        body["shippingAddress"]["complement"] = json!("Apto 12 – Bloco B");
        NewOrder::from_json(&body).unwrap();
    }

    #[test]
    fn every_free_text_field_has_a_cap() {
        let mut body = valid_order();
        body["items"][0]["description"] = json!("d".repeat(501));
        body["customer"]["name"] = json!("n".repeat(121));
        body["shippingAddress"]["street"] = json!("s".repeat(201));
        body["shippingAddress"]["number"] = json!("1".repeat(21));
        body["shippingAddress"]["complement"] = json!("c".repeat(101));
        body["shippingAddress"]["neighborhood"] = json!("b".repeat(101));
        body["shippingAddress"]["city"] = json!("c".repeat(101));
        body["currency"] = json!("B".repeat(2000));
        let errs = NewOrder::from_json(&body).unwrap_err();
        for f in [
            "items[0].description",
            "customer.name",
            "shippingAddress.street",
            "shippingAddress.number",
            "shippingAddress.complement",
            "shippingAddress.neighborhood",
            "shippingAddress.city",
            "currency",
        ] {
            assert!(errs.has(f, "length"), "missing {f}/length in {errs}");
        }
    }

    #[test]
    fn zero_total_is_refused() {
        let body = json!({
            "correlationID": "z", "provider": "openpix",
            "items": [{"title": "Gift", "price": 0, "qty": 1, "total": 0}],
            "total": 0,
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "31324227036"}
        });
        let errs = NewOrder::from_json(&body).unwrap_err();
        assert!(errs.has("total", "positive"), "{errs}");
    }
}
