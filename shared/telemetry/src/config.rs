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

/// The suffix of a variable that names a file holding the value.
pub const FILE_SUFFIX: &str = "_FILE";

/// The deployment kind: `development` (default) or `production`.
pub const ENV_VAR: &str = "PAYHUB_ENV";

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

    /// The variable's own value, without the `_FILE` fallback.
    fn direct(&self, name: &str) -> Option<String> {
        match &self.overrides {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or the trimmed content of the file named by
    /// `<name>_FILE` (secrets mounted as files). Both set at once, an
    /// unreadable or empty file: an error naming the variable.
    pub fn try_raw(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let file_var = format!("{name}{FILE_SUFFIX}");
        match (self.direct(name), self.direct(&file_var)) {
            (Some(_), Some(_)) => Err(ConfigError {
                name: name.into(),
                reason: format!("is set both directly and as {file_var}: give only one"),
            }),
            (Some(v), None) => Ok(Some(v)),
            (None, None) => Ok(None),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    name: file_var.clone(),
                    reason: format!("cannot read {path:?}: {e}"),
                })?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(ConfigError {
                        name: file_var,
                        reason: format!("{path:?} is empty"),
                    });
                }
                Ok(Some(value.to_string()))
            }
        }
    }

    /// [`Env::try_raw`] for readers that cannot fail: a `_FILE` problem
    /// reads as unset here, and [`Env::check_files`] (run first by every
    /// service's configuration) has already refused it.
    pub fn raw(&self, name: &str) -> Option<String> {
        self.try_raw(name).ok().flatten()
    }

    /// Every `<VAR>_FILE` that is set: readable, not empty, and `<VAR>` not
    /// set as well.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let names: Vec<String> = match &self.overrides {
            Some(m) => m.keys().cloned().collect(),
            None => std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect(),
        };
        for name in names {
            if let Some(var) = name.strip_suffix(FILE_SUFFIX)
                && var.starts_with("PAYHUB_")
            {
                self.try_raw(var)?;
            }
        }
        Ok(())
    }

    /// `PAYHUB_ENV=production`: the rules that fail closed apply.
    pub fn is_production(&self) -> bool {
        self.raw(ENV_VAR)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("production"))
    }

    /// A setting production requires explicitly; elsewhere `default`.
    pub fn string_or_production_required(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        match self.try_raw(name)? {
            Some(v) => Ok(v),
            None if self.is_production() => Err(ConfigError {
                name: name.into(),
                reason: format!("is required when {ENV_VAR}=production (no local default there)"),
            }),
            None => Ok(default.to_string()),
        }
    }

    /// A URL of an outside party (a provider's API): http or https, and
    /// https only when `PAYHUB_ENV=production`.
    pub fn external_url(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.url(name, default)?;
        if self.is_production() && !v.starts_with("https://") {
            return Err(ConfigError {
                name: name.into(),
                reason: format!("{v:?} must be https:// when {ENV_VAR}=production"),
            });
        }
        Ok(v)
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.raw(name)
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.try_raw(name)?.ok_or_else(|| ConfigError {
            name: name.into(),
            reason: "is required and not set".into(),
        })
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.try_raw(name)? {
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
        let v = self.try_raw(name)?.unwrap_or_else(|| default.to_string());
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(ConfigError {
                name: name.into(),
                reason: format!("{v:?} must start with http:// or https://"),
            });
        }
        Ok(v.trim_end_matches('/').to_string())
    }

    /// An SMTP URL as lettre reads it (`smtp://` or `smtps://`). With
    /// `PAYHUB_ENV=production` it must use TLS: `smtps://` (TLS from the
    /// first byte), or `smtp://...?tls=required` (STARTTLS, refused if the
    /// server does not offer it). `tls=opportunistic` or plain `smtp://`
    /// would send mail and credentials in the clear to anyone in the way.
    pub fn smtp_url(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        let v = self.try_raw(name)?.unwrap_or_else(|| default.to_string());
        let tls = if v.starts_with("smtps://") {
            true
        } else if v.starts_with("smtp://") {
            v.split_once('?').is_some_and(|(_, query)| {
                let params: Vec<&str> = query.split('&').filter(|p| p.starts_with("tls=")).collect();
                params == ["tls=required"]
            })
        } else {
            return Err(ConfigError {
                name: name.into(),
                reason: "must be an smtp:// or smtps:// URL".into(),
            });
        };
        if self.is_production() && !tls {
            return Err(ConfigError {
                name: name.into(),
                reason: format!(
                    "must use TLS when {ENV_VAR}=production: smtps://host:465, or smtp://host:587?tls=required for STARTTLS"
                ),
            });
        }
        Ok(v)
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

    fn temp_file(content: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "payhub-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_secret_may_come_from_a_file() {
        let path = temp_file("  s3cret-value\n");
        let env = Env::from_pairs([("PAYHUB_SMTP_URL_FILE", path.to_str().unwrap())]);
        assert_eq!(env.raw("PAYHUB_SMTP_URL").as_deref(), Some("s3cret-value"));
        assert_eq!(env.required("PAYHUB_SMTP_URL").unwrap(), "s3cret-value");
        assert_eq!(env.string("PAYHUB_SMTP_URL", "default"), "s3cret-value");
        env.check_files().unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_file_and_a_value_at_once_are_refused() {
        let path = temp_file("from-file");
        let env = Env::from_pairs([
            ("PAYHUB_AMQP_URL", "amqp://x"),
            ("PAYHUB_AMQP_URL_FILE", path.to_str().unwrap()),
        ]);
        let e = env.check_files().unwrap_err();
        assert_eq!(e.name, "PAYHUB_AMQP_URL");
        assert!(e.reason.contains("PAYHUB_AMQP_URL_FILE"), "{e}");
        assert!(env.required("PAYHUB_AMQP_URL").is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_unreadable_or_empty_file_is_refused() {
        let env = Env::from_pairs([("PAYHUB_SECRETS_KEY_FILE", "/nonexistent/payhub/key")]);
        let e = env.check_files().unwrap_err();
        assert_eq!(e.name, "PAYHUB_SECRETS_KEY_FILE");
        assert!(env.required("PAYHUB_SECRETS_KEY").is_err());
        let path = temp_file(" \n");
        let env = Env::from_pairs([("PAYHUB_INTERNAL_TOKEN_FILE", path.to_str().unwrap())]);
        assert!(env.check_files().unwrap_err().reason.contains("empty"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn production_mail_goes_over_tls() {
        let prod = |url: &str| Env::from_pairs([("PAYHUB_ENV", "production"), ("PAYHUB_SMTP_URL", url)]);
        let refused = |url: &str| {
            let e = prod(url)
                .smtp_url("PAYHUB_SMTP_URL", "smtp://127.0.0.1:2525")
                .unwrap_err();
            assert_eq!(e.name, "PAYHUB_SMTP_URL", "{url}");
            // The URL may hold the SMTP password: never echoed.
            assert!(!e.reason.contains(url), "{e}");
        };
        refused("smtp://user:pw@mail.example.com:587");
        refused("smtp://mail.example.com:587?tls=opportunistic");
        refused("smtp://mail.example.com:587?tls=required&tls=opportunistic");
        refused("http://mail.example.com");
        for ok in [
            "smtps://user:pw@mail.example.com:465",
            "smtp://mail.example.com:587?tls=required",
        ] {
            assert_eq!(prod(ok).smtp_url("PAYHUB_SMTP_URL", "smtp://x").unwrap(), ok);
        }
        let unset = Env::from_pairs([("PAYHUB_ENV", "production")]);
        assert!(unset.smtp_url("PAYHUB_SMTP_URL", "smtp://127.0.0.1:2525").is_err());
        let dev = Env::from_pairs(Vec::<(&str, &str)>::new());
        assert_eq!(
            dev.smtp_url("PAYHUB_SMTP_URL", "smtp://127.0.0.1:2525").unwrap(),
            "smtp://127.0.0.1:2525"
        );
    }

    #[test]
    fn production_is_one_setting() {
        assert!(!Env::from_pairs(Vec::<(&str, &str)>::new()).is_production());
        assert!(!Env::from_pairs([("PAYHUB_ENV", "development")]).is_production());
        assert!(Env::from_pairs([("PAYHUB_ENV", "production")]).is_production());
    }

    #[test]
    fn production_requires_explicit_settings_and_https_providers() {
        let prod = Env::from_pairs([("PAYHUB_ENV", "production"), ("PAYHUB_X_URL", "http://provider")]);
        let e = prod
            .string_or_production_required("PAYHUB_DATABASE_URL", "postgres://localhost")
            .unwrap_err();
        assert_eq!(e.name, "PAYHUB_DATABASE_URL");
        let e = prod.external_url("PAYHUB_X_URL", "https://a").unwrap_err();
        assert_eq!(e.name, "PAYHUB_X_URL");
        assert!(e.reason.contains("https"), "{e}");
        let dev = Env::from_pairs([("PAYHUB_X_URL", "http://provider")]);
        assert_eq!(
            dev.external_url("PAYHUB_X_URL", "https://a").unwrap(),
            "http://provider"
        );
        assert_eq!(
            dev.string_or_production_required("PAYHUB_DATABASE_URL", "postgres://localhost")
                .unwrap(),
            "postgres://localhost"
        );
    }
}
