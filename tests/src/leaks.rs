//! Searching every place data can come to rest for what must never be
//! there (card data, secrets): every table, every queue (work, retry and
//! dead letters), and every log line the in-process services write.

use crate::TestApp;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything every service logs in this test binary, at debug level and
/// finer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Installs the capturing subscriber (once per test binary) and returns it.
pub fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,payhub=trace,ingress=trace,notifier=trace,charge_creator=trace",
            ))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test binary");
        captured
    })
}

/// Every table's rows as text, webhook bodies and outbox events decoded.
pub async fn database_text(app: &TestApp) -> String {
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&app.store.pool)
            .await
            .unwrap();
    let mut all = String::new();
    for (t,) in tables {
        let sql = format!("SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM \"{t}\" x");
        let (text,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&app.store.pool)
            .await
            .unwrap();
        all.push_str(&text);
    }
    for table in ["webhook_events", "outbox"] {
        let sql = format!("SELECT convert_from(body, 'UTF8') FROM {table}");
        let bodies: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&app.store.pool)
            .await
            .unwrap();
        for (b,) in bodies {
            all.push_str(&b);
        }
    }
    all
}

/// What rests in the broker: every dead letter's body and story, after a
/// check that the work and retry queues hold nothing (so nothing else rests
/// there). Every event that ever went over the broker is in the outbox,
/// which [`database_text`] reads.
pub async fn broker_text(app: &TestApp) -> String {
    let admin = app.dead_letter_admin().await;
    let mut all = String::new();
    for d in admin.depths().await.unwrap() {
        assert_eq!((d.ready, d.retrying), (0, 0), "{} still holds messages", d.queue);
    }
    for spec in payhub_queue::QueueSpec::ALL {
        for letter in admin.list(&spec, 1000).await.unwrap() {
            all.push_str(&letter.body);
            all.push_str(&format!("{:?}", letter.story));
        }
    }
    admin.close().await;
    all
}

/// Asserts that none of `needles` is in the database, the broker or the
/// logs (a JSON log escapes quotes, so each is searched both ways).
pub async fn assert_nowhere(app: &TestApp, needles: &[String]) {
    let db = database_text(app).await;
    let broker = broker_text(app).await;
    let logged = logs().text();
    assert!(logged.len() > 10_000, "the log capture works ({} bytes)", logged.len());
    for n in needles {
        let escaped = n.replace('"', "\\\"");
        assert!(!db.contains(n.as_str()), "{n} is in the database");
        assert!(!broker.contains(n.as_str()), "{n} is in a queue");
        assert!(
            !logged.contains(n.as_str()) && !logged.contains(&escaped),
            "{n} is in the logs"
        );
    }
}
