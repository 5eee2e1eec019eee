//! Helpers shared by the sandbox's integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use payhub_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const APP_ID: &str = "sandbox-test-app";

/// A sandbox on port 0 that stops when dropped, plus an HTTP client.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestSandbox {
    pub async fn start() -> TestSandbox {
        let shutdown = CancellationToken::new();
        let sandbox = Sandbox::start(SandboxConfig::local_ephemeral(APP_ID), shutdown.clone())
            .await
            .expect("the sandbox starts");
        // `start` installed the rustls crypto provider reqwest needs.
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        TestSandbox {
            sandbox,
            http,
            shutdown,
        }
    }

    /// Cancels the sandbox and waits for its servers to stop; panics when
    /// that takes longer than `limit`.
    pub async fn stop_within(&self, limit: std::time::Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.sandbox.stopped())
            .await
            .expect("the sandbox stops promptly");
    }

    pub async fn create_charge(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/charge", self.sandbox.provider_url()))
            .header("authorization", APP_ID)
            .json(&body)
            .send()
            .await
            .expect("the provider answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON reply"))
    }

    pub async fn get_charge(&self, id: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .get(format!("{}/api/v1/charge/{id}", self.sandbox.provider_url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("the provider answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON reply"))
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Hook {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// A tiny webhook receiver standing in for payhub's webhook-verifier: records
/// every POST to `/webhooks/openpix` and answers `status` with body `ok`.
pub struct Receiver {
    pub url: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct ReceiverState {
    hooks: Arc<Mutex<Vec<Hook>>>,
    status: StatusCode,
}

async fn record(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    state.hooks.lock().expect("lock").push(Hook {
        headers,
        body: body.to_vec(),
    });
    (state.status, "ok")
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            hooks: hooks.clone(),
            status: StatusCode::from_u16(status).expect("status"),
        };
        let app = Router::new().route("/webhooks/openpix", post(record)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .expect("the receiver runs");
        });
        Receiver {
            url: format!("http://{addr}/webhooks/openpix"),
            hooks,
            shutdown,
        }
    }

    pub fn received(&self) -> Vec<Hook> {
        self.hooks.lock().expect("lock").clone()
    }
}

/// The DER inside a PEM.
pub fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(b64.trim()).expect("PEM base64")
}

/// Reads one DER TLV: (tag, content, rest).
fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let count = usize::from(n & 0x7f);
            let len = input[2..2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + count)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// Verifies `x-webhook-signature` the way payhub does: RSA PKCS#1 v1.5
/// SHA-256 over the raw body, with the PKCS#1 key inside a PEM SPKI.
pub fn verify_openpix_signature(public_pem: &str, body: &[u8], signature_b64: &str) -> bool {
    let spki = pem_body(public_pem);
    let (tag, seq, _) = der_tlv(&spki);
    assert_eq!(tag, 0x30, "SPKI is a SEQUENCE");
    let (_, _algorithm, rest) = der_tlv(seq);
    let (tag, bit_string, _) = der_tlv(rest);
    assert_eq!(tag, 0x03, "then a BIT STRING");
    let pkcs1 = &bit_string[1..]; // skip the unused-bits octet
    let Ok(signature) = STANDARD.decode(signature_b64) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pkcs1)
        .verify(body, &signature)
        .is_ok()
}
