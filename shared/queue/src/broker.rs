//! One supervised broker connection and the confirmed publisher.

use crate::metrics;
use crate::topology::{QueueSpec, Topology, headers};
use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use payhub_core::Envelope;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How long a publish waits for the broker's confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one connection attempt (handshake and exchange declaration) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the broker is not reachable: {0}")]
    Unavailable(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("shutting down")]
    ShuttingDown,
}

struct Inner {
    url: String,
    /// The user payhub connects as (from the URL).
    user: Option<String>,
    name: String,
    topology: Topology,
    current: watch::Sender<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
    connected: AtomicBool,
    shutdown: CancellationToken,
    /// The connection publishes go through, kept apart from the one that
    /// consumes and acks: a memory or disk alarm blocks publishing
    /// connections, and must not stop consumers from acking. `None` on the
    /// publishing handle itself.
    publishing: Option<Broker>,
}

/// The user an `amqp://user:pass@host/vhost` URL connects as (percent-decoded;
/// `guest` when the URL names none, as RabbitMQ clients assume).
pub fn user_of(url: &str) -> Option<String> {
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    Some(uri.authority.userinfo.username).filter(|u| !u.is_empty())
}

/// A handle to the broker, cheap to clone. A background task keeps the
/// connection up: it reconnects with backoff after any failure and
/// re-declares the exchange; consumers re-declare their own queues.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Starts the connection supervisor and returns at once; see
    /// [`Broker::is_connected`] and [`Broker::connection`].
    pub fn start(url: &str, client_name: &str, topology: Topology, shutdown: CancellationToken) -> Broker {
        let publishing = Broker::start_one(
            url,
            &format!("{client_name}-publish"),
            topology.clone(),
            shutdown.clone(),
            None,
        );
        Broker::start_one(url, client_name, topology, shutdown, Some(publishing))
    }

    fn start_one(
        url: &str,
        client_name: &str,
        topology: Topology,
        shutdown: CancellationToken,
        publishing: Option<Broker>,
    ) -> Broker {
        let (tx, _rx) = watch::channel(None);
        let broker = Broker {
            inner: Arc::new(Inner {
                url: url.to_string(),
                user: user_of(url),
                name: client_name.to_string(),
                topology,
                current: tx,
                publisher: Mutex::new(None),
                connected: AtomicBool::new(false),
                shutdown,
                publishing,
            }),
        };
        let b = broker.clone();
        tokio::spawn(async move { b.supervise().await });
        broker
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The RabbitMQ user this broker handle connects as: the only `user-id`
    /// its publishes may carry, and the only one that vouches for a
    /// [`headers::SHOP_USER`] header.
    pub fn user(&self) -> Option<&str> {
        self.inner.user.as_deref()
    }

    /// True while a live connection exists (drives `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed) && self.inner.publishing.as_ref().is_none_or(Broker::is_connected)
    }

    /// Waits for a live connection, or fails when shutting down.
    pub async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut rx = self.inner.current.subscribe();
        loop {
            if let Some(c) = rx.borrow_and_update().as_ref()
                && c.status().connected()
            {
                return Ok(c.clone());
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Err(QueueError::ShuttingDown),
                r = rx.changed() => if r.is_err() { return Err(QueueError::ShuttingDown) },
            }
        }
    }

    /// Waits up to `timeout` for the first connection.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), QueueError> {
        if let Some(p) = &self.inner.publishing {
            Box::pin(p.wait_connected(timeout)).await?;
        }
        tokio::time::timeout(timeout, self.connection())
            .await
            .map_err(|_| QueueError::Unavailable(format!("no connection within {timeout:?}")))?
            .map(|_| ())
    }

    async fn supervise(&self) {
        let inner = &self.inner;
        // `backon` replaces the card's `backoff` crate, which RustSec marks
        // unmaintained (RUSTSEC-2025-0012). Jitter keeps replicas from
        // reconnecting in lockstep after a broker restart.
        let delays = || {
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = delays();
        while !inner.shutdown.is_cancelled() {
            let props = ConnectionProperties::default().with_connection_name(inner.name.as_str().into());
            // A broker still starting may take the TCP connection and never
            // finish the handshake: the attempt is bounded like any other.
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let conn = Connection::connect(&inner.url, props).await?;
                let declared = self.declare_exchange(&conn).await;
                Ok::<_, lapin::Error>((conn, declared))
            })
            .await
            .unwrap_or_else(|_| {
                Err(lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                )))
            });
            match attempt {
                Ok((conn, declared)) => match declared {
                    Ok(()) => {
                        metrics::RECONNECTS.with_label_values(&["ok"]).inc();
                        tracing::info!(client = %inner.name, "connected to the broker");
                        backoff = delays();
                        let conn = Arc::new(conn);
                        inner.current.send_replace(Some(conn.clone()));
                        inner.connected.store(true, Ordering::Relaxed);
                        // Watch the connection until it drops or we stop.
                        loop {
                            tokio::select! {
                                _ = inner.shutdown.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            }
                            if !conn.status().connected() {
                                break;
                            }
                        }
                        inner.connected.store(false, Ordering::Relaxed);
                        inner.current.send_replace(None);
                        *inner.publisher.lock().await = None;
                        if inner.shutdown.is_cancelled() {
                            let _ = conn.close(200, "shutting down".into()).await;
                            return;
                        }
                        tracing::warn!(client = %inner.name, "lost the broker connection; reconnecting");
                    }
                    Err(e) => {
                        metrics::RECONNECTS.with_label_values(&["error"]).inc();
                        tracing::warn!(error = %e, "could not declare the exchange");
                        let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.close(200, "retrying".into())).await;
                    }
                },
                Err(e) => {
                    metrics::RECONNECTS.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "cannot reach the broker; retrying");
                }
            }
            let wait = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = inner.shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn declare_exchange(&self, conn: &Connection) -> Result<(), lapin::Error> {
        let ch = conn.create_channel().await?;
        ch.exchange_declare(
            self.inner.topology.exchange_name(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "declared".into()).await;
        // The whole topology exists before anything is published: a confirm
        // means "routed to at least one queue", so a queue declared only
        // by its own consumer would miss what was published before that
        // consumer first started (see `QueueSpec::ALL`).
        for spec in QueueSpec::ALL {
            let ch = conn.create_channel().await?;
            if let Err(e) = crate::consumer::declare(&ch, self, &spec).await {
                tracing::error!(
                    queue = %self.inner.topology.work_queue(&spec),
                    error = %e,
                    "the queue cannot be declared as configured (an argument differs from the existing queue's?); \
                     staying not-ready until it can"
                );
                return Err(e);
            }
            let _ = ch.close(200, "declared".into()).await;
        }
        Ok(())
    }

    async fn publisher_channel(&self) -> Result<Channel, QueueError> {
        let mut guard = self.inner.publisher.lock().await;
        if let Some(ch) = guard.as_ref()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let conn = self.current_connection()?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    fn current_connection(&self) -> Result<Arc<Connection>, QueueError> {
        match self.inner.current.borrow().as_ref() {
            Some(c) if c.status().connected() => Ok(c.clone()),
            _ => Err(QueueError::Unavailable("not connected".into())),
        }
    }

    /// Publishes an event to the exchange, routing key = its type, and waits
    /// for the broker's confirm.
    pub async fn publish(&self, env: &Envelope) -> Result<(), QueueError> {
        let mut h = FieldTable::default();
        if let Some(tp) = &env.trace.traceparent {
            h.insert(headers::TRACEPARENT.into(), AMQPValue::LongString(tp.as_str().into()));
        }
        let props = BasicProperties::default()
            .with_message_id(env.id.to_string().into())
            .with_type(env.kind().into())
            .with_timestamp(env.occurred_at.unix_timestamp().max(0) as u64)
            .with_headers(h);
        let exchange = self.inner.topology.exchange.clone();
        self.publish_raw(&exchange, env.kind(), &env.to_json(), props).await
    }

    /// Publishes bytes persistently with `mandatory` set and waits for the
    /// confirm. An unroutable message or a nack is an error.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), QueueError> {
        if let Some(p) = &self.inner.publishing {
            return Box::pin(p.publish_raw(exchange, routing_key, body, props)).await;
        }
        let result = self.publish_once(exchange, routing_key, body, props).await;
        let label = match &result {
            Ok(()) => "ok",
            Err(QueueError::Unroutable(_)) => "unroutable",
            Err(QueueError::Nacked) => "nacked",
            Err(_) => "error",
        };
        metrics::PUBLISHED.with_label_values(&[routing_key, label]).inc();
        result
    }

    async fn publish_once(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), QueueError> {
        let props = props.with_delivery_mode(2).with_content_type("application/json".into());
        let publish = async {
            let ch = self.publisher_channel().await?;
            ch.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?
            .await
            .map_err(QueueError::from)
        };
        // A broker that blocks publishers (a memory or disk alarm) or a
        // connection that died unnoticed must not hold the caller forever
        // (opening the publishing channel included: it holds the lock every
        // publish of this process waits on): the outbox relay publishes
        // whatever this gives up on.
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| QueueError::Unavailable(format!("no confirm within {CONFIRM_TIMEOUT:?}")))??;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(QueueError::Unroutable(routing_key.to_string())),
            Confirmation::Nack(_) => Err(QueueError::Nacked),
            Confirmation::NotRequested => Err(QueueError::Unavailable("confirms are not enabled".into())),
        }
    }
}
