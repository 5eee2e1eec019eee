//! The whole RabbitMQ topology, every argument explained.
//!
//! ```text
//!   publishers ──► exchange (topic, durable) ──routing key = event type──► <q>
//!   <q> ──transient failure──► <q>.retry ──x-message-ttl expires──► <q>
//!   <q> ──permanent failure / attempts used up──► <q>.dlq (parked for an operator)
//!   <q> ──redelivered more than x-delivery-limit times (consumer crash loop)──► <q>.dlq
//! ```

use lapin::types::{AMQPValue, FieldTable, ShortString};
use std::time::Duration;

/// Message headers payhub sets. Every name is documented here.
pub mod headers {
    /// Which attempt this delivery is (1 for the first).
    pub const ATTEMPT: &str = "x-payhub-attempt";
    /// The routing key the message was first published with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-payhub-original-routing-key";
    /// One entry per failed attempt: "<rfc3339> attempt <n>: <error>".
    pub const ERRORS: &str = "x-payhub-errors";
    pub const FIRST_FAILURE: &str = "x-payhub-first-failure";
    pub const LAST_FAILURE: &str = "x-payhub-last-failure";
    /// The service that gave up on the message.
    pub const FAILED_BY: &str = "x-payhub-failed-by";
    /// Why it was dead-lettered: `permanent`, `attempts_exhausted`, `unparseable`.
    pub const DEAD_LETTER_REASON: &str = "x-payhub-dead-letter-reason";
    /// W3C trace context of the publisher.
    pub const TRACEPARENT: &str = "traceparent";
    /// The shop's RabbitMQ user, carried when payhub itself republishes a
    /// shop's message (retry queue, dead letters, replay): RabbitMQ only
    /// lets a publisher set its own `user-id`, so the shop's cannot travel
    /// in the property. Trusted only on messages whose `user-id` is
    /// payhub's own broker user, which no shop can publish as.
    pub const SHOP_USER: &str = "x-payhub-shop-user";
    /// A fresh id on every copy payhub republishes (retry, dead letter,
    /// hand-back, replay): tells one physical message from another with the
    /// same event id and attempt.
    pub const COPY_ID: &str = "x-payhub-copy-id";
}

/// How failures are retried: PixelPay's contract by default (a new attempt
/// 5 minutes later, 3 attempts in all). Tests shorten the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delay: Duration,
    pub max_attempts: u32,
    /// Redeliveries after which a quorum queue dead-letters a message that
    /// keeps crashing its consumer before it can be acked.
    pub delivery_limit: u32,
    /// How long a consumer holds a delivery in place while a dependency
    /// (the database) is unavailable before it hands the message back to
    /// its queue, without using an attempt: well under RabbitMQ's
    /// `consumer_timeout` (30 min by default), past which the broker would
    /// close the channel.
    pub hold_limit: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delay: Duration::from_secs(300),
            max_attempts: 3,
            delivery_limit: 5,
            hold_limit: Duration::from_secs(600),
        }
    }
}

/// Which exchange a queue is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// payhub's own events.
    Events,
    /// Order messages that shops publish (see docs/contracts/).
    ShopOrders,
}

/// One consumer queue and the routing keys bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub base: &'static str,
    pub bindings: &'static [&'static str],
    /// Routing keys an earlier version bound and this one removes, so an
    /// upgraded broker stops routing them here.
    pub retired_bindings: &'static [&'static str],
    pub source: Source,
}

impl QueueSpec {
    pub const CHARGE_CREATOR: QueueSpec = QueueSpec {
        base: "charge-creator.orders",
        // invoice.requested: a paid order's invoice (issue 12 §3), asked of
        // the shop's invoicing service with the same retries. order-updater
        // publishes it only for shops that invoice through payhub, so no
        // other status change reaches this queue (issue 14).
        bindings: &["order.accepted", "invoice.requested"],
        retired_bindings: &["order.status_changed"],
        source: Source::Events,
    };
    pub const ORDER_UPDATER: QueueSpec = QueueSpec {
        base: "order-updater.events",
        // refund.failed changes no order, but every event must reach a
        // queue (publishes are mandatory): order-updater takes it as a no-op.
        bindings: &[
            "charge.created",
            "charge.failed",
            "payment.reported",
            "payment.authorized",
            "refund.completed",
            "refund.failed",
            // A shop's report of its paid order's fulfilment (issue 12).
            "fulfilment.reported",
        ],
        retired_bindings: &[],
        source: Source::Events,
    };
    pub const NOTIFIER: QueueSpec = QueueSpec {
        base: "notifier.status",
        bindings: &[
            "order.status_changed",
            "order.rejected",
            "alert.raised",
            "survey.answered",
            // Issue 12: an invoice issued or failed; a survey due after payment.
            "invoice.updated",
            "survey.due",
            "report.ready",
            // Issue 11 §2: payhub's own e-mail about a Pago Seguro return.
            "pagoseguro.returned",
        ],
        retired_bindings: &[],
        source: Source::Events,
    };
    pub const REPORTER: QueueSpec = QueueSpec {
        base: "reporter.events",
        // Nothing any more (issue 14): order-updater records each status
        // move's figures (report rows, ledger lines, delivery outcomes) in
        // the move's own transaction, and new orders are counted from the
        // orders table when the report is read. The queue stays, consumed,
        // so that what an earlier version routed here is still counted
        // (once: see payhub_store::figures).
        bindings: &[],
        retired_bindings: &[
            "order.status_changed",
            "charge.created",
            "charge.failed",
            "payment.reported",
            "order.accepted",
        ],
        source: Source::Events,
    };
    /// Orders shops publish; every routing key (shops may use their own).
    pub const INGRESS_ORDERS: QueueSpec = QueueSpec {
        base: "ingress.shop-orders",
        bindings: &["#"],
        retired_bindings: &[],
        source: Source::ShopOrders,
    };
    pub const ALL: [QueueSpec; 5] = [
        QueueSpec::INGRESS_ORDERS,
        QueueSpec::CHARGE_CREATOR,
        QueueSpec::ORDER_UPDATER,
        QueueSpec::NOTIFIER,
        QueueSpec::REPORTER,
    ];
}

