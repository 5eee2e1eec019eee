//! The records the sandbox keeps and hands to tests: charges, webhook
//! delivery results, webhooks the shop endpoint received, e-mails.

use serde::Serialize;
use time::OffsetDateTime;

/// Charge status strings, as OpenPix spells them.
pub const STATUS_ACTIVE: &str = "ACTIVE";
pub const STATUS_COMPLETED: &str = "COMPLETED";
pub const STATUS_EXPIRED: &str = "EXPIRED";

/// What a webhook target answered to one POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookAttempt {
    pub status: u16,
    pub body: String,
}

/// One charge the provider created, in the sandbox's own (snake_case) form.
/// The OpenPix wire form is rendered from it by the provider routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxCharge {
    pub correlation_id: String,
    /// Charged amount in centavos.
    pub value: i64,
    /// `ACTIVE`, `COMPLETED` or `EXPIRED`.
    pub status: String,
    /// A CRC-valid dynamic PIX BR Code ("copia e cola").
    pub br_code: String,
    /// 32 lowercase hex characters; OpenPix's `transactionID` and `identifier`.
    pub transaction_id: String,
    pub payment_link_id: String,
    pub payment_link_url: String,
    pub qr_code_image_url: String,
    pub global_id: String,
    pub comment: String,
    /// Seconds from creation to expiry, as requested (default 86400).
    pub expires_in: i64,
    /// ISO-8601 UTC with milliseconds, e.g. `2025-09-25T15:08:12.278Z`.
    pub expires_date: String,
    pub created_at: String,
    pub updated_at: String,
    /// The customer as OpenPix echoes it (`taxID` as `{"taxID","type"}`), or `null`.
    pub customer: serde_json::Value,
    /// `[{"key","value"}]` as sent.
    pub additional_info: serde_json::Value,
    /// Set when paid.
    pub paid_at: Option<String>,
    /// What the payer actually sent (`pix.value`); equals `value` unless paid
    /// with [`crate::Sandbox::pay_with_value`].
    pub paid_value: Option<i64>,
    /// The PIX endToEndId of the payment, when paid.
    pub end_to_end_id: Option<String>,
    /// How many webhook POSTs were made for this charge (resends included).
    pub webhooks_sent: u32,
    /// Payments received after the first one (a PIX paid twice), in order.
    pub extra_payments: Vec<ExtraPayment>,
    /// Refunds of this charge (`POST /api/v1/charge/{id}/refund`), in order.
    pub refunds: Vec<SandboxRefund>,
}

/// Refund status strings, as OpenPix spells them for charge refunds.
pub const REFUND_CONFIRMED: &str = "CONFIRMED";
pub const REFUND_IN_PROCESSING: &str = "IN_PROCESSING";

/// One refund of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxRefund {
    /// The refund's own correlationID (its idempotency key at the provider).
    pub correlation_id: String,
    /// Centavos given back.
    pub value: i64,
    /// `CONFIRMED` (or `IN_PROCESSING` under [`crate::Sandbox::refund_process_next`]).
    pub status: String,
    /// The refund's PIX endToEndId (`D...`).
    pub end_to_end_id: String,
    pub comment: Option<String>,
    pub time: String,
}

/// A further PIX payment to a charge that was already paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtraPayment {
    pub end_to_end_id: String,
    pub value: i64,
    pub time: String,
}

/// One request the shop endpoint received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedWebhook {
    /// The `webhook-id` header (empty when absent).
    pub id: String,
    /// The `webhook-timestamp` header (empty when absent).
    pub timestamp: String,
    /// The `webhook-signature` header (empty when absent).
    pub signature: String,
    /// The raw body (lossy UTF-8; verification used the exact bytes).
    pub body: String,
    /// True when the Standard Webhooks signature verified against one of the
    /// configured shop secrets, with a 300 s timestamp tolerance.
    pub verified: bool,
    /// Why verification failed (`None` when verified).
    pub verify_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The status the shop answered: 200 normally, the injected code under a
    /// [`crate::ShopFault::Status`], `None` under [`crate::ShopFault::Hang`].
    pub answered: Option<u16>,
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedEmail {
    /// The reverse-path of `MAIL FROM` without angle brackets (empty for `<>`).
    pub mail_from: String,
    /// The forward-paths of every accepted `RCPT TO`, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as received, CRLF line ends, dot-unstuffed, without the
    /// terminating `.` line.
    pub data: String,
    /// The `Subject:` header, unfolded, RFC 2047 encoded-words decoded where
    /// the charset is UTF-8, US-ASCII or ISO-8859-1.
    pub subject: Option<String>,
}

/// A Wake Commerce postback the shop side received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WakePostback {
    /// The `chave` in the path: Wake's key for the order's payment.
    pub chave: String,
    /// The JSON body (`status`, `informacoesAdicionais`).
    pub body: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}
