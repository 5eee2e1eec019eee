//! Pago Seguro's wire shapes: the checkout form (`key, txnid, amount,
//! productinfo, firstname, email, hash, udf1, url_response`) and the return
//! (`orderReference, value, product, customerFullName, customerEmail,
//! status, sign`).
//!
//! `hash` = lowercase hex SHA-512 of
//! `key|txnid|amount|productinfo|firstname|email|/payment/process||||||||||<api_key>`
//! (the six fields, `|/payment/process`, ten `|`, the API key), over exactly
//! the bytes posted. The return's `sign` is the same formula over the
//! returned values; it proves only that someone holding the API key signed
//! them, so the reference and the amount are checked against the order too.

/// `udf1`, fixed by Pago Seguro.
pub const UDF1: &str = "/payment/process";

/// What the shop's order gives the form.
#[derive(Debug, Clone)]
pub struct FormInput<'a> {
    /// The shop's own Pago Seguro Account ID (numeric).
    pub account_id: &'a str,
    /// The order's reference at Pago Seguro (`txnid`, at most 20 characters).
    pub reference: &'a str,
    /// The total in COP centavos.
    pub amount_minor: i64,
    pub description: &'a str,
    pub buyer_name: &'a str,
    pub buyer_email: &'a str,
    /// Where Pago Seguro sends the buyer back (webhook-verifier's return URL).
    pub url_response: &'a str,
}

/// The form's fields, in the order they are posted, `hash` included.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckoutForm {
    pub fields: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for CheckoutForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not a secret, but the buyer's name and e-mail are
        // personal data: show the names of the fields only.
        f.debug_struct("CheckoutForm")
            .field("fields", &self.fields.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the Account ID must be numeric")]
    AccountId,
    #[error("the reference must be 1 to 20 characters without '|'")]
    Reference,
    #[error("the amount must be positive")]
    Amount,
}

/// `75000`, `90000.50`: `.`-decimal without thousands separators, as the
/// official plugins post it (the hash covers this exact text).
pub fn format_amount(minor: i64) -> String {
    let (whole, cents) = (minor / 100, minor % 100);
    if cents == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{cents:02}")
    }
}

/// A returned `value` in centavos: digits with an optional `.` and at most
/// two decimals (`75000`, `75000.0`, `90000.5`, `90000.50`).
pub fn parse_amount(text: &str) -> Option<i64> {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || whole.len() > 13 {
        return None;
    }
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let cents = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse::<i64>().ok()?,
    };
    whole.parse::<i64>().ok()?.checked_mul(100)?.checked_add(cents)
}

/// Text fields are cut to Pago Seguro's sizes and cleared of `|`, which
/// would shift the hash's layout.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| *c != '|' && !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The documented hash layout over `parts` (key, reference, amount,
/// product, name, e-mail).
pub fn sign(parts: [&str; 6], api_key: &str) -> String {
    let text = format!("{}|{UDF1}||||||||||{api_key}", parts.join("|"));
    let digest = ring::digest::digest(&ring::digest::SHA512, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The auto-submitting form's fields for `input`, signed with the shop's
/// API key.
pub fn checkout_form(input: &FormInput<'_>, api_key: &str) -> Result<CheckoutForm, FormError> {
    if input.account_id.is_empty() || !input.account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FormError::AccountId);
    }
    if input.reference.is_empty() || input.reference.chars().count() > 20 || input.reference.contains('|') {
        return Err(FormError::Reference);
    }
    if input.amount_minor <= 0 {
        return Err(FormError::Amount);
    }
    let amount = format_amount(input.amount_minor);
    let product = clean(input.description, 40);
    let name = clean(input.buyer_name, 40);
    let email = clean(input.buyer_email, 100);
    let hash = sign(
        [input.account_id, input.reference, &amount, &product, &name, &email],
        api_key,
    );
    Ok(CheckoutForm {
        fields: vec![
            ("key", input.account_id.to_string()),
            ("txnid", input.reference.to_string()),
            ("amount", amount),
            ("productinfo", product),
            ("firstname", name),
            ("email", email),
            ("hash", hash),
            ("udf1", UDF1.to_string()),
            ("url_response", input.url_response.to_string()),
        ],
    })
}

