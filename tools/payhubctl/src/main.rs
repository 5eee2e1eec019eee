//! payhubctl: the operator's tool. Applies migrations, onboards shops,
//! inspects orders.

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Show an order with its charge, history and deliveries.
    Order {
        /// The payhub order id, or the shop's correlationID together with --shop.
        id: String,
        #[arg(long)]
        shop: Option<uuid::Uuid>,
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
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
                payhub_core::identity::Email::parse(a)
                    .map_err(|e| anyhow::anyhow!("--admin-email {e}"))?;
            }
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            let created = payhub_store::shops::create(
                &store,
                &name,
                webhook_url.as_deref(),
                admin_email.as_deref(),
            )
            .await?;
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
                println!(
                    "webhook secret (shown once): {}",
                    created.shop.webhook_secret.expose()
                );
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
        Command::Order { id, shop } => {
            let store = Store::connect_lazy(&cli.database_url, 2)?;
            let order_id: Option<(uuid::Uuid,)> = match (uuid::Uuid::parse_str(&id), shop) {
                (_, Some(shop)) => {
                    sqlx::query_as(
                        "SELECT id FROM orders WHERE shop_id = $1 AND correlation_id = $2",
                    )
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
