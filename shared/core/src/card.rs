//! Card input, parsed at the edge: number, CVV, expiry, holder, token.
//!
//! Card data must never reach a log, an error message, RabbitMQ or
//! PostgreSQL (DESIGN.md, "Money, identity, validation"). So:
//!
//! * [`CardNumber`] and [`Cvv`] keep their digits in a
//!   [`secrecy::SecretString`] (zeroized on drop); the only way to read them
//!   is `expose()`, which the provider connector calls when it writes the
//!   request body;
//! * every `Debug` and `Display` here shows at most the masked form
//!   (`4111 •••• •••• 1111`: first four and last four digits, brand);
//! * [`CardError`] messages are fixed texts that never quote the input;
//! * none of these types implements `Serialize`, so a card cannot be put in
//!   an event or a row by accident.
//!
//! Accepted input forms (the order API's card fields):
//! * number: 12 to 19 digits, spaces and dashes ignored, Luhn-valid, with a
//!   length that fits its brand (Visa 13/16/19, Mastercard 16, Amex 15);
//! * CVV: 3 digits (4 for Amex);
//! * expiry: `YYMM` (what PixelPay's `card_expire` takes) or `MM/YY` (what
//!   a card shows); both normalise to [`CardExpiry::yymm`];
//! * holder: 2 to 60 characters: letters, spaces, `.`, `'` and `-`, no
//!   digits (a number in the name field is most likely a pasted card number,
//!   which must not travel as plain text);
//! * token: `T-` followed by 1 to 100 of `[A-Za-z0-9_-]` (PixelPay's saved
//!   card token).

use secrecy::{ExposeSecret, SecretString};
use time::Date;

use crate::validation::ValidationErrors;

/// What is wrong with a card field. The texts never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("must contain only digits, spaces and dashes")]
    NumberNotDigits,
    #[error("must have 12 to 19 digits")]
    NumberLength,
    #[error("has a length that does not fit its card brand")]
    NumberLengthForBrand,
    #[error("is not a valid card number (check digit)")]
    NumberLuhn,
    #[error("must be 3 or 4 digits")]
    CvvFormat,
    #[error("must have 4 digits for American Express and 3 for other brands")]
    CvvLengthForBrand,
    #[error("must be YYMM or MM/YY")]
    ExpiryFormat,
    #[error("the month must be 01 to 12")]
    ExpiryMonth,
    #[error("the card has expired")]
    Expired,
    #[error("is more than 20 years ahead")]
    ExpiryTooFar,
    #[error("must have 2 to 60 characters")]
    HolderLength,
    #[error("may contain only letters, spaces, '.', ''' and '-'")]
    HolderCharacters,
    #[error("must not contain digits")]
    HolderDigits,
    #[error("must be T- followed by 1 to 100 letters, digits, '_' or '-'")]
    TokenFormat,
}

impl CardError {
    /// The machine-readable code for a [`crate::FieldError`].
    pub fn code(self) -> &'static str {
        match self {
            CardError::NumberNotDigits
            | CardError::NumberLength
            | CardError::CvvFormat
            | CardError::ExpiryFormat
            | CardError::ExpiryMonth
            | CardError::HolderLength
            | CardError::HolderCharacters
            | CardError::HolderDigits
            | CardError::TokenFormat => "format",
            CardError::NumberLengthForBrand | CardError::NumberLuhn | CardError::CvvLengthForBrand => "invalid",
            CardError::Expired => "expired",
            CardError::ExpiryTooFar => "range",
        }
    }
}

/// A card scheme, told from the number's leading digits (the BIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardBrand {
    Visa,
    /// 51–55 and the 2-series 2221–2720.
    Mastercard,
    /// 34 and 37.
    Amex,
    Unknown,
}

