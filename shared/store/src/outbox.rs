//! The transactional outbox.
//!
//! A service stores the events its work produced in the same transaction as
//! the work, then publishes them after commit. If it dies in between, the
//! [`Relay`] (run by every publishing service) publishes them later. An event
//! may thus be published twice; consumers deduplicate on its id.

use crate::{Store, StoreError};
use payhub_core::Envelope;
use payhub_queue::Broker;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub async fn add(tx: &mut sqlx::PgConnection, env: &Envelope) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (id, routing_key, body) VALUES ($1, $2, $3)")
        .bind(env.id)
        .bind(env.kind())
        .bind(env.to_json())
        .execute(tx)
        .await?;
    Ok(())
}

/// Publishes committed events right after their transaction, and marks them
/// published in batches off the hot path.
///
/// Marking used to be one `UPDATE` (one commit) per event; under load that
/// was a fifth of all commits. Now a background task takes the ids of
/// confirmed events and marks whatever has gathered in one statement. An id
/// not yet marked when the process dies is published again by the relay
/// after its grace; consumers deduplicate on the event id.
#[derive(Clone)]
pub struct Outbox {
    broker: Broker,
    marks: mpsc::UnboundedSender<Uuid>,
}

/// Largest number of ids marked in one statement.
const MARK_BATCH: usize = 1000;

/// Pause after each marking statement.
const MARK_INTERVAL: Duration = Duration::from_millis(200);

impl Outbox {
    /// The handle, and the marking task to run until `shutdown` (it marks
    /// what is left before it returns).
    pub fn new(store: Store, broker: Broker, shutdown: CancellationToken) -> (Outbox, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox { broker, marks: tx }, mark_loop(store, rx, shutdown))
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes committed events now, each confirmed by the broker.
    /// Failures are left for the relay, so the caller may ignore the error;
    /// it is returned for callers that must know (webhook-verifier answers
    /// 200 only after the confirm).
    pub async fn publish_now(&self, events: &[Envelope]) -> Result<(), payhub_queue::QueueError> {
        for env in events {
            self.broker.publish(env).await?;
            // Closed only after shutdown; the relay covers that id.
            let _ = self.marks.send(env.id);
        }
        Ok(())
    }
}

async fn mark_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Uuid>, shutdown: CancellationToken) {
    let mut ids = Vec::with_capacity(MARK_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut ids, MARK_BATCH) => n,
            _ = shutdown.cancelled() => {
                while let Ok(id) = rx.try_recv() {
                    ids.push(id);
                }
                for chunk in ids.chunks(MARK_BATCH) {
                    if let Err(e) = mark_published(&store, chunk).await {
                        tracing::warn!(error = %e, events = chunk.len(), "could not mark published events at shutdown; the relay will publish them again");
                    }
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        if let Err(e) = mark_published(&store, &ids).await {
            tracing::warn!(error = %e, events = ids.len(), "published, but could not mark them; the relay will publish them again");
        }
        ids.clear();
        // Let the next batch gather: at most one marking commit per
        // interval, however low the rate (well inside the relay's grace).
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(MARK_INTERVAL) => {}
        }
    }
}

async fn mark_published(store: &Store, ids: &[Uuid]) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL")
        .bind(ids)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// Publishes events that stayed unpublished for longer than `grace`.
static OLDEST_UNPUBLISHED: std::sync::LazyLock<prometheus::Gauge> = std::sync::LazyLock::new(|| {
    prometheus::register_gauge!(
        "payhub_outbox_oldest_unpublished_seconds",
        "Age of the oldest outbox event not yet confirmed by the broker (0 when none)."
    )
    .expect("metric registers once")
});

static UNPUBLISHED: std::sync::LazyLock<prometheus::IntGauge> = std::sync::LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "payhub_outbox_unpublished",
        "Outbox events not yet confirmed by the broker (the backlog the relay still has to publish)."
    )
    .expect("metric registers once")
});

pub struct Relay {
    pub store: Store,
    pub broker: Broker,
    pub grace: Duration,
    pub interval: Duration,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if !self.broker.is_connected() {
                continue;
            }
            if let Ok((age, count)) = sqlx::query_as::<_, (f64, i64)>(
                "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0), count(*) FROM outbox
                 WHERE published_at IS NULL",
            )
            .fetch_one(&self.store.pool)
            .await
            {
                OLDEST_UNPUBLISHED.set(age);
                UNPUBLISHED.set(count);
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(published = n, "outbox relay published events left behind"),
                Err(e) => tracing::warn!(error = %e, "outbox relay sweep failed"),
            }
        }
    }

    /// One pass: claims a batch with SKIP LOCKED (replicas share the work),
    /// publishes it, marks it. Returns how many were published. A row the
    /// broker refuses (unroutable, nacked) is counted and tried after the
    /// others, so it never holds them back; a lost connection ends the pass.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT id, body FROM outbox WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY publish_attempts, created_at LIMIT 200 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.grace.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let mut done = Vec::new();
        let mut failed: Vec<(Uuid, String)> = Vec::new();
        for (id, body) in rows {
            match Envelope::from_json(&body) {
                Ok(env) => match self.broker.publish(&env).await {
                    Ok(()) => done.push(id),
                    Err(e) if self.broker.is_connected() => {
                        tracing::warn!(error = %e, event_id = %id, "the broker refused an outbox event; trying the others");
                        failed.push((id, e.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "relay publish failed; will try again");
                        break;
                    }
                },
                Err(e) => {
                    // Cannot happen for rows this code wrote; never loop on it.
                    tracing::error!(error = %e, event_id = %id, "unreadable outbox row; marking it to stop retrying");
                    done.push(id);
                }
            }
        }
        if !failed.is_empty() {
            let (ids, errors): (Vec<Uuid>, Vec<String>) = failed.into_iter().unzip();
            sqlx::query(
                "UPDATE outbox o SET publish_attempts = o.publish_attempts + 1, last_error = f.error
                 FROM unnest($1::uuid[], $2::text[]) AS f(id, error) WHERE o.id = f.id",
            )
            .bind(&ids)
            .bind(&errors)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&done)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.len())
    }
}
