//! Operator access to the parking lots: counts, inspection, replay, purge.
//!
//! Inspection reads messages without acking them and closes the channel,
//! which hands them back to the queue untouched. Replay republishes a dead
//! letter straight into its consumer's work queue (not the exchange, so other
//! consumers of the same event are not disturbed), with its failure headers
//! cleared so attempts start afresh, and acks it only after the broker
//! confirmed the copy. Consumers are idempotent, so replaying an effect that
//! had in fact completed is a no-op.

use crate::consumer::DeadLetterStory;
use crate::topology::{QueueSpec, Topology, headers};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;

/// Header counting how often a message was replayed by an operator.
pub const REPLAYED: &str = "x-payhub-replayed";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm the replayed message")]
    NotConfirmed,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueDepths {
    pub queue: String,
    pub ready: u32,
    pub retrying: u32,
    pub dead_letters: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub story: DeadLetterStory,
    pub replayed: u32,
    /// The message body as text (event JSON, or whatever poison arrived).
    pub body: String,
}

/// What to replay; every given criterion must match. No criterion: all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub event_type: Option<String>,
    pub error_contains: Option<String>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.message_id
            .as_ref()
            .is_none_or(|m| d.message_id.as_deref() == Some(m.as_str()))
            && self
                .reason
                .as_ref()
                .is_none_or(|r| d.story.reason.as_deref() == Some(r.as_str()))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| d.event_type.as_deref() == Some(t.as_str()))
            && self
                .error_contains
                .as_ref()
                .is_none_or(|e| d.story.errors.iter().any(|x| x.contains(e.as_str())))
    }
}

pub struct DeadLetterAdmin {
    conn: Connection,
    topology: Topology,
    /// The user the admin connects as: replayed copies carry it as their
    /// `user-id`, and the shop's user in [`headers::SHOP_USER`].
    user: Option<String>,
}

fn read(props: &BasicProperties, data: &[u8]) -> DeadLetter {
    let empty = FieldTable::default();
    let h = props.headers().as_ref().unwrap_or(&empty);
    let mut story = DeadLetterStory::from_headers(h);
    if story.reason.is_none() && h.inner().contains_key("x-death") {
        // Parked by the broker itself: redelivered past x-delivery-limit.
        story.reason = Some("delivery_limit".into());
    }
    let replayed = match h.inner().get(REPLAYED) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    DeadLetter {
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
        event_type: props.kind().as_ref().map(|s| s.as_str().to_string()),
        story,
        replayed,
        body: String::from_utf8_lossy(data).into_owned(),
    }
}

impl DeadLetterAdmin {
    pub async fn connect(url: &str, topology: Topology) -> Result<DeadLetterAdmin, DeadLetterError> {
        let conn = Connection::connect(
            url,
            ConnectionProperties::default().with_connection_name("payhubctl".into()),
        )
        .await?;
        Ok(DeadLetterAdmin {
            conn,
            topology,
            user: crate::broker::user_of(url),
        })
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }

    /// Ready messages in `queue`. Messages a channel still holds unacked
    /// (a `list` whose channel close the broker has not applied yet) are
    /// not counted, so a `replay` does not take them.
    pub async fn depth(&self, queue: &str) -> Result<u32, DeadLetterError> {
        let ch = self.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let n = match q {
            Ok(q) => q.message_count(),
            Err(_) => 0, // not declared yet: nothing in it
        };
        let _ = ch.close(200, "ok".into()).await;
        Ok(n)
    }

    pub async fn depths(&self) -> Result<Vec<QueueDepths>, DeadLetterError> {
        let mut out = Vec::new();
        for spec in QueueSpec::ALL {
            out.push(QueueDepths {
                queue: self.topology.work_queue(&spec),
                ready: self.depth(&self.topology.work_queue(&spec)).await?,
                retrying: self.depth(&self.topology.retry_queue(&spec)).await?,
                dead_letters: self.depth(&self.topology.dead_letter_queue(&spec)).await?,
            });
        }
        Ok(out)
    }