impl CardBrand {
    /// Lowercase, as PixelPay's `card_brand` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "visa",
            CardBrand::Mastercard => "mastercard",
            CardBrand::Amex => "amex",
            CardBrand::Unknown => "unknown",
        }
    }

    /// The brand of a number (digits only; other characters are skipped).
    pub fn from_number(number: &str) -> CardBrand {
        let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).take(4).collect();
        let prefix = |n: usize| -> Option<u32> {
            (digits.len() >= n).then(|| digits[..n].iter().fold(0, |acc, d| acc * 10 + d))
        };
        if prefix(1) == Some(4) {
            return CardBrand::Visa;
        }
        if matches!(prefix(2), Some(34 | 37)) {
            return CardBrand::Amex;
        }
        if matches!(prefix(2), Some(51..=55)) || matches!(prefix(4), Some(2221..=2720)) {
            return CardBrand::Mastercard;
        }
        CardBrand::Unknown
    }

    /// The number lengths the brand issues; `None` when any 12..=19 goes.
    fn lengths(self) -> Option<&'static [usize]> {
        match self {
            CardBrand::Visa => Some(&[13, 16, 19]),
            CardBrand::Mastercard => Some(&[16]),
            CardBrand::Amex => Some(&[15]),
            CardBrand::Unknown => None,
        }
    }

    fn cvv_len(self) -> Option<usize> {
        match self {
            CardBrand::Amex => Some(4),
            CardBrand::Visa | CardBrand::Mastercard => Some(3),
            CardBrand::Unknown => None,
        }
    }
}

impl std::fmt::Display for CardBrand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Luhn (mod 10) check over the digits of `number`; any non-digit
/// makes it fail, as does an empty input.
pub fn luhn_valid(number: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for (i, c) in number.chars().rev().enumerate() {
        let Some(d) = c.to_digit(10) else {
            return false;
        };
        let v = if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
        sum += v;
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// `4111 •••• •••• 1111`: the first four and last four digits of `number`
/// (other characters ignored), the way PixelPay shows `card_account`. Fewer
/// than nine digits are masked entirely, so the mask never reveals a whole
/// short number.
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 9 {
        return "•••• •••• •••• ••••".to_string();
    }
    let head: String = digits[..4].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head} •••• •••• {tail}")
}

/// A card number (PAN): digits only, Luhn-valid, of a length that fits its
/// brand. `Debug`/`Display` show the masked form only.
#[derive(Clone)]
pub struct CardNumber {
    digits: SecretString,
    brand: CardBrand,
    masked: String,
    last4: String,
}

impl CardNumber {
    /// Parses 12–19 digits, ignoring spaces and dashes.
    pub fn parse(text: &str) -> Result<CardNumber, CardError> {
        let mut count = 0usize;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                count += 1;
            } else if !matches!(c, ' ' | '-') {
                return Err(CardError::NumberNotDigits);
            }
        }
        if !(12..=19).contains(&count) {
            return Err(CardError::NumberLength);
        }
        // Exactly `count` bytes of capacity: turning the String into the
        // secret's boxed str then reuses this buffer instead of leaving an
        // unzeroized copy behind.
        let mut digits = String::with_capacity(count);
        digits.extend(text.chars().filter(char::is_ascii_digit));
        let digits = SecretString::from(digits);
        let exposed = digits.expose_secret();
        let brand = CardBrand::from_number(exposed);
        if brand.lengths().is_some_and(|l| !l.contains(&count)) {
            return Err(CardError::NumberLengthForBrand);
        }
        if !luhn_valid(exposed) {
            return Err(CardError::NumberLuhn);
        }
        let masked = mask(exposed);
        let last4 = exposed[count - 4..].to_string();
        Ok(CardNumber {
            digits,
            brand,
            masked,
            last4,
        })
    }

    pub fn brand(&self) -> CardBrand {
        self.brand
    }

    /// `4111 •••• •••• 1111`.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    pub fn last4(&self) -> &str {
        &self.last4
    }

    /// The digits, for the one place that must send them (the provider
    /// request body). Never log or store what this returns.
    pub fn expose(&self) -> &str {
        self.digits.expose_secret()
    }
}

impl std::fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardNumber({} {})", self.brand, self.masked)
    }
}

impl std::fmt::Display for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked)
    }
}

/// A card verification value: 3 or 4 digits, never shown.
#[derive(Clone)]
pub struct Cvv(SecretString);

