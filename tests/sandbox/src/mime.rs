//! Just enough RFC 5322 / RFC 2047 to read a message's `Subject:` header:
//! header unfolding and encoded-word decoding (`=?utf-8?B?...?=`, `?Q?`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// The unfolded, decoded `Subject:` of a raw message, if it has one.
pub(crate) fn subject(message: &[u8]) -> Option<String> {
    header(message, "subject").map(|raw| decode_words(raw.trim()))
}

/// The unfolded raw value of the first header called `name` (ASCII
/// case-insensitive). Headers end at the first empty line.
pub(crate) fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // A folded continuation: unfolding removes only the line break.
            if let Some(value) = current.as_mut() {
                value.push_str(line);
            }
            continue;
        }
        if current.is_some() {
            break; // the wanted header ended
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim_end().eq_ignore_ascii_case(name)
        {
            current = Some(value.to_string());
        }
    }
    current
}

/// Decodes RFC 2047 encoded-words in an unstructured header value. Adjacent
/// encoded-words (separated only by whitespace) are joined, and their bytes
/// decoded together so a character split across words survives. Words in
/// charsets other than UTF-8, US-ASCII and ISO-8859-1 are left as they are.
pub(crate) fn decode_words(value: &str) -> String {
    let mut out = String::new();
    // Bytes of consecutive encoded-words waiting to be decoded, with their charset.
    let mut pending: Option<(String, Vec<u8>)> = None;
    let mut rest = value;

    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            flush(&mut out, &mut pending);
            out.push_str(rest);
            break;
        };
        let (before, candidate) = rest.split_at(start);
        match parse_word(candidate) {
            Some(word) => {
                let joins = pending.is_some() && before.chars().all(char::is_whitespace);
                if !joins {
                    flush(&mut out, &mut pending);
                    out.push_str(before);
                }
                match &mut pending {
                    Some((charset, bytes)) if *charset == word.charset => bytes.extend(word.bytes),
                    _ => {
                        flush(&mut out, &mut pending);
                        pending = Some((word.charset, word.bytes));
                    }
                }
                rest = &candidate[word.len..];
            }
            None => {
                flush(&mut out, &mut pending);
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
            }
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// Appends the pending encoded bytes to `out`, decoded.
fn flush(out: &mut String, pending: &mut Option<(String, Vec<u8>)>) {
    if let Some((charset, bytes)) = pending.take() {
        match charset.as_str() {
            "iso-8859-1" | "latin1" | "latin-1" => out.extend(bytes.iter().map(|&b| char::from(b))),
            _ => out.push_str(&String::from_utf8_lossy(&bytes)),
        }
    }
}

struct Word {
    /// Lowercase, without an RFC 2231 `*language` suffix.
    charset: String,
    bytes: Vec<u8>,
    /// Characters of the input the word spans.
    len: usize,
}

/// Parses one `=?charset?B|Q?text?=` at the start of `s`.
fn parse_word(s: &str) -> Option<Word> {
    let body = s.strip_prefix("=?")?;
    let (charset, after) = body.split_once('?')?;
    let (encoding, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    if text.contains(char::is_whitespace) || charset.is_empty() {
        return None;
    }
    let charset = charset.split('*').next().unwrap_or_default().to_ascii_lowercase();
    if !matches!(
        charset.as_str(),
        "utf-8" | "utf8" | "us-ascii" | "iso-8859-1" | "latin1" | "latin-1"
    ) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => STANDARD_NO_PAD.decode(text.trim_end_matches('=')).ok()?,
        "Q" | "q" => decode_q(text)?,
        _ => return None,
    };
    let len = 2 + charset_len(body) + 1 + encoding.len() + 1 + end + 2;
    Some(Word { charset, bytes, len })
}

/// Length of the raw charset part (before the first `?`) of a word body.
fn charset_len(body: &str) -> usize {
    body.find('?').unwrap_or(body.len())
}

/// The "Q" encoding: `_` is a space, `=XX` a byte, anything else itself.
fn decode_q(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_folded_subjects() {
        let msg = b"From: a@b.c\r\nSubject: Hello\r\n world\r\nTo: x@y.z\r\n\r\nSubject: not me\r\n";
        assert_eq!(subject(msg).as_deref(), Some("Hello world"));
        assert_eq!(subject(b"From: a@b.c\r\n\r\nSubject: body\r\n"), None);
        assert_eq!(subject(b"SUBJECT:  caps\n\nbody").as_deref(), Some("caps"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("=?utf-8?B?UGVkaWRvIHBhZ28g4pyU?="), "Pedido pago ✔");
        assert_eq!(decode_words("=?UTF-8?Q?Pedido_n=C2=BA_42_pago?="), "Pedido nº 42 pago");
        assert_eq!(decode_words("=?iso-8859-1?q?caf=E9?= ok"), "café ok");
        // Whitespace between adjacent words disappears; a split character survives.
        assert_eq!(decode_words("=?utf-8?B?Y2Fm?=\r\n =?utf-8?B?w6k=?="), "café");
        assert_eq!(decode_words("=?utf-8?Q?a?= b =?utf-8?Q?c?="), "a b c");
        // Not encoded-words: left alone.
        assert_eq!(decode_words("=?koi8-r?B?8NLJ18XU?="), "=?koi8-r?B?8NLJ18XU?=");
        assert_eq!(decode_words("1 =? 2 ?= 3"), "1 =? 2 ?= 3");
        assert_eq!(decode_words("=?utf-8?X?abc?="), "=?utf-8?X?abc?=");
        assert_eq!(decode_words("=?utf-8?Q?bad=Z?="), "=?utf-8?Q?bad=Z?=");
    }

    #[test]
    fn lettre_style_long_subject() {
        let msg = "Subject: =?utf-8?b?Q29uZmlybWHDp8OjbyBkbyBwZWRpZG8gMTIzNDU2Nzg5MCDigJQgb2JyaWdh?=\r\n =?utf-8?b?ZG8gcG9yIGNvbXByYXIgbmEgbm9zc2EgbG9qYQ==?=\r\n\r\n";
        assert_eq!(
            subject(msg.as_bytes()).as_deref(),
            Some("Confirmação do pedido 1234567890 — obrigado por comprar na nossa loja")
        );
    }
}