/// What Pago Seguro's return says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnStatus {
    /// 22, "Transacción Autorizada".
    Authorised,
    /// 17, "Transacción Rechazada".
    Rejected,
    /// Anything else, "En Proceso".
    Pending,
}

impl ReturnStatus {
    pub fn from_code(code: &str) -> ReturnStatus {
        match code.trim() {
            "22" => ReturnStatus::Authorised,
            "17" => ReturnStatus::Rejected,
            _ => ReturnStatus::Pending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStatus::Authorised => "authorised",
            ReturnStatus::Rejected => "rejected",
            ReturnStatus::Pending => "pending",
        }
    }
}

/// What the order expects the return to be about.
#[derive(Debug, Clone)]
pub struct ReturnCheck<'a> {
    pub account_id: &'a str,
    pub reference: &'a str,
    pub amount_minor: i64,
}

/// The verdict on a return, to be stored with it. Only
/// `Verified(Authorised)` may pay an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnVerdict {
    Verified(ReturnStatus),
    /// Not signed with the shop's key, or about another order or amount:
    /// the order stays as it is and the buyer is told it is being confirmed.
    Rejected(&'static str),
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a return's parameters (`orderReference`, `value`, `product`,
/// `customerFullName`, `customerEmail`, `status`, `sign`): the `sign`
/// recomputed in constant time with the shop's API key, then the reference
/// and the amount against the order.
pub fn verify_return(params: &[(String, String)], expected: &ReturnCheck<'_>, api_key: &str) -> ReturnVerdict {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(reference), Some(value), Some(product), Some(name), Some(email), Some(status), Some(given)) = (
        get("orderReference"),
        get("value"),
        get("product"),
        get("customerFullName"),
        get("customerEmail"),
        get("status"),
        get("sign"),
    ) else {
        return ReturnVerdict::Rejected("missing_field");
    };
    let want = sign([expected.account_id, reference, value, product, name, email], api_key);
    if !constant_time_eq(given.trim().to_ascii_lowercase().as_bytes(), want.as_bytes()) {
        return ReturnVerdict::Rejected("bad_signature");
    }
    if reference != expected.reference {
        return ReturnVerdict::Rejected("other_order");
    }
    if parse_amount(value) != Some(expected.amount_minor) {
        return ReturnVerdict::Rejected("amount_mismatch");
    }
    ReturnVerdict::Verified(ReturnStatus::from_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4Vj8eK4rloUd272L48hsrarnUA";

    fn input() -> FormInput<'static> {
        FormInput {
            account_id: "508029",
            reference: "PH-0001",
            amount_minor: 7_500_000,
            description: "Camiseta | Roja",
            buyer_name: "Pedro Pérez",
            buyer_email: "pedro@example.com",
            url_response: "https://hooks.payhub.example/returns/pagoseguro/abc",
        }
    }

    #[test]
    fn the_hash_follows_the_documented_layout() {
        // Computed independently: python3 -c "import hashlib;print(hashlib.sha512(
        // b'508029|PH-0001|75000|Camiseta  Roja|Pedro P\xc3\xa9rez|pedro@example.com|/payment/process||||||||||4Vj8eK4rloUd272L48hsrarnUA').hexdigest())"
        let form = checkout_form(&input(), KEY).unwrap();
        let field = |k: &str| form.fields.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(field("amount"), "75000");
        assert_eq!(field("productinfo"), "Camiseta  Roja", "no '|' reaches the hash");
        assert_eq!(field("udf1"), "/payment/process");
        assert_eq!(
            field("hash"),
            "8b564ac0efd2b114010b18454bf691b43e3ff0891a3a83edb336f532becb18bce05e5afd049d966848644be069ed0da3c965f4e7cda10f6294eefdea7962e859"
        );
        assert_eq!(field("hash").len(), 128);
        assert!(!format!("{form:?}").contains("pedro@example.com"));
    }

    #[test]
    fn bad_form_input_is_refused() {
        let mut i = input();
        i.account_id = "50a";
        assert_eq!(checkout_form(&i, KEY), Err(FormError::AccountId));
        let mut i = input();
        i.reference = "123456789012345678901";
        assert_eq!(checkout_form(&i, KEY), Err(FormError::Reference));
        let mut i = input();
        i.amount_minor = 0;
        assert_eq!(checkout_form(&i, KEY), Err(FormError::Amount));
    }

    #[test]
    fn amounts_are_written_and_read_exactly() {
        assert_eq!(format_amount(7_500_000), "75000");
        assert_eq!(format_amount(9_000_050), "90000.50");
        assert_eq!(parse_amount("90000.5"), Some(9_000_050));
        assert_eq!(parse_amount("75000"), Some(7_500_000));
        assert_eq!(parse_amount("75000.00"), Some(7_500_000));
        for bad in ["", "75.000,00", "1e5", "-5", "7.555", ".5"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
    }

    fn ret(status: &str, value: &str, reference: &str, key: &str) -> Vec<(String, String)> {
        let parts = [
            "508029",
            reference,
            value,
            "Camiseta  Roja",
            "Pedro Pérez",
            "pedro@example.com",
        ];
        vec![
            ("orderReference".into(), reference.into()),
            ("value".into(), value.into()),
            ("product".into(), parts[3].into()),
            ("customerFullName".into(), parts[4].into()),
            ("customerEmail".into(), parts[5].into()),
            ("status".into(), status.into()),
            ("sign".into(), sign(parts, key)),
        ]
    }

    #[test]
    fn a_return_is_verified_then_mapped() {
        let check = ReturnCheck {
            account_id: "508029",
            reference: "PH-0001",
            amount_minor: 7_500_000,
        };
        assert_eq!(
            verify_return(&ret("22", "75000", "PH-0001", KEY), &check, KEY),
            ReturnVerdict::Verified(ReturnStatus::Authorised)
        );
        assert_eq!(
            verify_return(&ret("17", "75000.00", "PH-0001", KEY), &check, KEY),
            ReturnVerdict::Verified(ReturnStatus::Rejected)
        );
        assert_eq!(
            verify_return(&ret("4", "75000", "PH-0001", KEY), &check, KEY),
            ReturnVerdict::Verified(ReturnStatus::Pending)
        );
        // Signed with another key, tampered, about another order or amount.
        assert_eq!(
            verify_return(&ret("22", "75000", "PH-0001", "other"), &check, KEY),
            ReturnVerdict::Rejected("bad_signature")
        );
        let mut tampered = ret("17", "75000", "PH-0001", KEY);
        tampered[5].1 = "22".into();
        // `status` is not covered by `sign` (the documented formula has no
        // place for it): a flipped status verifies, which is why a verified
        // 22 is re-checked with Pago Seguro before an order is paid.
        assert_eq!(
            verify_return(&tampered, &check, KEY),
            ReturnVerdict::Verified(ReturnStatus::Authorised)
        );
        let mut tampered = ret("22", "75000", "PH-0001", KEY);
        tampered[1].1 = "100".into();
        assert_eq!(
            verify_return(&tampered, &check, KEY),
            ReturnVerdict::Rejected("bad_signature")
        );
        assert_eq!(
            verify_return(&ret("22", "75000", "PH-0002", KEY), &check, KEY),
            ReturnVerdict::Rejected("other_order")
        );
        assert_eq!(
            verify_return(&ret("22", "100", "PH-0001", KEY), &check, KEY),
            ReturnVerdict::Rejected("amount_mismatch")
        );
        let mut missing = ret("22", "75000", "PH-0001", KEY);
        missing.pop();
        assert_eq!(
            verify_return(&missing, &check, KEY),
            ReturnVerdict::Rejected("missing_field")
        );
    }
}
