//! The transactional outbox.
//!
//! A service stores the events its work produced in the same transaction as
//! the work, then publishes them after commit. If it dies in between, the
//! [`Relay`] (run by every publishing service) publishes them later. An event
//! may thus be published twice; consumers deduplicate on its id.

use crate::{Store, StoreError};
use payhub_core::Envelope;
use payhub_queue::Broker;
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub async fn add(tx: &mut Transaction<'_, Postgres>, env: &Envelope) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (id, routing_key, body) VALUES ($1, $2, $3)")
        .bind(env.id)
        .bind(env.kind())
        .bind(env.to_json())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Publishes committed events now. Failures are left for the relay, so the
/// caller may ignore the error; it is returned for callers that must know
/// (webhook-verifier answers 200 only after the confirm).
pub async fn publish_now(store: &Store, broker: &Broker, events: &[Envelope]) -> Result<(), payhub_queue::QueueError> {
    for env in events {
        broker.publish(env).await?;
        if let Err(e) = mark_published(store, &[env.id]).await {
            tracing::warn!(error = %e, event_id = %env.id, "published, but could not mark it; the relay will publish it again");
        }
    }
    Ok(())
}

async fn mark_published(store: &Store, ids: &[Uuid]) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// Publishes events that stayed unpublished for longer than `grace`.
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
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(published = n, "outbox relay published events left behind"),
                Err(e) => tracing::warn!(error = %e, "outbox relay sweep failed"),
            }
        }
    }

    /// One pass: claims a batch with SKIP LOCKED (replicas share the work),
    /// publishes it, marks it. Returns how many were published.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT id, body FROM outbox WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 200 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.grace.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let mut done = Vec::new();
        for (id, body) in rows {
            match Envelope::from_json(&body) {
                Ok(env) => match self.broker.publish(&env).await {
                    Ok(()) => done.push(id),
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
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&done)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.len())
    }
}
