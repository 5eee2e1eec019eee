//! Fault injection: how the shop endpoint and the provider's charge API
//! misbehave on request, and the shutdown-aware wait behind "never answer".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The longest a hanging request is held (then it is answered 503 anyway).
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(10 * 60);

/// How the shop endpoint (`POST /shop/webhooks`) misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShopFault {
    /// Answer this status code (e.g. 500, 503, 302). 3xx answers carry a
    /// `Location` to a page that answers 200 without recording anything, so
    /// a sender that follows redirects believes it delivered. Codes outside
    /// 200..=599 become 500.
    Status(u16),
    /// Accept the request and never answer: the connection is held until the
    /// client gives up (at most 10 minutes, or until the sandbox stops).
    Hang,
}

/// How the provider's `POST /api/v1/charge` misbehaves. A faulted request
/// creates no charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderFault {
    /// Answer this status code (e.g. 500, 503, 429) with `{"error": "..."}`.
    /// Codes outside 200..=599 become 500.
    Status(u16),
    /// Hold the request without answering until the client times out (at
    /// most 10 minutes, or until the sandbox stops).
    Timeout,
}

/// How the PixelPay-compatible API (`POST /api/v2/transaction/...`)
/// misbehaves. Every call there (sale, auth, capture, void, status) uses up
/// one request of the plan, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PixelPayFault {
    /// Answer this status code without doing anything (nothing is charged).
    /// Codes outside 200..=599 become 500.
    Status(u16),
    /// Hold the request without doing anything until the client times out
    /// (at most 10 minutes, or until the sandbox stops): nothing is charged.
    Hang,
    /// Do the call as usual (a sale is charged, an auth authorised ...), then
    /// answer this status code with a body that carries no `payment_uuid`:
    /// the money moved but the answer was lost.
    ApproveButAnswer(u16),
    /// Do the call as usual, then hold the answer until the client times out.
    ApproveThenHang,
    /// Answer this status code with a `message` that quotes the raw request
    /// body and the `x-auth-hash` header, as a careless server might: the
    /// client must never copy such a message into its errors unscrubbed.
    EchoRequest(u16),
}

/// Codes the sandbox can answer as a final response.
fn valid_status(code: u16) -> bool {
    (200..=599).contains(&code)
}

/// A fault kind: how it is named over HTTP and what it answers.
pub(crate) trait Fault: Copy + std::fmt::Debug {
    /// The `"mode"` of the control routes.
    fn mode(&self) -> &'static str;
    /// The status code answered, `None` when the request is held.
    fn status(&self) -> Option<u16>;
    /// The same fault with an answerable status code (out-of-range codes
    /// become 500, with a warning).
    fn sanitized(self) -> Self;
}

impl Fault for ShopFault {
    fn mode(&self) -> &'static str {
        match self {
            ShopFault::Status(_) => "status",
            ShopFault::Hang => "hang",
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            ShopFault::Status(code) => Some(*code),
            ShopFault::Hang => None,
        }
    }

    fn sanitized(self) -> Self {
        match self {
            ShopFault::Status(code) if !valid_status(code) => {
                tracing::warn!(code, "the shop cannot answer that status; using 500");
                ShopFault::Status(500)
            }
            other => other,
        }
    }
}

impl Fault for ProviderFault {
    fn mode(&self) -> &'static str {
        match self {
            ProviderFault::Status(_) => "status",
            ProviderFault::Timeout => "timeout",
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            ProviderFault::Status(code) => Some(*code),
            ProviderFault::Timeout => None,
        }
    }

    fn sanitized(self) -> Self {
        match self {
            ProviderFault::Status(code) if !valid_status(code) => {
                tracing::warn!(code, "the provider cannot answer that status; using 500");
                ProviderFault::Status(500)
            }
            other => other,
        }
    }
}

