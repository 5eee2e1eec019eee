//! One telemetry crate, one init call: logs, traces, metrics, the
//! `/metrics`, `/healthz` and `/readyz` routes, configuration helpers and the
//! shutdown signal. Every service's `main.rs` goes through [`run_main`].

pub mod config;
pub mod http;
pub mod ops;
pub mod trace;

pub use config::{ConfigError, Env};
pub use ops::{Readiness, ops_router};

use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the rustls crypto provider (ring). Idempotent; every binary and
/// test that makes TLS or HTTP clients calls it first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can listen for SIGTERM");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; draining in-flight work");
        t.cancel();
    });
    token
}

/// The body of every service's `main`: crypto, logs and traces, signal
/// handling, then `run`; a failure is logged with its cause chain and
/// turned into a non-zero exit code.
pub fn run_main<F, Fut>(service: &'static str, run: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    install_crypto();
    let format = match std::env::var("PAYHUB_LOG_FORMAT").as_deref() {
        Ok("pretty") => LogFormat::Pretty,
        Ok("json") | Err(_) => LogFormat::Json,
        Ok(other) => {
            eprintln!("payhub-{service}: PAYHUB_LOG_FORMAT must be json or pretty, not {other:?}");
            return ExitCode::from(2);
        }
    };
    // Worker threads: the CPUs the process may use (cgroup quotas count),
    // unless PAYHUB_WORKER_THREADS says otherwise.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match std::env::var("PAYHUB_WORKER_THREADS")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        None => {}
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => {
                builder.worker_threads(n);
            }
            _ => {
                eprintln!("payhub-{service}: PAYHUB_WORKER_THREADS must be a whole number from 1 to 256, not {v:?}");
                return ExitCode::from(2);
            }
        },
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payhub-{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _guard = trace::init(service, format);
        let shutdown = shutdown_on_signal();
        match run(shutdown).await {
            Ok(()) => {
                tracing::info!(service, "stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                if e.downcast_ref::<ConfigError>().is_some() {
                    tracing::error!(service, "{e}");
                    eprintln!("payhub-{service}: {e}");
                    return ExitCode::from(2);
                }
                tracing::error!(service, error = format!("{e:#}"), "stopped with an error");
                eprintln!("payhub-{service}: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
