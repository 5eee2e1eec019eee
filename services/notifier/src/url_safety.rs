//! Enforces [`payhub_core::url_safety`] when a webhook is delivered: the
//! scheme and IP-literal hosts are checked before sending, and host names go
//! through [`PublicOnlyResolver`], which drops every resolved address that is
//! not globally routable. The connection can only go to an address that was
//! checked, so a DNS answer that changes between a check and the connection
//! (DNS rebinding) cannot reach an internal address.

use payhub_core::url_safety::WebhookUrlPolicy;

// The resolver and the cause search are shared with ingress (stock callbacks).
pub(crate) use payhub_service::outbound::{PublicOnlyResolver, refusal};

/// How every refusal recorded in `deliveries.last_error` begins.
pub const REFUSED: &str = "unsafe webhook URL";

/// Checks what can be checked before connecting: the URL parses (with
/// reqwest's own parser), its scheme, and its host when it is an IP literal.
pub(crate) fn check_url(policy: &WebhookUrlPolicy, url: &str) -> Result<(), String> {
    payhub_service::outbound::check_url(policy, url)
        .map(|_| ())
        .map_err(|e| format!("{REFUSED}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_service::outbound::filter;
    use reqwest::dns::Resolve;
    use std::net::SocketAddr;

    const STRICT: WebhookUrlPolicy = WebhookUrlPolicy {
        require_https: true,
        allow_private: false,
    };

    #[test]
    fn literal_and_scheme_checks() {
        assert_eq!(check_url(&STRICT, "https://loja.example.com/hooks"), Ok(()));
        for (url, expected) in [
            (
                "http://loja.example.com/hooks",
                "unsafe webhook URL: http:// is only allowed",
            ),
            (
                "https://127.0.0.1/hooks",
                "unsafe webhook URL: 127.0.0.1 is a non-public address (loopback)",
            ),
            (
                "https://2130706433/hooks",
                "unsafe webhook URL: 127.0.0.1 is a non-public address (loopback)",
            ),
            (
                "https://0x7f.1/hooks",
                "unsafe webhook URL: 127.0.0.1 is a non-public address (loopback)",
            ),
            (
                "https://[::1]:8443/",
                "unsafe webhook URL: ::1 is a non-public address (loopback)",
            ),
            (
                "https://[::ffff:10.0.0.1]/",
                "unsafe webhook URL: ::ffff:10.0.0.1 is a non-public address (private)",
            ),
            (
                "https://169.254.169.254/latest/meta-data",
                "unsafe webhook URL: 169.254.169.254 is a non-public address (link-local)",
            ),
            (
                "https://0.0.0.0/",
                "unsafe webhook URL: 0.0.0.0 is a non-public address (unspecified",
            ),
            ("file:///etc/passwd", "unsafe webhook URL: the scheme \"file\""),
            ("not a url", "unsafe webhook URL: it does not parse"),
        ] {
            let e = check_url(&STRICT, url).unwrap_err();
            assert!(e.starts_with(expected), "{url}: {e}");
        }
        assert_eq!(check_url(&WebhookUrlPolicy::default(), "http://127.0.0.1:9/x"), Ok(()));
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let addrs: Vec<SocketAddr> = vec!["10.0.0.1:0".parse().unwrap(), "8.8.8.8:0".parse().unwrap()];
        let (allowed, refused) = filter(&STRICT, "mixed.example", addrs.clone());
        assert_eq!(allowed, vec!["8.8.8.8:0".parse::<SocketAddr>().unwrap()]);
        assert!(refused.is_some());
        let (allowed, _) = filter(&WebhookUrlPolicy::default(), "mixed.example", addrs);
        assert_eq!(allowed.len(), 2);
    }

    #[tokio::test]
    async fn localhost_resolves_to_nothing_allowed() {
        let resolver = PublicOnlyResolver { policy: STRICT };
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        let refusal = refusal(err.as_ref()).expect("the refusal is in the causes");
        assert!(refusal.to_string().starts_with("localhost resolves to"), "{refusal}");
        assert!(refusal.to_string().contains("loopback"), "{refusal}");
    }
}
