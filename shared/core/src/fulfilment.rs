//! The order's life after payment (issue 12 §1): forwarded for delivery
//! (`fulfilling`), `shipped` (carrier and tracking code), `delivered`, and
//! `returned` or `cancelled`, as a shop reports them through the order API
//! or an AMQP message. The rules of which move is legal live here, once:
//! the doors check them to answer the shop at once, order-updater checks
//! them again under the order's lock (it alone moves the status).

use crate::identity::check_visible_text;
use crate::order::OrderStatus;
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The statuses a shop may report.
pub const REPORTABLE: [OrderStatus; 5] = [
    OrderStatus::Fulfilling,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
    OrderStatus::Returned,
    OrderStatus::Cancelled,
];

/// The AMQP message type of a report of `status` (`order.shipped`, ...).
pub fn message_type(status: OrderStatus) -> String {
    format!("order.{}", status.as_str())
}

/// The status an AMQP message type reports, if it is a fulfilment message.
pub fn status_of_message_type(kind: &str) -> Option<OrderStatus> {
    let s = kind.strip_prefix("order.")?;
    REPORTABLE.into_iter().find(|r| r.as_str() == s)
}

/// Longest carrier name, tracking code, note and actor.
pub const MAX_CARRIER_CHARS: usize = 60;
pub const MAX_TRACKING_CODE_CHARS: usize = 60;
pub const MAX_TRACKING_URL_CHARS: usize = 500;
pub const MAX_NOTE_CHARS: usize = 200;
pub const MAX_BY_CHARS: usize = 100;

/// A shop's report of where its paid order stands, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentUpdate {
    pub to: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
    /// Who at the shop did it (a name or e-mail), as the shop says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The shop's note (why it was returned or cancelled, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn text(
    errors: &mut ValidationErrors,
    obj: &serde_json::Map<String, Value>,
    field: &'static str,
    min: usize,
    max: usize,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            let n = s.chars().count();
            if n < min || n > max {
                errors.push(
                    field,
                    "length",
                    format!("must be {min} to {max} characters long, is {n}"),
                );
                None
            } else if let Err(why) = check_visible_text(s) {
                errors.push(field, "characters", why);
                None
            } else {
                Some(s.to_string())
            }
        }
        Some(_) => {
            errors.push(field, "type", "must be a string");
            None
        }
    }
}

