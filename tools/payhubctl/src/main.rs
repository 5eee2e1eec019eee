//! payhubctl: the operator's tool. Applies migrations, onboards shops,
//! inspects orders.

mod broker;

use anyhow::Context;
use clap::{Parser, Subcommand};
use payhub_core::url_safety::{self, UrlHost, WebhookUrlPolicy};
use payhub_queue::QueueSpec;
use payhub_queue::dead_letters::{DeadLetterAdmin, Filter};
use payhub_store::Store;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "payhubctl", version, about = "Operate a payhub installation")]
struct Cli {
    /// PostgreSQL URL. Default: PAYHUB_DATABASE_URL (or the file named by
    /// PAYHUB_DATABASE_URL_FILE), else the local default outside production.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing and apply pending migrations (idempotent).
    Migrate,
    /// Manage shops.
    #[command(subcommand)]
    Shop(ShopCommand),
    /// Database administration.
    #[command(subcommand)]
    Db(DbCommand),
    /// Inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// RabbitMQ administration.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Reconcile a day (UTC) with the providers now, through reporter
    /// (`PAYHUB_REPORTER_URL`, authenticated with `PAYHUB_INTERNAL_TOKEN`),
    /// and print the run: its status and each discrepancy with its resolution.
    /// Exits 1 when discrepancies stay open or the run is incomplete.
    Reconcile {
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// The settlement ledger's exports for a finance system (issue 13 §2).
    #[command(subcommand)]
    Settlement(SettlementCommand),
    /// Management reports (issue 13 §3): make one now, list the stored
    /// snapshots, download one byte for byte.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Show an order with its charge, history and deliveries.
    Order {
        /// The payhub order id, or the shop's correlationID together with --shop.
        id: String,
        #[arg(long)]
        shop: Option<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum SettlementCommand {
    /// Export the shop's ledger lines settled from --from to --to that no
    /// export carried before, and mark them processed. Prints the export
    /// (CSV or JSON) to stdout, or to --out; its summary to stderr.
    Export {
        #[arg(long)]
        shop: uuid::Uuid,
        /// First settlement date, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last settlement date, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "csv")]
        format: String,
        /// The same key again gives the same export.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// The shop's exports (summaries, JSON lines).
    List {
        #[arg(long)]
        shop: uuid::Uuid,
    },
    /// An export again, byte for byte as it was first handed out.
    Download {
        #[arg(long)]
        shop: uuid::Uuid,
        id: uuid::Uuid,
        #[arg(long, default_value = "csv")]
        format: String,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Make the report of a period now through reporter (`PAYHUB_REPORTER_URL`,
    /// `PAYHUB_INTERNAL_TOKEN`), unless it was made already: prints the
    /// snapshot (made, or the one that exists). Sent by notifier when made.
    Run {
        /// `daily` or `monthly`.
        #[arg(long, default_value = "daily")]
        period: String,
        /// A day of the period, YYYY-MM-DD (in the shop's time zone).
        #[arg(long)]
        date: String,
        /// The shop; without it, the platform's report.
        #[arg(long)]
        shop: Option<uuid::Uuid>,
    },
    /// The stored snapshots (JSON lines), newest first: the shop's, or the platform's.
    List {
        #[arg(long)]
        shop: Option<uuid::Uuid>,
    },
    /// A snapshot's PDF, CSV or HTML, byte for byte as it was made and sent.
    Download {
        id: uuid::Uuid,
        /// The shop whose report it is; without it, a platform report.
        #[arg(long)]
        shop: Option<uuid::Uuid>,
        #[arg(long, default_value = "pdf")]
        format: String,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create the per-service NOLOGIN roles (payhub_ingress, ...) and grant
    /// each write access to the tables it owns only (idempotent; after migrate).
    Roles,
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// Print the RabbitMQ users (one per service, and one for `payhubctl
    /// dlq`) and the permissions each needs, derived from the topology the
    /// code declares. Exchanges come from PAYHUB_EXCHANGE and
    /// PAYHUB_ORDERS_EXCHANGE as the services read them. Prints no secret.
    Permissions {
        /// The vhost the permissions are for.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// The queue prefix. Default: PAYHUB_QUEUE_PREFIX, else none.
        #[arg(long)]
        prefix: Option<String>,
        /// User names are this followed by the service's name
        /// (payhub-ingress, ..., payhub-payhubctl).
        #[arg(long, default_value = "payhub-")]
        user_prefix: String,
        /// rabbitmqctl commands (each password from a
        /// PAYHUB_AMQP_PASSWORD_<SERVICE> variable), or a definitions JSON
        /// fragment (users without a password: set one with `rabbitmqctl
        /// change_password`; re-importing it clears them).
        #[arg(long, value_enum, default_value_t = broker::PermissionsFormat::Rabbitmqctl)]
        format: broker::PermissionsFormat,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Queue depths, and the dead letters of each queue with their reasons.
    List {
        /// Only this queue (e.g. notifier.status).
        #[arg(long)]
        queue: Option<String>,
        /// Dead letters shown per queue.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full: its story and its body.
    Show { queue: String, message_id: String },
    /// Put dead letters back into their work queue; attempts start afresh.
    Replay {
        queue: String,
        /// Only the message with this id.
        #[arg(long)]
        id: Option<String>,
        /// Only those dead-lettered for this reason (permanent, attempts_exhausted, unparseable, delivery_limit).
        #[arg(long)]
        reason: Option<String>,
        /// Only events of this type (e.g. order.status_changed).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only those whose error history contains this text.
        #[arg(long)]
        error_contains: Option<String>,
        /// Replay every dead letter of the queue.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter of a queue.
    Purge {
        queue: String,
        /// Skip the interactive confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Shop onboarding. Every secret is printed once, by the command that issues
/// it, and stored only hashed (API key, Wake secret) or sealed under
/// PAYHUB_SECRETS_KEY (webhook signing secret).
#[derive(Subcommand)]
enum ShopCommand {
    /// Create a shop; prints its API key and webhook secret (and Wake secret) once.
    Create {
        #[arg(long)]
        name: String,
        /// Where order status webhooks are POSTed (https outside development;
        /// never a private address unless PAYHUB_ALLOW_PRIVATE_WEBHOOKS=true).
        #[arg(long)]
        webhook_url: Option<String>,
        /// Who receives alerts about blocked orders.
        #[arg(long)]
        admin_email: Option<String>,
        /// A provider the shop may use; repeat for several (default: openpix).
        #[arg(long = "allowed-provider", value_name = "PROVIDER")]
        allowed_providers: Vec<String>,
        /// Connect the shop to this Wake Commerce store and issue its secret.
        #[arg(long, value_name = "LOJA")]
        wake_store: Option<String>,
        /// Print the result as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// List shops (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issue a new API key, shown once; the old key stops working at once.
    RotateApiKey {
        shop_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Issue a new webhook signing secret, shown once. The previous secret
    /// still signs (a second signature in webhook-signature) for the overlap.
    RotateWebhookSecret {
        shop_id: uuid::Uuid,
        /// How long the previous secret keeps signing, in hours (0..=720; fractions allowed).
        #[arg(long, default_value_t = 24.0)]
        overlap_hours: f64,
        #[arg(long)]
        json: bool,
    },
    /// Issue the secret the Wake Commerce connector sends, shown once; only
    /// its SHA-256 is kept and the previous one stops working at once.
    SetWakeSecret {
        shop_id: uuid::Uuid,
        /// The Wake store (loja); default: the one the shop already has.
        #[arg(long, value_name = "LOJA")]
        wake_store: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change where the shop's webhooks go (checked like at creation).
    SetWebhookUrl {
        shop_id: uuid::Uuid,
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Link the RabbitMQ user that publishes the shop's order messages (the
    /// AMQP user-id payhub trusts, since the broker validates it).
    SetAmqpUser {
        shop_id: uuid::Uuid,
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the shop's order rules (delivery coverage, stock, provider fees)
    /// from a JSON file; see the README's "Shop rules".
    SetRules {
        shop_id: uuid::Uuid,
        /// The rules document, or - for standard input.
        #[arg(long)]
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse the shop's API key and Wake secret from now on.
    Disable {
        shop_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Accept the shop's credentials again.
    Enable {
        shop_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Seal webhook secrets still stored in plaintext (shops created before
    /// encryption at rest). Idempotent.
    EncryptSecrets,
    /// Set or rotate the shop's own account at a provider. The secret (OpenPix
    /// AppID, PixelPay Secret Key, Pago Seguro API key) is read from a file or
    /// standard input, never from the command line, sealed under
    /// PAYHUB_PROVIDER_KEY and never printed back. Without an account the
    /// shop is charged under the platform's account.
    SetProvider {
        shop_id: uuid::Uuid,
        /// openpix, pixelpay or pagoseguro.
        provider: String,
        /// The file holding the secret, or - for standard input.
        #[arg(long, value_name = "FILE")]
        secret_file: String,
        /// PixelPay's Key ID (the numeric merchant id).
        #[arg(long)]
        key_id: Option<String>,
        /// PixelPay's endpoint: https://pixelpay.app, or a bank's white-label host.
        #[arg(long)]
        endpoint: Option<String>,
        /// Pago Seguro's Account ID.
        #[arg(long)]
        account_id: Option<String>,
        /// The currencies the account settles, when its contract says other
        /// than the provider's documented ones (PixelPay: HNL,USD,NIO; a
        /// bank's white-label host may settle e.g. BRL). Comma-separated;
        /// `--currencies ''` goes back to the documented ones; left out, what
        /// was declared stays.
        #[arg(long, value_delimiter = ',')]
        currencies: Option<Vec<String>>,
        /// Also add the provider to the shop's allowed providers.
        #[arg(long)]
        allow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Choose the body of the shop's status webhooks: `payhub` (every
    /// status, payhub's `order.status_changed`) or `pixelpay` (PixelPay's own
    /// success and error webhooks, for shops that already integrate
    /// PixelPay; only `paid` and `failed` are sent). Signed either way.
    SetWebhookFormat {
        shop_id: uuid::Uuid,
        format: String,
        #[arg(long)]
        json: bool,
    },
    /// What payhub does with the shop's orders while its provider account
    /// is down: `hold` (accept; the charge is created when the provider is
    /// back; the default) or `reject` (the HTTP doors answer 503 with
    /// Retry-After). Card orders are refused while it is down either way.
    SetProviderDown {
        shop_id: uuid::Uuid,
        policy: String,
        #[arg(long)]
        json: bool,
    },
    /// The hosted checkout's settings: its language when the buyer's
    /// browser names neither pt-BR nor es, and the shop's own origins, the
    /// only pages that may show payhub's checkout in a frame (CSP
    /// frame-ancestors). `--origin` replaces the list; give none to keep it,
    /// `--no-origins` to clear it.
    SetCheckout {
        shop_id: uuid::Uuid,
        /// `pt-BR` or `es`.
        #[arg(long)]
        locale: Option<String>,
        /// `https://shop.example` (scheme, host and port only); repeatable.
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[arg(long, conflicts_with = "origins")]
        no_origins: bool,
        #[arg(long)]
        json: bool,
    },
    /// Issue 12 §3: the shop's invoices through payhub. With `--profile`
    /// (the fiscal profile, JSON; see the README's "The invoice") and
    /// `--token-file` (the Focus NFe company token, sealed like provider
    /// secrets under PAYHUB_PROVIDER_KEY and never printed back), each paid
    /// order's NF-e is asked of the shop's Focus NFe account. Off by default
    /// (a shop without this setting invoices elsewhere); `--off` turns it
    /// off for a shop that invoices elsewhere, `--on` back on.
    SetInvoicing {
        shop_id: uuid::Uuid,
        /// The fiscal profile (JSON file, or - for standard input).
        #[arg(long, value_name = "FILE")]
        profile: Option<String>,
        /// The Focus NFe token (file, or - for standard input).
        #[arg(long, value_name = "FILE")]
        token_file: Option<String>,
        /// Focus NFe's host: https://homologacao.focusnfe.com.br (the
        /// default, test invoices) or https://api.focusnfe.com.br.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, conflicts_with = "on")]
        off: bool,
        #[arg(long)]
        on: bool,
        #[arg(long)]
        json: bool,
    },
    /// Issue 12 §4: when the shop's buyers are invited to the satisfaction
    /// survey: after delivery (the default), or N days after payment for a
    /// shop that reports no shipping.
    SetSurvey {
        shop_id: uuid::Uuid,
        /// Days after payment (1 to 90).
        #[arg(long, conflicts_with = "after_delivery")]
        after_payment_days: Option<u16>,
        #[arg(long)]
        after_delivery: bool,
        #[arg(long)]
        json: bool,
    },
    /// Where the shop's management reports go (issue 13 §3): `--email`
    /// replaces the list (repeatable); `--clear` empties it (its admin then
    /// gets them).
    SetReportEmails {
        shop_id: uuid::Uuid,
        #[arg(long = "email")]
        emails: Vec<String>,
        #[arg(long, conflicts_with = "emails")]
        clear: bool,
        #[arg(long)]
        json: bool,
    },
    /// The shop's provider accounts (never their secrets) and what
    /// charge-creator found of their webhooks at the provider.
    Providers {
        shop_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    payhub_telemetry::install_crypto();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payhubctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payhubctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = payhub_telemetry::Env::process();
    env.check_files()?;
    // Needs neither the database nor the broker: runs before the database
    // URL is required.
    let command = match cli.command {
        Command::Broker(cmd) => return broker_command(&env, cmd),
        Command::Reconcile { date } => return reconcile(&env, &date).await,
        Command::Report(ReportCommand::Run { period, date, shop }) => {
            return report_run(&env, &period, &date, shop).await;
        }
        other => other,
    };
    let database_url = match cli.database_url {
        Some(url) => url,
        None => env.string_or_production_required("PAYHUB_DATABASE_URL", payhub_service::DEFAULT_DATABASE_URL)?,
    };
    let cli = Resolved { database_url, command };
    match cli.command {
        Command::Migrate => {
            if !sqlx::Postgres::database_exists(&cli.database_url)
                .await
                .context("cannot reach PostgreSQL")?
            {
                sqlx::Postgres::create_database(&cli.database_url)
                    .await
                    .context("cannot create the database")?;
                println!("created the database");
            }
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            store.migrate().await?;
            let applied = payhub_store::MIGRATOR.iter().count();
            println!("migrations applied ({applied} known)");
            Ok(())
        }
        Command::Shop(cmd) => shop(&cli.database_url, cmd).await,
        Command::Db(DbCommand::Roles) => {
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            payhub_store::roles::apply(&store).await?;
            for (service, role) in payhub_store::roles::ROLES {
                println!("{role}: {service}'s grants applied");
            }
            Ok(())
        }
        Command::Dlq(cmd) => dlq(cmd).await,
        Command::Settlement(cmd) => settlement(&cli.database_url, cmd).await,
        Command::Report(cmd) => report(&cli.database_url, cmd).await,
        Command::Broker(cmd) => broker_command(&env, cmd),
        Command::Reconcile { .. } => unreachable!("handled before the database URL"),
        Command::Order { id, shop } => {
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            let order_id: Option<(uuid::Uuid,)> = match (uuid::Uuid::parse_str(&id), shop) {
                (_, Some(shop)) => {
                    sqlx::query_as("SELECT id FROM orders WHERE shop_id = $1 AND correlation_id = $2")
                        .bind(shop)
                        .bind(&id)
                        .fetch_optional(&store.pool)
                        .await?
                }
                (Ok(uuid), None) => {
                    sqlx::query_as("SELECT id FROM orders WHERE id = $1")
                        .bind(uuid)
                        .fetch_optional(&store.pool)
                        .await?
                }
                (Err(_), None) => {
                    anyhow::bail!("give a payhub order id, or a correlationID with --shop")
                }
            };
            let Some((order_id,)) = order_id else {
                anyhow::bail!("no such order")
            };
            let order: (serde_json::Value,) = sqlx::query_as(
                "SELECT json_build_object(
                    'order', (SELECT to_jsonb(o) - 'request_hash' - 'customer_tax_id' FROM orders o WHERE o.id = $1),
                    'charge', (SELECT to_jsonb(c) FROM charges c WHERE c.order_id = $1),
                    'history', (SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.id), '[]') FROM order_history h WHERE h.order_id = $1),
                    'deliveries', (SELECT coalesce(jsonb_agg(to_jsonb(d) ORDER BY d.created_at), '[]') FROM deliveries d WHERE d.order_id = $1))",
            )
            .bind(order_id)
            .fetch_one(&store.pool)
            .await?;
            println!("{}", serde_json::to_string_pretty(&order.0)?);
            Ok(())
        }
    }
}

/// `payhubctl broker ...`: prints what to grant; touches no broker.
fn broker_command(env: &payhub_telemetry::Env, cmd: BrokerCommand) -> anyhow::Result<()> {
    let BrokerCommand::Permissions {
        vhost,
        prefix,
        user_prefix,
        format,
    } = cmd;
    // The services' own settings (`CommonConfig::from_env`).
    let defaults = payhub_queue::Topology::default();
    let topology = payhub_queue::Topology {
        exchange: env.string("PAYHUB_EXCHANGE", &defaults.exchange),
        orders_exchange: env.string("PAYHUB_ORDERS_EXCHANGE", &defaults.orders_exchange),
        prefix: prefix.unwrap_or_else(|| env.string("PAYHUB_QUEUE_PREFIX", "")),
        ..defaults
    };
    match format {
        broker::PermissionsFormat::Rabbitmqctl => print!("{}", broker::rabbitmqctl(&topology, &vhost, &user_prefix)),
        broker::PermissionsFormat::Definitions => println!(
            "{}",
            serde_json::to_string_pretty(&broker::definitions(&topology, &vhost, &user_prefix))?
        ),
    }
    Ok(())
}

/// The command line with the database URL settled.
struct Resolved {
    database_url: String,
    command: Command,
}

/// Which webhook URLs are acceptable here: the notifier's rules, from the same
/// variables (`PAYHUB_ENV`, `PAYHUB_ALLOW_PRIVATE_WEBHOOKS`).
fn webhook_url_policy() -> anyhow::Result<WebhookUrlPolicy> {
    let env = payhub_telemetry::Env::process();
    WebhookUrlPolicy::from_settings(
        env.optional(url_safety::ENV_VAR).as_deref(),
        env.optional(url_safety::ALLOW_PRIVATE_VAR).as_deref(),
    )
    .map_err(|(name, reason)| anyhow::anyhow!("bad setting {name}: {reason}"))
}

/// Refuses a webhook URL the notifier would refuse: not http(s), plain http
/// outside development, or a host that is (or resolves to) a non-public
/// address. A host that does not resolve yet is accepted with a warning; the
/// notifier checks every address again when it delivers.
async fn check_webhook_url(policy: &WebhookUrlPolicy, url: &str) -> anyhow::Result<()> {
    let unsafe_url = |reason: &dyn std::fmt::Display| anyhow::anyhow!("--webhook-url is unsafe: {reason}");
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--webhook-url is not a URL: {e}"))?;
    let host = parsed.host_str().map(UrlHost::from_host_str);
    policy.check_url(parsed.scheme(), host).map_err(|e| unsafe_url(&e))?;
    if let Some(UrlHost::Domain(name)) = host
        && !policy.allow_private
    {
        let port = parsed.port_or_known_default().unwrap_or(443);
        match tokio::net::lookup_host((name, port)).await {
            Ok(addrs) => {
                for addr in addrs {
                    policy.check_address(name, addr.ip()).map_err(|e| unsafe_url(&e))?;
                }
            }
            Err(e) => {
                eprintln!("payhubctl: warning: {name} does not resolve yet ({e}); it is checked again at delivery")
            }
        }
    }
    Ok(())
}

fn warn_if_development_key(store: &Store) {
    if store.secrets().is_development() {
        eprintln!(
            "payhubctl: warning: {} is not set; webhook secrets are sealed with the public development key. \
             Set it (base64 of 32 random bytes, the same as the services') anywhere but a developer machine.",
            payhub_store::secrets::KEY_VAR
        );
    }
}

/// POSTs `body` to reporter's internal `path` (`PAYHUB_REPORTER_URL`,
/// `PAYHUB_INTERNAL_TOKEN`); its status and JSON answer, an error unless 2xx.
async fn reporter_post(
    env: &payhub_telemetry::Env,
    path: &str,
    body: &serde_json::Value,
    timeout: std::time::Duration,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let base = env.url("PAYHUB_REPORTER_URL", "http://127.0.0.1:8082")?;
    let token = payhub_service::internal::token(env)?;
    let http = reqwest::Client::builder().timeout(timeout).no_proxy().build()?;
    let r = http
        .post(format!("{}{path}", base.trim_end_matches('/')))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .context("reporter could not be reached (PAYHUB_REPORTER_URL)")?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.context("reporter's answer is unreadable")?;
    anyhow::ensure!(status.is_success(), "reporter answered {status}: {body}");
    Ok((status, body))
}

async fn reconcile(env: &payhub_telemetry::Env, date: &str) -> anyhow::Result<()> {
    time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]"))
        .context("--date must be a date as YYYY-MM-DD")?;
    let (_, body) = reporter_post(
        env,
        "/internal/v1/reconcile",
        &json!({"date": date}),
        std::time::Duration::from_secs(300),
    )
    .await?;
    println!("{body}");
    let clean = body["status"] == "clean" || (body["status"] == "discrepancies" && body["open"] == 0);
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

async fn report_run(
    env: &payhub_telemetry::Env,
    period: &str,
    date: &str,
    shop: Option<uuid::Uuid>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(period, "daily" | "monthly"),
        "--period must be daily or monthly"
    );
    time::Date::parse(date, time::macros::format_description!("[year]-[month]-[day]"))
        .context("--date must be a date as YYYY-MM-DD")?;
    let (status, body) = reporter_post(
        env,
        "/internal/v1/reports",
        &json!({"period": period, "date": date, "shopId": shop}),
        std::time::Duration::from_secs(120),
    )
    .await?;
    println!("{body}");
    if status == reqwest::StatusCode::OK {
        eprintln!("payhubctl: this report was made before; it is not sent again");
    }
    Ok(())
}

async fn report(database_url: &str, cmd: ReportCommand) -> anyhow::Result<()> {
    let store = Store::connect_lazy(database_url, 2)?;
    match cmd {
        ReportCommand::List { shop } => {
            for s in payhub_store::reports::list(&store, shop).await? {
                println!("{}", s.to_json());
            }
            Ok(())
        }
        ReportCommand::Download { id, shop, format, out } => {
            anyhow::ensure!(
                matches!(format.as_str(), "pdf" | "csv" | "html"),
                "--format must be pdf, csv or html"
            );
            let (bytes, _) = payhub_store::reports::body(&store, shop, id, &format)
                .await?
                .with_context(|| {
                    format!(
                        "no report {id} for {}",
                        shop.map_or("the platform".into(), |s| s.to_string())
                    )
                })?;
            write_body(out.as_deref(), &bytes)
        }
        ReportCommand::Run { .. } => unreachable!("handled before the database URL"),
    }
}

fn write_body(out: Option<&std::path::Path>, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match out {
        Some(path) => std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display())),
        None => Ok(std::io::stdout().write_all(body)?),
    }
}

fn pick(export: &payhub_store::settlement::Export, format: &str) -> anyhow::Result<Vec<u8>> {
    match format {
        "csv" => Ok(export.csv.clone()),
        "json" => Ok(export.json.clone()),
        other => anyhow::bail!("unknown format {other:?}: csv or json"),
    }
}

async fn settlement(database_url: &str, cmd: SettlementCommand) -> anyhow::Result<()> {
    use payhub_store::settlement::{self, Exported};
    let store = Store::connect_lazy(database_url, 2)?;
    let day = |s: &str, what: &str| {
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
            .with_context(|| format!("--{what} must be a date as YYYY-MM-DD"))
    };
    match cmd {
        SettlementCommand::Export {
            shop,
            from,
            to,
            format,
            idempotency_key,
            out,
        } => {
            let (from, to) = (day(&from, "from")?, day(&to, "to")?);
            anyhow::ensure!(to >= from, "--to must not be before --from");
            pick_format(&format)?;
            match settlement::export(&store, shop, from, to, idempotency_key.as_deref(), "payhubctl").await? {
                Exported::New(e) | Exported::Again(e) => {
                    eprintln!("{}", e.summary());
                    write_body(out.as_deref(), &pick(&e, &format)?)
                }
                Exported::Nothing => {
                    eprintln!("{}", json!({"id": null, "lines": 0}));
                    Ok(())
                }
            }
        }
        SettlementCommand::List { shop } => {
            for e in settlement::list(&store, shop).await? {
                println!("{}", e.summary());
            }
            Ok(())
        }
        SettlementCommand::Download { shop, id, format, out } => {
            let e = settlement::get(&store, shop, id)
                .await?
                .with_context(|| format!("no export {id} for shop {shop}"))?;
            write_body(out.as_deref(), &pick(&e, &format)?)
        }
    }
}

fn pick_format(format: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(format, "csv" | "json"),
        "unknown format {format:?}: csv or json"
    );
    Ok(())
}

fn emit(json_out: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

async fn shop(database_url: &str, cmd: ShopCommand) -> anyhow::Result<()> {
    use payhub_store::shops;
    // Shops carry sealed secrets: the key is required here (in production),
    // as in the notifier.
    let store = Store::connect_lazy(database_url, 2)?.with_secrets(payhub_store::Secrets::from_env()?);
    match cmd {
        ShopCommand::Create {
            name,
            webhook_url,
            admin_email,
            allowed_providers,
            wake_store,
            json,
        } => {
            if name.trim().is_empty() || name.chars().count() > 200 {
                anyhow::bail!("--name must be 1 to 200 characters");
            }
            if let Some(url) = &webhook_url {
                check_webhook_url(&webhook_url_policy()?, url).await?;
            }
            if let Some(a) = &admin_email {
                payhub_core::identity::Email::parse(a).map_err(|e| anyhow::anyhow!("--admin-email {e}"))?;
            }
            for p in &allowed_providers {
                payhub_core::Provider::parse(p).map_err(|e| anyhow::anyhow!("--allowed-provider {p:?} {e}"))?;
            }
            if let Some(w) = &wake_store {
                check_wake_store(w)?;
            }
            warn_if_development_key(&store);
            let created = shops::create_with(
                &store,
                &shops::CreateShop {
                    name,
                    webhook_url,
                    admin_email,
                    allowed_providers,
                    wake_store,
                },
            )
            .await?;
            let s = &created.shop;
            emit(
                json,
                json!({
                    "id": s.id,
                    "name": s.name,
                    "webhookUrl": s.webhook_url,
                    "adminEmail": s.admin_email,
                    "allowedProviders": s.allowed_providers,
                    "wakeStore": s.wake_store,
                    "apiKey": created.api_key,
                    "webhookSecret": s.webhook_secret.expose(),
                    "wakeSecret": created.wake_secret,
                }),
                || {
                    let mut out = format!(
                        "shop created: {}\nAPI key (shown once):        {}\nwebhook secret (shown once): {}",
                        s.id,
                        created.api_key,
                        s.webhook_secret.expose()
                    );
                    if let Some(w) = &created.wake_secret {
                        out.push_str(&format!("\nWake secret (shown once):    {w}"));
                    }
                    out
                },
            );
            Ok(())
        }
        ShopCommand::List { json } => {
            let list = shops::list(&store).await?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id,
                            "name": s.name,
                            "active": s.active,
                            "webhookUrl": s.webhook_url,
                            "adminEmail": s.admin_email,
                            "allowedProviders": s.allowed_providers,
                            "wakeStore": s.wake_store,
                            "webhookSecretOverlap": s.previous_webhook_secret.is_some(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for s in list {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    if s.active { "active" } else { "disabled" },
                    s.name,
                    s.webhook_url.as_deref().unwrap_or("-"),
                    s.allowed_providers.join(","),
                    s.wake_store.as_deref().map_or("-".to_string(), |w| format!("wake:{w}")),
                );
            }
            Ok(())
        }
        ShopCommand::RotateApiKey { shop_id, json } => {
            let key = shops::rotate_api_key(&store, shop_id).await?;
            emit(json, json!({"id": shop_id, "apiKey": key}), || {
                format!("new API key for {shop_id} (shown once; the old key no longer works): {key}")
            });
            Ok(())
        }
        ShopCommand::RotateWebhookSecret {
            shop_id,
            overlap_hours,
            json,
        } => {
            if !(0.0..=720.0).contains(&overlap_hours) {
                anyhow::bail!("--overlap-hours must be between 0 and 720");
            }
            let overlap = std::time::Duration::from_secs_f64(overlap_hours * 3600.0);
            warn_if_development_key(&store);
            let secret = shops::rotate_webhook_secret(&store, shop_id, overlap).await?;
            let until = (!overlap.is_zero())
                .then(|| time::OffsetDateTime::now_utc() + overlap)
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            emit(
                json,
                json!({"id": shop_id, "webhookSecret": secret.expose(), "previousValidUntil": until}),
                || {
                    let overlap_note = match &until {
                        Some(t) => format!("the previous secret also signs until about {t}"),
                        None => "the previous secret no longer signs".into(),
                    };
                    format!(
                        "new webhook secret for {shop_id} (shown once): {}\n{overlap_note}",
                        secret.expose()
                    )
                },
            );
            Ok(())
        }
        ShopCommand::SetWakeSecret {
            shop_id,
            wake_store,
            json,
        } => {
            let wake_store = match wake_store {
                Some(w) => w,
                None => shops::by_id(&store, shop_id)
                    .await?
                    .with_context(|| format!("no shop {shop_id}"))?
                    .wake_store
                    .context("the shop has no Wake store yet: give --wake-store")?,
            };
            check_wake_store(&wake_store)?;
            let secret = shops::set_wake_secret(&store, shop_id, &wake_store).await?;
            emit(
                json,
                json!({"id": shop_id, "wakeStore": wake_store, "wakeSecret": secret}),
                || format!("Wake secret for {shop_id} (store {wake_store:?}; shown once): {secret}"),
            );
            Ok(())
        }
        ShopCommand::SetWebhookUrl { shop_id, url, json } => {
            check_webhook_url(&webhook_url_policy()?, &url).await?;
            shops::set_webhook_url(&store, shop_id, Some(&url)).await?;
            emit(json, json!({"id": shop_id, "webhookUrl": url}), || {
                format!("webhooks of {shop_id} now go to {url}")
            });
            Ok(())
        }
        ShopCommand::SetProvider {
            shop_id,
            provider,
            secret_file,
            key_id,
            endpoint,
            account_id,
            currencies,
            allow,
            json,
        } => {
            let secret = read_secret(&secret_file)?;
            let credentials = provider_credentials(&provider, secret, key_id, endpoint, account_id)?;
            let currencies = currencies
                .map(|list| check_currencies(credentials.provider(), list))
                .transpose()?;
            if let Some(endpoint) = credentials.endpoint() {
                check_provider_endpoint(endpoint)?;
            }
            let key = payhub_store::accounts::key_from_env()?;
            if key.is_development() {
                eprintln!(
                    "warning: {} is not set: the credentials are sealed with the PUBLIC development key",
                    payhub_store::secrets::PROVIDER_KEY_VAR
                );
            }
            let shop = shops::by_id(&store, shop_id)
                .await?
                .with_context(|| format!("no shop {shop_id}"))?;
            let id = payhub_store::accounts::set(&store, &key, shop_id, &credentials, currencies.as_deref()).await?;
            let provider = credentials.provider();
            if allow && !shop.allows_provider(provider) {
                sqlx::query("UPDATE shops SET allowed_providers = array_append(allowed_providers, $2) WHERE id = $1")
                    .bind(shop_id)
                    .bind(provider)
                    .execute(&store.pool)
                    .await?;
            }
            let allowed = allow || shop.allows_provider(provider);
            emit(
                json,
                json!({"id": shop_id, "provider": provider, "account": id, "publicId": credentials.public_id(),
                       "endpoint": credentials.endpoint(), "currencies": currencies, "allowed": allowed}),
                || {
                    let note = if allowed {
                        String::new()
                    } else {
                        format!("\nnote: {provider} is not among the shop's allowed providers (add it with --allow)")
                    };
                    format!(
                        "{provider} account {id} set for {shop_id}; charge-creator uses it within PAYHUB_ACCOUNT_CACHE_MS{note}"
                    )
                },
            );
            Ok(())
        }
        ShopCommand::SetInvoicing {
            shop_id,
            profile,
            token_file,
            endpoint,
            off,
            on,
            json,
        } => {
            shops::by_id(&store, shop_id)
                .await?
                .with_context(|| format!("no shop {shop_id}"))?;
            let profile = profile
                .map(|file| -> anyhow::Result<payhub_core::invoice::FiscalProfile> {
                    let text = read_text(&file)?;
                    payhub_core::invoice::FiscalProfile::parse(text.as_bytes()).map_err(|e| {
                        let fields: Vec<String> = e.0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
                        anyhow::anyhow!("the fiscal profile is not valid: {}", fields.join("; "))
                    })
                })
                .transpose()?;
            let mut account = None;
            if let Some(file) = token_file {
                let credentials = payhub_store::accounts::Credentials::Focusnfe {
                    token: read_secret(&file)?,
                    endpoint: endpoint
                        .unwrap_or_else(|| "https://homologacao.focusnfe.com.br".into())
                        .trim_end_matches('/')
                        .to_string(),
                };
                credentials
                    .validate()
                    .map_err(|(field, why)| anyhow::anyhow!("{field} {why}"))?;
                if let Some(endpoint) = credentials.endpoint() {
                    check_provider_endpoint(endpoint)?;
                }
                let key = payhub_store::accounts::key_from_env()?;
                if key.is_development() {
                    eprintln!(
                        "warning: {} is not set: the token is sealed with the PUBLIC development key",
                        payhub_store::secrets::PROVIDER_KEY_VAR
                    );
                }
                account = Some(payhub_store::accounts::set(&store, &key, shop_id, &credentials, None).await?);
            } else if endpoint.is_some() {
                anyhow::bail!("--endpoint goes with --token-file");
            }
            let enabled = !off && (on || profile.is_some() || account.is_some());
            if off || on || profile.is_some() {
                payhub_store::invoicing::set(&store, shop_id, enabled, profile.as_ref()).await?;
            }
            let settings = payhub_store::invoicing::settings(&store, shop_id).await?;
            let has_account = payhub_store::accounts::list(&store, Some(shop_id))
                .await?
                .iter()
                .any(|a| a.provider == payhub_store::invoicing::SERVICE);
            let enabled = settings.as_ref().is_some_and(|s| s.enabled);
            emit(
                json,
                json!({"id": shop_id, "invoicing": enabled, "service": payhub_store::invoicing::SERVICE,
                       "account": account, "hasAccount": has_account,
                       "profile": settings.map(|s| s.profile)}),
                || {
                    let mut out = format!(
                        "invoicing of {shop_id} through payhub: {}",
                        if enabled { "on" } else { "off" }
                    );
                    if enabled && !has_account {
                        out.push_str(
                            "\nnote: no Focus NFe token yet (--token-file): invoices will fail until it is set",
                        );
                    }
                    out
                },
            );
            Ok(())
        }
        ShopCommand::SetSurvey {
            shop_id,
            after_payment_days,
            after_delivery,
            json,
        } => {
            anyhow::ensure!(
                after_delivery || after_payment_days.is_some(),
                "give --after-payment-days N or --after-delivery"
            );
            payhub_store::invoicing::set_survey_after_payment(&store, shop_id, after_payment_days).await?;
            emit(
                json,
                json!({"id": shop_id, "surveyAfterPaymentDays": after_payment_days}),
                || match after_payment_days {
                    Some(d) => format!("buyers of {shop_id} are invited to the survey {d} days after payment"),
                    None => format!("buyers of {shop_id} are invited to the survey after delivery"),
                },
            );
            Ok(())
        }
        ShopCommand::SetWebhookFormat { shop_id, format, json } => {
            let parsed = shops::WebhookFormat::parse(&format)
                .with_context(|| format!("unknown webhook format {format:?}: payhub or pixelpay"))?;
            shops::set_webhook_format(&store, shop_id, parsed).await?;
            emit(json, json!({"id": shop_id, "webhookFormat": parsed.as_str()}), || {
                format!("webhooks of {shop_id} now have the {} format", parsed.as_str())
            });
            Ok(())
        }
        ShopCommand::SetProviderDown { shop_id, policy, json } => {
            let parsed = payhub_store::health::DownPolicy::parse(&policy)
                .with_context(|| format!("unknown policy {policy:?}: hold or reject"))?;
            payhub_store::health::set_policy(&store, shop_id, parsed).await?;
            emit(
                json,
                json!({"id": shop_id, "providerDownPolicy": parsed.as_str()}),
                || {
                    format!(
                        "while its provider is down, {shop_id}'s orders are now: {}",
                        parsed.as_str()
                    )
                },
            );
            Ok(())
        }
        ShopCommand::SetReportEmails {
            shop_id,
            emails,
            clear,
            json,
        } => {
            anyhow::ensure!(clear || !emails.is_empty(), "give --email (repeatable) or --clear");
            let mut checked = Vec::new();
            for e in &emails {
                checked.push(
                    payhub_core::identity::Email::parse(e)
                        .map_err(|_| anyhow::anyhow!("--email {e:?} is not an e-mail address"))?
                        .as_str()
                        .to_string(),
                );
            }
            checked.dedup();
            let row: Option<(Vec<String>,)> =
                sqlx::query_as("UPDATE shops SET report_emails = $2 WHERE id = $1 RETURNING report_emails")
                    .bind(shop_id)
                    .bind(&checked)
                    .fetch_optional(&store.pool)
                    .await?;
            let (list,) = row.with_context(|| format!("no shop {shop_id}"))?;
            emit(json, json!({"id": shop_id, "reportEmails": list}), || {
                if list.is_empty() {
                    format!("{shop_id}'s management reports go to its admin")
                } else {
                    format!("{shop_id}'s management reports go to {}", list.join(", "))
                }
            });
            Ok(())
        }
        ShopCommand::SetCheckout {
            shop_id,
            locale,
            origins,
            no_origins,
            json,
        } => {
            if let Some(l) = &locale
                && l != "pt-BR"
                && l != "es"
            {
                anyhow::bail!("unknown checkout locale {l:?}: pt-BR or es");
            }
            let mut checked = Vec::new();
            for o in &origins {
                checked.push(checkout_origin(o).with_context(|| format!("--origin {o:?}"))?);
            }
            let replace = no_origins || !checked.is_empty();
            let row: Option<(String, Vec<String>)> = sqlx::query_as(
                "UPDATE shops SET checkout_locale = COALESCE($2, checkout_locale),
                                  checkout_origins = CASE WHEN $3 THEN $4 ELSE checkout_origins END
                 WHERE id = $1 RETURNING checkout_locale, checkout_origins",
            )
            .bind(shop_id)
            .bind(locale.as_deref())
            .bind(replace)
            .bind(&checked)
            .fetch_optional(&store.pool)
            .await?;
            let (locale, origins) = row.with_context(|| format!("no shop {shop_id}"))?;
            emit(
                json,
                json!({"id": shop_id, "checkoutLocale": locale, "checkoutOrigins": origins}),
                || {
                    format!(
                        "checkout of {shop_id}: {locale}, framed by {}",
                        if origins.is_empty() {
                            "nobody".to_string()
                        } else {
                            origins.join(" ")
                        }
                    )
                },
            );
            Ok(())
        }
        ShopCommand::Providers { shop_id, json } => {
            let accounts = payhub_store::accounts::list(&store, Some(shop_id)).await?;
            let hooks: Vec<(uuid::Uuid, String, String, String, Option<String>, time::OffsetDateTime)> =
                sqlx::query_as(
                    "SELECT w.account_id, w.event, w.url, w.state, w.detail, w.checked_at FROM provider_webhooks w
                     JOIN provider_accounts a ON a.id = w.account_id WHERE a.shop_id = $1 ORDER BY w.event",
                )
                .bind(shop_id)
                .fetch_all(&store.pool)
                .await?;
            let listed: Vec<serde_json::Value> = accounts
                .iter()
                .map(|a| {
                    let webhooks: Vec<serde_json::Value> = hooks
                        .iter()
                        .filter(|h| h.0 == a.id)
                        .map(|(_, event, url, state, detail, checked)| {
                            json!({"event": event, "url": url, "state": state, "detail": detail,
                                   "checkedAt": checked.format(&time::format_description::well_known::Rfc3339).ok()})
                        })
                        .collect();
                    let mut v = serde_json::to_value(a).unwrap_or_default();
                    v["webhooks"] = json!(webhooks);
                    v
                })
                .collect();
            emit(json, json!(listed), || {
                if listed.is_empty() {
                    return format!("{shop_id} has no accounts of its own: it is charged under the platform's");
                }
                let mut out = String::new();
                for a in &listed {
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{}\trotated {}\n",
                        a["provider"].as_str().unwrap_or(""),
                        a["id"].as_str().unwrap_or(""),
                        a["publicId"].as_str().unwrap_or("-"),
                        a["endpoint"].as_str().unwrap_or("-"),
                        a["rotatedAt"].as_str().unwrap_or("")
                    ));
                    for h in a["webhooks"].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "  webhook {}\t{}\t{}\n",
                            h["event"].as_str().unwrap_or(""),
                            h["state"].as_str().unwrap_or(""),
                            h["url"].as_str().unwrap_or("")
                        ));
                    }
                }
                out.trim_end().to_string()
            });
            Ok(())
        }
        ShopCommand::SetRules { shop_id, file, json } => {
            let text = read_text(&file)?;
            let rules: payhub_core::rules::OrderRules =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("the rules are not valid: {e}"))?;
            rules
                .validate()
                .map_err(|e| anyhow::anyhow!("the rules are not valid: {e}"))?;
            if let Some((url, _)) = rules.stock_callback() {
                check_webhook_url(&webhook_url_policy()?, url)
                    .await
                    .context("stock.url")?;
            }
            shops::set_order_rules(&store, shop_id, &rules).await?;
            emit(json, json!({"id": shop_id, "orderRules": rules}), || {
                format!("order rules of {shop_id} updated")
            });
            Ok(())
        }
        ShopCommand::SetAmqpUser { shop_id, user, json } => {
            if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
                anyhow::bail!("the RabbitMQ user name must be 1 to 200 printable characters");
            }
            let r = sqlx::query("UPDATE shops SET amqp_user = $2 WHERE id = $1")
                .bind(shop_id)
                .bind(&user)
                .execute(&store.pool)
                .await;
            match r {
                Ok(done) if done.rows_affected() == 0 => anyhow::bail!("no shop {shop_id}"),
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    anyhow::bail!("RabbitMQ user {user:?} already publishes for another shop")
                }
                Err(e) => return Err(e.into()),
            }
            emit(json, json!({"id": shop_id, "amqpUser": user}), || {
                format!("order messages published by RabbitMQ user {user} now belong to {shop_id}")
            });
            Ok(())
        }
        ShopCommand::Disable { shop_id, json } | ShopCommand::Enable { shop_id, json } => {
            let active = matches!(cmd, ShopCommand::Enable { .. });
            shops::set_active(&store, shop_id, active).await?;
            emit(json, json!({"id": shop_id, "active": active}), || {
                format!("shop {shop_id} {}", if active { "enabled" } else { "disabled" })
            });
            Ok(())
        }
        ShopCommand::EncryptSecrets => {
            warn_if_development_key(&store);
            let n = shops::encrypt_plaintext_secrets(&store).await?;
            println!("sealed {n} plaintext webhook secret(s)");
            Ok(())
        }
    }
}

fn check_wake_store(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        anyhow::bail!("--wake-store must be 1 to 200 characters");
    }
    Ok(())
}

fn spec_named(name: &str) -> anyhow::Result<QueueSpec> {
    QueueSpec::ALL.into_iter().find(|s| s.base == name).ok_or_else(|| {
        let names: Vec<&str> = QueueSpec::ALL.iter().map(|s| s.base).collect();
        anyhow::anyhow!("unknown queue {name:?}; the queues are: {}", names.join(", "))
    })
}

async fn dlq(cmd: DlqCommand) -> anyhow::Result<()> {
    let common = payhub_service::CommonConfig::from_env(&payhub_telemetry::Env::process(), "127.0.0.1:0")?;
    let admin = DeadLetterAdmin::connect(&common.amqp_url, common.topology.clone())
        .await
        .context("cannot reach RabbitMQ (PAYHUB_AMQP_URL)")?;
    let result = dlq_with(&admin, cmd).await;
    admin.close().await;
    result
}

async fn dlq_with(admin: &DeadLetterAdmin, cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List { queue, limit, json } => {
            let specs = match &queue {
                Some(q) => vec![spec_named(q)?],
                None => QueueSpec::ALL.to_vec(),
            };
            let depths = admin.depths().await?;
            let mut out = Vec::new();
            for spec in specs {
                let letters = admin.list(&spec, limit).await?;
                let depth = depths.iter().find(|d| d.queue.ends_with(spec.base));
                out.push((spec, depth.cloned(), letters));
            }
            if json {
                let v: Vec<_> = out
                    .iter()
                    .map(|(spec, depth, letters)| json!({"queue": spec.base, "depths": depth, "deadLetters": letters}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for (spec, depth, letters) in out {
                let (ready, retrying, dead) = depth.map(|d| (d.ready, d.retrying, d.dead_letters)).unwrap_or_default();
                println!(
                    "{:<24} ready={ready:<6} retrying={retrying:<6} dead_letters={dead}",
                    spec.base
                );
                let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
                for l in &letters {
                    *reasons
                        .entry(l.story.reason.clone().unwrap_or_else(|| "unknown".into()))
                        .or_default() += 1;
                }
                for (reason, n) in reasons {
                    println!("    {n} x {reason}");
                }
                for l in &letters {
                    println!(
                        "    {}  {}  attempts={} by={} last_error={}",
                        l.message_id.as_deref().unwrap_or("-"),
                        l.event_type.as_deref().unwrap_or("-"),
                        l.story.attempts,
                        l.story.failed_by.as_deref().unwrap_or("-"),
                        l.story.errors.last().map(String::as_str).unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        DlqCommand::Show { queue, message_id } => {
            let spec = spec_named(&queue)?;
            let letters = admin.list(&spec, usize::MAX).await?;
            let l = letters
                .into_iter()
                .find(|l| l.message_id.as_deref() == Some(message_id.as_str()))
                .context("no such dead letter")?;
            let body: serde_json::Value =
                serde_json::from_str(&l.body).unwrap_or(serde_json::Value::String(l.body.clone()));
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"messageId": l.message_id, "type": l.event_type, "story": l.story, "replayed": l.replayed, "body": body})
                )?
            );
            Ok(())
        }
        DlqCommand::Replay {
            queue,
            id,
            reason,
            event_type,
            error_contains,
            all,
        } => {
            let spec = spec_named(&queue)?;
            let filter = Filter {
                message_id: id,
                reason,
                event_type,
                error_contains,
            };
            if !all
                && filter.message_id.is_none()
                && filter.reason.is_none()
                && filter.event_type.is_none()
                && filter.error_contains.is_none()
            {
                anyhow::bail!("say what to replay: --id, --reason, --type, --error-contains, or --all");
            }
            let n = admin.replay(&spec, &filter).await?;
            println!("replayed {n} dead letter(s) into {}", spec.base);
            Ok(())
        }
        DlqCommand::Purge { queue, yes } => {
            let spec = spec_named(&queue)?;
            if !yes {
                use std::io::{BufRead, Write};
                print!(
                    "This deletes every dead letter of {0}. Type {0} to confirm: ",
                    spec.base
                );
                std::io::stdout().flush()?;
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != spec.base {
                    anyhow::bail!("not confirmed; nothing purged");
                }
            }
            let n = admin.purge(&spec).await?;
            println!("purged {n} dead letter(s) from {}", spec.base);
            Ok(())
        }
    }
}

/// A document from a file or standard input.
fn read_text(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
        return Ok(t);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

/// A secret from a file or standard input, trimmed of the trailing newline.
fn read_secret(path: &str) -> anyhow::Result<secrecy::SecretString> {
    let mut text = String::new();
    if path == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    }
    let text = text.trim_end_matches(['\r', '\n']).to_string();
    if text.trim().is_empty() {
        anyhow::bail!("the secret in {path} is empty");
    }
    Ok(secrecy::SecretString::from(text))
}

/// The credentials a provider takes, from the flags it needs.
/// The currency codes an account declares, checked: known ISO-4217 codes
/// payhub handles, for a provider whose accounts may declare their own.
fn check_currencies(provider: &str, list: Vec<String>) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = list
        .iter()
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect();
    if list.is_empty() {
        return Ok(list);
    }
    let caps = payhub_core::Provider::parse(provider)
        .map(payhub_connectors::capabilities::of)
        .map_err(|e| anyhow::anyhow!("--currencies: {provider} {e}"))?;
    anyhow::ensure!(
        caps.account_currencies,
        "--currencies: {provider} accounts settle what {provider} documents ({}); they declare no currencies",
        caps.currencies.iter().map(|c| c.code()).collect::<Vec<_>>().join(", ")
    );
    for code in &list {
        anyhow::ensure!(
            payhub_core::Currency::parse(code).is_some(),
            "--currencies: {code:?} is not a currency payhub handles ({})",
            payhub_core::Currency::ALL
                .iter()
                .map(|c| c.code())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(list)
}

fn provider_credentials(
    provider: &str,
    secret: secrecy::SecretString,
    key_id: Option<String>,
    endpoint: Option<String>,
    account_id: Option<String>,
) -> anyhow::Result<payhub_store::accounts::Credentials> {
    use payhub_store::accounts::Credentials;
    let unused = |flag: &str, given: bool| {
        if given {
            anyhow::bail!("{flag} does not apply to {provider}")
        }
        Ok(())
    };
    let credentials = match provider {
        "openpix" => {
            unused("--key-id", key_id.is_some())?;
            unused("--endpoint", endpoint.is_some())?;
            unused("--account-id", account_id.is_some())?;
            Credentials::Openpix { app_id: secret }
        }
        "pixelpay" => {
            unused("--account-id", account_id.is_some())?;
            Credentials::Pixelpay {
                key_id: key_id.context("pixelpay needs --key-id (the Key ID of Preferencias > Opciones del API)")?,
                secret_key: secret,
                endpoint: endpoint
                    .unwrap_or_else(|| "https://pixelpay.app".into())
                    .trim_end_matches('/')
                    .to_string(),
            }
        }
        "pagoseguro" => {
            unused("--key-id", key_id.is_some())?;
            unused("--endpoint", endpoint.is_some())?;
            Credentials::Pagoseguro {
                account_id: account_id.context("pagoseguro needs --account-id")?,
                api_key: secret,
            }
        }
        other => anyhow::bail!("unknown provider {other:?}: openpix, pixelpay or pagoseguro"),
    };
    credentials
        .validate()
        .map_err(|(field, why)| anyhow::anyhow!("{field} {why}"))?;
    Ok(credentials)
}

/// A provider endpoint must be https in production.
fn check_provider_endpoint(endpoint: &str) -> anyhow::Result<()> {
    let env = payhub_telemetry::Env::process();
    if env.is_production() && !endpoint.starts_with("https://") {
        anyhow::bail!("--endpoint must be https:// when PAYHUB_ENV=production");
    }
    Ok(())
}

/// An origin a shop's pages are served from, as CSP writes it: https (http
/// only for localhost), host and port, no path.
fn checkout_origin(o: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(o).context("not a URL")?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        anyhow::bail!("must be https (http only for localhost)");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        anyhow::bail!("must be an origin only: scheme, host and port");
    }
    let origin = url.origin();
    anyhow::ensure!(origin.is_tuple(), "has no origin");
    Ok(origin.ascii_serialization())
}
