//! Wake Commerce postbacks: `POST {base}/api/Custom/{chave}` with the
//! payment's status (3 paid, 2 not authorised) and, for reconciliation, the
//! PIX end-to-end id as TID (providers.md §2.4).

use payhub_core::OrderStatus;
use payhub_core::events::OrderStatusChanged;
use serde_json::{Value, json};

/// The postback for this change, if Wake must hear of it: (status, body).
///
/// For a PIX payment the end-to-end id is both TID and NSU; for a card,
/// TID is the provider's transaction id, NSU its payment id (PixelPay's
/// `payment_uuid`) and Auth the authorisation code: "obrigatórios quando
/// existirem", for Wake's reconciliation.
pub fn postback(change: &OrderStatusChanged) -> Option<(u8, Value)> {
    let status = match change.to {
        OrderStatus::Paid => 3,
        OrderStatus::Authorized => 4,
        OrderStatus::Failed | OrderStatus::Expired => 2,
        // Wake asks for refunds itself (its `/chargeback` call); a refund the
        // shop made through payhub has no postback status of its own.
        OrderStatus::Accepted
        | OrderStatus::AwaitingPayment
        | OrderStatus::UnderReview
        | OrderStatus::PartiallyRefunded
        | OrderStatus::Refunded => return None,
        // Fulfilment is the Wake store's own: its postback speaks of payment only.
        OrderStatus::Fulfilling
        | OrderStatus::Shipped
        | OrderStatus::Delivered
        | OrderStatus::Returned
        | OrderStatus::Cancelled => return None,
    };
    let mut info = Vec::new();
    let mut add = |name: &str, value: &str| info.push(json!({"Nome": name, "Valor": value}));
    if let Some(e2e) = &change.end_to_end_id {
        add("TID", e2e);
        add("NSU", e2e);
    } else if let Some(d) = change.details.as_deref()
        && matches!(change.to, OrderStatus::Paid | OrderStatus::Authorized)
    {
        if let Some(tid) = &d.transaction_id {
            add("TID", tid);
        }
        if let Some(nsu) = &d.provider_charge_id {
            add("NSU", nsu);
        }
        if let Some(auth) = &d.auth_code {
            add("Auth", auth);
        }
    }
    if let Some(reason) = &change.reason {
        add("Motivo", reason);
    }
    Some((status, json!({"status": status, "informacoesAdicionais": info})))
}

/// The chave is a GUID; anything else is percent-encoded so it stays one
/// path segment.
pub fn path_segment(chave: &str) -> String {
    chave
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chave_stays_one_segment() {
        assert_eq!(
            path_segment("fe31c0e6-b625-4772-8890-dd7a89053d05"),
            "fe31c0e6-b625-4772-8890-dd7a89053d05"
        );
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
