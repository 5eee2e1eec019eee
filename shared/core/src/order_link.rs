//! The buyer's link to an order's own page ("my orders", issue 11 §3):
//! `{base}/my/orders/{order id}/{token}`, where the token is the lowercase
//! hex HMAC-SHA256 of the order id (its hyphenated lowercase form) under
//! `PAYHUB_ORDER_LINK_KEY`. No login: whoever holds the link (the buyer's
//! e-mails carry it) sees the order. ingress checks it, notifier writes it;
//! both through [`OrderLinks`], so there is one way to build one.

use ring::hmac;
use uuid::Uuid;

/// The setting holding the key (a secret: never logged).
pub const KEY_VAR: &str = "PAYHUB_ORDER_LINK_KEY";

/// The PUBLIC development key, used when `PAYHUB_ORDER_LINK_KEY` is not set
/// outside production (production requires the setting).
pub const DEVELOPMENT_KEY: &str = "payhub-development-order-link-key-not-secret";

/// Builds and checks order links. Its `Debug` shows no key.
#[derive(Clone)]
pub struct OrderLinks {
    key: hmac::Key,
}

impl std::fmt::Debug for OrderLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderLinks(<key redacted>)")
    }
}

impl OrderLinks {
    /// From the setting's value: at least 32 characters (a development
    /// key is allowed only through [`DEVELOPMENT_KEY`]).
    pub fn from_setting(value: &str) -> Result<OrderLinks, &'static str> {
        if value.len() < 32 {
            return Err("must be at least 32 characters (e.g. `openssl rand -hex 32`)");
        }
        Ok(OrderLinks::new(value))
    }

    pub fn new(key: &str) -> OrderLinks {
        OrderLinks {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
        }
    }

    /// The order's token: 64 lowercase hex characters.
    pub fn token(&self, order_id: Uuid) -> String {
        hmac::sign(&self.key, order_id.to_string().as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `token` is the order's, compared in constant time (ring's
    /// `verify`). Anything but 64 lowercase hex characters is refused.
    pub fn verify(&self, order_id: Uuid, token: &str) -> bool {
        if token.len() != 64 || !token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return false;
        }
        let Some(tag) = (0..32)
            .map(|i| u8::from_str_radix(&token[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        hmac::verify(&self.key, order_id.to_string().as_bytes(), &tag).is_ok()
    }

    /// The order page's path, `/my/orders/{id}/{token}`.
    pub fn path(&self, order_id: Uuid) -> String {
        format!("/my/orders/{order_id}/{}", self.token(order_id))
    }

    /// The full link under `base` (e.g. `https://pay.example`).
    pub fn url(&self, base: &str, order_id: Uuid) -> String {
        format!("{}{}", base.trim_end_matches('/'), self.path(order_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_the_orders_alone_and_checks_under_its_key() {
        let links = OrderLinks::new("k1");
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let t = links.token(a);
        assert_eq!(t.len(), 64);
        assert!(links.verify(a, &t));
        assert!(!links.verify(b, &t), "another order's token");
        assert!(!OrderLinks::new("k2").verify(a, &t), "another key");
        assert!(!links.verify(a, &t.to_uppercase()));
        assert!(!links.verify(a, &t[..63]));
        let mut flipped = t.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert!(!links.verify(a, std::str::from_utf8(&flipped).unwrap()));
        assert_eq!(
            links.url("https://pay.example/", a),
            format!("https://pay.example/my/orders/{a}/{t}")
        );
        assert!(!format!("{links:?}").contains("k1"));
    }

    #[test]
    fn the_token_is_hmac_sha256_of_the_hyphenated_id() {
        // RFC 4231-style check with an independent computation.
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        let want: String = hmac::sign(&key, b"01234567-89ab-cdef-0123-456789abcdef")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(OrderLinks::new("key").token(id), want);
    }
}
