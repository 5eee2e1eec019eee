//! The `card` block of `POST /v1/orders` (issue 10 §3): the buyer's card (or
//! a provider's saved-card token) and billing address, checked field by
//! field at the door. The card is read into memory for the one internal call
//! to charge-creator and dropped with the request: it is never part of the
//! order, an event, a log line or an error message.

use payhub_connectors::capabilities::Operation;
use payhub_connectors::internal::{BillingInput, CardInput};
use payhub_core::card::{Card, CardToken};
use payhub_core::{Currency, NewOrder, PaymentMethod, ValidationErrors};
use serde_json::Value;

/// A card payment as the door received it. `Debug` shows the masked card only.
#[derive(Debug)]
pub struct CardPayment {
    pub card: CardInput,
    pub billing: BillingInput,
}

fn text(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The country a currency's buyers are billed in, when the shop does not say.
fn default_country(c: Currency) -> Option<&'static str> {
    match c {
        Currency::Hnl => Some("HN"),
        Currency::Nio => Some("NI"),
        Currency::Brl => Some("BR"),
        Currency::Cop => Some("CO"),
        _ => None,
    }
}

/// Reads `body.card` for `order`: `Ok(None)` for an order paid without a
/// card. Every problem is a field error under `card.*`, none quoting input.
pub fn parse(body: &Value, order: Option<&NewOrder>) -> Result<Option<CardPayment>, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let method = order.map(|o| o.provider.method());
    let block = body.get("card").filter(|v| !v.is_null());
    let Some(block) = block else {
        if method == Some(PaymentMethod::Card) {
            errors.push(
                "card",
                "required",
                "a card payment needs the card (number, cvv, expire, holder) or a token",
            );
            return Err(errors);
        }
        return Ok(None);
    };
    if let Some(o) = order
        && o.provider.method() != PaymentMethod::Card
    {
        errors.push(
            "card",
            "unsupported",
            format!("{} takes no card; use provider pixelpay", o.provider.as_str()),
        );
        return Err(errors);
    }
    let caps = order.map(|o| payhub_connectors::capabilities::of(o.provider));
    let Some(obj) = block.as_object() else {
        errors.push("card", "type", "must be an object");
        return Err(errors);
    };
    let today = time::OffsetDateTime::now_utc().date();
    let card = if let Some(token) = obj.get("token") {
        if let Some(Err(e)) = caps.map(|c| c.require(Operation::CardToken, "card.token")) {
            return Err(e);
        }
        match token.as_str().map(CardToken::parse) {
            Some(Ok(t)) => Some(CardInput::Token {
                token: t.as_str().to_string(),
            }),
            Some(Err(e)) => {
                errors.push("card.token", e.code(), e.to_string());
                None
            }
            None => {
                errors.push("card.token", "type", "must be a string");
                None
            }
        }
    } else {
        let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (number, cvv, expire, holder) = (field("number"), field("cvv"), field("expire"), field("holder"));
        match Card::parse(&number, &cvv, &expire, &holder, today) {
            Ok(c) => Some(CardInput::Card {
                number: c.number.expose().to_string(),
                cvv: c.cvv.expose().to_string(),
                expire: c.expiry.yymm(),
                holder: c.holder.as_str().to_string(),
            }),
            Err(e) => {
                errors.0.extend(e.0);
                None
            }
        }
    };
    let billing = billing(obj, order, &mut errors);
    match (card, billing) {
        (Some(card), Some(billing)) if errors.is_empty() => Ok(Some(CardPayment { card, billing })),
        _ => Err(errors),
    }
}

