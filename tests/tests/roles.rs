//! Least privilege in PostgreSQL (issue 9 §6): each service's role writes
//! only the tables it owns, and the six services run under their roles.

use payhub_store::roles::ROLES;
use payhub_tests::{TestApp, TestOptions, eventually, sample_order};
use sqlx::Connection;
use std::time::Duration;

const TABLES: [&str; 23] = [
    "shops",
    "orders",
    "order_history",
    "charges",
    "webhook_events",
    "deliveries",
    "processed_events",
    "outbox",
    "report_daily",
    "stale_orders",
    "provider_accounts",
    "provider_webhooks",
    "card_attempts",
    "refunds",
    "provider_health",
    "ledger_lines",
    "ledger_exports",
    "reconciliation_runs",
    "reconciliation_discrepancies",
    "delivery_outcomes",
    "receipts",
    "survey_invitations",
    "survey_answers",
];

/// What each role may do: (table, "insert"|"update"|"update:<column>").
fn allowed(role: &str) -> Vec<(&'static str, &'static str)> {
    let mut a = vec![
        ("outbox", "insert"),
        ("outbox", "update"),
        ("processed_events", "insert"),
    ];
    a.extend(match role {
        "payhub_ingress" => vec![
            ("orders", "insert"),
            ("order_history", "insert"),
            ("survey_answers", "insert"),
        ],
        "payhub_charge_creator" => vec![
            ("charges", "insert"),
            ("charges", "update"),
            ("provider_webhooks", "insert"),
            ("provider_webhooks", "update"),
            ("card_attempts", "insert"),
            ("card_attempts", "update"),
            ("refunds", "insert"),
            ("refunds", "update"),
            ("provider_health", "insert"),
            ("provider_health", "update"),
        ],
        "payhub_webhook_verifier" => vec![("webhook_events", "insert")],
        "payhub_order_updater" => vec![
            ("orders", "update:status"),
            ("orders", "update:status_reason"),
            ("orders", "update:updated_at"),
            ("orders", "update:paid_at"),
            ("orders", "update:end_to_end_id"),
            ("orders", "update:carrier"),
            ("orders", "update:tracking_code"),
            ("orders", "update:tracking_url"),
            ("orders", "update:promised_delivery_on"),
            ("orders", "update:shipped_at"),
            ("orders", "update:delivered_at"),
            ("order_history", "insert"),
            // A move's figures, in the move's transaction (issue 14).
            ("report_daily", "insert"),
            ("report_daily", "update"),
            ("ledger_lines", "insert"),
            ("delivery_outcomes", "insert"),
        ],
        "payhub_notifier" => vec![
            ("deliveries", "insert"),
            ("deliveries", "update"),
            ("receipts", "insert"),
            ("survey_invitations", "insert"),
            ("survey_invitations", "update"),
        ],
        "payhub_reporter" => vec![
            ("report_daily", "insert"),
            ("report_daily", "update"),
            ("stale_orders", "insert"),
            ("stale_orders", "update"),
            ("ledger_lines", "insert"),
            ("ledger_lines", "update"),
            ("ledger_exports", "insert"),
            ("ledger_exports", "update"),
            ("reconciliation_runs", "insert"),
            ("reconciliation_runs", "update"),
            ("reconciliation_discrepancies", "insert"),
            ("reconciliation_discrepancies", "update"),
            ("delivery_outcomes", "insert"),
        ],
        other => panic!("unknown role {other}"),
    });
    a
}