impl Cvv {
    pub fn parse(text: &str) -> Result<Cvv, CardError> {
        let t = text.trim();
        if !(3..=4).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::CvvFormat);
        }
        Ok(Cvv(SecretString::from(t)))
    }

    /// Whether the length fits the brand (4 for Amex, 3 for Visa and
    /// Mastercard, either for an unknown brand).
    pub fn fits(&self, brand: CardBrand) -> bool {
        brand.cvv_len().is_none_or(|n| n == self.0.expose_secret().len())
    }

    /// The digits, for the provider request body only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Cvv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cvv(•••)")
    }
}

impl std::fmt::Display for Cvv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("•••")
    }
}

/// The last month a card is valid in. The card works until that month's end.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardExpiry {
    /// Full year, 2000..=2099.
    year: u16,
    /// 1..=12.
    month: u8,
}

impl CardExpiry {
    /// `YYMM` (`2612`) or `MM/YY` (`12/26`); surrounding spaces are ignored.
    /// Nothing else: `1226` is December 2012 read as `YYMM`, never guessed
    /// to be `MMYY`.
    pub fn parse(text: &str) -> Result<CardExpiry, CardError> {
        let t = text.trim();
        let two = |s: &str| -> Result<u8, CardError> {
            if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().map_err(|_| CardError::ExpiryFormat)
            } else {
                Err(CardError::ExpiryFormat)
            }
        };
        let (yy, mm) = match t.split_once('/') {
            Some((mm, yy)) => (two(yy.trim())?, two(mm.trim())?),
            None if t.len() == 4 && t.is_char_boundary(2) => (two(&t[..2])?, two(&t[2..])?),
            None => return Err(CardError::ExpiryFormat),
        };
        if !(1..=12).contains(&mm) {
            return Err(CardError::ExpiryMonth);
        }
        Ok(CardExpiry {
            year: 2000 + u16::from(yy),
            month: mm,
        })
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    /// `YYMM`, as PixelPay's `card_expire` wants it.
    pub fn yymm(self) -> String {
        format!("{:02}{:02}", self.year % 100, self.month)
    }

    /// True once `today` is past the expiry month.
    pub fn is_expired_at(self, today: Date) -> bool {
        let (y, m) = (today.year(), u8::from(today.month()));
        (y, m) > (i32::from(self.year), self.month)
    }

    /// Refuses an expired card and one more than 20 years ahead (a typo,
    /// or a `YYMM`/`MMYY` mix-up that happened to parse).
    pub fn check_at(self, today: Date) -> Result<(), CardError> {
        if self.is_expired_at(today) {
            return Err(CardError::Expired);
        }
        if i32::from(self.year) > today.year() + 20 {
            return Err(CardError::ExpiryTooFar);
        }
        Ok(())
    }
}

impl std::fmt::Debug for CardExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The expiry is card data too; logs get the year only.
        write!(f, "CardExpiry({}-••)", self.year)
    }
}

/// The name on the card, whitespace collapsed. `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct CardHolder(String);

impl CardHolder {
    pub fn parse(text: &str) -> Result<CardHolder, CardError> {
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let n = collapsed.chars().count();
        if !(2..=60).contains(&n) {
            return Err(CardError::HolderLength);
        }
        if collapsed.chars().any(|c| c.is_ascii_digit() || c.is_numeric()) {
            return Err(CardError::HolderDigits);
        }
        if !collapsed
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, ' ' | '.' | '\'' | '-'))
            || collapsed.chars().filter(|c| c.is_alphabetic()).count() < 2
        {
            return Err(CardError::HolderCharacters);
        }
        Ok(CardHolder(collapsed))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardHolder(<{} chars>)", self.0.chars().count())
    }
}

/// A card saved at PixelPay: `T-...`. It charges the card only together
/// with the merchant's credentials, so it is not secret like a number, but
/// `Debug` still shows only its last four characters.
#[derive(Clone, PartialEq, Eq)]
pub struct CardToken(String);

