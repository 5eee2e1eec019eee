//! Identity values parsed at the edge: CPF/CNPJ, e-mail, correlation id,
//! phone, CEP and state code. Private fields; the only way in is `parse`.

use serde::{Deserialize, Serialize};

fn digits_of(text: &str, allowed_punct: &[char]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.trim().chars() {
        if let Some(d) = c.to_digit(10) {
            out.push(d as u8);
        } else if !allowed_punct.contains(&c) {
            return None;
        }
    }
    Some(out)
}

fn check_digit(digits: &[u8], weights: &[u32]) -> u8 {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| u32::from(*d) * w).sum();
    let r = sum % 11;
    if r < 2 { 0 } else { (11 - r) as u8 }
}

/// A Brazilian individual taxpayer number, 11 digits with valid check digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cpf(String);

impl Cpf {
    pub fn parse(text: &str) -> Result<Cpf, &'static str> {
        let d = digits_of(text, &['.', '-', ' ']).ok_or("must contain only digits, '.' and '-'")?;
        if d.len() != 11 {
            return Err("must have 11 digits");
        }
        if d.iter().all(|x| *x == d[0]) {
            return Err("is not a valid CPF");
        }
        let w1: Vec<u32> = (2..=10).rev().collect();
        let w2: Vec<u32> = (2..=11).rev().collect();
        if check_digit(&d[..9], &w1) != d[9] || check_digit(&d[..10], &w2) != d[10] {
            return Err("has invalid check digits");
        }
        Ok(Cpf(d.iter().map(|x| char::from(b'0' + x)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Brazilian company taxpayer number, 14 digits with valid check digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cnpj(String);

impl Cnpj {
    pub fn parse(text: &str) -> Result<Cnpj, &'static str> {
        let d = digits_of(text, &['.', '-', '/', ' ']).ok_or("must contain only digits, '.', '/' and '-'")?;
        if d.len() != 14 {
            return Err("must have 14 digits");
        }
        if d.iter().all(|x| *x == d[0]) {
            return Err("is not a valid CNPJ");
        }
        const W1: [u32; 12] = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
        const W2: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
        if check_digit(&d[..12], &W1) != d[12] || check_digit(&d[..13], &W2) != d[13] {
            return Err("has invalid check digits");
        }
        Ok(Cnpj(d.iter().map(|x| char::from(b'0' + x)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                <$t>::parse(&s).map_err(|e| e.to_string())
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    };
}
string_conversions!(Cpf);
string_conversions!(Cnpj);
string_conversions!(Email);
string_conversions!(CorrelationId);

/// A CPF or a CNPJ, told apart by length; or, for a buyer outside Brazil,
/// a national id (Honduras' DNI, a passport number ...), possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum TaxId {
    #[serde(rename = "BR:CPF")]
    Cpf(Cpf),
    #[serde(rename = "BR:CNPJ")]
    Cnpj(Cnpj),
    /// Letters and digits only, upper-cased; empty when the buyer gave none.
    #[serde(rename = "national")]
    National(String),
}

impl TaxId {
    pub fn parse(text: &str) -> Result<TaxId, &'static str> {
        let n = text.chars().filter(char::is_ascii_digit).count();
        match n {
            11 => Cpf::parse(text).map(TaxId::Cpf),
            14 => Cnpj::parse(text).map(TaxId::Cnpj),
            _ => Err("must be a CPF (11 digits) or a CNPJ (14 digits)"),
        }
    }

    /// A buyer's id outside Brazil: a valid CPF or CNPJ is still read as
    /// one; otherwise 4 to 30 letters and digits (spaces, dots and dashes
    /// dropped). `None` (not given) is [`TaxId::none`].
    pub fn parse_national(text: &str) -> Result<TaxId, &'static str> {
        if let Ok(t) = TaxId::parse(text) {
            return Ok(t);
        }
        let kept: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-' | '/'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if (4..=30).contains(&kept.len()) && kept.chars().all(|c| c.is_ascii_alphanumeric()) {
            Ok(TaxId::National(kept))
        } else {
            Err("must be the buyer's national id: 4 to 30 letters and digits")
        }
    }

    /// No id given (a buyer outside Brazil).
    pub fn none() -> TaxId {
        TaxId::National(String::new())
    }

    /// Digits only, as providers want them (a national id as given).
    pub fn digits(&self) -> &str {
        match self {
            TaxId::Cpf(c) => c.as_str(),
            TaxId::Cnpj(c) => c.as_str(),
            TaxId::National(n) => n,
        }
    }

    /// For logs: the first three and last two digits only.
    pub fn masked(&self) -> String {
        mask_middle(self.digits(), 3, 2)
    }
}

/// Keeps `head` leading and `tail` trailing characters, stars the rest.
pub fn mask_middle(s: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Unicode's invisible formatting characters (general category Cf, Unicode
/// 15.1) and the line and paragraph separators (Zl, Zp): zero-width spaces
/// and joiners, bidi embeddings, overrides and isolates, the byte-order
/// mark, soft hyphens, tag characters. They change how text is shown
/// without being seen (a bidi override can reverse an order's title in an
/// e-mail or a dashboard), so no free-text field takes them.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// A control character (Unicode Cc: C0, DEL, C1) or an invisible formatting
/// character (Cf, Zl, Zp).
pub fn is_hidden_char(c: char) -> bool {
    let n = u32::from(c);
    c.is_control() || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Refuses text holding a control or invisible formatting character; the
/// message names the first one (as `U+XXXX`, never the character itself).
pub fn check_visible_text(text: &str) -> Result<(), String> {
    match text.chars().enumerate().find(|(_, c)| is_hidden_char(*c)) {
        None => Ok(()),
        Some((i, c)) => Err(format!(
            "must not contain control or invisible formatting characters (U+{:04X} at character {})",
            u32::from(c),
            i + 1
        )),
    }
}

/// A GUID in its usual hyphenated form (`fe31c0e6-b625-4772-8890-dd7a89053d05`,
/// any case), returned lower-cased.
pub fn parse_guid(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    let shape_ok = t.len() == 36
        && t.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shape_ok {
        return Err("must be a GUID such as fe31c0e6-b625-4772-8890-dd7a89053d05");
    }
    Ok(t.to_ascii_lowercase())
}

/// An e-mail address, checked for shape (one `@`, a dotted domain, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Email, &'static str> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is required");
        }
        if t.len() > 254 {
            return Err("is longer than 254 characters");
        }
        let Some((local, domain)) = t.split_once('@') else {
            return Err("is not an e-mail address");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local
                .chars()
                .any(|c| c.is_whitespace() || is_hidden_char(c) || "<>()[]\\,;:\"@".contains(c));
        if !domain_ok || !local_ok {
            return Err("is not an e-mail address");
        }
        Ok(Email(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs: `a***@example.com`.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or((&self.0, ""));
        format!("{}***@{}", local.chars().next().unwrap_or('*'), domain)
    }
}

/// The shop's own reference for an order, unique per shop (and the
/// idempotency key of `POST /v1/orders`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn parse(text: &str) -> Result<CorrelationId, &'static str> {
        if text.is_empty() {
            return Err("is required");
        }
        if text.len() > 100 {
            return Err("is longer than 100 characters");
        }
        if !text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            return Err("may contain only letters, digits, '-', '_', '.' and ':'");
        }
        Ok(CorrelationId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Brazilian phone number as digits with country code (`5511999999999`),
/// normalised the way OpenPix's own plugin does it.
pub fn parse_phone(text: &str) -> Result<String, &'static str> {
    let d = digits_of(text, &['+', '(', ')', '-', ' ', '.']).ok_or("is not a phone number")?;
    let mut s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    while s.starts_with('0') {
        s.remove(0);
    }
    if s.len() == 10 || s.len() == 11 {
        s.insert_str(0, "55");
    }
    if !(12..=13).contains(&s.len()) || !s.starts_with("55") {
        return Err("must be a Brazilian phone number with area code");
    }
    Ok(s)
}

/// A CEP (Brazilian postal code): 8 digits, `-` allowed after the fifth.
pub fn parse_cep(text: &str) -> Result<String, &'static str> {
    let d = digits_of(text, &['-', '.', ' ']).ok_or("must be 8 digits")?;
    if d.len() != 8 {
        return Err("must be 8 digits");
    }
    if d.iter().all(|x| *x == 0) {
        return Err("is not a valid CEP");
    }
    Ok(d.iter().map(|x| char::from(b'0' + x)).collect())
}

/// The 27 federative units of Brazil.
pub const UF_CODES: [&str; 27] = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR", "PE", "PI", "RJ",
    "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
];

pub fn parse_uf(text: &str) -> Result<String, &'static str> {
    let up = text.trim().to_ascii_uppercase();
    if UF_CODES.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err("must be a Brazilian state code such as SP or PR")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpf_check_digits() {
        for ok in ["47043622050", "31324227036", "470.436.220-50"] {
            assert!(Cpf::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Cpf::parse("470.436.220-50").unwrap().as_str(), "47043622050");
        assert_eq!(Cpf::parse("11111111111"), Err("is not a valid CPF"));
        assert_eq!(Cpf::parse("12345678976"), Err("has invalid check digits"));
        assert_eq!(Cpf::parse("1234567890"), Err("must have 11 digits"));
        assert!(Cpf::parse("123456789O9").is_err());
    }

    #[test]
    fn cnpj_check_digits() {
        assert!(Cnpj::parse("44.720.743/0001-01").is_ok());
        assert_eq!(Cnpj::parse("44720743000102"), Err("has invalid check digits"));
        assert_eq!(Cnpj::parse("00000000000000"), Err("is not a valid CNPJ"));
    }

    #[test]
    fn tax_id_dispatches_on_length() {
        assert!(matches!(TaxId::parse("31324227036"), Ok(TaxId::Cpf(_))));
        assert!(matches!(TaxId::parse("11222333000181"), Ok(TaxId::Cnpj(_))));
        assert!(TaxId::parse("123").is_err());
        assert_eq!(TaxId::parse("31324227036").unwrap().masked(), "313******36");
    }

    #[test]
    fn email_shapes() {
        assert!(Email::parse("buyer@example.com").is_ok());
        assert!(Email::parse("a.b+tag@sub.example.com.br").is_ok());
        for bad in [
            "",
            "no-at",
            "a@b",
            "a b@example.com",
            "@example.com",
            "a@.com",
            "a@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Email::parse("buyer@example.com").unwrap().masked(), "b***@example.com");
    }

    #[test]
    fn phone_cep_uf() {
        assert_eq!(parse_phone("(11) 94444-4444").unwrap(), "5511944444444");
        assert_eq!(parse_phone("+55 11 99999-9999").unwrap(), "5511999999999");
        assert!(parse_phone("123").is_err());
        assert_eq!(parse_cep("85920-970").unwrap(), "85920970");
        assert!(parse_cep("8592097").is_err());
        assert_eq!(parse_uf("pr").unwrap(), "PR");
        assert!(parse_uf("XX").is_err());
    }

    #[test]
    fn hidden_characters_are_found_and_named() {
        for bad in [
            "Maria\u{200B}Oliveira",    // zero-width space
            "Camiseta \u{202E}atnemos", // right-to-left override
            "\u{2066}isolated\u{2069}",
            "tab\there",
            "line\nbreak",
            "nul\u{0}",
            "del\u{7f}",
            "c1\u{85}",
            "bom\u{FEFF}",
            "soft\u{AD}hyphen",
            "tag\u{E0041}",
            "sep\u{2028}",
        ] {
            assert!(check_visible_text(bad).is_err(), "{bad:?}");
        }
        let e = check_visible_text("ab\u{200B}").unwrap_err();
        assert!(e.contains("U+200B at character 3"), "{e}");
        assert!(!e.contains('\u{200B}'));
        for ok in [
            "Maria Oliveira",
            "São João d'Aliança",
            "Ação — 10% off",
            "日本語",
            "emoji 🎉",
        ] {
            assert_eq!(check_visible_text(ok), Ok(()), "{ok:?}");
        }
        assert!(Email::parse("a\u{200B}b@example.com").is_err());
    }

    #[test]
    fn guids() {
        assert_eq!(
            parse_guid("FE31C0E6-B625-4772-8890-DD7A89053D05").unwrap(),
            "fe31c0e6-b625-4772-8890-dd7a89053d05"
        );
        for bad in [
            "",
            "pedido-1",
            "fe31c0e6b6254772889 0dd7a89053d05",
            "fe31c0e6-b625-4772-8890-dd7a89053d0",
            "fe31c0e6-b625-4772-8890-dd7a89053d0g",
            "{fe31c0e6-b625-4772-8890-dd7a89053d05}",
        ] {
            assert!(parse_guid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn correlation_id_charset() {
        assert!(CorrelationId::parse("9134e286-6f71-427a-bf00-241681624587").is_ok());
        assert!(CorrelationId::parse("order:2024.1_a").is_ok());
        assert!(CorrelationId::parse("").is_err());
        assert!(CorrelationId::parse("has space").is_err());
        assert!(CorrelationId::parse(&"x".repeat(101)).is_err());
    }
}
