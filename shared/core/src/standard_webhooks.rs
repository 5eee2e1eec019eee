//! Standard Webhooks (v1) signing and verification: HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, base64, sent as `v1,<sig>`;
//! several space-separated signatures are allowed (secret rotation).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A per-shop signing secret, `whsec_` followed by base64 key bytes.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("a required header is missing")]
    MissingHeader,
    #[error("the timestamp is not a number")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    #[error("no signature matches")]
    NoMatchingSignature,
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<WebhookSecret, &'static str> {
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let key = STANDARD.decode(b64).map_err(|_| "is not whsec_ followed by base64")?;
        if key.len() < 16 {
            return Err("is shorter than 16 bytes");
        }
        Ok(WebhookSecret { key })
    }

    /// A fresh random secret of 32 bytes.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .expect("the system random source failed");
        WebhookSecret { key }
    }

    /// The `whsec_...` text form, to show once to the shop.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.key))
    }

    /// The signature value for one message: `v1,<base64>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }

    /// Verifies a `webhook-signature` header value (one or more `v1,` entries)
    /// in constant time, with the timestamp within `tolerance_secs` of `now`.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: &str,
        signature_header: &str,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), VerifyError> {
        let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
        if (now - ts).abs() > tolerance_secs {
            return Err(VerifyError::TimestampOutOfTolerance);
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut signed = Vec::with_capacity(msg_id.len() + body.len() + 24);
        signed.extend_from_slice(msg_id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(ts.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        for part in signature_header.split_whitespace() {
            let Some(sig) = part.strip_prefix("v1,") else {
                continue;
            };
            let Ok(raw) = STANDARD.decode(sig) else {
                continue;
            };
            if hmac::verify(&key, &signed, &raw).is_ok() {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_reference_vector() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_checks_time() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let header = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {good}");
        assert_eq!(
            s.verify(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &header,
                body,
                1614265330,
                300
            ),
            Ok(())
        );
        assert_eq!(
            s.verify(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                good,
                body,
                1614265330 + 301,
                300
            ),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            s.verify("msg_other", "1614265330", good, body, 1614265330, 300),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn generated_secrets_round_trip_and_never_print() {
        let s = WebhookSecret::generate();
        let again = WebhookSecret::parse(&s.expose()).unwrap();
        assert_eq!(s.sign("m", 1, b"x"), again.sign("m", 1, b"x"));
        assert!(!format!("{s:?}").contains(&s.expose()));
    }
}