impl CardToken {
    pub fn parse(text: &str) -> Result<CardToken, CardError> {
        let t = text.trim();
        let rest = t.strip_prefix("T-").ok_or(CardError::TokenFormat)?;
        if !(1..=100).contains(&rest.len())
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(CardError::TokenFormat);
        }
        Ok(CardToken(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail: String = {
            let chars: Vec<char> = self.0.chars().collect();
            chars[chars.len().saturating_sub(4).max(2)..].iter().collect()
        };
        write!(f, "CardToken(T-…{tail})")
    }
}

/// A whole card as typed by the buyer, checked field by field.
#[derive(Clone, Debug)]
pub struct Card {
    pub number: CardNumber,
    pub cvv: Cvv,
    pub expiry: CardExpiry,
    pub holder: CardHolder,
}

impl Card {
    /// Parses the four fields and refuses a card expired at `today`. Errors
    /// are collected under `card.number`, `card.cvv`, `card.expire` and
    /// `card.holder`; none of them quotes the input.
    pub fn parse(number: &str, cvv: &str, expire: &str, holder: &str, today: Date) -> Result<Card, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut field = |name: &str, e: CardError| errors.push(format!("card.{name}"), e.code(), e.to_string());
        let number = CardNumber::parse(number).map_err(|e| field("number", e)).ok();
        let cvv = Cvv::parse(cvv).map_err(|e| field("cvv", e)).ok();
        let expiry = CardExpiry::parse(expire)
            .and_then(|x| x.check_at(today).map(|()| x))
            .map_err(|e| field("expire", e))
            .ok();
        let holder = CardHolder::parse(holder).map_err(|e| field("holder", e)).ok();
        if let (Some(n), Some(c)) = (&number, &cvv)
            && !c.fits(n.brand())
        {
            field("cvv", CardError::CvvLengthForBrand);
        }
        match (number, cvv, expiry, holder) {
            (Some(number), Some(cvv), Some(expiry), Some(holder)) if errors.is_empty() => Ok(Card {
                number,
                cvv,
                expiry,
                holder,
            }),
            _ => Err(errors),
        }
    }
}

