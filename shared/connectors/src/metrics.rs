//! Provider call metrics: every HTTP call payhub makes to a provider's API
//! goes through one transport function per connector (OpenPix `call`,
//! PixelPay `post`), which times it and counts its outcome here. Only
//! charge-creator holds provider credentials, so these series come from it.
//!
//! Labels are bounded: `provider` (openpix, pixelpay), `operation` (a fixed
//! word per call site) and `outcome` (see [`Outcome`]). Never an account,
//! shop or charge id.

use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};
use std::sync::LazyLock;
use std::time::Duration;

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "payhub_provider_calls_total",
        "Calls to a provider's API, by provider, operation and outcome (ok, refused, error, timeout, unreachable, failed).",
        &["provider", "operation", "outcome"]
    )
    .expect("metric registers once")
});

pub static CALL_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "payhub_provider_call_duration_seconds",
        "Latency of calls to a provider's API, from the request to the whole answer read, by provider, operation and outcome.",
        &["provider", "operation", "outcome"],
        vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
    )
    .expect("metric registers once")
});

/// How one provider call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer (or a documented "not found" the caller expects).
    Ok,
    /// A 4xx answer other than 408/429: the provider refused the request.
    Refused,
    /// A 5xx, 408 or 429 answer: the provider is failing or throttling.
    Error,
    /// No answer in time.
    Timeout,
    /// The connection could not be opened.
    Unreachable,
    /// Any other transport failure (connection lost, unreadable answer).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome of an HTTP answer with this status code.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            408 | 429 | 500..=599 => Outcome::Error,
            _ => Outcome::Refused,
        }
    }

    /// The outcome of a transport error.
    pub fn of_error(e: &reqwest::Error) -> Outcome {
        if e.is_timeout() {
            Outcome::Timeout
        } else if e.is_connect() {
            Outcome::Unreachable
        } else {
            Outcome::Failed
        }
    }

    /// Whether the provider looked unavailable (as opposed to answering,
    /// even with a refusal).
    pub fn is_unavailable(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Refused)
    }
}

/// Records one call.
pub fn observe(provider: &'static str, operation: &'static str, outcome: Outcome, elapsed: Duration) {
    let labels = [provider, operation, outcome.as_str()];
    CALLS.with_label_values(&labels).inc();
    CALL_SECONDS.with_label_values(&labels).observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_bounded_outcomes() {
        assert_eq!(Outcome::of_status(200), Outcome::Ok);
        assert_eq!(Outcome::of_status(201), Outcome::Ok);
        assert_eq!(Outcome::of_status(400), Outcome::Refused);
        assert_eq!(Outcome::of_status(404), Outcome::Refused);
        assert_eq!(Outcome::of_status(408), Outcome::Error);
        assert_eq!(Outcome::of_status(429), Outcome::Error);
        assert_eq!(Outcome::of_status(503), Outcome::Error);
        assert!(Outcome::Timeout.is_unavailable() && Outcome::Error.is_unavailable());
        assert!(!Outcome::Refused.is_unavailable() && !Outcome::Ok.is_unavailable());
    }

    #[test]
    fn a_call_is_counted_and_timed_under_its_labels() {
        let before = CALLS.with_label_values(&["openpix", "test_op", "error"]).get();
        observe("openpix", "test_op", Outcome::Error, Duration::from_millis(30));
        assert_eq!(
            CALLS.with_label_values(&["openpix", "test_op", "error"]).get(),
            before + 1
        );
        let h = CALL_SECONDS.with_label_values(&["openpix", "test_op", "error"]);
        assert!(h.get_sample_count() >= 1 && h.get_sample_sum() >= 0.03);
    }
}
