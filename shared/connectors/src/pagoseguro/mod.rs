//! Pago Seguro (Colombia) web checkout, providers.md §3: the signed form a
//! buyer's browser posts to Pago Seguro, and the check of the untrusted
//! return to `url_response`. Self-contained until the connector trait gains
//! redirect capabilities; no HTTP here (the form is posted by the browser,
//! the return arrives at webhook-verifier).

pub mod transformers;

pub use transformers::{CheckoutForm, FormInput, ReturnCheck, ReturnStatus, ReturnVerdict, verify_return};

/// Pago Seguro's checkout hosts (providers.md §3.2; "sanbox" is their spelling).
pub const PRODUCTION_CHECKOUT_URL: &str =
    "https://www.autorizaciones-pagoseguro.com/pagosegurocanal/public/checkoutpay";
pub const SANDBOX_CHECKOUT_URL: &str = "https://www.sanbox-pagoseguro.com/pagosegurocanal/public/checkoutpay";
