//! A per-source rate limit on the public webhook endpoints, so anonymous
//! traffic cannot fill the database with rejected webhooks. A token bucket
//! per source address (the peer address; the listener provides it), with
//! the table of sources bounded: when it is full, the oldest-idle entries
//! are forgotten.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// At most this many sources are tracked at once.
const MAX_SOURCES: usize = 10_000;

#[derive(Clone)]
pub struct PerSource {
    inner: Arc<Mutex<Buckets>>,
}

struct Buckets {
    rate: f64,
    burst: f64,
    by_source: HashMap<IpAddr, (f64, Instant)>,
}

impl PerSource {
    pub fn new(rate_per_sec: u32, burst: u32) -> PerSource {
        PerSource {
            inner: Arc::new(Mutex::new(Buckets {
                rate: f64::from(rate_per_sec.max(1)),
                burst: f64::from(burst.max(1)),
                by_source: HashMap::new(),
            })),
        }
    }

    /// Takes one token for `source`; false when its bucket is empty.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let mut b = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (rate, burst) = (b.rate, b.burst);
        if b.by_source.len() >= MAX_SOURCES && !b.by_source.contains_key(&source) {
            // Forget sources whose buckets have refilled: they lose nothing.
            b.by_source
                .retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if b.by_source.len() >= MAX_SOURCES {
                b.by_source.clear();
            }
        }
        let (tokens, at) = b.by_source.entry(source).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn enforce(State(limiter): State<PerSource>, req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        // Without the peer address every caller shares one bucket.
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !limiter.allow(source, Instant::now()) {
        let provider = if req.uri().path().starts_with("/webhooks/pixelpay") {
            "pixelpay"
        } else {
            "openpix"
        };
        super::REJECTIONS.with_label_values(&[provider, "rate_limited"]).inc();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({"error": "too many webhooks from this source; retry later"})),
        )
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let l = PerSource::new(10, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        assert!(l.allow(a, t) && l.allow(a, t) && l.allow(a, t));
        assert!(!l.allow(a, t));
        // Another source is not held back by the first.
        assert!(l.allow(b, t));
        // A tenth of a second refills one token.
        assert!(l.allow(a, t + Duration::from_millis(110)));
        assert!(!l.allow(a, t + Duration::from_millis(110)));
    }
}
