//! A shop's own order rules (seed 004): where it delivers, what it has in
//! stock, and what each provider charges it. Checked in every door, after
//! the order itself is valid; an order that breaks a rule is refused with
//! field-level errors like any other invalid order.

use crate::money::Money;
use crate::order::NewOrder;
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything a shop may configure; all parts are optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRules {
    /// Refuse orders without a shipping address.
    #[serde(default)]
    pub require_shipping_address: bool,
    /// Where the shop delivers. None: everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryCoverage>,
    /// What the shop has available. None: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<Stock>,
    /// What each provider charges the shop, by provider name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provider_fees: BTreeMap<String, Fee>,
    /// How long the shop takes to deliver: each paid order gets a promised
    /// delivery date from it (issue 12). None: no promise, never late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_time: Option<crate::fulfilment::DeliveryTime>,
}

/// States (UF) and CEP ranges the shop delivers to; an address matching
/// either list is covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryCoverage {
    #[serde(default)]
    pub states: Vec<String>,
    /// Inclusive ranges of 8-digit CEPs, e.g. ["80000000", "87999999"].
    #[serde(default)]
    pub cep_ranges: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Stock {
    /// Units available per item code; a code not listed is unavailable.
    List { items: BTreeMap<String, i64> },
    /// The shop answers `POST {url}` with `{"items":[{"code","qty"}]}` by
    /// `{"unavailable": ["<code>", ...]}` within `timeoutMs`.
    #[serde(rename_all = "camelCase")]
    Callback {
        url: String,
        #[serde(default = "default_callback_timeout")]
        timeout_ms: u64,
    },
}

fn default_callback_timeout() -> u64 {
    2000
}

/// A provider's fee: basis points of the total plus a fixed amount in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fee {
    #[serde(default)]
    pub percent_bp: u32,
    #[serde(default)]
    pub fixed_minor: i64,
}

impl OrderRules {
    /// Checks the rules that need no call to the shop. Stock callbacks are
    /// the caller's (they need I/O): see [`OrderRules::stock_callback`].
    pub fn check(&self, order: &NewOrder) -> ValidationErrors {
        let mut errs = ValidationErrors::default();
        match (&order.shipping_address, self.require_shipping_address) {
            (None, true) => errs.push("shippingAddress", "required", "is required by this shop"),
            (None, false) => {}
            (Some(addr), _) => {
                if let Some(cov) = &self.delivery
                    && !cov.covers(&addr.state, &addr.zipcode)
                {
                    errs.push(
                        "shippingAddress.zipcode",
                        "not_covered",
                        format!("the shop does not deliver to {} ({})", addr.zipcode, addr.state),
                    );
                }
            }
        }
        if let Some(Stock::List { items }) = &self.stock {
            // Several lines may name the same code: check the sum.
            let mut wanted: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
            for (i, item) in order.items.iter().enumerate() {
                match item.code.as_deref() {
                    None => errs.push(
                        format!("items[{i}].code"),
                        "required",
                        "is required: this shop checks stock by item code",
                    ),
                    Some(code) => {
                        let e = wanted.entry(code).or_insert((0, i));
                        e.0 += item.qty;
                    }
                }
            }
            for (code, (qty, i)) in wanted {
                let available = items.get(code).copied().unwrap_or(0);
                if qty > available {
                    errs.push(
                        format!("items[{i}].qty"),
                        "unavailable",
                        if available <= 0 {
                            format!("item {code} is not available")
                        } else {
                            format!("only {available} of item {code} available, {qty} ordered")
                        },
                    );
                }
            }
        }
        errs
    }

    /// The stock callback to ask, if the shop configured one.
    pub fn stock_callback(&self) -> Option<(&str, u64)> {
        match &self.stock {
            Some(Stock::Callback { url, timeout_ms }) => Some((url.as_str(), *timeout_ms)),
            _ => None,
        }
    }

    /// What `provider` charges the shop for an order of `total`, rounded
    /// half up to the minor unit; never more than the total.
    pub fn fee_for(&self, provider: &str, total: Money) -> Money {
        let Some(fee) = self.provider_fees.get(provider) else {
            return Money::zero(total.currency());
        };
        let pct = (i128::from(total.minor()) * i128::from(fee.percent_bp) + 5_000) / 10_000;
        let minor = (pct + i128::from(fee.fixed_minor)).clamp(0, i128::from(total.minor()));
        Money::from_minor(minor as i64, total.currency())
    }