/// How a card payment names the card: typed in, or saved at the provider.
#[derive(Clone, Debug)]
pub enum CardSource {
    Card(Card),
    Token(CardToken),
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 03 - 15);

    #[test]
    fn luhn() {
        for ok in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "2223003122003222",
            "0",
        ] {
            assert!(luhn_valid(ok), "{ok}");
        }
        for bad in ["4111111111111112", "", "4111 1111 1111 1111", "abc"] {
            assert!(!luhn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn brands_from_bin() {
        assert_eq!(CardBrand::from_number("4111111111111111"), CardBrand::Visa);
        assert_eq!(CardBrand::from_number("5555555555554444"), CardBrand::Mastercard);
        assert_eq!(CardBrand::from_number("5100000000000000"), CardBrand::Mastercard);
        assert_eq!(CardBrand::from_number("2221000000000009"), CardBrand::Mastercard);
        assert_eq!(CardBrand::from_number("2720990000000000"), CardBrand::Mastercard);
        assert_eq!(CardBrand::from_number("2220990000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::from_number("2721000000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::from_number("5600000000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::from_number("378282246310005"), CardBrand::Amex);
        assert_eq!(CardBrand::from_number("341111111111111"), CardBrand::Amex);
        assert_eq!(CardBrand::from_number("6011111111111117"), CardBrand::Unknown);
        assert_eq!(CardBrand::from_number(""), CardBrand::Unknown);
        assert_eq!(CardBrand::Mastercard.as_str(), "mastercard");
    }

    #[test]
    fn masks_like_pixelpay() {
        assert_eq!(mask("4234567890121234"), "4234 •••• •••• 1234");
        assert_eq!(mask("4111 1111 1111 1111"), "4111 •••• •••• 1111");
        assert_eq!(mask("378282246310005"), "3782 •••• •••• 0005");
        assert_eq!(mask("12345678"), "•••• •••• •••• ••••");
    }

    #[test]
    fn numbers_parse_and_refuse() {
        let n = CardNumber::parse(" 4111-1111 1111-1111 ").unwrap();
        assert_eq!(n.expose(), "4111111111111111");
        assert_eq!(n.brand(), CardBrand::Visa);
        assert_eq!(n.last4(), "1111");
        assert_eq!(n.masked(), "4111 •••• •••• 1111");
        assert_eq!(n.to_string(), "4111 •••• •••• 1111");
        assert_eq!(
            CardNumber::parse("4111x111111111111").unwrap_err(),
            CardError::NumberNotDigits
        );
        assert_eq!(CardNumber::parse("41111111111").unwrap_err(), CardError::NumberLength);
        assert_eq!(
            CardNumber::parse("41111111111111111111").unwrap_err(),
            CardError::NumberLength
        );
        assert_eq!(
            CardNumber::parse("4111111111111112").unwrap_err(),
            CardError::NumberLuhn
        );
        // A Luhn-valid 15-digit "Visa" does not exist.
        assert_eq!(
            CardNumber::parse("411111111111116").unwrap_err(),
            CardError::NumberLengthForBrand
        );
        assert!(CardNumber::parse("378282246310005").is_ok());
        assert!(CardNumber::parse("6011111111111117").is_ok());
    }

    #[test]
    fn cvv() {
        assert_eq!(Cvv::parse("300").unwrap().expose(), "300");
        assert_eq!(Cvv::parse(" 1234 ").unwrap().expose(), "1234");
        for bad in ["30", "12345", "3a0", "", "３００"] {
            assert_eq!(Cvv::parse(bad).unwrap_err(), CardError::CvvFormat, "{bad}");
        }
        assert!(Cvv::parse("300").unwrap().fits(CardBrand::Visa));
        assert!(!Cvv::parse("300").unwrap().fits(CardBrand::Amex));
        assert!(!Cvv::parse("3000").unwrap().fits(CardBrand::Mastercard));
        assert!(Cvv::parse("3000").unwrap().fits(CardBrand::Unknown));
    }

    #[test]
    fn expiry_forms_normalise_to_yymm() {
        assert_eq!(CardExpiry::parse("2612").unwrap().yymm(), "2612");
        assert_eq!(CardExpiry::parse("12/26").unwrap().yymm(), "2612");
        assert_eq!(CardExpiry::parse(" 03 / 27 ").unwrap().yymm(), "2703");
        let x = CardExpiry::parse("3001").unwrap();
        assert_eq!((x.year(), x.month()), (2030, 1));
        for bad in ["261", "12/2026", "2026-12", "ab12", "1/26", "", "12/", "２６１２"] {
            assert_eq!(CardExpiry::parse(bad).unwrap_err(), CardError::ExpiryFormat, "{bad}");
        }
        assert_eq!(CardExpiry::parse("2613").unwrap_err(), CardError::ExpiryMonth);
        assert_eq!(CardExpiry::parse("00/26").unwrap_err(), CardError::ExpiryMonth);
    }

    #[test]
    fn expiry_is_valid_through_its_month() {
        let march = CardExpiry::parse("2603").unwrap();
        assert!(!march.is_expired_at(date!(2026 - 03 - 31)));
        assert!(march.is_expired_at(date!(2026 - 04 - 01)));
        assert_eq!(
            CardExpiry::parse("2602").unwrap().check_at(TODAY),
            Err(CardError::Expired)
        );
        assert_eq!(
            CardExpiry::parse("2512").unwrap().check_at(TODAY),
            Err(CardError::Expired)
        );
        assert_eq!(CardExpiry::parse("2603").unwrap().check_at(TODAY), Ok(()));
        assert_eq!(CardExpiry::parse("4612").unwrap().check_at(TODAY), Ok(()));
        assert_eq!(
            CardExpiry::parse("4701").unwrap().check_at(TODAY),
            Err(CardError::ExpiryTooFar)
        );
    }

    #[test]
    fn holder_names() {
        assert_eq!(CardHolder::parse("  pedro   perez ").unwrap().as_str(), "pedro perez");
        assert!(CardHolder::parse("José Ñúñez-O'Brien Jr.").is_ok());
        assert_eq!(CardHolder::parse("P").unwrap_err(), CardError::HolderLength);
        assert_eq!(CardHolder::parse(&"a".repeat(61)).unwrap_err(), CardError::HolderLength);
        assert_eq!(
            CardHolder::parse("4111 1111 1111 1111").unwrap_err(),
            CardError::HolderDigits
        );
        assert_eq!(CardHolder::parse("Pedro ٣").unwrap_err(), CardError::HolderDigits);
        assert_eq!(CardHolder::parse("Pedro <b>").unwrap_err(), CardError::HolderCharacters);
        assert_eq!(
            CardHolder::parse("Pedro\u{200B}Perez").unwrap_err(),
            CardError::HolderCharacters
        );
        assert_eq!(CardHolder::parse("..").unwrap_err(), CardError::HolderCharacters);
    }

    #[test]
    fn tokens() {
        assert_eq!(CardToken::parse("T-6611ea7a-ab3c").unwrap().as_str(), "T-6611ea7a-ab3c");
        for bad in [
            "T-",
            "6611ea7a",
            "t-abc",
            "T-a b",
            "T-a/b",
            &format!("T-{}", "a".repeat(101)),
        ] {
            assert_eq!(CardToken::parse(bad).unwrap_err(), CardError::TokenFormat, "{bad}");
        }
        assert_eq!(
            format!("{:?}", CardToken::parse("T-6611ea7a-ab3c").unwrap()),
            "CardToken(T-…ab3c)"
        );
        assert_eq!(format!("{:?}", CardToken::parse("T-a").unwrap()), "CardToken(T-…a)");
    }

    #[test]
    fn whole_card_collects_field_errors() {
        let card = Card::parse("4111 1111 1111 1111", "300", "12/30", "Pedro Perez", TODAY).unwrap();
        assert_eq!(card.expiry.yymm(), "3012");
        assert_eq!(card.number.brand(), CardBrand::Visa);

        let errs = Card::parse("4111111111111112", "30", "2512", "P3dro", TODAY).unwrap_err();
        assert!(errs.has("card.number", "invalid"), "{errs}");
        assert!(errs.has("card.cvv", "format"), "{errs}");
        assert!(errs.has("card.expire", "expired"), "{errs}");
        assert!(errs.has("card.holder", "format"), "{errs}");
        assert!(!errs.to_string().contains("4111111111111112"), "{errs}");

        let errs = Card::parse("378282246310005", "300", "3012", "Pedro Perez", TODAY).unwrap_err();
        assert!(errs.has("card.cvv", "invalid"), "{errs}");
        assert_eq!(errs.0.len(), 1);
    }

    #[test]
    fn debug_and_display_never_show_number_or_cvv() {
        let number = "5555555555554444";
        let cvv = "987";
        let card = Card::parse(number, cvv, "3012", "Pedro Perez", TODAY).unwrap();
        let token = CardToken::parse("T-abcdef123456").unwrap();
        let outputs = [
            format!("{card:?}"),
            format!("{card:#?}"),
            format!("{:?}", card.number),
            format!("{}", card.number),
            format!("{:?}", card.cvv),
            format!("{}", card.cvv),
            format!("{:?}", card.expiry),
            format!("{:?}", card.holder),
            format!("{:?}", CardSource::Card(card.clone())),
            format!("{:?}", CardSource::Token(token.clone())),
            format!("{:?}", CardNumber::parse(number)),
            format!("{:?}", Cvv::parse(cvv)),
        ];
        for out in &outputs {
            assert!(!out.contains(number), "{out}");
            assert!(!out.contains("55555555"), "{out}");
            assert!(!out.contains(cvv), "{out}");
            assert!(!out.contains("Pedro"), "{out}");
            assert!(!out.contains("3012") && !out.contains("12/30"), "{out}");
            assert!(!out.contains("abcdef123456"), "{out}");
        }
        assert!(outputs[0].contains("5555 •••• •••• 4444"), "{}", outputs[0]);
        assert!(outputs[0].contains("mastercard"), "{}", outputs[0]);
    }
}
