//! payhub's sandbox: the outside world for demos and end-to-end tests.
//!
//! * a stateful **OpenPix/Woovi-compatible provider** (`POST /api/v1/charge`,
//!   `GET /api/v1/charge/{id}`, `POST /api/v1/charge/{id}/refund`,
//!   `GET /api/v1/webhook/public-keys`) that "pays" or expires charges on
//!   demand, refunds them (refusals on request:
//!   [`Sandbox::refund_refuse_next`]) and sends webhooks signed exactly
//!   like OpenPix's (`x-webhook-signature`, RSA-SHA256);
//! * a **shop endpoint** that records the Standard Webhooks payhub sends and
//!   checks their signatures;
//! * an **SMTP sink** that records e-mails;
//! * a **PixelPay-compatible** Direct API v2 (`POST /api/v2/transaction/...`)
//!   with PixelPay's sandbox amount table, two merchants, faults
//!   ([`Sandbox::pixelpay_fail_next`]) and QuickPay collection webhooks
//!   ([`Sandbox::pixelpay_pay_collection`]), on the provider listener (see
//!   the `pixelpay` module).
//! * a **Focus NFe-compatible** invoicing API (`POST /v2/nfe?ref=`,
//!   `GET /v2/nfe/{ref}`, homologation rules, faults:
//!   [`Sandbox::focusnfe_fault_next`]), on the provider listener (see the
//!   `focusnfe` module).
//!
//! Faults can be injected to exercise payhub's retries: the shop answers
//! errors or hangs ([`Sandbox::shop_fail_next`]), the charge API fails or
//! times out ([`Sandbox::provider_fail_next`]), webhooks are held and
//! released out of order ([`Sandbox::hold_webhooks`]) or one payment is
//! reported twice ([`Sandbox::pay_with_transaction_received`]).
//!
//! Start it in-process with [`Sandbox::start`] (port 0 everywhere with
//! [`SandboxConfig::local_ephemeral`]) or run the `payhub-sandbox` binary.
//! Everything runs until the [`CancellationToken`] given to `start` is
//! cancelled.

mod charges;
mod faults;
mod focusnfe;
mod listing;
mod mime;
mod model;
mod outage;
mod pagoseguro;
mod pixelpay;
mod provider;
mod shop;
mod signing;
mod smtp;
mod state;
mod util;
mod webhook_api;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::{PixelPayFault, ProviderFault, ShopFault};
pub use focusnfe::{FOCUSNFE_SANDBOX_CNPJ, FOCUSNFE_SANDBOX_TOKEN, FocusNfeFault, HOMOLOGATION_NAME, SandboxInvoice};
pub use model::{
    ExtraPayment, REFUND_CONFIRMED, REFUND_IN_PROCESSING, ReceivedEmail, ReceivedWebhook, STATUS_ACTIVE,
    STATUS_COMPLETED, STATUS_EXPIRED, SandboxCharge, SandboxRefund, WakePostback, WebhookAttempt,
};
pub use pagoseguro::{PAGOSEGURO_SANDBOX_ACCOUNT_ID, PAGOSEGURO_SANDBOX_API_KEY};
pub use pixelpay::{
    PIXELPAY_BRL_KEY_ID, PIXELPAY_BRL_SECRET_KEY, PIXELPAY_OTHER_KEY_ID, PIXELPAY_OTHER_SECRET_KEY,
    PIXELPAY_SANDBOX_AUTH_HASH, PIXELPAY_SANDBOX_CARD_TOKEN, PIXELPAY_SANDBOX_KEY_ID, PIXELPAY_SANDBOX_SECRET_KEY,
    PIXELPAY_TEST_MASTERCARD, PIXELPAY_TEST_VISA, PIXELPAY_WEBHOOK_ATTEMPTS, PIXELPAY_WEBHOOK_RETRY_DELAY,
    PaidCollection, PixelPayCollection, PixelPayDelivery, PixelPayDeliveryAttempt, PixelPayItem, PixelPayTransaction,
    md5_hex, pixelpay_payment_hash,
};
pub use webhook_api::RegisteredWebhook;

use crate::state::{Inner, lock};

/// The fixture RSA key pair's public half (PEM). payhub trusts it in tests
/// and the demo only; the private half signs the sandbox's webhooks.
/// The AppID of a second merchant at the sandbox provider: charges made with
/// it live in their own account, which payhub's AppID cannot see.
pub const OTHER_MERCHANT_APP_ID: &str = "sandbox-other-merchant";

