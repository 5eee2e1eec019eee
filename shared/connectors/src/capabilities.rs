//! What each connector can do, declared in one place (issue 10 §2).
//!
//! Every provider module declares its [`Capabilities`]: the kind of payment
//! it takes ([`Flow`]: a push payment such as PIX, a synchronous card
//! payment, or a redirect checkout), the operations it supports and the
//! currencies it settles. The doors ask [`of`] before they store anything,
//! so that asking a provider for what it cannot do is a field-level error
//! at the door ([`Capabilities::require`]) and never a failure deep in the
//! pipeline; charge-creator asks again before it calls the provider.

use payhub_core::{Currency, PaymentMethod, Provider, ValidationErrors};

/// How a provider is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A charge now, the buyer pays later, the provider's webhook tells
    /// (PIX through OpenPix).
    Push,
    /// The card is charged while the caller waits: sale, or authorise then
    /// capture; void; status (PixelPay's Direct API).
    Card,
    /// The buyer is sent to the provider's page with a signed form or URL,
    /// and comes back with a return payhub verifies (Pago Seguro).
    Redirect,
}

/// One thing payhub may ask a provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create a push charge (a PIX QR code) for the buyer to pay.
    CreateCharge,
    /// Charge a card now.
    Sale,
    /// Reserve the amount on a card, to capture later.
    Authorize,
    /// Take (part of) an authorisation.
    Capture,
    /// Cancel a sale or an authorisation.
    Void,
    /// Give a payment back whole.
    Refund,
    /// Give back part of a payment.
    PartialRefund,
    /// Ask the provider for its own record of one payment (re-query).
    Status,
    /// Register the webhooks payhub needs at the provider, through its API.
    RegisterWebhooks,
    /// Accept a saved-card token instead of a card.
    CardToken,
    /// Send the buyer to the provider's page with a signed form, and check
    /// the return that brings them back.
    RedirectCheckout,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateCharge => "create_charge",
            Operation::Sale => "sale",
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
            Operation::PartialRefund => "partial_refund",
            Operation::Status => "status",
            Operation::RegisterWebhooks => "register_webhooks",
            Operation::CardToken => "card_token",
            Operation::RedirectCheckout => "redirect_checkout",
        }
    }
}

/// What one connector declares about itself.
#[derive(Debug)]
pub struct Capabilities {
    pub provider: Provider,
    pub flow: Flow,
    pub operations: &'static [Operation],
    /// The currencies the provider's public documentation says it settles.
    pub currencies: &'static [Currency],
    /// Whether a merchant account may settle currencies beyond
    /// [`Capabilities::currencies`] (a bank's white-label PixelPay host
    /// serving another country), declared with the account
    /// (`payhubctl shop set-provider ... --currencies`).
    pub account_currencies: bool,
}

impl Capabilities {
    pub fn method(&self) -> PaymentMethod {
        self.provider.method()
    }

    pub fn supports(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    /// `Ok` when the provider supports `op`; otherwise a field error on
    /// `field` that says what the provider does support.
    pub fn require(&self, op: Operation, field: &str) -> Result<(), ValidationErrors> {
        if self.supports(op) {
            return Ok(());
        }
        let mut errors = ValidationErrors::default();
        let offers: Vec<&str> = self.operations.iter().map(|o| o.as_str()).collect();
        errors.push(
            field,
            "unsupported",
            format!(
                "{} does not support {} (it supports: {})",
                self.provider.as_str(),
                op.as_str(),
                offers.join(", ")
            ),
        );
        Err(errors)
    }

    /// Whether an account of this provider settles `currency`: the
    /// documented currencies, or those the account declares (where the
    /// provider allows accounts to declare their own).
    pub fn settles(&self, currency: Currency, declared: Option<&[Currency]>) -> bool {
        match declared {
            Some(list) if self.account_currencies => list.contains(&currency),
            _ => self.currencies.contains(&currency),
        }
    }

    /// [`Capabilities::settles`] as a field error on `field`.
    pub fn require_currency(
        &self,
        currency: Currency,
        declared: Option<&[Currency]>,
        field: &str,
    ) -> Result<(), ValidationErrors> {
        if self.settles(currency, declared) {
            return Ok(());
        }
        let list = match declared {
            Some(list) if self.account_currencies => list,
            _ => self.currencies,
        };
        let names: Vec<&str> = list.iter().map(|c| c.code()).collect();
        let mut errors = ValidationErrors::default();
        errors.push(
            field,
            "unsupported",
            format!(
                "{} settles {} for this shop, not {}",
                self.provider.as_str(),
                names.join(", "),
                currency.code()
            ),
        );
        Err(errors)
    }
}

/// The capabilities of `provider`'s connector.
pub fn of(provider: Provider) -> &'static Capabilities {
    match provider {
        Provider::Openpix => &crate::openpix::CAPABILITIES,
        Provider::Pixelpay => &crate::pixelpay::CAPABILITIES,
        Provider::Pagoseguro => &crate::pagoseguro::CAPABILITIES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_declares_its_flow_and_method() {
        for p in [Provider::Openpix, Provider::Pixelpay, Provider::Pagoseguro] {
            let c = of(p);
            assert_eq!(c.provider, p);
            let expected = match c.flow {
                Flow::Push => PaymentMethod::Pix,
                Flow::Card => PaymentMethod::Card,
                Flow::Redirect => PaymentMethod::Redirect,
            };
            assert_eq!(c.method(), expected, "{p:?}");
            assert!(!c.currencies.is_empty());
        }
        assert_eq!(of(Provider::Openpix).flow, Flow::Push);
        assert_eq!(of(Provider::Pixelpay).flow, Flow::Card);
        let pagoseguro = of(Provider::Pagoseguro);
        assert_eq!(pagoseguro.flow, Flow::Redirect);
        assert!(pagoseguro.settles(Currency::Cop, None) && !pagoseguro.settles(Currency::Brl, None));
        // No status query is documented (providers.md §3.4), so none is declared.
        assert!(!pagoseguro.supports(Operation::Status) && !pagoseguro.supports(Operation::Refund));
    }

    #[test]
    fn asking_for_what_a_provider_lacks_is_a_field_error() {
        let pixelpay = of(Provider::Pixelpay);
        assert!(pixelpay.require(Operation::Sale, "card").is_ok());
        let errs = pixelpay.require(Operation::PartialRefund, "amount").unwrap_err();
        assert!(errs.has("amount", "unsupported"), "{errs}");
        assert!(
            errs.to_string().contains("pixelpay does not support partial_refund"),
            "{errs}"
        );
        let errs = of(Provider::Openpix).require(Operation::Sale, "card").unwrap_err();
        assert!(errs.has("card", "unsupported"), "{errs}");
    }

    #[test]
    fn an_account_may_declare_its_currencies_where_the_provider_allows() {
        let pixelpay = of(Provider::Pixelpay);
        assert!(pixelpay.settles(Currency::Hnl, None));
        assert!(!pixelpay.settles(Currency::Brl, None));
        assert!(pixelpay.settles(Currency::Brl, Some(&[Currency::Brl])));
        assert!(!pixelpay.settles(Currency::Hnl, Some(&[Currency::Brl])));
        let errs = pixelpay.require_currency(Currency::Brl, None, "currency").unwrap_err();
        assert!(errs.to_string().contains("HNL, USD, NIO"), "{errs}");
        // OpenPix accounts are BRL whatever they say.
        let openpix = of(Provider::Openpix);
        assert!(!openpix.settles(Currency::Usd, Some(&[Currency::Usd])));
    }
}