/// Names and arguments of everything payhub declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The durable topic exchange every event is published to.
    pub exchange: String,
    /// The durable topic exchange shops publish their order messages to.
    pub orders_exchange: String,
    /// Prepended to every queue name; lets tests (and several payhub
    /// installations on one vhost) keep their queues apart.
    pub prefix: String,
    pub retry: RetryPolicy,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            exchange: "payhub.events".into(),
            orders_exchange: "payhub.orders".into(),
            prefix: String::new(),
            retry: RetryPolicy::default(),
        }
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

impl Topology {
    pub fn work_queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.base)
    }

    pub fn retry_queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}.retry", self.prefix, spec.base)
    }

    pub fn dead_letter_queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}.dlq", self.prefix, spec.base)
    }

    /// The work queue: where consumers read.
    pub fn work_args(&self, spec: &QueueSpec) -> FieldTable {
        let mut t = FieldTable::default();
        // Replicated, durable, and able to count deliveries.
        t.insert("x-queue-type".into(), long_string("quorum"));
        // A message the broker itself dead-letters (delivery limit reached)
        // goes to the parking lot through the default exchange.
        t.insert("x-dead-letter-exchange".into(), long_string(""));
        t.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.dead_letter_queue(spec)),
        );
        // Dead-lettering waits for the target's confirm: never lost on the way.
        t.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
        // at-least-once dead-lettering requires reject-publish overflow.
        t.insert("x-overflow".into(), long_string("reject-publish"));
        // A message redelivered this many times (its consumer keeps dying
        // before the ack) is dead-lettered instead of looping forever.
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.retry.delivery_limit as i32),
        );
        t
    }

    /// The retry queue: nobody consumes it; messages wait out the TTL and
    /// are dead-lettered back into the work queue.
    pub fn retry_args(&self, spec: &QueueSpec) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), long_string("quorum"));
        // The retry delay: PixelPay's 5 minutes by default.
        t.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(self.retry.delay.as_millis() as i64),
        );
        t.insert("x-dead-letter-exchange".into(), long_string(""));
        t.insert("x-dead-letter-routing-key".into(), long_string(&self.work_queue(spec)));
        t.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
        t.insert("x-overflow".into(), long_string("reject-publish"));
        t
    }

    /// The dead-letter queue: parked until an operator replays or purges.
    pub fn dead_letter_args(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), long_string("quorum"));
        t
    }

    pub fn exchange_name(&self) -> ShortString {
        self.exchange.as_str().into()
    }

    /// The exchange a queue's bindings refer to.
    pub fn source_exchange(&self, spec: &QueueSpec) -> &str {
        match spec.source {
            Source::Events => &self.exchange,
            Source::ShopOrders => &self.orders_exchange,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(t: &'a FieldTable, k: &str) -> &'a AMQPValue {
        t.inner().get(k).unwrap_or_else(|| panic!("{k} missing"))
    }

    #[test]
    fn defaults_are_pixelpay_style() {
        let topo = Topology::default();
        assert_eq!(topo.retry.delay, Duration::from_secs(300));
        assert_eq!(topo.retry.max_attempts, 3);
        let spec = QueueSpec::NOTIFIER;
        let retry = topo.retry_args(&spec);
        assert_eq!(get(&retry, "x-message-ttl"), &AMQPValue::LongLongInt(300_000));
        assert_eq!(
            get(&retry, "x-dead-letter-routing-key"),
            &long_string("notifier.status")
        );
        let work = topo.work_args(&spec);
        assert_eq!(get(&work, "x-queue-type"), &long_string("quorum"));
        assert_eq!(get(&work, "x-dead-letter-strategy"), &long_string("at-least-once"));
        assert_eq!(get(&work, "x-overflow"), &long_string("reject-publish"));
        assert_eq!(
            get(&work, "x-dead-letter-routing-key"),
            &long_string("notifier.status.dlq")
        );
        assert_eq!(topo.dead_letter_queue(&spec), "notifier.status.dlq");
    }

    #[test]
    fn charge_creator_gets_invoice_requests_not_every_status_change() {
        // Issue 14: every order.status_changed used to reach charge-creator
        // (two useless deliveries per order); an upgraded broker unbinds it.
        let spec = QueueSpec::CHARGE_CREATOR;
        assert!(spec.bindings.contains(&"invoice.requested"));
        assert!(!spec.bindings.contains(&"order.status_changed"));
        assert!(spec.retired_bindings.contains(&"order.status_changed"));
        for spec in QueueSpec::ALL {
            for key in spec.retired_bindings {
                assert!(
                    !spec.bindings.contains(key),
                    "{} both binds and retires {key}",
                    spec.base
                );
            }
        }
    }

    #[test]
    fn prefix_applies_to_every_queue() {
        let topo = Topology {
            prefix: "t1.".into(),
            ..Topology::default()
        };
        assert_eq!(topo.work_queue(&QueueSpec::REPORTER), "t1.reporter.events");
        assert_eq!(topo.retry_queue(&QueueSpec::REPORTER), "t1.reporter.events.retry");
    }
}
