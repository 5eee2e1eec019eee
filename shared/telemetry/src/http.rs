//! HTTP serving with request metrics, limits and graceful shutdown.
//!
//! Every listener (public or ops) is served by [`serve_with`]: a client has
//! [`HttpLimits::header_read_timeout`] to send its request head (a slowloris
//! client that never finishes is disconnected), the body must arrive within
//! [`HttpLimits::body_timeout`], the whole request is answered within
//! [`HttpLimits::request_timeout`], and at most
//! [`HttpLimits::max_concurrency`] requests are in flight at once: one more
//! is answered `503` at once rather than queued.

use crate::config::{ConfigError, Env};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_http_requests_total",
        "HTTP requests served, by route template, method (GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS or other) and status code.",
        &["route", "method", "status"]
    )
    .expect("metric registers once")
});

pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_http_request_duration_seconds",
        "HTTP request latency, by route template and method.",
        &["route", "method"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
        ]
    )
    .expect("metric registers once")
});

pub static SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_http_requests_shed_total",
        "HTTP requests answered 503 at once because the listener was at its concurrency limit (listener: public or ops).",
        &["listener"]
    )
    .expect("metric registers once")
});

pub static TIMEOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_http_request_timeouts_total",
        "HTTP requests cut off by a limit, by which (body, request).",
        &["limit"]
    )
    .expect("metric registers once")
});

/// The method label: one of a fixed set, whatever a client sends (an
/// extension method like `FOOBAR` would otherwise mint a new series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route label: the matched route template (`/v1/orders/{correlation_id}`,
/// never the path with the client's values in it), or `unmatched`.
pub fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into())
}

async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(&req);
    let method = method_label(req.method());
    let resp = next.run(req).await;
    REQUESTS
        .with_label_values(&[&route, method, resp.status().as_str()])
        .inc();
    DURATION
        .with_label_values(&[&route, method])
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Adds request metrics to a router (after its routes are defined).
pub fn instrument(router: Router) -> Router {
    router.route_layer(axum::middleware::from_fn(track))
}

/// The limits of one listener. Defaults suit a service behind a load
/// balancer; every value can be set through the environment (see
/// [`HttpLimits::from_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a connection has to send a request's head (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time the request body has to arrive, from the end of its head.
    pub body_timeout: Duration,
    /// Time from the head to the answer.
    pub request_timeout: Duration,
    /// Requests in flight at once; one more is answered 503.
    pub max_concurrency: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_concurrency: 1024,
        }
    }
}

impl HttpLimits {
    /// `PAYHUB_HTTP_HEADER_TIMEOUT_MS`, `PAYHUB_HTTP_BODY_TIMEOUT_MS`,
    /// `PAYHUB_HTTP_REQUEST_TIMEOUT_MS`, `PAYHUB_HTTP_MAX_CONCURRENCY`.
    pub fn from_env(env: &Env) -> Result<HttpLimits, ConfigError> {
        let d = HttpLimits::default();
        let limits = HttpLimits {
            header_read_timeout: env.millis("PAYHUB_HTTP_HEADER_TIMEOUT_MS", d.header_read_timeout)?,
            body_timeout: env.millis("PAYHUB_HTTP_BODY_TIMEOUT_MS", d.body_timeout)?,
            request_timeout: env.millis("PAYHUB_HTTP_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            max_concurrency: env.parse("PAYHUB_HTTP_MAX_CONCURRENCY", d.max_concurrency)?,
        };
        for (name, v) in [
            ("PAYHUB_HTTP_HEADER_TIMEOUT_MS", limits.header_read_timeout),
            ("PAYHUB_HTTP_BODY_TIMEOUT_MS", limits.body_timeout),
            ("PAYHUB_HTTP_REQUEST_TIMEOUT_MS", limits.request_timeout),
        ] {
            if v.is_zero() {
                return Err(Env::bad(name, "must be above 0"));
            }
        }
        if limits.max_concurrency == 0 {
            return Err(Env::bad("PAYHUB_HTTP_MAX_CONCURRENCY", "must be at least 1"));
        }
        Ok(limits)
    }
}

fn problem(status: StatusCode, title: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::json!({
            "type": "https://payhub.dev/problems/overloaded",
            "title": title,
            "status": status.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

/// A request body that fails once its deadline passes.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            TIMEOUTS.with_label_values(&["body"]).inc();
            return Poll::Ready(Some(Err(axum::Error::new("the request body did not arrive in time"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps `router` in the limits: concurrency first (a request over the
/// limit costs nothing more), then the body and whole-request deadlines.
pub fn limit(router: Router, limits: HttpLimits, listener: &'static str) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrency));
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let permits = permits.clone();
        async move {
            let Ok(permit) = permits.try_acquire_owned() else {
                SHED.with_label_values(&[listener]).inc();
                let mut r = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many requests at once; try again shortly",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return r;
            };
            let (parts, body) = req.into_parts();
            let body = Body::new(TimedBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
            });
            let req = Request::from_parts(parts, body);
            let answer = match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => {
                    TIMEOUTS.with_label_values(&["request"]).inc();
                    problem(StatusCode::SERVICE_UNAVAILABLE, "The request took too long; try again")
                }
            };
            drop(permit);
            answer
        }
    }))
}

/// Serves until `shutdown`, then stops accepting and lets open requests end.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with(listener, router, HttpLimits::default(), "public", shutdown).await
}

/// [`serve`] under `limits`. Each request carries the peer's address as
/// `ConnectInfo<SocketAddr>`, as with axum's `into_make_service_with_connect_info`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    name: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = limit(router, limits, name);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers go out as soon as they are written, never held for an ACK.
        let _ = tcp.set_nodelay(true);
        let svc = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            let mut svc = svc.clone();
            async move { tower_service::Service::call(&mut svc, req).await }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_label_is_one_of_a_fixed_set() {
        for (m, label) in [
            (Method::GET, "GET"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::DELETE, "DELETE"),
            (Method::PATCH, "PATCH"),
            (Method::HEAD, "HEAD"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "other"),
            (Method::CONNECT, "other"),
            (Method::from_bytes(b"FOOBAR").unwrap(), "other"),
            (Method::from_bytes(b"get").unwrap(), "other"),
        ] {
            assert_eq!(method_label(&m), label, "{m}");
        }
    }

    #[test]
    fn the_route_label_is_the_template_or_unmatched() {
        let req = Request::builder()
            .uri("/v1/orders/secret-123")
            .body(Body::empty())
            .unwrap();
        assert_eq!(route_label(&req), "unmatched");
    }

    #[test]
    fn limits_from_the_environment() {
        assert_eq!(
            HttpLimits::from_env(&Env::from_pairs::<[(&str, &str); 0], _, _>([])).unwrap(),
            HttpLimits::default()
        );
        let env = Env::from_pairs([
            ("PAYHUB_HTTP_HEADER_TIMEOUT_MS", "500"),
            ("PAYHUB_HTTP_MAX_CONCURRENCY", "2"),
        ]);
        let l = HttpLimits::from_env(&env).unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_millis(500));
        assert_eq!(l.max_concurrency, 2);
        let env = Env::from_pairs([("PAYHUB_HTTP_MAX_CONCURRENCY", "0")]);
        assert_eq!(
            HttpLimits::from_env(&env).unwrap_err().name,
            "PAYHUB_HTTP_MAX_CONCURRENCY"
        );
        let env = Env::from_pairs([("PAYHUB_HTTP_BODY_TIMEOUT_MS", "0")]);
        assert!(HttpLimits::from_env(&env).is_err());
    }
}
