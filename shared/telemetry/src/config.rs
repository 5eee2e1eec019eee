//! Configuration from environment variables over documented defaults. A bad
//! value stops the service at start with a message naming the variable;
//! secret values are never echoed.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("bad setting {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

/// Reads variables from the process environment, or from a given map (tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    overrides: Option<std::collections::HashMap<String, String>>,
}

impl Env {
    pub fn process() -> Env {
        Env { overrides: None }
    }

    pub fn from_pairs<I: IntoIterator<Item = (K, V)>, K: Into<String>, V: Into<String>>(pairs: I) -> Env {
        Env {
            overrides: Some(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()),
        }
    }

    pub fn raw(&self, name: &str) -> Option<String> {
        match &self.overrides {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.raw(name)
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.raw(name).ok_or_else(|| ConfigError {
            name: name.into(),
            reason: "is required and not set".into(),
        })
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError {
                name: name.into(),
                reason: format!("{v:?} is not valid: {e}"),
            }),
        }
    }

    /// A duration in milliseconds.
    pub fn millis(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(name, default.as_millis() as u64)?;
        Ok(Duration::from_millis(ms))
    }

    /// A URL with an http or https scheme.
    pub fn url(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.string(name, default);
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(ConfigError {
                name: name.into(),
                reason: format!("{v:?} must start with http:// or https://"),
            });
        }
        Ok(v.trim_end_matches('/').to_string())
    }

    pub fn socket_addr(&self, name: &str, default: &str) -> Result<std::net::SocketAddr, ConfigError> {
        let v = self.string(name, default);
        v.parse().map_err(|e| ConfigError {
            name: name.into(),
            reason: format!("{v:?} is not host:port: {e}"),
        })
    }

    pub fn bad(name: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_bad_setting() {
        let env = Env::from_pairs([("PAYHUB_PREFETCH", "lots"), ("PAYHUB_URL", "ftp://x")]);
        let e = env.parse::<u16>("PAYHUB_PREFETCH", 10).unwrap_err();
        assert_eq!(e.name, "PAYHUB_PREFETCH");
        assert!(
            e.to_string()
                .starts_with("bad setting PAYHUB_PREFETCH: \"lots\" is not valid")
        );
        assert!(env.url("PAYHUB_URL", "http://a").is_err());
        assert_eq!(env.parse::<u16>("UNSET", 10).unwrap(), 10);
        assert_eq!(
            env.millis("UNSET", Duration::from_secs(300)).unwrap(),
            Duration::from_secs(300)
        );
        assert!(env.required("UNSET").unwrap_err().to_string().contains("UNSET"));
    }
}
