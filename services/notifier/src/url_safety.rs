//! Enforces [`payhub_core::url_safety`] when a webhook is delivered: the
//! scheme and IP-literal hosts are checked before sending, and host names go
//! through [`PublicOnlyResolver`], which drops every resolved address that is
//! not globally routable. The connection can only go to an address that was
//! checked, so a DNS answer that changes between a check and the connection
//! (DNS rebinding) cannot reach an internal address.

use payhub_core::url_safety::{UnsafeUrl, UrlHost, WebhookUrlPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

/// How every refusal recorded in `deliveries.last_error` begins.
pub const REFUSED: &str = "unsafe webhook URL";

/// Checks what can be checked before connecting: the URL parses (with
/// reqwest's own parser), its scheme, and its host when it is an IP literal.
pub(crate) fn check_url(policy: &WebhookUrlPolicy, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{REFUSED}: it does not parse ({e})"))?;
    policy
        .check_url(parsed.scheme(), parsed.host_str().map(UrlHost::from_host_str))
        .map_err(|e| format!("{REFUSED}: {e}"))
}

/// The first refusal of [`PublicOnlyResolver`] in an error's causes.
pub(crate) fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a UnsafeUrl> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(unsafe_url) = c.downcast_ref::<UnsafeUrl>() {
            return Some(unsafe_url);
        }
        cause = c.source();
    }
    None
}

/// Resolves with the system resolver, then keeps only the addresses the
/// policy allows. When none is left the lookup fails with the [`UnsafeUrl`]
/// of the first refused address.
#[derive(Debug, Clone)]
pub(crate) struct PublicOnlyResolver {
    pub policy: WebhookUrlPolicy,
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused) = filter(&policy, &host, resolved);
            match (allowed.is_empty(), refused) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(refusal)) => Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

/// Splits resolved addresses into those allowed and the first refusal.
fn filter(policy: &WebhookUrlPolicy, host: &str, addrs: Vec<SocketAddr>) -> (Vec<SocketAddr>, Option<UnsafeUrl>) {
    let mut allowed = Vec::new();
    let mut first_refusal = None;
    for addr in addrs {
        match policy.check_address(host, addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    (allowed, first_refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

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
