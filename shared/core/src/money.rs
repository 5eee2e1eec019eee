//! Money as integer minor units with an ISO-4217 currency. Never floats.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The currencies payhub settles in. Each knows its minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    /// Brazilian real: PIX through OpenPix, Wake Commerce.
    Brl,
    /// Honduran lempira: PixelPay.
    Hnl,
    /// US dollar: PixelPay.
    Usd,
    /// Nicaraguan córdoba: PixelPay.
    Nio,
    /// Colombian peso: Pago Seguro. ISO 4217 gives it two minor digits
    /// (centavos), which Pago Seguro's `amount` may carry (`90000.50`).
    Cop,
}

impl Currency {
    /// Every currency payhub handles.
    pub const ALL: &[Currency] = &[
        Currency::Brl,
        Currency::Hnl,
        Currency::Usd,
        Currency::Nio,
        Currency::Cop,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Brl => "BRL",
            Currency::Hnl => "HNL",
            Currency::Usd => "USD",
            Currency::Nio => "NIO",
            Currency::Cop => "COP",
        }
    }

    /// Digits after the decimal point in this currency's minor unit.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Brl | Currency::Hnl | Currency::Usd | Currency::Nio | Currency::Cop => 2,
        }
    }

    pub fn parse(code: &str) -> Option<Currency> {
        match code {
            "BRL" => Some(Currency::Brl),
            "HNL" => Some(Currency::Hnl),
            "USD" => Some(Currency::Usd),
            "NIO" => Some(Currency::Nio),
            "COP" => Some(Currency::Cop),
            _ => None,
        }
    }
}

/// An amount of money: an integer count of the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// The largest amount payhub accepts in one order: 10 million in major units.
pub const MAX_MINOR: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is not a decimal number")]
    NotANumber,
    #[error("has more than {0} decimal places")]
    TooPrecise(u32),
    #[error("is too large")]
    TooLarge,
}

impl Money {
    pub const fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Parses a decimal in major units ("99.99", "300", "-22.9") exactly.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let text = text.trim();
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        {
            return Err(MoneyError::NotANumber);
        }
        let d = Decimal::from_str(text).map_err(|_| MoneyError::NotANumber)?;
        Self::from_decimal(d, currency)
    }

    /// Converts a decimal in major units exactly; refuses sub-minor precision.
    pub fn from_decimal(d: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let exp = currency.exponent();
        let d = d.normalize();
        if d.scale() > exp {
            return Err(MoneyError::TooPrecise(exp));
        }
        let scaled = d
            .checked_mul(Decimal::from(10i64.pow(exp)))
            .ok_or(MoneyError::TooLarge)?;
        let minor = i64::try_from(scaled).map_err(|_| MoneyError::TooLarge)?;
        if minor.abs() > MAX_MINOR {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money { minor, currency })
    }

    /// Parses a JSON value holding a number or a numeric string, exactly.
    ///
    /// JSON numbers arrive as f64; Rust prints an f64 as the shortest decimal
    /// that reads back to the same f64, which is the literal the sender wrote
    /// for any amount with fewer than 15 significant digits. That text is then
    /// parsed as a decimal, so `0.1 + 0.2` style errors never enter.
    pub fn from_json(value: &serde_json::Value, currency: Currency) -> Result<Money, MoneyError> {
        match value {
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return Self::from_decimal(Decimal::from(i), currency);
                }
                let f = n.as_f64().ok_or(MoneyError::NotANumber)?;
                if !f.is_finite() || f.abs() > 1e13 {
                    return Err(MoneyError::TooLarge);
                }
                Self::parse_major(&format!("{f}"), currency)
            }
            serde_json::Value::String(s) => Self::parse_major(s, currency),
            _ => Err(MoneyError::NotANumber),
        }
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        debug_assert_eq!(self.currency, other.currency);
        Some(Money {
            minor: self.minor.checked_add(other.minor)?,
            currency: self.currency,
        })
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        debug_assert_eq!(self.currency, other.currency);
        Some(Money {
            minor: self.minor.checked_sub(other.minor)?,
            currency: self.currency,
        })
    }

    pub fn checked_mul(self, qty: i64) -> Option<Money> {
        Some(Money {
            minor: self.minor.checked_mul(qty)?,
            currency: self.currency,
        })
    }

    /// The amount in major units with exactly the currency's decimals ("1.00").
    pub fn to_major_string(self) -> String {
        let exp = self.currency.exponent();
        let d = Decimal::new(self.minor, exp);
        format!("{d:.prec$}", prec = exp as usize)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.currency.code(), self.to_major_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn brl(v: serde_json::Value) -> Result<i64, MoneyError> {
        Money::from_json(&v, Currency::Brl).map(Money::minor)
    }

    #[test]
    fn json_numbers_convert_exactly() {
        assert_eq!(brl(json!(99.99)), Ok(9999));
        assert_eq!(brl(json!(0.1)), Ok(10));
        assert_eq!(brl(json!(300.0)), Ok(30000));
        assert_eq!(brl(json!(300)), Ok(30000));
        assert_eq!(brl(json!(-22.9)), Ok(-2290));
        assert_eq!(brl(json!(123.99)), Ok(12399));
        assert_eq!(brl(json!(1234567.89)), Ok(123456789));
    }

    #[test]
    fn strings_convert_exactly() {
        assert_eq!(brl(json!("0.00")), Ok(0));
        assert_eq!(brl(json!("75000")), Ok(7500000));
        assert_eq!(brl(json!("10.5")), Ok(1050));
    }

    #[test]
    fn refuses_sub_centavo_and_garbage() {
        assert_eq!(brl(json!(0.001)), Err(MoneyError::TooPrecise(2)));
        assert_eq!(brl(json!("1,00")), Err(MoneyError::NotANumber));
        assert_eq!(brl(json!("1e3")), Err(MoneyError::NotANumber));
        assert_eq!(brl(json!(true)), Err(MoneyError::NotANumber));
        assert_eq!(brl(json!(null)), Err(MoneyError::NotANumber));
        assert_eq!(brl(json!(1e20)), Err(MoneyError::TooLarge));
        assert_eq!(brl(json!("99999999999")), Err(MoneyError::TooLarge));
    }

    #[test]
    fn trailing_zeros_are_not_precision() {
        assert_eq!(brl(json!("1.500")), Ok(150));
    }

    #[test]
    fn arithmetic_and_display() {
        let a = Money::from_minor(9999, Currency::Brl);
        assert_eq!(a.checked_mul(3).unwrap().minor(), 29997);
        assert_eq!(a.to_major_string(), "99.99");
        assert_eq!(Money::from_minor(100, Currency::Brl).to_major_string(), "1.00");
        assert_eq!(Money::from_minor(5, Currency::Brl).to_string(), "BRL 0.05");
        assert!(Money::from_minor(i64::MAX, Currency::Brl).checked_add(a).is_none());
    }

    #[test]
    fn every_currency_round_trips_its_code_and_two_decimals() {
        for c in [Currency::Brl, Currency::Hnl, Currency::Usd, Currency::Nio] {
            assert_eq!(Currency::parse(c.code()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.code()));
            assert_eq!(c.exponent(), 2);
            let m = Money::parse_major("1234.5", c).unwrap();
            assert_eq!(m.minor(), 123450);
            assert_eq!(m.to_major_string(), "1234.50");
        }
        assert_eq!(Currency::parse("usd"), None);
        assert_eq!(Money::from_minor(-1, Currency::Hnl).to_major_string(), "-0.01");
        assert_eq!(Money::from_minor(0, Currency::Nio).to_string(), "NIO 0.00");
    }
}
