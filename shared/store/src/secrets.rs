//! Secrets at rest. Values payhub must read back (webhook signing secrets)
//! are sealed with AES-256-GCM under the master key `PAYHUB_SECRETS_KEY`
//! (base64 of 32 bytes): a random 96-bit nonce per value, stored as
//! `nonce || ciphertext || tag`, with associated data that binds the value to
//! its row, so a ciphertext copied onto another shop does not open.
//!
//! Without `PAYHUB_SECRETS_KEY` a fixed development key compiled into the
//! binary is used and a warning names the variable. With
//! `PAYHUB_ENV=production` there is no development key: a process that
//! opens or seals secrets (notifier, payhubctl) refuses to start without
//! the key ([`Secrets::from_settings`]), and the others run with no key at
//! all ([`Secrets::for_store`]), so only the notifier holds it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use payhub_core::url_safety::{self, Environment};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Arc;

/// The master key's variable.
pub const KEY_VAR: &str = "PAYHUB_SECRETS_KEY";

/// The variable of the second key, which seals the shops' provider
/// credentials (AppIDs, PixelPay secret keys): held only by charge-creator,
/// the one service that calls providers, and payhubctl, which sets them. A
/// notifier holding [`KEY_VAR`] cannot open them, and charge-creator cannot
/// open webhook secrets.
pub const PROVIDER_KEY_VAR: &str = "PAYHUB_PROVIDER_KEY";

/// The development key: public (it is in the source), so it protects
/// nothing; it only lets local runs, the demo and the tests work unset.
const DEVELOPMENT_KEY: [u8; 32] = *b"payhub-development-key-NOT-SAFE!";

/// The provider key's development stand-in, different from the first so
/// that a value sealed under one never opens under the other.
const DEVELOPMENT_PROVIDER_KEY: [u8; 32] = *b"payhub-dev-provider-key-NOT-SAFE";

/// Which of the two keys: the variable, its development stand-in and who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// [`KEY_VAR`]: shop webhook secrets (notifier, payhubctl).
    Shop,
    /// [`PROVIDER_KEY_VAR`]: shop provider credentials (charge-creator, payhubctl).
    Provider,
}

impl KeyKind {
    pub fn var(self) -> &'static str {
        match self {
            KeyKind::Shop => KEY_VAR,
            KeyKind::Provider => PROVIDER_KEY_VAR,
        }
    }

    fn development_key(self) -> &'static [u8; 32] {
        match self {
            KeyKind::Shop => &DEVELOPMENT_KEY,
            KeyKind::Provider => &DEVELOPMENT_PROVIDER_KEY,
        }
    }

    fn holders(self) -> &'static str {
        match self {
            KeyKind::Shop => "the notifier and payhubctl",
            KeyKind::Provider => "charge-creator and payhubctl",
        }
    }
}

const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A setting is missing or malformed; the message names it, never its value.
    #[error("bad setting {name}: {reason}")]
    Setting { name: &'static str, reason: String },
    /// This process has no key: it is not one that opens secrets.
    #[error("this process has no {KEY_VAR}: only the notifier and payhubctl open or seal secrets")]
    NoKey,
    /// The stored value does not open under this key: another key, or altered.
    #[error("a stored secret cannot be decrypted: it was sealed under another {KEY_VAR}, or it was altered")]
    Decrypt,
}

/// Where the master key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `PAYHUB_SECRETS_KEY`.
    Configured,
    /// The compiled-in development key.
    Development,
    /// No key (production, a service that never opens a secret): sealing
    /// and opening fail.
    Absent,
}