pub const FIXTURE_PUBLIC_KEY_PEM: &str = include_str!("../../fixtures/sandbox-openpix-public.pem");

/// The fixture RSA private key, PKCS#8 DER.
pub const FIXTURE_PRIVATE_KEY_PKCS8: &[u8] = include_bytes!("../../fixtures/sandbox-openpix-private.pk8.der");

/// Timeout of every outgoing webhook POST.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the sandbox listens and what it pretends to be.
#[derive(Clone, Serialize)]
pub struct SandboxConfig {
    /// OpenPix-compatible API and the `/sandbox/...` control routes; port 0 allowed.
    pub provider_addr: SocketAddr,
    /// The shop's webhook receiver; port 0 allowed.
    pub shop_addr: SocketAddr,
    /// The SMTP sink; port 0 allowed.
    pub smtp_addr: SocketAddr,
    /// The OpenPix AppID the provider accepts in `Authorization`.
    pub app_id: String,
    /// RSA private key, PKCS#8 DER (a PKCS#8 PEM is accepted too), that signs
    /// `x-webhook-signature`.
    #[serde(skip)]
    pub signing_key_pkcs8: Vec<u8>,
    /// Full URL the provider POSTs its webhooks to (payhub's webhook-verifier
    /// `/webhooks/openpix`).
    pub webhook_target: Option<String>,
    /// Base of `paymentLinkUrl` / `qrCodeImage`; default `http://<provider_addr>`.
    pub public_base_url: Option<String>,
    /// Delay between the attempts of a PixelPay collection webhook
    /// (PixelPay: 5 minutes; tests use milliseconds).
    pub pixelpay_webhook_retry_delay: Duration,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("provider_addr", &self.provider_addr)
            .field("shop_addr", &self.shop_addr)
            .field("smtp_addr", &self.smtp_addr)
            .field("app_id", &self.app_id)
            .field(
                "signing_key_pkcs8",
                &format_args!("<{} bytes>", self.signing_key_pkcs8.len()),
            )
            .field("webhook_target", &self.webhook_target)
            .field("public_base_url", &self.public_base_url)
            .field("pixelpay_webhook_retry_delay", &self.pixelpay_webhook_retry_delay)
            .finish()
    }
}

impl SandboxConfig {
    /// 127.0.0.1 port 0 for every listener, the fixture signing key, no
    /// webhook target yet.
    pub fn local_ephemeral(app_id: &str) -> SandboxConfig {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        SandboxConfig {
            provider_addr: any_port,
            shop_addr: any_port,
            smtp_addr: any_port,
            app_id: app_id.to_string(),
            signing_key_pkcs8: FIXTURE_PRIVATE_KEY_PKCS8.to_vec(),
            webhook_target: None,
            public_base_url: None,
            pixelpay_webhook_retry_delay: PIXELPAY_WEBHOOK_RETRY_DELAY,
        }
    }
}

/// Checks that `url` is an absolute http(s) URL.
pub(crate) fn check_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "{url:?} is not an http(s) URL"
    );
    Ok(())
}

/// A running sandbox. Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("provider_url", &self.provider_url())
            .field("shop_webhook_url", &self.shop_webhook_url())
            .field("smtp_addr", &self.inner.smtp_addr)
            .finish_non_exhaustive()
    }
}

/// Binds a listener, naming it in the error.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("reading the {what} listener's address"))?;
    Ok((listener, local))
}

