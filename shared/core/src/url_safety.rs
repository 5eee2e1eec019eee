//! Which webhook URLs payhub may call (server-side request forgery guard, as
//! Svix and Hook0 do): `https` outside development, and never an address
//! that is not globally routable (private, loopback, link-local, ...) unless
//! the operator allows it. Pure: callers parse the URL with the same parser
//! their HTTP client uses and resolve names themselves; this module decides.
//!
//! Settings: `PAYHUB_ENV` (`development`, the default, or `production`) and
//! `PAYHUB_ALLOW_PRIVATE_WEBHOOKS` (`true`/`false`; default `true` in
//! development, `false` otherwise).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ENV_VAR: &str = "PAYHUB_ENV";
pub const ALLOW_PRIVATE_VAR: &str = "PAYHUB_ALLOW_PRIVATE_WEBHOOKS";

/// Where payhub runs (`PAYHUB_ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Environment {
    /// Local work, the demo and the tests: lenient defaults.
    #[default]
    Development,
    /// Strict defaults; missing secrets stop the service.
    Production,
}

impl Environment {
    /// Parses `PAYHUB_ENV`; unset means development. The error is the reason
    /// (the caller names the variable).
    pub fn parse(value: Option<&str>) -> Result<Environment, String> {
        match value.map(str::trim) {
            None | Some("") | Some("development") => Ok(Environment::Development),
            Some("production") => Ok(Environment::Production),
            Some(other) => Err(format!("{other:?} must be development or production")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

/// A URL's host, as the URL parser gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlHost<'a> {
    Domain(&'a str),
    Ip(IpAddr),
}

impl<'a> UrlHost<'a> {
    /// From a parsed URL's host text (`url::Url::host_str`): IPv6 literals
    /// come in brackets. IPv4 literals are already normalised by the WHATWG
    /// parser (`http://2130706433/` has host `127.0.0.1`).
    pub fn from_host_str(host: &'a str) -> UrlHost<'a> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => UrlHost::Ip(ip),
            Err(_) => UrlHost::Domain(host),
        }
    }
}

/// Why a URL may not be called. Its text completes "unsafe webhook URL: ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeUrl {
    /// Not http(s) at all.
    Scheme(String),
    /// `http://` where `https://` is required.
    PlainHttp,
    /// No host to call.
    NoHost,
    /// The address (literal or resolved) is not globally routable.
    NonGlobal {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
}

impl fmt::Display for UnsafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafeUrl::Scheme(s) => write!(f, "the scheme {s:?} is not http or https"),
            UnsafeUrl::PlainHttp => write!(
                f,
                "http:// is only allowed when {ENV_VAR}=development; the shop must use https://"
            ),
            UnsafeUrl::NoHost => write!(f, "the URL has no host"),
            UnsafeUrl::NonGlobal { host, ip, kind } if host == &ip.to_string() => write!(
                f,
                "{ip} is a non-public address ({kind}); set {ALLOW_PRIVATE_VAR}=true to allow it"
            ),
            UnsafeUrl::NonGlobal { host, ip, kind } => write!(
                f,
                "{host} resolves to {ip}, a non-public address ({kind}); set {ALLOW_PRIVATE_VAR}=true to allow it"
            ),
        }
    }
}

impl std::error::Error for UnsafeUrl {}

/// What webhook URLs may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookUrlPolicy {
    /// Refuse `http://`.
    pub require_https: bool,
    /// Allow addresses that are not globally routable.
    pub allow_private: bool,
}

impl Default for WebhookUrlPolicy {
    /// The development defaults.
    fn default() -> Self {
        WebhookUrlPolicy::for_environment(Environment::Development)
    }
}

impl WebhookUrlPolicy {
    /// The defaults of an environment.
    pub fn for_environment(env: Environment) -> WebhookUrlPolicy {
        let dev = env == Environment::Development;
        WebhookUrlPolicy {
            require_https: !dev,
            allow_private: dev,
        }
    }

    /// From the values of `PAYHUB_ENV` and `PAYHUB_ALLOW_PRIVATE_WEBHOOKS`.
    /// The error names the bad variable and says why.
    pub fn from_settings(
        env: Option<&str>,
        allow_private: Option<&str>,
    ) -> Result<WebhookUrlPolicy, (&'static str, String)> {
        let environment = Environment::parse(env).map_err(|e| (ENV_VAR, e))?;
        let mut policy = WebhookUrlPolicy::for_environment(environment);
        match allow_private.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => {}
            Some("true" | "1" | "yes") => policy.allow_private = true,
            Some("false" | "0" | "no") => policy.allow_private = false,
            Some(other) => return Err((ALLOW_PRIVATE_VAR, format!("{other:?} must be true or false"))),
        }
        Ok(policy)
    }

    /// Checks what can be known without resolving: the scheme, and the
    /// address when the host is an IP literal. Domain names must then be
    /// resolved and each address passed to [`WebhookUrlPolicy::check_address`].
    pub fn check_url(&self, scheme: &str, host: Option<UrlHost<'_>>) -> Result<(), UnsafeUrl> {
        match scheme {
            "https" => {}
            "http" if !self.require_https => {}
            "http" => return Err(UnsafeUrl::PlainHttp),
            other => return Err(UnsafeUrl::Scheme(other.to_string())),
        }
        match host {
            None | Some(UrlHost::Domain("")) => Err(UnsafeUrl::NoHost),
            Some(UrlHost::Domain(_)) => Ok(()),
            Some(UrlHost::Ip(ip)) => self.check_address(&ip.to_string(), ip),
        }
    }

    /// Checks one address `host` resolved to (or an IP literal).
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), UnsafeUrl> {
        if self.allow_private {
            return Ok(());
        }
        match non_global_kind(ip) {
            None => Ok(()),
            Some(kind) => Err(UnsafeUrl::NonGlobal {
                host: host.to_string(),
                ip,
                kind,
            }),
        }
    }
}