impl FulfilmentUpdate {
    /// Reads `POST /v1/orders/{correlationID}/fulfilment`'s body:
    /// `{"status", "carrier"?, "trackingCode"?, "trackingUrl"?, "by"?, "note"?}`.
    pub fn from_json(body: &Value) -> Result<FulfilmentUpdate, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.push("(body)", "type", "must be a JSON object");
            return Err(errors);
        };
        let names = || REPORTABLE.map(OrderStatus::as_str).join(", ");
        let to = match obj.get("status") {
            None | Some(Value::Null) => {
                errors.push("status", "required", format!("is required: one of {}", names()));
                None
            }
            Some(Value::String(s)) => match REPORTABLE.into_iter().find(|r| r.as_str() == s) {
                Some(st) => Some(st),
                None => {
                    errors.push("status", "enum", format!("must be one of {}, is {s:?}", names()));
                    None
                }
            },
            Some(_) => {
                errors.push("status", "type", "must be a string");
                None
            }
        };
        Self::rest(obj, to, errors)
    }

    /// Reads an AMQP fulfilment message: the same fields, with the status
    /// in its `type` (`order.shipped`, ...).
    pub fn from_message(msg: &Value) -> Result<FulfilmentUpdate, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = msg.as_object() else {
            errors.push("(body)", "type", "must be a JSON object");
            return Err(errors);
        };
        let to = obj.get("type").and_then(Value::as_str).and_then(status_of_message_type);
        if to.is_none() {
            errors.push(
                "type",
                "enum",
                format!("must be one of {}", REPORTABLE.map(message_type).join(", ")),
            );
        }
        if obj.contains_key("status") {
            errors.push("status", "forbidden", "a message says its status in `type`");
        }
        Self::rest(obj, to, errors)
    }

    fn rest(
        obj: &serde_json::Map<String, Value>,
        to: Option<OrderStatus>,
        mut errors: ValidationErrors,
    ) -> Result<FulfilmentUpdate, ValidationErrors> {
        let carrier = text(&mut errors, obj, "carrier", 2, MAX_CARRIER_CHARS);
        let tracking_code = text(&mut errors, obj, "trackingCode", 1, MAX_TRACKING_CODE_CHARS);
        if let Some(code) = &tracking_code
            && !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            errors.push("trackingCode", "format", "may hold only letters, digits, '-' and '.'");
        }
        let tracking_url = text(&mut errors, obj, "trackingUrl", 12, MAX_TRACKING_URL_CHARS);
        if let Some(url) = &tracking_url
            && (!url.starts_with("https://") || url.contains(char::is_whitespace) || url.contains(['<', '>', '"']))
        {
            errors.push("trackingUrl", "format", "must be an https:// URL");
        }
        let by = text(&mut errors, obj, "by", 1, MAX_BY_CHARS);
        let note = text(&mut errors, obj, "note", 1, MAX_NOTE_CHARS);
        if to == Some(OrderStatus::Shipped) {
            if carrier.is_none() && !errors.0.iter().any(|e| e.field == "carrier") {
                errors.push("carrier", "required", "is required when the order is shipped");
            }
            if tracking_code.is_none() && !errors.0.iter().any(|e| e.field == "trackingCode") {
                errors.push("trackingCode", "required", "is required when the order is shipped");
            }
        } else if let Some(st) = to {
            for (field, present) in [
                ("carrier", carrier.is_some()),
                ("trackingCode", tracking_code.is_some()),
                ("trackingUrl", tracking_url.is_some()),
            ] {
                if present {
                    errors.push(
                        field,
                        "forbidden",
                        format!("is given only when the order is shipped, not {}", st.as_str()),
                    );
                }
            }
        }
        match to {
            Some(to) if errors.is_empty() => Ok(FulfilmentUpdate {
                to,
                carrier,
                tracking_code,
                tracking_url,
                by,
                note,
            }),
            _ => Err(errors),
        }
    }
}

/// Whether an order in `from` may move to `to` by a shop's report; the
/// error is the reason the shop reads.
pub fn check_move(from: OrderStatus, to: OrderStatus) -> Result<(), String> {
    use OrderStatus::*;
    let legal: &[OrderStatus] = match from {
        Paid => &[Fulfilling, Shipped, Cancelled],
        Fulfilling => &[Shipped, Cancelled],
        Shipped => &[Delivered, Returned],
        Delivered => &[Returned],
        _ => &[],
    };
    if legal.contains(&to) {
        return Ok(());
    }
    if from == to {
        return Err(format!("the order is already {}", to.as_str()));
    }
    Err(match from {
        Accepted | AwaitingPayment | Authorized => format!(
            "the order is {} (not paid): only a paid order can be {}",
            from.as_str(),
            to.as_str()
        ),
        Expired | Failed => format!(
            "the order is {}: it was never paid, so it cannot be {}",
            from.as_str(),
            to.as_str()
        ),
        UnderReview => format!(
            "the order is under review (a payment did not match): it cannot be {} until a person settles it",
            to.as_str()
        ),
        PartiallyRefunded | Refunded => format!(
            "the order is {}: money was given back, so it cannot be {}",
            from.as_str(),
            to.as_str()
        ),
        Cancelled => format!("the order is cancelled: it cannot be {}", to.as_str()),
        Returned => format!("the order was returned: it cannot be {}", to.as_str()),
        _ => format!(
            "an order that is {} cannot be {}; from {} it can be {}",
            from.as_str(),
            to.as_str(),
            from.as_str(),
            legal.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
        ),
    })
}

