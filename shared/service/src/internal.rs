//! The token that authenticates calls between payhub's own services (the
//! confirmation call to charge-creator). `PAYHUB_INTERNAL_TOKEN`; on a
//! developer machine a public development token stands in, with a warning,
//! and `PAYHUB_ENV=production` refuses to start without a real one.

use payhub_telemetry::{ConfigError, Env};

pub const VAR: &str = "PAYHUB_INTERNAL_TOKEN";
/// The public development token.
pub const DEVELOPMENT_TOKEN: &str = "payhub-development-internal-token";

/// The internal token from the environment.
pub fn token(env: &Env) -> Result<String, ConfigError> {
    let production = env.is_production();
    match env.try_raw(VAR)? {
        Some(t) if t == DEVELOPMENT_TOKEN && production => Err(Env::bad(
            VAR,
            "is the public development token, which PAYHUB_ENV=production refuses",
        )),
        Some(t) if t.len() < 24 => Err(Env::bad(VAR, "must be at least 24 characters")),
        Some(t) => Ok(t),
        None if production => Err(Env::bad(VAR, "is required when PAYHUB_ENV=production")),
        None => {
            tracing::warn!("{VAR} is not set: using the PUBLIC development token between services");
            Ok(DEVELOPMENT_TOKEN.to_string())
        }
    }
}

/// Compares a presented bearer token with the expected one in constant time.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_a_missing_or_public_token() {
        let prod = |t: Option<&str>| {
            let mut pairs = vec![("PAYHUB_ENV", "production")];
            if let Some(t) = t {
                pairs.push((VAR, t));
            }
            token(&Env::from_pairs(pairs))
        };
        assert!(prod(None).is_err());
        assert!(prod(Some(DEVELOPMENT_TOKEN)).is_err());
        assert!(prod(Some("short")).is_err());
        assert_eq!(
            prod(Some("a-long-enough-random-token-value")).unwrap(),
            "a-long-enough-random-token-value"
        );
        assert_eq!(
            token(&Env::from_pairs(Vec::<(&str, &str)>::new())).unwrap(),
            DEVELOPMENT_TOKEN
        );
    }

    #[test]
    fn bearer_comparison() {
        assert!(bearer_matches(Some("Bearer abc"), "abc"));
        assert!(!bearer_matches(Some("Bearer abd"), "abc"));
        assert!(!bearer_matches(Some("abc"), "abc"));
        assert!(!bearer_matches(None, "abc"));
    }
}
