//! PIX BR Code ("copia e cola"): the EMV merchant-presented QR payload.
//!
//! Its last field is a CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no
//! reflection, no final xor) over everything before it including the
//! literal `6304`, written as four uppercase hex digits.

/// CRC-16/CCITT-FALSE of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// True when `code` ends in `6304` + the right CRC and its TLV fields parse.
pub fn is_valid(code: &str) -> bool {
    if code.len() < 8 || !code.is_ascii() {
        return false;
    }
    let (body, crc) = code.split_at(code.len() - 4);
    if !body.ends_with("6304") {
        return false;
    }
    if format!("{:04X}", crc16(body.as_bytes())) != crc {
        return false;
    }
    parse_tlv(code).is_some()
}

/// Splits a TLV string into (id, value) pairs; `None` when malformed.
pub fn parse_tlv(s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return None;
        }
        let id = &rest[..2];
        let len: usize = rest[2..4].parse().ok()?;
        if rest.len() < 4 + len {
            return None;
        }
        out.push((id, &rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    Some(out)
}

fn tlv(id: &str, value: &str) -> String {
    format!("{id}{:02}{value}", value.len())
}

/// Builds a dynamic BR Code pointing at a `cob` payload URL, as PSPs issue
/// for one charge. Used by the sandbox to hand out realistic codes.
pub fn dynamic(location_url: &str, amount_major: &str, merchant: &str, city: &str, txid: &str) -> String {
    let gui = tlv("00", "br.gov.bcb.pix") + &tlv("25", location_url);
    let mut s = String::new();
    s += &tlv("00", "01");
    s += &tlv("01", "12");
    s += &tlv("26", &gui);
    s += &tlv("52", "0000");
    s += &tlv("53", "986");
    s += &tlv("54", amount_major);
    s += &tlv("58", "BR");
    s += &tlv("59", &merchant.chars().take(25).collect::<String>());
    s += &tlv("60", &city.chars().take(15).collect::<String>());
    s += &tlv("62", &tlv("05", &txid.chars().take(25).collect::<String>()));
    s += "6304";
    let crc = crc16(s.as_bytes());
    s + &format!("{crc:04X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn built_codes_are_valid() {
        let code = dynamic(
            "pix.example.com/qr/v2/abc",
            "12.34",
            "payhub sandbox",
            "Sao Paulo",
            "abc123",
        );
        assert!(is_valid(&code), "{code}");
        let mut broken = code.clone();
        broken.replace_range(20..21, "X");
        assert!(!is_valid(&broken));
    }
}
