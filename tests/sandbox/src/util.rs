//! Small helpers shared by the sandbox modules: timestamps in the format
//! OpenPix uses, random identifiers, hex, and JSON error replies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

/// `2025-09-24T15:07:50.891Z`: UTC, milliseconds, `Z` suffix, as OpenPix writes
/// every date. Built by hand so formatting can never fail at run time.
pub(crate) fn iso_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `yyyyMMddHHmm` in UTC, the date part of a PIX endToEndId.
pub(crate) fn compact_minutes(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// 32 random lowercase hex characters (a v4 UUID without dashes), the shape of
/// OpenPix `transactionID` / `identifier`.
pub(crate) fn hex32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `n` random lowercase hex characters (`n` <= 32).
pub(crate) fn hex_n(n: usize) -> String {
    let mut s = hex32();
    s.truncate(n.min(32));
    s
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Centavos to the BR Code amount field (`1234` -> `"12.34"`), integer math only.
/// Callers pass positive values; a negative one is rendered with its sign.
pub(crate) fn centavos_to_major(centavos: i64) -> String {
    let sign = if centavos < 0 { "-" } else { "" };
    let abs = centavos.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The `{"error": "..."}` body OpenPix (and the sandbox control routes) answer
/// failures with.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// An error and its sources, `outer: inner: root` (reqwest puts the useful
/// part, e.g. "Connection refused", in the sources).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = inner.source();
    }
    out
}

/// Minimal HTML escaping for text placed inside element content or a quoted
/// attribute.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_dates_like_openpix() {
        let t = datetime!(2025-09-24 15:07:50.891 UTC);
        assert_eq!(iso_millis(t), "2025-09-24T15:07:50.891Z");
        assert_eq!(compact_minutes(t), "202509241507");
        let t = datetime!(2025-09-24 12:07:50.891 -3);
        assert_eq!(iso_millis(t), "2025-09-24T15:07:50.891Z");
    }

    #[test]
    fn formats_centavos_with_integer_math() {
        assert_eq!(centavos_to_major(1), "0.01");
        assert_eq!(centavos_to_major(100), "1.00");
        assert_eq!(centavos_to_major(1234), "12.34");
        assert_eq!(centavos_to_major(123_456_789), "1234567.89");
        assert_eq!(centavos_to_major(i64::MAX), "92233720368547758.07");
        assert_eq!(centavos_to_major(-5), "-0.05");
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let id = hex32();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(hex_n(11).len(), 11);
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