/// The history's actor for a shop's report: `shop:api`, `shop:amqp`,
/// with the person the shop named (`shop:api:maria@loja.example`).
pub fn actor(channel: &str, by: Option<&str>) -> String {
    match by {
        Some(by) => format!("shop:{channel}:{by}"),
        None => format!("shop:{channel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;
    use serde_json::json;

    #[test]
    fn the_life_after_payment_moves_forward_only() {
        assert!(check_move(Paid, Fulfilling).is_ok());
        assert!(check_move(Paid, Shipped).is_ok());
        assert!(check_move(Fulfilling, Shipped).is_ok());
        assert!(check_move(Shipped, Delivered).is_ok());
        assert!(check_move(Delivered, Returned).is_ok());
        assert!(check_move(Fulfilling, Cancelled).is_ok());
        let why = check_move(AwaitingPayment, Shipped).unwrap_err();
        assert!(why.contains("not paid"), "{why}");
        let why = check_move(Delivered, Shipped).unwrap_err();
        assert!(why.contains("from delivered it can be returned"), "{why}");
        assert!(check_move(Shipped, Shipped).unwrap_err().contains("already shipped"));
        assert!(check_move(Shipped, Cancelled).is_err());
        assert!(check_move(Cancelled, Shipped).unwrap_err().contains("cancelled"));
        assert!(check_move(Refunded, Fulfilling).is_err());
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                if !REPORTABLE.contains(&to) {
                    assert!(check_move(from, to).is_err(), "{from:?} -> {to:?}");
                }
            }
        }
    }

    #[test]
    fn a_shipment_needs_carrier_and_tracking_code() {
        let e = FulfilmentUpdate::from_json(&json!({"status": "shipped"})).unwrap_err();
        assert!(
            e.has("carrier", "required") && e.has("trackingCode", "required"),
            "{e:?}"
        );
        let ok = FulfilmentUpdate::from_json(&json!({
            "status": "shipped", "carrier": "Correios", "trackingCode": "AA123456789BR",
            "trackingUrl": "https://rastreio.example.com/AA123456789BR", "by": "maria"
        }))
        .unwrap();
        assert_eq!(ok.to, Shipped);
        assert_eq!(ok.tracking_code.as_deref(), Some("AA123456789BR"));
        let e = FulfilmentUpdate::from_json(&json!({"status": "delivered", "trackingCode": "X1"})).unwrap_err();
        assert!(e.has("trackingCode", "forbidden"), "{e:?}");
        let e = FulfilmentUpdate::from_json(&json!({
            "status": "shipped", "carrier": "C", "trackingCode": "a b", "trackingUrl": "http://x.example.com"
        }))
        .unwrap_err();
        assert!(e.has("carrier", "length") && e.has("trackingCode", "format") && e.has("trackingUrl", "format"));
        let e = FulfilmentUpdate::from_json(&json!({"status": "paid"})).unwrap_err();
        assert!(e.has("status", "enum"));
    }

    #[test]
    fn a_message_says_its_status_in_its_type() {
        let u = FulfilmentUpdate::from_message(&json!({"type": "order.delivered", "correlationID": "c"})).unwrap();
        assert_eq!(u.to, Delivered);
        assert_eq!(status_of_message_type("order.shipped"), Some(Shipped));
        assert_eq!(status_of_message_type("order.paid"), None);
        assert_eq!(message_type(Cancelled), "order.cancelled");
        let e = FulfilmentUpdate::from_message(&json!({"type": "order.paid"})).unwrap_err();
        assert!(e.has("type", "enum"));
    }
}

/// How long a shop takes to deliver (its `deliveryTime` order rule): days
/// per CEP range or state, else `defaultDays`, counted in business days
/// (Monday to Friday) unless `businessDays` is false, from the day of
/// payment in the shop's time zone (`utcOffsetHours`, São Paulo's -3 by
/// default). National holidays are not counted out: a shop that wants
/// them covered adds a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryTime {
    pub default_days: u16,
    #[serde(default = "yes")]
    pub business_days: bool,
    /// Days by state (UF), e.g. {"SP": 2}.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub states: std::collections::BTreeMap<String, u16>,
    /// Inclusive 8-digit CEP ranges and their days, e.g. [["01000000", "09999999", 1]];
    /// the first matching range wins over the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cep_ranges: Vec<(String, String, u16)>,
    #[serde(default = "sao_paulo")]
    pub utc_offset_hours: i8,
}

fn yes() -> bool {
    true
}

fn sao_paulo() -> i8 {
    -3
}

/// Most days a promise may take.
pub const MAX_DELIVERY_DAYS: u16 = 365;

