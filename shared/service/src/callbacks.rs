//! Where providers reach payhub: the public base URL of webhook-verifier
//! (`PAYHUB_PUBLIC_WEBHOOK_BASE_URL`) and the paths under it. ingress shows a
//! PixelPay order's callback URL, charge-creator hands it to PixelPay with a
//! card sale and registers OpenPix's webhooks under it; webhook-verifier
//! serves the paths. One place builds them, so the three never disagree.

use payhub_telemetry::{ConfigError, Env};

pub const PUBLIC_WEBHOOK_BASE_URL_VAR: &str = "PAYHUB_PUBLIC_WEBHOOK_BASE_URL";

/// OpenPix's webhooks, for every account (the signature says who sent them).
pub const OPENPIX_WEBHOOK_PATH: &str = "/webhooks/openpix";

/// PixelPay's callbacks, one URL per order: `/webhooks/pixelpay/{token}`.
pub const PIXELPAY_CALLBACK_PATH: &str = "/webhooks/pixelpay";

/// `PAYHUB_PUBLIC_WEBHOOK_BASE_URL`: how providers reach webhook-verifier
/// from the internet, e.g. `https://hooks.payhub.example` (a path prefix is
/// kept: `https://example.com/payhub`). Unset, payhub has no URL to give a
/// provider: PixelPay orders show no callback URL, card sales go without
/// `order_callback`, and OpenPix webhooks are not registered (their state
/// says why). `https://` only with `PAYHUB_ENV=production`.
pub fn public_webhook_base_url(env: &Env) -> Result<Option<String>, ConfigError> {
    if env.try_raw(PUBLIC_WEBHOOK_BASE_URL_VAR)?.is_none() {
        return Ok(None);
    }
    let url = env.external_url(PUBLIC_WEBHOOK_BASE_URL_VAR, "")?;
    let bad = |why: &str| Env::bad(PUBLIC_WEBHOOK_BASE_URL_VAR, why);
    let parsed = reqwest::Url::parse(&url).map_err(|_| bad("is not a URL"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(bad("must be a base URL without credentials, query or fragment"));
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

/// The order's PixelPay callback URL.
pub fn pixelpay_callback_url(base: &str, token: &str) -> String {
    format!("{}{PIXELPAY_CALLBACK_PATH}/{token}", base.trim_end_matches('/'))
}

/// Where OpenPix is asked to send every account's webhooks.
pub fn openpix_webhook_url(base: &str) -> String {
    format!("{}{OPENPIX_WEBHOOK_PATH}", base.trim_end_matches('/'))
}

/// Whether `token` has the form the database makes (64 lowercase hex
/// digits), so anything else is refused without a lookup.
pub fn is_callback_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<String>, ConfigError> {
        public_webhook_base_url(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_base_url_is_optional_checked_and_https_in_production() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(
            read(&[(PUBLIC_WEBHOOK_BASE_URL_VAR, "http://127.0.0.1:8081/")]).unwrap(),
            Some("http://127.0.0.1:8081".into())
        );
        assert_eq!(
            read(&[(PUBLIC_WEBHOOK_BASE_URL_VAR, "https://example.com/payhub")]).unwrap(),
            Some("https://example.com/payhub".into())
        );
        for bad in [
            "hooks.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://u:p@x",
            "https://x/#f",
        ] {
            assert_eq!(
                read(&[(PUBLIC_WEBHOOK_BASE_URL_VAR, bad)]).unwrap_err().name,
                PUBLIC_WEBHOOK_BASE_URL_VAR,
                "{bad}"
            );
        }
        let prod = [("PAYHUB_ENV", "production"), (PUBLIC_WEBHOOK_BASE_URL_VAR, "http://x")];
        assert!(read(&prod).is_err());
    }

    #[test]
    fn urls_and_tokens() {
        let t = "0123456789abcdef".repeat(4);
        assert!(is_callback_token(&t));
        assert!(!is_callback_token(&t.to_uppercase()));
        assert!(!is_callback_token(&t[1..]));
        assert!(!is_callback_token("../../etc"));
        assert_eq!(
            pixelpay_callback_url("https://h.example/", &t),
            format!("https://h.example/webhooks/pixelpay/{t}")
        );
        assert_eq!(
            openpix_webhook_url("https://h.example"),
            "https://h.example/webhooks/openpix"
        );
    }
}