impl Fault for PixelPayFault {
    fn mode(&self) -> &'static str {
        match self {
            PixelPayFault::Status(_) => "status",
            PixelPayFault::Hang => "hang",
            PixelPayFault::ApproveButAnswer(_) => "approve-but-answer",
            PixelPayFault::ApproveThenHang => "approve-then-hang",
            PixelPayFault::EchoRequest(_) => "echo-request",
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            PixelPayFault::Status(code) | PixelPayFault::ApproveButAnswer(code) | PixelPayFault::EchoRequest(code) => {
                Some(*code)
            }
            PixelPayFault::Hang | PixelPayFault::ApproveThenHang => None,
        }
    }

    fn sanitized(self) -> Self {
        let fix = |code: u16| {
            if valid_status(code) {
                code
            } else {
                tracing::warn!(code, "the PixelPay simulator cannot answer that status; using 500");
                500
            }
        };
        match self {
            PixelPayFault::Status(code) => PixelPayFault::Status(fix(code)),
            PixelPayFault::ApproveButAnswer(code) => PixelPayFault::ApproveButAnswer(fix(code)),
            PixelPayFault::EchoRequest(code) => PixelPayFault::EchoRequest(fix(code)),
            other => other,
        }
    }
}

/// How many requests a fault still applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Next(u32),
    Always,
}

/// The active fault of one endpoint, if any.
#[derive(Debug)]
pub(crate) struct FaultPlan<F> {
    active: Option<(F, Budget)>,
}

impl<F> Default for FaultPlan<F> {
    fn default() -> Self {
        FaultPlan { active: None }
    }
}

impl<F: Fault> FaultPlan<F> {
    /// The next `n` requests get `fault` (replacing any earlier plan); 0 recovers.
    pub(crate) fn fail_next(&mut self, n: u32, fault: F) {
        self.active = (n > 0).then(|| (fault.sanitized(), Budget::Next(n)));
    }

    /// Every request gets `fault` until [`FaultPlan::recover`].
    pub(crate) fn fail_always(&mut self, fault: F) {
        self.active = Some((fault.sanitized(), Budget::Always));
    }

    pub(crate) fn recover(&mut self) {
        self.active = None;
    }

    /// The fault for the request that just arrived, using up one of the
    /// budget; `None` means answer normally.
    pub(crate) fn take(&mut self) -> Option<F> {
        let (fault, budget) = self.active?;
        match budget {
            Budget::Always => {}
            Budget::Next(n) if n > 1 => self.active = Some((fault, Budget::Next(n - 1))),
            Budget::Next(_) => self.active = None,
        }
        Some(fault)
    }

    /// Applies a parsed control request.
    pub(crate) fn apply(&mut self, command: FaultCommand<F>) {
        match command {
            FaultCommand::Next(n, fault) => self.fail_next(n, fault),
            FaultCommand::Always(fault) => self.fail_always(fault),
            FaultCommand::Recover => self.recover(),
        }
    }

    /// `null`, or `{"mode", "status"?, "remaining" | "always"}` for the
    /// control routes.
    pub(crate) fn describe(&self) -> Value {
        let Some((fault, budget)) = self.active else {
            return Value::Null;
        };
        let mut out = json!({ "mode": fault.mode() });
        if let Some(status) = fault.status() {
            out["status"] = json!(status);
        }
        match budget {
            Budget::Next(n) => out["remaining"] = json!(n),
            Budget::Always => out["always"] = json!(true),
        }
        out
    }
}

/// What a `POST /sandbox/faults/...` body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultCommand<F> {
    Next(u32, F),
    Always(F),
    Recover,
}

#[derive(Deserialize)]
struct FaultRequest {
    mode: Option<String>,
    status: Option<Value>,
    count: Option<Value>,
    always: Option<bool>,
}