impl DeliveryTime {
    /// Problems with the rule itself (checked before a shop's rules are stored).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let days = std::iter::once(self.default_days)
            .chain(self.states.values().copied())
            .chain(self.cep_ranges.iter().map(|r| r.2));
        if days.into_iter().any(|d| d > MAX_DELIVERY_DAYS) {
            out.push(format!("deliveryTime: days must be at most {MAX_DELIVERY_DAYS}"));
        }
        for (lo, hi, _) in &self.cep_ranges {
            let ok = |c: &str| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit());
            if !ok(lo) || !ok(hi) || lo > hi {
                out.push(format!(
                    "deliveryTime.cepRanges: {lo}..{hi} is not a range of 8-digit CEPs"
                ));
            }
        }
        if !(-12..=14).contains(&self.utc_offset_hours) {
            out.push("deliveryTime.utcOffsetHours must be between -12 and 14".into());
        }
        out
    }

    /// The days promised for an address (state, 8-digit CEP), if any.
    pub fn days_for(&self, state: Option<&str>, cep: Option<&str>) -> u16 {
        if let Some(cep) = cep
            && let Some(r) = self
                .cep_ranges
                .iter()
                .find(|(lo, hi, _)| lo.as_str() <= cep && cep <= hi.as_str())
        {
            return r.2;
        }
        state
            .and_then(|s| self.states.get(&s.to_ascii_uppercase()).copied())
            .unwrap_or(self.default_days)
    }

    /// The shop's local date at `at`.
    pub fn local_date(&self, at: time::OffsetDateTime) -> time::Date {
        let offset = time::UtcOffset::from_hms(self.utc_offset_hours, 0, 0).unwrap_or(time::UtcOffset::UTC);
        at.to_offset(offset).date()
    }

    /// The date by which an order paid at `paid_at` is to be delivered.
    pub fn promised_on(&self, paid_at: time::OffsetDateTime, state: Option<&str>, cep: Option<&str>) -> time::Date {
        add_days(self.local_date(paid_at), self.days_for(state, cep), self.business_days)
    }
}

/// `start` plus `days`, skipping Saturdays and Sundays when `business`.
pub fn add_days(start: time::Date, days: u16, business: bool) -> time::Date {
    let mut d = start;
    let mut left = days;
    while left > 0 {
        d = d.next_day().unwrap_or(d);
        if !business || !matches!(d.weekday(), time::Weekday::Saturday | time::Weekday::Sunday) {
            left -= 1;
        }
    }
    d
}

#[cfg(test)]
mod promise_tests {
    use super::*;
    use time::macros::{date, datetime};

    fn rule() -> DeliveryTime {
        serde_json::from_value(serde_json::json!({
            "defaultDays": 7, "states": {"SP": 2}, "cepRanges": [["80000000", "80999999", 1]]
        }))
        .unwrap()
    }

    #[test]
    fn days_by_cep_range_then_state_then_default() {
        let r = rule();
        assert_eq!(r.days_for(Some("PR"), Some("80010000")), 1);
        assert_eq!(r.days_for(Some("sp"), Some("01310100")), 2);
        assert_eq!(r.days_for(Some("BA"), Some("40000000")), 7);
        assert_eq!(r.days_for(None, None), 7);
        assert!(r.business_days);
        assert_eq!(r.utc_offset_hours, -3);
    }

    #[test]
    fn business_days_skip_weekends_in_the_shops_time_zone() {
        // 2026-12-04 is a Friday; 01:00 UTC is still Thursday in São Paulo.
        let r = rule();
        assert_eq!(r.local_date(datetime!(2026-12-04 01:00 UTC)), date!(2026 - 12 - 03));
        assert_eq!(
            r.promised_on(datetime!(2026-12-04 01:00 UTC), Some("SP"), None),
            date!(2026 - 12 - 07)
        );
        assert_eq!(
            r.promised_on(datetime!(2026-12-04 15:00 UTC), Some("SP"), None),
            date!(2026 - 12 - 08)
        );
        assert_eq!(add_days(date!(2026 - 12 - 04), 2, false), date!(2026 - 12 - 06));
        assert_eq!(add_days(date!(2026 - 12 - 04), 0, true), date!(2026 - 12 - 04));
    }

    #[test]
    fn bad_rules_are_named() {
        let mut r = rule();
        r.cep_ranges.push(("9".into(), "1".into(), 2));
        r.default_days = 999;
        assert_eq!(r.problems().len(), 2, "{:?}", r.problems());
    }
}