    /// Checks a rules document before it is stored.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(cov) = &self.delivery {
            for s in &cov.states {
                crate::identity::parse_uf(s).map_err(|e| format!("delivery.states: {s:?} {e}"))?;
            }
            for (a, b) in &cov.cep_ranges {
                let a = crate::identity::parse_cep(a).map_err(|e| format!("delivery.cepRanges: {a:?} {e}"))?;
                let b = crate::identity::parse_cep(b).map_err(|e| format!("delivery.cepRanges: {b:?} {e}"))?;
                if a > b {
                    return Err(format!("delivery.cepRanges: {a} is after {b}"));
                }
            }
        }
        match &self.stock {
            Some(Stock::List { items }) if items.values().any(|q| *q < 0) => {
                return Err("stock.items: quantities must not be negative".into());
            }
            Some(Stock::Callback { url, timeout_ms }) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err("stock.url must be an http(s) URL".into());
                }
                if !(100..=2500).contains(timeout_ms) {
                    return Err("stock.timeoutMs must be 100 to 2500 (Wake answers within 3 s)".into());
                }
            }
            _ => {}
        }
        for (p, f) in &self.provider_fees {
            if f.percent_bp > 10_000 || f.fixed_minor < 0 {
                return Err(format!(
                    "providerFees.{p}: percentBp must be 0..10000 and fixedMinor not negative"
                ));
            }
        }
        if let Some(problem) = self
            .delivery_time
            .as_ref()
            .and_then(|d| d.problems().into_iter().next())
        {
            return Err(problem);
        }
        Ok(())
    }
}

impl DeliveryCoverage {
    pub fn covers(&self, state: &str, cep: &str) -> bool {
        let in_state = self.states.iter().any(|s| s.eq_ignore_ascii_case(state));
        let in_range = self.cep_ranges.iter().any(|(a, b)| {
            let (a, b) = (a.replace('-', ""), b.replace('-', ""));
            a.as_str() <= cep && cep <= b.as_str()
        });
        in_state || in_range
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use serde_json::json;

    fn order() -> NewOrder {
        NewOrder::from_json(&json!({
            "correlationID": "r-1", "provider": "openpix",
            "items": [
                {"code": "A1", "title": "Camiseta", "price": 10, "qty": 2, "total": 20},
                {"code": "B2", "title": "Caneca", "price": 5, "qty": 1, "total": 5},
                {"code": "A1", "title": "Camiseta extra", "price": 10, "qty": 1, "total": 10}
            ],
            "total": 35,
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "31324227036"},
            "shippingAddress": {"street": "Rua X", "number": "1", "city": "Curitiba", "state": "PR", "zipcode": "80010-000"}
        }))
        .unwrap()
    }

    fn rules(v: serde_json::Value) -> OrderRules {
        let r: OrderRules = serde_json::from_value(v).unwrap();
        r.validate().unwrap();
        r
    }

    #[test]
    fn delivery_coverage_by_state_or_cep_range() {
        assert!(
            rules(json!({"delivery": {"states": ["PR"]}}))
                .check(&order())
                .is_empty()
        );
        assert!(
            rules(json!({"delivery": {"cepRanges": [["80000000", "82999999"]]}}))
                .check(&order())
                .is_empty()
        );
        let errs =
            rules(json!({"delivery": {"states": ["SP"], "cepRanges": [["01000000", "09999999"]]}})).check(&order());
        assert!(errs.has("shippingAddress.zipcode", "not_covered"), "{errs}");
    }

    #[test]
    fn stock_list_sums_lines_of_one_code() {
        assert!(
            rules(json!({"stock": {"kind": "list", "items": {"A1": 3, "B2": 1}}}))
                .check(&order())
                .is_empty()
        );
        let errs = rules(json!({"stock": {"kind": "list", "items": {"A1": 2}}})).check(&order());
        assert!(errs.has("items[0].qty", "unavailable"), "{errs}");
        assert!(errs.has("items[1].qty", "unavailable"), "{errs}");
        assert_eq!(errs.0.len(), 2);
    }

    #[test]
    fn required_address() {
        let mut o = order();
        o.shipping_address = None;
        assert!(
            rules(json!({"requireShippingAddress": true}))
                .check(&o)
                .has("shippingAddress", "required")
        );
        assert!(rules(json!({})).check(&o).is_empty());
    }

    #[test]
    fn provider_fees_round_half_up_and_never_exceed_the_total() {
        let r = rules(json!({"providerFees": {"openpix": {"percentBp": 80, "fixedMinor": 10}}}));
        // 0.8% of 123.45 = 0.98760 -> 99 centavos, + 10.
        assert_eq!(
            r.fee_for("openpix", Money::from_minor(12345, Currency::Brl)).minor(),
            109
        );
        assert_eq!(
            r.fee_for("pixelpay", Money::from_minor(12345, Currency::Brl)).minor(),
            0
        );
        let big = rules(json!({"providerFees": {"openpix": {"percentBp": 0, "fixedMinor": 500}}}));
        assert_eq!(
            big.fee_for("openpix", Money::from_minor(100, Currency::Brl)).minor(),
            100
        );
    }

    #[test]
    fn bad_rules_are_refused_before_storing() {
        let bad: OrderRules = serde_json::from_value(json!({"delivery": {"states": ["XX"]}})).unwrap();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_value::<OrderRules>(json!({"unknown": 1})).is_err());
        let slow: OrderRules = serde_json::from_value(
            json!({"stock": {"kind": "callback", "url": "https://s.example/stock", "timeoutMs": 5000}}),
        )
        .unwrap();
        assert!(slow.validate().is_err());
    }
}
