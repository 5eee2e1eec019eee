//! One PostgreSQL role per service, allowed to write only what it owns
//! (`roles.sql`, applied by `payhubctl db roles`).

use crate::{Store, StoreError};

/// The grants, as applied.
pub const SQL: &str = include_str!("../roles.sql");

/// The group role of each service: `(service, role)`.
pub const ROLES: [(&str, &str); 6] = [
    ("ingress", "payhub_ingress"),
    ("charge-creator", "payhub_charge_creator"),
    ("webhook-verifier", "payhub_webhook_verifier"),
    ("order-updater", "payhub_order_updater"),
    ("notifier", "payhub_notifier"),
    ("reporter", "payhub_reporter"),
];

/// Creates the roles if missing and sets their grants in this database.
/// Idempotent; run after migrations, as the database owner.
pub async fn apply(store: &Store) -> Result<(), StoreError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(SQL)).execute(&store.pool).await?;
    Ok(())
}