impl Sandbox {
    /// Binds the three listeners, spawns their servers and returns once they
    /// accept connections. The servers stop when `shutdown` is cancelled
    /// (await [`Sandbox::stopped`] to wait for that).
    pub async fn start(cfg: SandboxConfig, shutdown: CancellationToken) -> anyhow::Result<Sandbox> {
        // reqwest is built without a default crypto provider; ignore the
        // error when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let signer = signing::Signer::from_key_bytes(&cfg.signing_key_pkcs8).context("loading the signing key")?;
        anyhow::ensure!(!cfg.app_id.trim().is_empty(), "the OpenPix AppID must not be empty");
        if let Some(target) = &cfg.webhook_target {
            check_url(target).context("the webhook target")?;
        }
        if let Some(base) = &cfg.public_base_url {
            check_url(base).context("the public base URL")?;
        }
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            // The sandbox talks to local services; never through a proxy from the environment.
            .no_proxy()
            .build()
            .context("building the HTTP client")?;

        let (provider_listener, provider_addr) = bind(cfg.provider_addr, "provider").await?;
        let (shop_listener, shop_addr) = bind(cfg.shop_addr, "shop").await?;
        let (smtp_listener, smtp_addr) = bind(cfg.smtp_addr, "SMTP").await?;

        let public_base_url = cfg
            .public_base_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{provider_addr}"));

        let inner = Arc::new(Inner {
            app_id: cfg.app_id,
            provider_addr,
            shop_addr,
            smtp_addr,
            public_base_url,
            signer,
            http,
            webhook_target: RwLock::new(cfg.webhook_target),
            charges: Mutex::default(),
            other_charges: Mutex::default(),
            shop: Arc::default(),
            emails: Arc::default(),
            charge_requests: AtomicUsize::new(0),
            tasks: Mutex::default(),
            shutdown: shutdown.clone(),
            provider_fault: Mutex::default(),
            query_fault: Mutex::default(),
            queries: AtomicUsize::new(0),
            refund_requests: AtomicUsize::new(0),
            refund_fault: Mutex::default(),
            refund_refusals: Mutex::default(),
            refunds_in_processing: AtomicUsize::new(0),
            held: Mutex::default(),
            pixelpay: pixelpay::PixelPayState::new(cfg.pixelpay_webhook_retry_delay),
            openpix_webhooks: webhook_api::WebhookApiState::default(),
            outages: Mutex::default(),
            listing: Mutex::default(),
            focusnfe: Mutex::default(),
        });

        let provider_app = provider::router(inner.clone())
            .merge(pixelpay::router(inner.clone()))
            .merge(webhook_api::router(inner.clone()))
            .merge(outage::router(inner.clone()))
            .merge(listing::router(inner.clone()))
            .merge(pagoseguro::router())
            .merge(focusnfe::router(inner.clone()))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), outage::gate));
        let provider_stop = shutdown.clone();
        let provider = tokio::spawn(async move {
            let served = axum::serve(provider_listener, provider_app)
                .with_graceful_shutdown(provider_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the sandbox provider server failed");
            }
        });

        let shop_app = shop::router(inner.shop.clone(), shutdown.clone());
        let shop_stop = shutdown.clone();
        let shop = tokio::spawn(async move {
            let served = axum::serve(shop_listener, shop_app)
                .with_graceful_shutdown(shop_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the sandbox shop server failed");
            }
        });

        let smtp = tokio::spawn(smtp::serve(smtp_listener, inner.emails.clone(), shutdown));

        lock(&inner.tasks).extend([provider, shop, smtp]);
        tracing::info!(%provider_addr, %shop_addr, %smtp_addr, "sandbox started");
        Ok(Sandbox { inner })
    }

    /// Waits until the servers have stopped (after the shutdown token was
    /// cancelled). Returns at once when already awaited by another call.
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a sandbox server task failed");
            }
        }
    }

    /// Starts (`down = true`) or ends a simulated outage of `provider`
    /// (`openpix` or `pixelpay`): while it lasts, every call to that
    /// provider's API is answered 503 and changes nothing. The control
    /// routes (`/sandbox/...`) and the pay pages keep working.
    pub fn set_outage(&self, provider: &str, down: bool) {
        outage::set(&self.inner, provider, down);
    }

    /// Makes the charge listing (`GET /api/v1/charge`) disagree with the
    /// charge `correlation_id`: `hide` it, `duplicate` it, or list it with
    /// another `value` (centavos). [`Sandbox::clear_listing_faults`] ends them.
    pub fn set_listing_fault(&self, correlation_id: &str, fault: &str, value: Option<i64>) -> anyhow::Result<()> {
        listing::set(&self.inner, Some((correlation_id, fault, value))).map_err(anyhow::Error::msg)
    }

    pub fn clear_listing_faults(&self) {
        let _ = listing::set(&self.inner, None);
    }

    /// Where a Pago Seguro form is posted (`PAYHUB_PAGOSEGURO_CHECKOUT_URL`).
    pub fn pagoseguro_checkout_url(&self) -> String {
        format!("http://{}{}", self.inner.provider_addr, pagoseguro::CHECKOUT_PATH)
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: the OpenPix base URL to
    /// configure in payhub.
    pub fn provider_url(&self) -> String {
        format!("http://{}", self.inner.provider_addr)
    }

    /// `http://127.0.0.1:PORT/shop/webhooks`: the shop's webhook URL.
    pub fn shop_webhook_url(&self) -> String {
        format!("http://{}/shop/webhooks", self.inner.shop_addr)
    }

    /// Where the SMTP sink listens.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.inner.smtp_addr
    }

    /// Where the provider POSTs its webhooks from now on. An invalid URL is
    /// logged and kept (its deliveries will fail).
    pub fn set_webhook_target(&self, url: &str) {
        if let Err(e) = check_url(url) {
            tracing::warn!(error = %e, "the sandbox webhook target looks invalid");
        }
        self.inner.set_webhook_target(Some(url.to_string()));
    }

    /// Adds a Standard Webhooks secret (`whsec_...`) the shop endpoint
    /// verifies with; several may be active. An invalid one is logged and
    /// ignored (see [`Sandbox::try_add_shop_secret`]).
    pub fn add_shop_secret(&self, whsec: &str) {
        if let Err(e) = self.try_add_shop_secret(whsec) {
            tracing::warn!(error = %e, "ignoring an invalid shop secret");
        }
    }

    /// [`Sandbox::add_shop_secret`], reporting an invalid secret.
    pub fn try_add_shop_secret(&self, whsec: &str) -> anyhow::Result<()> {
        lock(&self.inner.shop).add_secret(whsec).map_err(anyhow::Error::msg)
    }

    /// The payer pays the full amount: the charge becomes `COMPLETED` and a
    /// signed `OPENPIX:CHARGE_COMPLETED` webhook goes to the target. Returns
    /// what the target answered. `Err` when the charge is unknown or not
    /// `ACTIVE`, or when the target could not be reached (the payment then
    /// stands; [`Sandbox::resend_last_webhook`] retries the delivery).
    pub async fn pay(&self, correlation_id: &str) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.pay(correlation_id, None).await?)
    }

    /// As [`Sandbox::pay`], but the payer sends `paid_value` centavos
    /// (`pix.value` differs from `charge.value`).
    pub async fn pay_with_value(&self, correlation_id: &str, paid_value: i64) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.pay(correlation_id, Some(paid_value)).await?)
    }

    /// The charge becomes `EXPIRED`; a signed `OPENPIX:CHARGE_EXPIRED`
    /// webhook goes to the target.
    pub async fn expire(&self, correlation_id: &str) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.expire(correlation_id).await?)
    }

    /// Sends the charge's last webhook again, byte-identical (same body and
    /// signature), as providers do on retries.
    pub async fn resend_last_webhook(&self, correlation_id: &str) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.resend_last(correlation_id).await?)
    }

    /// POSTs `body` to the webhook target with the given
    /// `x-webhook-signature` (none when `None`), for forged or tampered
    /// webhook tests.
    pub async fn send_raw_webhook(&self, body: &[u8], signature: Option<&str>) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.deliver_to_target(body, signature).await?)
    }

    /// base64 RSA-SHA256 (PKCS#1 v1.5) signature of `body`, as
    /// `x-webhook-signature` carries it. Signing cannot fail with a valid key
    /// short of the system RNG failing; then the error is logged and an empty
    /// string (which no verifier accepts) is returned.
    pub fn sign(&self, body: &[u8]) -> String {
        self.inner.signer.sign(body).unwrap_or_else(|e| {
            tracing::error!(error = %e, "signing failed");
            String::new()
        })
    }

    /// The public key matching the signing key, PEM (what
    /// `/api/v1/webhook/public-keys` publishes).
    pub fn public_key_pem(&self) -> String {
        self.inner.signer.public_pem().to_string()
    }

    /// The same public key as PKCS#1 `RSAPublicKey` DER, ready for ring's
    /// `UnparsedPublicKey` with `RSA_PKCS1_2048_8192_SHA256`.
    pub fn public_key_pkcs1_der(&self) -> Vec<u8> {
        self.inner.signer.public_key_pkcs1().to_vec()
    }

    /// Every charge, in creation order.
    pub fn charges(&self) -> Vec<SandboxCharge> {
        lock(&self.inner.charges).all()
    }

    /// One charge by correlationID.
    pub fn charge(&self, correlation_id: &str) -> Option<SandboxCharge> {
        lock(&self.inner.charges).get(correlation_id).cloned()
    }

    /// Every request the shop endpoint received, in order.
    pub fn shop_webhooks(&self) -> Vec<ReceivedWebhook> {
        lock(&self.inner.shop).received()
    }

    /// Every Wake Commerce postback received, in order.
    pub fn wake_postbacks(&self) -> Vec<WakePostback> {
        lock(&self.inner.shop).wake_postbacks.clone()
    }

    /// The base URL to configure as payhub's Wake postback target.
    pub fn wake_postback_base_url(&self) -> String {
        self.shop_webhook_url().trim_end_matches("/shop/webhooks").to_string()
    }

    /// Every message the SMTP sink accepted, in order.
    pub fn emails(&self) -> Vec<ReceivedEmail> {
        lock(&self.inner.emails).clone()
    }

    /// How many `POST /api/v1/charge` calls arrived (repeats, refused and
    /// faulted ones included).
    pub fn charge_requests(&self) -> usize {
        self.inner.charge_requests.load(Ordering::SeqCst)
    }

    // --- Fault injection -------------------------------------------------

    /// The next `n` requests to `POST /shop/webhooks` get `fault`, then the
    /// shop answers 200 again. Replaces any earlier shop fault; `n == 0`
    /// recovers. Every request is still recorded (see
    /// [`ReceivedWebhook::answered`]).
    pub fn shop_fail_next(&self, n: u32, fault: ShopFault) {
        lock(&self.inner.shop).fault.fail_next(n, fault);
        tracing::info!(n, ?fault, "shop fault set");
    }

    /// Every request to `POST /shop/webhooks` gets `fault` until
    /// [`Sandbox::shop_recover`].
    pub fn shop_fail_always(&self, fault: ShopFault) {
        lock(&self.inner.shop).fault.fail_always(fault);
        tracing::info!(?fault, "shop fault set for every request");
    }

    /// The shop answers 200 to everything again. Requests already hanging
    /// stay held.
    pub fn shop_recover(&self) {
        lock(&self.inner.shop).fault.recover();
        tracing::info!("shop recovered");
    }

    /// The next `n` `POST /api/v1/charge` requests get `fault` (and create no
    /// charge), then the provider works again. Other routes are unaffected.
    /// Replaces any earlier provider fault; `n == 0` recovers.
    /// [`Sandbox::charge_requests`] counts faulted requests too.
    pub fn provider_fail_next(&self, n: u32, fault: ProviderFault) {
        lock(&self.inner.provider_fault).fail_next(n, fault);
        tracing::info!(n, ?fault, "provider fault set");
    }

    /// Every `POST /api/v1/charge` gets `fault` until [`Sandbox::provider_recover`].
    pub fn provider_fail_always(&self, fault: ProviderFault) {
        lock(&self.inner.provider_fault).fail_always(fault);
        tracing::info!(?fault, "provider fault set for every charge request");
    }

    /// The next `n` re-queries (`GET /api/v1/charge/{id}` and
    /// `/api/v1/transaction/{id}`) get `fault`; `n == 0` recovers.
    pub fn query_fail_next(&self, n: u32, fault: ProviderFault) {
        lock(&self.inner.query_fault).fail_next(n, fault);
    }

    /// How many re-queries arrived.
    pub fn queries(&self) -> usize {
        self.inner.queries.load(Ordering::SeqCst)
    }

    /// `POST /api/v1/charge` works again. Requests already held stay held.
    pub fn provider_recover(&self) {
        lock(&self.inner.provider_fault).recover();
        tracing::info!("provider recovered");
    }

    /// While `hold` is true, [`Sandbox::pay`], [`Sandbox::expire`],
    /// [`Sandbox::resend_last_webhook`] (and their control routes) change the
    /// charge as usual but queue their webhook instead of sending it, and
    /// return `WebhookAttempt { status: 0, body: "held" }`. Turning the hold
    /// off does not send the queue; [`Sandbox::release_held_webhooks`] does.
    /// [`Sandbox::send_raw_webhook`] is never held.
    pub fn hold_webhooks(&self, hold: bool) {
        let queued = self.inner.set_hold(hold);
        tracing::info!(hold, queued, "webhook hold changed");
    }

    /// Sends the queued webhooks one by one, in the order they were queued
    /// or reversed, and returns what the target answered to each. The hold
    /// setting does not change. `Err` when no target is configured or a
    /// POST gets no answer; the webhooks not delivered stay queued.
    pub async fn release_held_webhooks(&self, reverse: bool) -> anyhow::Result<Vec<WebhookAttempt>> {
        Ok(self.inner.release_held(reverse).await?)
    }

    /// As [`Sandbox::pay`], but reported as OpenPix does it: the same pix
    /// arrives twice, as `OPENPIX:CHARGE_COMPLETED` and then as
    /// `OPENPIX:TRANSACTION_RECEIVED` (same charge, `status` `COMPLETED`,
    /// same `pix.endToEndId` and `pix.globalID`), each signed. Returns both
    /// answers in that order. Both deliveries are tried; the first failure
    /// is the error (the payment stands). [`Sandbox::resend_last_webhook`]
    /// then repeats the `TRANSACTION_RECEIVED` one.
    pub async fn pay_with_transaction_received(&self, correlation_id: &str) -> anyhow::Result<Vec<WebhookAttempt>> {
        Ok(self
            .inner
            .pay_events(state::Account::Payhub, correlation_id, None, true)
            .await?)
    }

    /// Pays a charge of the other merchant's account
    /// ([`OTHER_MERCHANT_APP_ID`], created through the API with that AppID):
    /// the genuinely signed `OPENPIX:CHARGE_COMPLETED` goes to the target,
    /// as it would to anyone who points a webhook at payhub.
    pub async fn pay_in_other_account(&self, correlation_id: &str) -> anyhow::Result<WebhookAttempt> {
        let mut attempts = self
            .inner
            .pay_events(state::Account::Other, correlation_id, None, false)
            .await?;
        attempts.pop().context("no webhook was sent")
    }

    /// A second PIX payment to a charge of payhub's account that is already
    /// paid (another endToEndId), reported as `OPENPIX:TRANSACTION_RECEIVED`.
    pub async fn pay_again(&self, correlation_id: &str) -> anyhow::Result<WebhookAttempt> {
        Ok(self.inner.pay_again(correlation_id).await?)
    }

    /// Takes the held webhooks out of the queue unsent: `(body, signature)`
    /// in arrival order, for tests that post them themselves.
    pub fn take_held_webhooks(&self) -> Vec<(Vec<u8>, String)> {
        std::mem::take(&mut lock(&self.inner.held).queue)
            .into_iter()
            .map(|h| (h.sent.body, h.sent.signature))
            .collect()
    }

    /// The other merchant's charges.
    pub fn other_account_charges(&self) -> Vec<SandboxCharge> {
        lock(&self.inner.other_charges).all()
    }

    // --- Refunds ---------------------------------------------------------

    /// How many `POST /api/v1/charge/{id}/refund` calls arrived (refused and
    /// faulted ones included), in either account.
    pub fn refund_requests(&self) -> usize {
        self.inner.refund_requests.load(Ordering::SeqCst)
    }

    /// The refunds of one charge of payhub's account, in order.
    pub fn refunds(&self, correlation_id: &str) -> Vec<SandboxRefund> {
        lock(&self.inner.charges)
            .get(correlation_id)
            .map(|c| c.refunds.clone())
            .unwrap_or_default()
    }

    /// The refunds of one charge of the other merchant's account.
    pub fn other_account_refunds(&self, correlation_id: &str) -> Vec<SandboxRefund> {
        lock(&self.inner.other_charges)
            .get(correlation_id)
            .map(|c| c.refunds.clone())
            .unwrap_or_default()
    }

    /// The next refund request is refused with `400 {"error": message}`, as
    /// OpenPix refuses one it will not make (and gives nothing back).
    pub fn refund_refuse_next(&self, message: &str) {
        lock(&self.inner.refund_refusals).push_back(message.to_string());
    }

    /// The next `n` refund requests get `fault` (and refund nothing).
    pub fn refund_fail_next(&self, n: u32, fault: ProviderFault) {
        lock(&self.inner.refund_fault).fail_next(n, fault);
    }

    /// The next `n` refunds are accepted as `IN_PROCESSING`; the same
    /// correlationID again then finds them `CONFIRMED`.
    pub fn refund_process_next(&self, n: usize) {
        self.inner.refunds_in_processing.store(n, Ordering::SeqCst);
    }
}
