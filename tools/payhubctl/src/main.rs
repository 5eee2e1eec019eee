//! payhubctl: the operator's tool. Applies migrations, onboards shops,
//! inspects orders.

use anyhow::Context;
use clap::{Parser, Subcommand};
use payhub_queue::QueueSpec;
use payhub_queue::dead_letters::{DeadLetterAdmin, Filter};
use payhub_store::Store;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "payhubctl", version, about = "Operate a payhub installation")]
struct Cli {
    /// PostgreSQL URL.
    #[arg(long, env = "PAYHUB_DATABASE_URL", default_value = payhub_service::DEFAULT_DATABASE_URL, global = true)]
    database_url: String,
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
    /// Inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Show an order with its charge, history and deliveries.
    Order {
        /// The payhub order id, or the shop's correlationID together with --shop.
        id: String,
        #[arg(long)]
        shop: Option<uuid::Uuid>,
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

#[derive(Subcommand)]
enum ShopCommand {
    /// Create a shop; prints its API key and webhook secret once.
    Create {
        #[arg(long)]
        name: String,
        /// Where order status webhooks are POSTed.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Who receives alerts about blocked orders.
        #[arg(long)]
        admin_email: Option<String>,
        /// Print the result as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// List shops (never their secrets).
    List,
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
        Command::Shop(ShopCommand::Create {
            name,
            webhook_url,
            admin_email,
            json,
        }) => {
            if let Some(url) = &webhook_url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                anyhow::bail!("--webhook-url must be an http(s) URL");
            }
            if let Some(a) = &admin_email {
                payhub_core::identity::Email::parse(a).map_err(|e| anyhow::anyhow!("--admin-email {e}"))?;
            }
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            let created =
                payhub_store::shops::create(&store, &name, webhook_url.as_deref(), admin_email.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    json!({
                        "id": created.shop.id,
                        "name": created.shop.name,
                        "apiKey": created.api_key,
                        "webhookSecret": created.shop.webhook_secret.expose(),
                    })
                );
            } else {
                println!("shop created: {}", created.shop.id);
                println!("API key (shown once):        {}", created.api_key);
                println!("webhook secret (shown once): {}", created.shop.webhook_secret.expose());
            }
            Ok(())
        }
        Command::Shop(ShopCommand::List) => {
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            for s in payhub_store::shops::list(&store).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    s.id,
                    if s.active { "active" } else { "disabled" },
                    s.name,
                    s.webhook_url.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        Command::Dlq(cmd) => dlq(cmd).await,
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