/// `None` for a globally routable unicast address; otherwise what kind of
/// address it is (loopback, private, link-local, ...). Conservative: IPv6
/// outside global unicast (2000::/3) is never global, and IPv4 embedded in
/// IPv6 (mapped, compatible, NAT64, 6to4) is judged as the IPv4 it carries.
pub fn non_global_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_global_v4(v4),
        IpAddr::V6(v6) => non_global_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn non_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (this-network)"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, kind)| *kind)
}

fn non_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated compatible).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return non_global_v4(embedded_v4(s[6], s[7])).or(if s[5] == 0 { Some("IPv4-compatible") } else { None });
    }
    // 64:ff9b::/96, NAT64 well-known prefix: reaches the IPv4 it embeds.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_global_v4(embedded_v4(s[6], s[7]));
    }
    // 64:ff9b:1::/48, local-use NAT64.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local NAT64");
    }
    match s[0] {
        0xfc00..=0xfdff => return Some("unique local (private)"),
        0xfe80..=0xfebf => return Some("link-local"),
        0xfec0..=0xfeff => return Some("site-local"),
        0xff00..=0xffff => return Some("multicast"),
        _ => {}
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return non_global_v4(embedded_v4(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation");
    }
    // 2001::/23: IETF protocol assignments (Teredo, ORCHID, ...).
    if s[0] == 0x2001 && s[1] < 0x0200 {
        return Some("IETF protocol assignment");
    }
    if s[0] & 0xe000 != 0x2000 {
        return Some("reserved (not global unicast)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<&'static str> {
        non_global_kind(text.parse().unwrap())
    }

    #[test]
    fn classifies_ipv4() {
        for (ip, expected) in [
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified (this-network)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("192.0.2.10", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "1.1.1.1",
            "200.160.2.3",
            "100.128.0.1",
        ] {
            assert_eq!(kind(ip), None, "{ip} is global");
        }
    }

    #[test]
    fn classifies_ipv6() {
        for (ip, expected) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique local (private)"),
            ("fd12:3456::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:0101::1", "private"),
            ("2001:db8::1", "documentation"),
            ("::8.8.8.8", "IPv4-compatible"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2800:3f0:4001:80f::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(kind(ip), None, "{ip} is global");
        }
    }

    #[test]
    fn hosts_from_parsed_urls() {
        assert_eq!(UrlHost::from_host_str("[::1]"), UrlHost::Ip("::1".parse().unwrap()));
        assert_eq!(
            UrlHost::from_host_str("127.0.0.1"),
            UrlHost::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            UrlHost::from_host_str("loja.example.com"),
            UrlHost::Domain("loja.example.com")
        );
    }

    #[test]
    fn policy_defaults_follow_the_environment() {
        let dev = WebhookUrlPolicy::from_settings(None, None).unwrap();
        assert_eq!(
            dev,
            WebhookUrlPolicy {
                require_https: false,
                allow_private: true
            }
        );
        let prod = WebhookUrlPolicy::from_settings(Some("production"), None).unwrap();
        assert_eq!(
            prod,
            WebhookUrlPolicy {
                require_https: true,
                allow_private: false
            }
        );
        let dev_strict = WebhookUrlPolicy::from_settings(Some("development"), Some("false")).unwrap();
        assert!(!dev_strict.allow_private && !dev_strict.require_https);
        assert!(
            WebhookUrlPolicy::from_settings(Some("production"), Some("TRUE"))
                .unwrap()
                .allow_private
        );
        assert_eq!(
            WebhookUrlPolicy::from_settings(Some("prod"), None).unwrap_err().0,
            ENV_VAR
        );
        assert_eq!(
            WebhookUrlPolicy::from_settings(None, Some("sometimes")).unwrap_err().0,
            ALLOW_PRIVATE_VAR
        );
    }

    #[test]
    fn policy_checks_scheme_and_literal_addresses() {
        let strict = WebhookUrlPolicy {
            require_https: true,
            allow_private: false,
        };
        let ip = |t: &str| Some(UrlHost::Ip(t.parse().unwrap()));
        assert_eq!(
            strict.check_url("https", Some(UrlHost::Domain("loja.example.com"))),
            Ok(())
        );
        assert_eq!(
            strict.check_url("http", Some(UrlHost::Domain("loja.example.com"))),
            Err(UnsafeUrl::PlainHttp)
        );
        assert!(matches!(
            strict.check_url("ftp", ip("8.8.8.8")),
            Err(UnsafeUrl::Scheme(_))
        ));
        assert_eq!(strict.check_url("https", ip("8.8.8.8")), Ok(()));
        let refused = strict.check_url("https", ip("10.0.0.5")).unwrap_err();
        assert!(matches!(refused, UnsafeUrl::NonGlobal { kind: "private", .. }));
        assert!(
            refused
                .to_string()
                .contains("10.0.0.5 is a non-public address (private)"),
            "{refused}"
        );
        assert!(refused.to_string().contains(ALLOW_PRIVATE_VAR));
        let resolved = strict
            .check_address("intranet.example", "192.168.0.7".parse().unwrap())
            .unwrap_err();
        assert!(
            resolved
                .to_string()
                .starts_with("intranet.example resolves to 192.168.0.7, a non-public address (private)"),
            "{resolved}"
        );
        let lenient = WebhookUrlPolicy::default();
        assert_eq!(lenient.check_url("http", ip("127.0.0.1")), Ok(()));
        assert_eq!(lenient.check_url("https", None), Err(UnsafeUrl::NoHost));
    }
}
