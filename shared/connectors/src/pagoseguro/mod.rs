//! Pago Seguro (Colombia) web checkout, providers.md §3: the signed form a
//! buyer's browser posts to Pago Seguro, and the check of the untrusted
//! return to `url_response`. No HTTP here: the form is posted by the
//! buyer's browser from payhub's checkout page (ingress), the return
//! arrives at webhook-verifier, and charge-creator (which alone holds the
//! shop's API key) signs the one and checks the other.
//!
//! The return's `sign` does not cover `status` (§3.3), and §3.4 documents
//! no transaction-status query: a return can never pay an order.

pub mod transformers;

use crate::capabilities::{Capabilities, Flow, Operation};

/// A redirect checkout in COP; no refund, no status query (none documented).
pub const CAPABILITIES: Capabilities = Capabilities {
    provider: payhub_core::Provider::Pagoseguro,
    flow: Flow::Redirect,
    operations: &[Operation::RedirectCheckout],
    currencies: &[payhub_core::Currency::Cop],
    account_currencies: false,
};

/// The order's reference at Pago Seguro (`txnid`, at most 20 characters):
/// the last 20 hex digits of the order's UUID (its random part), so that it
/// is derived again from the order and never needs a lookup table.
pub fn reference(order_id: uuid::Uuid) -> String {
    let hex = order_id.simple().to_string();
    hex[hex.len() - 20..].to_string()
}

pub use transformers::{CheckoutForm, FormInput, ReturnCheck, ReturnStatus, ReturnVerdict, verify_return};

/// Pago Seguro's checkout hosts (providers.md §3.2; "sanbox" is their spelling).
pub const PRODUCTION_CHECKOUT_URL: &str =
    "https://www.autorizaciones-pagoseguro.com/pagosegurocanal/public/checkoutpay";
pub const SANDBOX_CHECKOUT_URL: &str = "https://www.sanbox-pagoseguro.com/pagosegurocanal/public/checkoutpay";
