//! payhub's domain: the types every service shares.
//!
//! Values are parsed at the edge into these types; nothing downstream takes a
//! bare `String` for an amount, a tax id or an e-mail address.

pub mod brcode;
pub mod card;
pub mod events;
pub mod fulfilment;
pub mod identity;
pub mod invoice;
pub mod money;
pub mod order;
pub mod order_link;
pub mod rules;
pub mod standard_webhooks;
pub mod url_safety;
pub mod validation;

pub use events::{Envelope, EventPayload};
pub use money::{Currency, Money};
pub use order::{NewOrder, OrderStatus, PaymentMethod, Provider};
pub use validation::{FieldError, ValidationErrors};
