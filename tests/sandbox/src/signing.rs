//! The provider's webhook signature: `x-webhook-signature` is the standard
//! base64 of an RSASSA-PKCS1-v1_5 / SHA-256 signature over the exact body
//! bytes, as OpenPix sends it. The matching public key is published on
//! `GET /api/v1/webhook/public-keys` as a PEM `SubjectPublicKeyInfo`.

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

/// The sandbox's RSA signing key and what it publishes about it.
pub(crate) struct Signer {
    key_pair: RsaKeyPair,
    rng: SystemRandom,
    /// `-----BEGIN PUBLIC KEY-----` PEM of the SPKI DER, with a final newline.
    public_pem: String,
    /// Lowercase hex SHA-256 of the SPKI DER (OpenPix's `key_identifier`).
    key_identifier: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_identifier", &self.key_identifier)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads an RSA private key. Accepts PKCS#8 DER, or the same inside a
    /// `-----BEGIN PRIVATE KEY-----` PEM (handy for `--private-key` files).
    pub(crate) fn from_key_bytes(bytes: &[u8]) -> anyhow::Result<Signer> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_to_der(bytes, "PRIVATE KEY")?
        } else {
            bytes.to_vec()
        };
        let key_pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow!("the signing key is not an RSA PKCS#8 key ring accepts: {e}"))?;
        let spki = spki_der_from_pkcs1(key_pair.public_key().as_ref());
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        Ok(Signer {
            public_pem: der_to_pem(&spki, "PUBLIC KEY"),
            key_identifier: crate::util::hex(digest.as_ref()),
            key_pair,
            rng: SystemRandom::new(),
        })
    }

    /// base64(RSA-SHA256(body)).
    pub(crate) fn sign(&self, body: &[u8]) -> anyhow::Result<String> {
        let mut sig = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, body, &mut sig)
            .map_err(|_| anyhow!("RSA signing failed"))?;
        Ok(STANDARD.encode(sig))
    }

    pub(crate) fn public_pem(&self) -> &str {
        &self.public_pem
    }

    pub(crate) fn key_identifier(&self) -> &str {
        &self.key_identifier
    }

    /// The PKCS#1 `RSAPublicKey` DER, what ring's `UnparsedPublicKey` wants.
    pub(crate) fn public_key_pkcs1(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Wraps a PKCS#1 `RSAPublicKey` in a `SubjectPublicKeyInfo`:
/// `SEQUENCE { SEQUENCE { rsaEncryption OID, NULL }, BIT STRING { 0 unused bits, key } }`.
fn spki_der_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM_ID: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0x00);
    bit_string.extend_from_slice(pkcs1);

    let mut out = vec![0x30];
    der_len(RSA_ALGORITHM_ID.len() + bit_string.len(), &mut out);
    out.extend_from_slice(&RSA_ALGORITHM_ID);
    out.extend_from_slice(&bit_string);
    out
}

/// PEM with 64-column base64 lines and a trailing newline.
fn der_to_pem(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so splitting on byte boundaries is safe.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside a PEM block with the given label.
fn pem_to_der(pem: &[u8], label: &str) -> anyhow::Result<Vec<u8>> {
    let text = std::str::from_utf8(pem).context("the PEM file is not UTF-8")?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .with_context(|| format!("no `{begin}` line (PKCS#8 is required)"))?
        + begin.len();
    let stop = text[start..].find(&end).with_context(|| format!("no `{end}` line"))? + start;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).context("the PEM body is not base64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const FIXTURE_KEY: &[u8] = include_bytes!("../../fixtures/sandbox-openpix-private.pk8.der");

    #[test]
    fn derived_public_key_matches_the_fixture_pem() {
        let signer = Signer::from_key_bytes(FIXTURE_KEY).expect("fixture key loads");
        assert_eq!(signer.public_pem().trim(), crate::FIXTURE_PUBLIC_KEY_PEM.trim());
        assert_eq!(signer.key_identifier().len(), 64);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let signer = Signer::from_key_bytes(FIXTURE_KEY).expect("fixture key loads");
        let body = br#"{"event":"OPENPIX:CHARGE_COMPLETED"}"#;
        let sig = STANDARD.decode(signer.sign(body).expect("signs")).expect("base64");
        let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, signer.public_key_pkcs1());
        assert!(key.verify(body, &sig).is_ok());
        assert!(key.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn reproduces_the_fixture_signature() {
        // PKCS#1 v1.5 signatures are deterministic: the signature committed
        // next to the fixture (which payhub's connector tests trust) must be
        // exactly what the sandbox produces.
        let body = include_bytes!("../../fixtures/openpix/charge-completed.json");
        let expected = include_str!("../../fixtures/openpix/charge-completed.json.sandbox-sig");
        let signer = Signer::from_key_bytes(FIXTURE_KEY).expect("fixture key loads");
        assert_eq!(signer.sign(body).expect("signs"), expected.trim());
    }

    #[test]
    fn accepts_pem_and_rejects_garbage() {
        let pem = der_to_pem(FIXTURE_KEY, "PRIVATE KEY");
        let from_pem = Signer::from_key_bytes(pem.as_bytes()).expect("PEM loads");
        let from_der = Signer::from_key_bytes(FIXTURE_KEY).expect("DER loads");
        assert_eq!(from_pem.key_identifier(), from_der.key_identifier());
        assert!(Signer::from_key_bytes(b"not a key").is_err());
        assert!(Signer::from_key_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n").is_err());
    }

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        der_len(0x7f, &mut v);
        der_len(0x80, &mut v);
        der_len(0x1234, &mut v);
        assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }
}