/// Runs `sql` as `role` in a transaction that is rolled back: Ok, or the
/// SQLSTATE of the failure. The probes touch no row (`WHERE false`), so only
/// the privilege check decides.
async fn as_role(conn: &mut sqlx::PgConnection, role: &str, sql: &str) -> Result<(), String> {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    match r {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) => Err(e.code().map(|c| c.to_string()).unwrap_or_default()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// A migrated database of its own (the grants need no broker).
async fn migrated_database() -> (payhub_store::Store, String, String) {
    let name = format!("payhub_test_roles_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", payhub_tests::pg_server_url()))
        .await
        .expect("PostgreSQL must run for the tests");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", payhub_tests::pg_server_url());
    let store = payhub_store::Store::connect_lazy(&url, 2).unwrap();
    store.migrate().await.unwrap();
    (store, url, name)
}

#[tokio::test]
async fn each_service_role_writes_only_its_own_tables() {
    let (store, database_url, name) = migrated_database().await;
    // Twice: the command is idempotent.
    payhub_store::roles::apply(&store).await.unwrap();
    payhub_store::roles::apply(&store).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&database_url).await.unwrap();
    for (_, role) in ROLES {
        let ok = allowed(role);
        for table in TABLES {
            // Every role reads every table.
            as_role(&mut conn, role, &format!("SELECT count(*) FROM {table}"))
                .await
                .unwrap_or_else(|e| panic!("{role} cannot read {table}: {e}"));
            let probes = [
                (
                    "insert",
                    format!("INSERT INTO {table} SELECT * FROM {table} WHERE false"),
                ),
                ("delete", format!("DELETE FROM {table} WHERE false")),
            ];
            for (what, sql) in probes {
                let expect = ok.contains(&(table, what));
                let got = as_role(&mut conn, role, &sql).await;
                match (expect, &got) {
                    (true, Ok(())) => {}
                    (false, Err(code)) if code == "42501" => {}
                    _ => panic!("{role} {what} on {table}: expected allowed={expect}, got {got:?}"),
                }
            }
            let columns: Vec<(String,)> = sqlx::query_as(
                "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (column,) in columns {
                let expect = ok.contains(&(table, "update"))
                    || ok
                        .iter()
                        .any(|(t, w)| *t == table && w.strip_prefix("update:") == Some(column.as_str()));
                let got = as_role(
                    &mut conn,
                    role,
                    &format!("UPDATE {table} SET {column} = {column} WHERE false"),
                )
                .await;
                match (expect, &got) {
                    (true, Ok(())) => {}
                    (false, Err(code)) if code == "42501" => {}
                    _ => panic!("{role} update {table}.{column}: expected allowed={expect}, got {got:?}"),
                }
            }
        }
    }
    // The shops' sealed provider credentials are charge-creator's alone to read.
    for (_, role) in ROLES {
        let got = as_role(&mut conn, role, "SELECT credentials_enc FROM provider_accounts").await;
        match (role == "payhub_charge_creator", &got) {
            (true, Ok(())) => {}
            (false, Err(code)) if code == "42501" => {}
            _ => panic!("{role} reading provider credentials: got {got:?}"),
        }
    }
    // And a real row: order-updater can move a status but not the amount.
    let order_id = uuid::Uuid::now_v7();
    let real = as_role(
        &mut conn,
        "payhub_order_updater",
        &format!("UPDATE orders SET total_minor = 1 WHERE id = '{order_id}'"),
    )
    .await;
    assert_eq!(real, Err("42501".to_string()), "permission denied");
    conn.close().await.unwrap();
    store.pool.close().await;
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", payhub_tests::pg_server_url()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_services_run_under_their_roles() {
    let app = TestApp::spawn_with(TestOptions {
        as_service_roles: true,
        ..TestOptions::default()
    })
    .await;
    // Each service's pool really is its role.
    for (_, role) in ROLES {
        let url = format!("{}?options=-c%20role%3D{role}", app.database_url);
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let (current,): (String,) = sqlx::query_as("SELECT current_user::text")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(current, role);
    }
    // One order all the way: accepted, charged, paid, shop and buyer told,
    // counted; every write made by the service that owns it.
    app.post_order(&sample_order("pedido-roles")).await;
    let order = app.wait_for_status("pedido-roles", "awaiting_payment").await;
    let order_id = order["id"].as_str().unwrap().to_string();
    app.pay_until_acknowledged(&order_id).await;
    app.wait_for_status("pedido-roles", "paid").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            app.count("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await
                >= 3
                && app.count("SELECT count(*) FROM report_daily").await >= 2
        })
        .await,
        "deliveries and daily figures written under the notifier's and reporter's roles"
    );
    app.stop().await;
}