/// Parses `{"mode": "status", "status": 500, "count": 2}`,
/// `{"mode": <hold_mode>, "always": true}` or `{"mode": "recover"}`.
/// Without `count` and `always` the fault applies to the next request only.
/// `hold` is the fault `hold_mode` names; `status` builds a status fault.
pub(crate) fn parse_command<F: Fault>(
    body: &[u8],
    hold_mode: &str,
    hold: F,
    status: fn(u16) -> F,
) -> Result<FaultCommand<F>, String> {
    let expected = format!(
        "expected {{\"mode\": \"status\" | \"{hold_mode}\" | \"recover\", \
         \"status\": 200..=599 (mode status), \"count\": n >= 1 | \"always\": true}}"
    );
    let request: FaultRequest = serde_json::from_slice(body).map_err(|e| format!("{expected}: {e}"))?;
    let Some(mode) = request.mode else {
        return Err(format!("{expected}: mode is missing"));
    };
    let fault = match mode.as_str() {
        "recover" => return Ok(FaultCommand::Recover),
        "status" => {
            let code = request
                .status
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| valid_status(*c))
                .ok_or_else(|| format!("{expected}: status must be an integer in 200..=599"))?;
            status(code)
        }
        m if m == hold_mode => hold,
        other => return Err(format!("{expected}: unknown mode {other:?}")),
    };
    let always = request.always.unwrap_or(false);
    match (&request.count, always) {
        (Some(_), true) => Err(format!("{expected}: give count or always, not both")),
        (None, true) => Ok(FaultCommand::Always(fault)),
        (None, false) => Ok(FaultCommand::Next(1, fault)),
        (Some(count), false) => {
            let n = count
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{expected}: count must be an integer >= 1"))?;
            Ok(FaultCommand::Next(n, fault))
        }
    }
}

/// Waits until the sandbox shuts down or [`HOLD_MAX`] passes: the body of a
/// request that is never answered. When the client gives up first, the
/// server drops this future (or it ends at shutdown).
pub(crate) async fn hold_until_shutdown(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(HOLD_MAX) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(body: Value) -> Result<FaultCommand<ShopFault>, String> {
        parse_command(body.to_string().as_bytes(), "hang", ShopFault::Hang, ShopFault::Status)
    }

    #[test]
    fn budgets_run_out() {
        let mut plan = FaultPlan::default();
        assert_eq!(plan.take(), None);
        plan.fail_next(2, ShopFault::Status(500));
        assert_eq!(plan.describe()["remaining"], 2);
        assert_eq!(plan.take(), Some(ShopFault::Status(500)));
        assert_eq!(plan.take(), Some(ShopFault::Status(500)));
        assert_eq!(plan.take(), None);
        assert_eq!(plan.describe(), Value::Null);

        plan.fail_always(ShopFault::Hang);
        for _ in 0..5 {
            assert_eq!(plan.take(), Some(ShopFault::Hang));
        }
        assert_eq!(plan.describe(), json!({"mode": "hang", "always": true}));
        plan.recover();
        assert_eq!(plan.take(), None);

        plan.fail_next(0, ShopFault::Hang);
        assert_eq!(plan.take(), None);
        plan.fail_next(1, ShopFault::Status(99));
        assert_eq!(plan.take(), Some(ShopFault::Status(500)));
    }

    #[test]
    fn parses_control_bodies() {
        assert_eq!(
            shop(json!({"mode": "status", "status": 500, "count": 2})),
            Ok(FaultCommand::Next(2, ShopFault::Status(500)))
        );
        assert_eq!(
            shop(json!({"mode": "hang", "always": true})),
            Ok(FaultCommand::Always(ShopFault::Hang))
        );
        assert_eq!(
            shop(json!({"mode": "hang"})),
            Ok(FaultCommand::Next(1, ShopFault::Hang))
        );
        assert_eq!(shop(json!({"mode": "recover"})), Ok(FaultCommand::Recover));
        for bad in [
            json!({}),
            json!({"mode": "timeout"}),
            json!({"mode": "status"}),
            json!({"mode": "status", "status": 99}),
            json!({"mode": "status", "status": 600}),
            json!({"mode": "status", "status": "500"}),
            json!({"mode": "hang", "count": 0}),
            json!({"mode": "hang", "count": 1, "always": true}),
            json!([1]),
        ] {
            assert!(shop(bad.clone()).is_err(), "{bad}");
        }
        let provider = parse_command(
            br#"{"mode":"timeout","count":3}"#,
            "timeout",
            ProviderFault::Timeout,
            ProviderFault::Status,
        );
        assert_eq!(provider, Ok(FaultCommand::Next(3, ProviderFault::Timeout)));
    }
}
