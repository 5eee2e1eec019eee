//! `/metrics`, `/healthz` and `/readyz`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Named readiness checks, each a flag kept fresh by whoever owns the
/// dependency (the broker supervisor, a database pinger). Ready = all true
/// and not draining.
type Checks = Vec<(&'static str, Arc<AtomicBool>)>;

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<std::sync::Mutex<Checks>>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn check(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks.lock().expect("not poisoned").push((name, flag.clone()));
        flag
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self
                .checks
                .lock()
                .expect("not poisoned")
                .iter()
                .all(|(_, f)| f.load(Ordering::Relaxed))
    }

    fn report(&self) -> serde_json::Value {
        let checks = self.checks.lock().expect("not poisoned");
        let mut m = serde_json::Map::new();
        for (n, f) in checks.iter() {
            m.insert((*n).to_string(), serde_json::Value::Bool(f.load(Ordering::Relaxed)));
        }
        serde_json::json!({
            "ready": !self.draining.load(Ordering::Relaxed) && checks.iter().all(|(_, f)| f.load(Ordering::Relaxed)),
            "draining": self.draining.load(Ordering::Relaxed),
            "checks": m,
        })
    }
}

pub fn metrics_text() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_text()) }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let r = readiness.clone();
                async move {
                    let code = if r.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(r.report())).into_response()
                }
            }),
        )
}
