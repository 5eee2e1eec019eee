//! Field-level validation errors, collected rather than failing on the first.

use serde::Serialize;

/// One problem with one field of an input, addressed by a JSON-path-like name
/// (`items[0].total`, `customer.taxID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// All the problems found in one input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, code: &'static str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            code,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, field: &str, code: &str) -> bool {
        self.0.iter().any(|e| e.field == field && e.code == code)
    }

    /// `Ok(value)` when nothing was recorded, the collected errors otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl ValidationErrors {
    /// The errors as they travel in an `order.rejected` event.
    pub fn to_rejected(&self) -> Vec<crate::events::RejectedField> {
        self.0
            .iter()
            .map(|e| crate::events::RejectedField {
                field: e.field.clone(),
                code: e.code.to_string(),
                message: e.message.clone(),
            })
            .collect()
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