/// The master key, cheap to clone. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Secrets {
    key: Option<Arc<LessSafeKey>>,
    source: KeySource,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl Secrets {
    fn from_bytes(bytes: &[u8], source: KeySource) -> Secrets {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is a valid AES-256 key");
        Secrets {
            key: Some(Arc::new(LessSafeKey::new(unbound))),
            source,
        }
    }

    /// The compiled-in development key. Never for production data.
    pub fn development() -> Secrets {
        Secrets::development_of(KeyKind::Shop)
    }

    /// The compiled-in development stand-in of `kind`'s key.
    pub fn development_of(kind: KeyKind) -> Secrets {
        Secrets::from_bytes(kind.development_key(), KeySource::Development)
    }

    /// No key: for processes that never seal or open a secret.
    pub fn absent() -> Secrets {
        Secrets {
            key: None,
            source: KeySource::Absent,
        }
    }

    /// A key given as base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Secrets, SecretsError> {
        Secrets::from_base64_as(KeyKind::Shop, text)
    }

    fn from_base64_as(kind: KeyKind, text: &str) -> Result<Secrets, SecretsError> {
        let name = kind.var();
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| SecretsError::Setting {
                name,
                reason: "is not base64 (make one with `openssl rand -base64 32`)".into(),
            })?;
        if bytes.len() != 32 {
            return Err(SecretsError::Setting {
                name,
                reason: format!(
                    "must decode to 32 bytes, not {} (make one with `openssl rand -base64 32`)",
                    bytes.len()
                ),
            });
        }
        Ok(Secrets::from_bytes(&bytes, KeySource::Configured))
    }

    /// From `PAYHUB_SECRETS_KEY` and `PAYHUB_ENV` as `get` reads them: the
    /// configured key, or the development key outside production.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
        Secrets::from_settings_of(KeyKind::Shop, get)
    }

    /// Like [`Secrets::from_settings`], for either key.
    pub fn from_settings_of(kind: KeyKind, get: impl Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
        let environment =
            Environment::parse(get(url_safety::ENV_VAR).as_deref()).map_err(|reason| SecretsError::Setting {
                name: url_safety::ENV_VAR,
                reason,
            })?;
        match get(kind.var()).filter(|v| !v.trim().is_empty()) {
            Some(text) => Secrets::from_base64_as(kind, &text),
            None if environment == Environment::Production => Err(SecretsError::Setting {
                name: kind.var(),
                reason: format!(
                    "is required when {}=production: base64 of 32 random bytes (`openssl rand -base64 32`), \
                     the same in {}",
                    url_safety::ENV_VAR,
                    kind.holders()
                ),
            }),
            None => Ok(Secrets::development_of(kind)),
        }
    }

    /// What a store opens with: like [`Secrets::from_settings`], except that
    /// in production a missing key is [`Secrets::absent`] rather than an
    /// error. Processes that do open secrets check [`Secrets::from_settings`]
    /// at start, so they never run without the key.
    pub fn for_store(get: impl Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
        match Secrets::from_settings(&get) {
            Err(SecretsError::Setting { name: KEY_VAR, .. }) if get(KEY_VAR).is_none_or(|v| v.trim().is_empty()) => {
                Ok(Secrets::absent())
            }
            other => other,
        }
    }

    /// [`Secrets::from_settings`] over the process environment (a
    /// `PAYHUB_SECRETS_KEY_FILE` counts, see `payhub_telemetry::Env::raw`).
    pub fn from_env() -> Result<Secrets, SecretsError> {
        let env = payhub_telemetry::Env::process();
        Secrets::from_settings(|name| env.raw(name))
    }

    /// [`Secrets::for_store`] over the process environment.
    pub fn for_store_from_env() -> Result<Secrets, SecretsError> {
        let env = payhub_telemetry::Env::process();
        Secrets::for_store(|name| env.raw(name))
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    pub fn is_development(&self) -> bool {
        self.source == KeySource::Development
    }

    /// True when this process holds a key (configured or development).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Encrypts `plaintext` bound to `context` (associated data, not stored):
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let key = self.key.as_ref().ok_or(SecretsError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source failed");
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body)
            .expect("AES-GCM sealing of a short value cannot fail");
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`Secrets::seal`] produced with the same `context`.
    /// Any change to the stored bytes, the context or the key fails.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let key = self.key.as_ref().ok_or(SecretsError::NoKey)?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretsError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Decrypt)?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| SecretsError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_b64(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let s = Secrets::from_base64(&key_b64(7)).unwrap();
        let a = s.seal(b"whsec_abc", b"shop-1").unwrap();
        let b = s.seal(b"whsec_abc", b"shop-1").unwrap();
        assert_ne!(a, b, "random nonces make equal plaintexts differ");
        assert_eq!(a.len(), NONCE_LEN + 9 + TAG_LEN);
        assert_eq!(s.open(&a, b"shop-1").unwrap(), b"whsec_abc");
        assert_eq!(s.open(&b, b"shop-1").unwrap(), b"whsec_abc");
        assert!(!a.windows(9).any(|w| w == b"whsec_abc"));
    }

    #[test]
    fn detects_tampering_wrong_context_and_wrong_key() {
        let s = Secrets::from_base64(&key_b64(7)).unwrap();
        let sealed = s.seal(b"secret value", b"shop-1").unwrap();
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(s.open(&bad, b"shop-1"), Err(SecretsError::Decrypt)),
                "byte {i}"
            );
        }
        assert!(matches!(s.open(&sealed, b"shop-2"), Err(SecretsError::Decrypt)));
        assert!(matches!(s.open(&sealed[..20], b"shop-1"), Err(SecretsError::Decrypt)));
        let other = Secrets::from_base64(&key_b64(8)).unwrap();
        assert!(matches!(other.open(&sealed, b"shop-1"), Err(SecretsError::Decrypt)));
        assert!(matches!(
            Secrets::development().open(&sealed, b"shop-1"),
            Err(SecretsError::Decrypt)
        ));
    }

    #[test]
    fn settings_name_the_variable_and_never_echo_the_key() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert!(Secrets::from_settings(env(&[])).unwrap().is_development());
        assert!(
            Secrets::from_settings(env(&[("PAYHUB_ENV", "development")]))
                .unwrap()
                .is_development()
        );
        let missing = Secrets::from_settings(env(&[("PAYHUB_ENV", "production")])).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("bad setting PAYHUB_SECRETS_KEY: is required when PAYHUB_ENV=production"),
            "{missing}"
        );
        let short = Secrets::from_settings(env(&[("PAYHUB_SECRETS_KEY", "c2hvcnQ=")])).unwrap_err();
        assert!(short.to_string().contains("PAYHUB_SECRETS_KEY") && !short.to_string().contains("c2hvcnQ="));
        let garbage = Secrets::from_settings(env(&[("PAYHUB_SECRETS_KEY", "not base64 at all!")])).unwrap_err();
        assert!(
            garbage
                .to_string()
                .starts_with("bad setting PAYHUB_SECRETS_KEY: is not base64")
        );
        let bad_env = Secrets::from_settings(env(&[("PAYHUB_ENV", "prod")])).unwrap_err();
        assert!(bad_env.to_string().starts_with("bad setting PAYHUB_ENV"));
        let configured = Secrets::from_settings(env(&[
            ("PAYHUB_ENV", "production"),
            ("PAYHUB_SECRETS_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
        ]))
        .unwrap();
        assert_eq!(configured.source(), KeySource::Configured);
        let debug = format!("{configured:?}");
        assert!(debug.contains("<redacted>") && !debug.contains("BwcH"), "{debug}");
        // A store in production without the key has none: it seals and opens nothing.
        let absent = Secrets::for_store(env(&[("PAYHUB_ENV", "production")])).unwrap();
        assert_eq!(absent.source(), KeySource::Absent);
        assert!(!absent.has_key());
        assert!(matches!(absent.seal(b"x", b"shop-1"), Err(SecretsError::NoKey)));
        let sealed = configured.seal(b"x", b"shop-1").unwrap();
        assert!(matches!(absent.open(&sealed, b"shop-1"), Err(SecretsError::NoKey)));
        assert!(Secrets::for_store(env(&[])).unwrap().is_development());
        assert!(Secrets::for_store(env(&[("PAYHUB_SECRETS_KEY", "c2hvcnQ=")])).is_err());
        // URL-safe and unpadded forms are accepted too.
        assert!(Secrets::from_base64(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb; 32])).is_ok());
    }
}