/// `card.billing`, or the shipping address and the buyer's phone.
fn billing(
    card: &serde_json::Map<String, Value>,
    order: Option<&NewOrder>,
    errors: &mut ValidationErrors,
) -> Option<BillingInput> {
    let given = card.get("billing").and_then(Value::as_object);
    let ship = order.and_then(|o| o.shipping_address.as_ref());
    let pick = |key: &str, fallback: Option<String>| given.and_then(|b| text(b, key)).or(fallback);
    let address = pick("address", ship.map(|a| format!("{} {}", a.street, a.number)));
    let country = pick(
        "country",
        order.and_then(|o| default_country(o.currency)).map(str::to_string),
    );
    let state = pick("state", ship.map(|a| a.state.clone()));
    let city = pick("city", ship.map(|a| a.city.clone()));
    let zip = pick("zip", ship.map(|a| a.zipcode.clone()));
    let phone = pick("phone", order.and_then(|o| o.customer.phone.clone()));
    let mut need = |name: &str, v: &Option<String>, max: usize| match v {
        None => errors.push(
            format!("card.billing.{name}"),
            "required",
            "is required (or give shippingAddress and customer.phone)",
        ),
        Some(s) if s.chars().count() > max || s.chars().any(char::is_control) => errors.push(
            format!("card.billing.{name}"),
            "format",
            format!("must be at most {max} printable characters"),
        ),
        Some(_) => {}
    };
    need("address", &address, 200);
    need("state", &state, 60);
    need("city", &city, 60);
    need("phone", &phone, 30);
    need("country", &country, 2);
    if let Some(c) = &country
        && !(c.len() == 2 && c.chars().all(|ch| ch.is_ascii_uppercase()))
    {
        errors.push(
            "card.billing.country",
            "format",
            "must be an ISO 3166-1 alpha-2 code such as HN",
        );
    }
    Some(BillingInput {
        address: address?,
        country: country?,
        state: state?,
        city: city?,
        zip,
        phone: phone?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(provider: &str, currency: &str) -> Value {
        json!({
            "correlationID": "card-1", "provider": provider, "currency": currency,
            "items": [{"title": "Camiseta Roja", "price": "10.00", "qty": 1, "total": "10.00"}],
            "total": "10.00",
            "customer": {"name": "Dan Silva", "email": "dan@example.com", "taxID": "313.242.270-36",
                         "phone": "(11) 99999-9999"}
        })
    }

    fn billing() -> Value {
        json!({"address": "Col. Palmira 12", "state": "HN-FM", "city": "Tegucigalpa"})
    }

    #[test]
    fn a_card_is_read_with_its_billing_and_never_shown() {
        let mut body = order("pixelpay", "HNL");
        body["card"] = json!({"number": "4111 1111 1111 1111", "cvv": "737", "expire": "3012", "holder": "Dan Silva",
                              "billing": billing()});
        let o = NewOrder::from_json(&body).unwrap();
        let p = parse(&body, Some(&o)).unwrap().unwrap();
        assert_eq!(p.billing.country, "HN");
        let shown = format!("{p:?}");
        assert!(!shown.contains("4111111111111111") && !shown.contains("737"), "{shown}");
        assert!(
            !shown.contains("Palmira") && !shown.contains("5511"),
            "no contact data either: {shown}"
        );
        assert!(shown.contains("4111 •••• •••• 1111"), "{shown}");
    }

    #[test]
    fn card_errors_are_field_level_and_quote_nothing() {
        let mut body = order("pixelpay", "USD");
        body["card"] = json!({"number": "4111111111111112", "cvv": "1", "expire": "1301", "holder": ""});
        let o = NewOrder::from_json(&body).unwrap();
        let errs = parse(&body, Some(&o)).unwrap_err();
        for f in [
            "card.number",
            "card.cvv",
            "card.expire",
            "card.holder",
            "card.billing.country",
        ] {
            assert!(errs.0.iter().any(|e| e.field == f), "{f} in {errs}");
        }
        assert!(!errs.to_string().contains("4111111111111112"), "{errs}");
        // PIX takes no card; a card order needs one.
        let mut pix = order("openpix", "BRL");
        pix["card"] = body["card"].clone();
        let o = NewOrder::from_json(&pix).unwrap();
        assert!(parse(&pix, Some(&o)).unwrap_err().has("card", "unsupported"));
        let bare = order("pixelpay", "HNL");
        let o = NewOrder::from_json(&bare).unwrap();
        assert!(parse(&bare, Some(&o)).unwrap_err().has("card", "required"));
    }

    #[test]
    fn a_token_stands_for_the_card() {
        let mut body = order("pixelpay", "HNL");
        body["card"] = json!({"token": "T-6611b2ec-7d8a-4e1f-9a8c-1d2e3f4a5b6c", "billing": billing()});
        let o = NewOrder::from_json(&body).unwrap();
        assert!(matches!(
            parse(&body, Some(&o)).unwrap().unwrap().card,
            CardInput::Token { .. }
        ));
    }
}
