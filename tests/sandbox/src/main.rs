//! `payhub-sandbox`: runs the OpenPix- and PixelPay-compatible provider, the
//! shop webhook receiver and the SMTP sink until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use payhub_core::standard_webhooks::WebhookSecret;
use payhub_sandbox::{FIXTURE_PRIVATE_KEY_PKCS8, Sandbox, SandboxConfig};
use tokio_util::sync::CancellationToken;

/// The outside world for payhub's demo: an OpenPix-compatible provider, a shop
/// webhook receiver and an SMTP sink.
#[derive(Debug, Parser)]
#[command(name = "payhub-sandbox", version)]
struct Args {
    /// OpenPix-compatible API and /sandbox control routes.
    #[arg(long, env = "SANDBOX_PROVIDER_ADDR", default_value = "127.0.0.1:8090")]
    provider_addr: SocketAddr,

    /// The shop's webhook receiver (POST /shop/webhooks).
    #[arg(long, env = "SANDBOX_SHOP_ADDR", default_value = "127.0.0.1:8091")]
    shop_addr: SocketAddr,

    /// The SMTP sink.
    #[arg(long, env = "SANDBOX_SMTP_ADDR", default_value = "127.0.0.1:2525")]
    smtp_addr: SocketAddr,

    /// The OpenPix AppID accepted in `Authorization`.
    #[arg(
        long,
        env = "SANDBOX_OPENPIX_APP_ID",
        default_value = "sandbox-app-id",
        hide_env_values = true
    )]
    app_id: String,

    /// Where the provider POSTs its webhooks (payhub's webhook-verifier).
    #[arg(
        long,
        env = "SANDBOX_WEBHOOK_TARGET",
        default_value = "http://127.0.0.1:8081/webhooks/openpix"
    )]
    webhook_target: String,

    /// Standard Webhooks secrets (whsec_...) the shop verifies with, comma-separated.
    #[arg(
        long = "shop-secret",
        env = "SANDBOX_SHOP_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    shop_secrets: Vec<String>,

    /// RSA private key (PKCS#8, DER or PEM) that signs webhooks; default: the
    /// test fixture key compiled in.
    #[arg(long, env = "SANDBOX_PRIVATE_KEY_FILE")]
    private_key: Option<PathBuf>,

    /// Base URL of paymentLinkUrl / qrCodeImage; default http://<provider-addr>.
    #[arg(long, env = "SANDBOX_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,

    /// Seconds between the attempts of a PixelPay collection webhook (PixelPay: 300).
    #[arg(long, env = "SANDBOX_PIXELPAY_RETRY_DELAY_SECS", default_value_t = 300)]
    pixelpay_retry_delay_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args = Args::parse();

    // Check the secrets before binding anything, naming the flag (never the value).
    let shop_secrets: Vec<String> = args
        .shop_secrets
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for secret in &shop_secrets {
        WebhookSecret::parse(secret)
            .map_err(|e| anyhow::anyhow!("--shop-secret / SANDBOX_SHOP_SECRETS: a secret {e}"))?;
    }

    let signing_key = match &args.private_key {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("reading the private key file {}", path.display()))?
        }
        None => FIXTURE_PRIVATE_KEY_PKCS8.to_vec(),
    };
    let config = SandboxConfig {
        provider_addr: args.provider_addr,
        shop_addr: args.shop_addr,
        smtp_addr: args.smtp_addr,
        app_id: args.app_id,
        signing_key_pkcs8: signing_key,
        webhook_target: Some(args.webhook_target),
        public_base_url: args.public_base_url,
        pixelpay_webhook_retry_delay: std::time::Duration::from_secs(args.pixelpay_retry_delay_secs),
    };

    let shutdown = CancellationToken::new();
    let sandbox = Sandbox::start(config, shutdown.clone())
        .await
        .context("starting the sandbox")?;
    for secret in &shop_secrets {
        sandbox.add_shop_secret(secret);
    }

    println!(
        "provider (OpenPix API, /sandbox control) listening on {}",
        sandbox.provider_url()
    );
    println!("shop webhook receiver listening on {}", sandbox.shop_webhook_url());
    println!("SMTP sink listening on {}", sandbox.smtp_addr());

    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    sandbox.stopped().await;
    Ok(())
}

/// Returns on SIGTERM or SIGINT (Ctrl-C).
#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Returns on Ctrl-C.
#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
