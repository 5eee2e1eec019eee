//! Calls payhub makes to addresses a shop chose (webhook URLs, stock
//! callbacks) go through [`payhub_core::url_safety`]: the scheme and
//! IP-literal hosts are checked before sending ([`check_url`]), and host
//! names through [`PublicOnlyResolver`], which drops every resolved address
//! the policy refuses. The connection can only go to an address that was
//! checked, so a DNS answer that changes between a check and the connection
//! (DNS rebinding) cannot reach an internal address.

use payhub_core::url_safety::{UnsafeUrl, UrlHost, WebhookUrlPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

/// Why a URL may not be called, before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("it does not parse ({0})")]
    Unparsable(String),
    #[error(transparent)]
    Unsafe(#[from] UnsafeUrl),
}

/// Checks what can be checked before connecting: the URL parses (with
/// reqwest's own parser), its scheme, and its host when it is an IP literal.
pub fn check_url(policy: &WebhookUrlPolicy, url: &str) -> Result<reqwest::Url, UrlRefusal> {
    let parsed = reqwest::Url::parse(url).map_err(|e| UrlRefusal::Unparsable(e.to_string()))?;
    policy.check_url(parsed.scheme(), parsed.host_str().map(UrlHost::from_host_str))?;
    Ok(parsed)
}

/// The first refusal of [`PublicOnlyResolver`] in an error's causes.
pub fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a UnsafeUrl> {
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
pub struct PublicOnlyResolver {
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
pub fn filter(policy: &WebhookUrlPolicy, host: &str, addrs: Vec<SocketAddr>) -> (Vec<SocketAddr>, Option<UnsafeUrl>) {
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

/// An HTTP client for shop-chosen URLs: no redirects (a redirect could lead
/// anywhere), no proxy (it would resolve the name itself), and names
/// resolved through [`PublicOnlyResolver`] when the policy refuses private
/// addresses.
pub fn client_builder(policy: WebhookUrlPolicy) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if !policy.allow_private {
        b = b.dns_resolver(PublicOnlyResolver { policy }).no_proxy();
    }
    b
}

/// Reads at most `cap` bytes of a response body; `None` when it is longer.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > cap {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}