    /// Up to `limit` dead letters of `spec`, left in place.
    pub async fn list(&self, spec: &QueueSpec, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let ch = self.conn.create_channel().await?;
        let dlq = self.topology.dead_letter_queue(spec);
        let mut out = Vec::new();
        while out.len() < limit {
            match ch
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
            {
                Some(m) => out.push(read(&m.delivery.properties, &m.delivery.data)),
                None => break,
            }
        }
        // Closing without acks returns every message to the queue.
        let _ = ch.close(200, "inspected".into()).await;
        Ok(out)
    }

    /// Replays the dead letters of `spec` that match `filter` into the work
    /// queue. Returns how many were replayed. At most what was in the
    /// dead-letter queue when it started is looked at: a replayed message
    /// that fails again and comes back is not replayed a second time by
    /// the same run (which would otherwise never end).
    pub async fn replay(&self, spec: &QueueSpec, filter: &Filter) -> Result<usize, DeadLetterError> {
        let dlq = self.topology.dead_letter_queue(spec);
        let work = self.topology.work_queue(spec);
        let there = self.depth(&dlq).await?;
        let get = self.conn.create_channel().await?;
        let publish = self.conn.create_channel().await?;
        publish.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut replayed = 0;
        let mut looked = 0u32;
        while looked < there
            && let Some(m) = get
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
        {
            looked += 1;
            let d = read(&m.delivery.properties, &m.delivery.data);
            if !filter.matches(&d) {
                continue; // stays unacked; returned when the channel closes
            }
            let mut h = FieldTable::default();
            if let Some(old) = m.delivery.properties.headers() {
                for (k, v) in old.inner() {
                    let k = k.as_str();
                    let keep = k == headers::ORIGINAL_ROUTING_KEY
                        || k == headers::TRACEPARENT
                        || k == headers::SHOP_USER
                        || !(k.starts_with("x-payhub-")
                            || k == "x-death"
                            || k.starts_with("x-first-death")
                            || k.starts_with("x-last-death"));
                    if keep {
                        h.insert(k.into(), v.clone());
                    }
                }
            }
            h.insert(REPLAYED.into(), AMQPValue::LongLongInt(i64::from(d.replayed + 1)));
            h.insert(
                headers::COPY_ID.into(),
                AMQPValue::LongString(uuid::Uuid::new_v4().to_string().as_str().into()),
            );
            // The replayed copy is published under our user, so the shop's
            // identity travels in the header (see `carry_shop_user`).
            let h = crate::consumer::carry_shop_user(
                h,
                m.delivery.properties.user_id().as_ref().map(|u| u.as_str()),
                self.user.as_deref(),
            );
            let mut props = BasicProperties::default()
                .with_headers(h)
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(own) = &self.user {
                props = props.with_user_id(own.as_str().into());
            }
            if let Some(id) = m.delivery.properties.message_id() {
                props = props.with_message_id(id.clone());
            }
            if let Some(t) = m.delivery.properties.kind() {
                props = props.with_type(t.clone());
            }
            let confirm = publish
                .basic_publish(
                    "".into(),
                    work.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.delivery.data,
                    props,
                )
                .await?
                .await?;
            if !matches!(confirm, Confirmation::Ack(None)) {
                return Err(DeadLetterError::NotConfirmed);
            }
            m.delivery.acker.ack(BasicAckOptions::default()).await?;
            replayed += 1;
        }
        let _ = get.close(200, "replayed".into()).await;
        let _ = publish.close(200, "replayed".into()).await;
        Ok(replayed)
    }

    /// Deletes every dead letter of `spec`. Returns how many.
    pub async fn purge(&self, spec: &QueueSpec) -> Result<u32, DeadLetterError> {
        let ch = self.conn.create_channel().await?;
        let n = ch
            .queue_purge(
                self.topology.dead_letter_queue(spec).as_str().into(),
                QueuePurgeOptions::default(),
            )
            .await?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(n)
    }
}
