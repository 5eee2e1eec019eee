//! payhub's typed RabbitMQ layer. Services never touch lapin directly.
//!
//! * [`Topology`] declares the exchange and every queue in one place;
//!   [`permissions`] derives from it what each RabbitMQ user must be granted.
//! * [`Broker`] keeps one connection alive (reconnecting with backoff after a
//!   broker restart) and publishes persistent messages that wait for the
//!   publisher confirm; a nack or an unroutable return is an error.
//! * [`consume`] is the one worker loop: it hands each delivery to a
//!   [`Handler`], acks after the handler's work is committed, and on failure
//!   retries (transient) or dead-letters (permanent, or attempts used up).

mod broker;
mod consumer;
pub mod dead_letters;
pub mod metrics;
pub mod permissions;
mod topology;

pub use broker::{Broker, QueueError, user_of};
pub use consumer::{
    ConsumerOptions, DeadLetterStory, Decode, Failure, Handler, Incoming, ShopMessage, consume, handle_as_batch,
};
pub use permissions::Permissions;
pub use topology::{QueueSpec, RetryPolicy, Source, Topology, headers};
