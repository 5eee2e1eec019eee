//! RSASSA-PKCS1-v1_5 / SHA-256 verification with ring.
//!
//! OpenPix's published key is RSA-1024, which ring accepts only through
//! `RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY`. We use that rather than
//! the `rsa` crate, which carries RUSTSEC-2023-0071 (a timing attack on
//! private-key operations that do not happen here, but an audit flags it).
//! ring wants the PKCS#1 `RSAPublicKey`, so the SPKI wrapper of a
//! `BEGIN PUBLIC KEY` PEM is unwrapped by the small DER reader below.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, UnparsedPublicKey};

/// SHA-256 (hex) of the sandbox's fixture public key, as its PKCS#1
/// `RSAPublicKey` DER (what [`TrustedKeys`] holds, whichever PEM form it was
/// given in): `tests/fixtures/sandbox-openpix-public.pem`, whose private half
/// is in the repository. Production refuses to trust it. A copy, so that the
/// services need not depend on the sandbox crate; a test checks it matches.
pub const SANDBOX_FIXTURE_KEY_SHA256: &str = "394520348a5c6265b34e29e5c8d863e11efafb710cdc058e34f086690f756dbc";

/// A set of trusted public keys (several during a rotation).
#[derive(Clone)]
pub struct TrustedKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKeys({} keys)", self.keys.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no PEM public key found")]
    NoKey,
    #[error("the PEM body is not base64")]
    Base64,
    #[error("the key is not an RSA public key in SPKI or PKCS#1 form")]
    NotRsa,
}

/// Reads one DER TLV: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut l = 0usize;
        for &b in &rest[..n] {
            l = (l << 8) | usize::from(b);
        }
        rest = &rest[n..];
        l
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// SubjectPublicKeyInfo → the RSAPublicKey inside it.
fn spki_to_pkcs1(spki: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, _) = der(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, alg, rest) = der(body)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der(alg)?;
    if tag != 0x06 || oid != RSA_ENCRYPTION_OID {
        return None;
    }
    let (tag, bits, _) = der(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

impl TrustedKeys {
    /// Parses every `PUBLIC KEY` / `RSA PUBLIC KEY` block in `pem_text`.
    pub fn from_pem(pem_text: &str) -> Result<TrustedKeys, KeyError> {
        let mut keys = Vec::new();
        let mut rest = pem_text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let after = &rest[start + 11..];
            let Some(label_end) = after.find("-----") else {
                break;
            };
            let label = &after[..label_end];
            let body_start = &after[label_end + 5..];
            let end_marker = format!("-----END {label}-----");
            let Some(end) = body_start.find(&end_marker) else {
                return Err(KeyError::NoKey);
            };
            let b64: String = body_start[..end].chars().filter(|c| !c.is_whitespace()).collect();
            let der_bytes = STANDARD.decode(b64).map_err(|_| KeyError::Base64)?;
            let pkcs1 = match label {
                "PUBLIC KEY" => spki_to_pkcs1(&der_bytes).ok_or(KeyError::NotRsa)?,
                "RSA PUBLIC KEY" => der_bytes,
                _ => return Err(KeyError::NotRsa),
            };
            keys.push(pkcs1);
            rest = &body_start[end + end_marker.len()..];
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(TrustedKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// SHA-256 (hex) of each key's PKCS#1 DER.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                ring::digest::digest(&ring::digest::SHA256, k)
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect()
    }

    /// True when one of the keys is the sandbox's public fixture key.
    pub fn contains_sandbox_fixture(&self) -> bool {
        self.fingerprints().iter().any(|f| f == SANDBOX_FIXTURE_KEY_SHA256)
    }

    /// True when `signature` (raw bytes) is valid over `message` for any key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, k)
                .verify(message, signature)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openpix_published_key() {
        let k = TrustedKeys::from_pem(crate::openpix::OPENPIX_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(k.len(), 1);
        // An RSA-1024 modulus: the PKCS#1 structure is about 140 bytes.
        assert!((135..=145).contains(&k.keys[0].len()), "{}", k.keys[0].len());
    }

    #[test]
    fn knows_the_sandbox_fixture_key_in_either_pem_form() {
        let fixture = include_str!("../../../tests/fixtures/sandbox-openpix-public.pem");
        let keys = TrustedKeys::from_pem(fixture).unwrap();
        assert_eq!(keys.fingerprints(), [SANDBOX_FIXTURE_KEY_SHA256]);
        assert!(keys.contains_sandbox_fixture());
        let both = format!("{}\n{fixture}", crate::openpix::OPENPIX_PUBLIC_KEY_PEM);
        assert!(TrustedKeys::from_pem(&both).unwrap().contains_sandbox_fixture());
        // The same key as PKCS#1 `RSA PUBLIC KEY`.
        let pkcs1 = STANDARD.encode(&keys.keys[0]);
        let pem = format!("-----BEGIN RSA PUBLIC KEY-----\n{pkcs1}\n-----END RSA PUBLIC KEY-----\n");
        assert!(TrustedKeys::from_pem(&pem).unwrap().contains_sandbox_fixture());
        assert!(
            !TrustedKeys::from_pem(crate::openpix::OPENPIX_PUBLIC_KEY_PEM)
                .unwrap()
                .contains_sandbox_fixture()
        );
    }

    #[test]
    fn reads_several_keys_and_refuses_garbage() {
        let two = format!(
            "{}\n{}",
            crate::openpix::OPENPIX_PUBLIC_KEY_PEM,
            include_str!("../../../tests/fixtures/sandbox-openpix-public.pem")
        );
        assert_eq!(TrustedKeys::from_pem(&two).unwrap().len(), 2);
        assert_eq!(TrustedKeys::from_pem("nothing here").unwrap_err(), KeyError::NoKey);
        assert_eq!(
            TrustedKeys::from_pem("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----").unwrap_err(),
            KeyError::Base64
        );
        assert_eq!(
            TrustedKeys::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").unwrap_err(),
            KeyError::NotRsa
        );
    }
}
