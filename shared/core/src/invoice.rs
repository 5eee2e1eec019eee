//! The invoice ("nota fiscal", issue 12 §3): what a shop's fiscal profile
//! holds beyond the order, and the states of an order's invoice.
//!
//! payhub does not sign fiscal documents: it prepares the invoice from the
//! paid order and the shop's profile and hands it to the shop's invoicing
//! service (a connector in `payhub-connectors`).

use crate::identity::Cnpj;
use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which SEFAZ environment the shop's invoicing account issues in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FiscalEnvironment {
    /// Test invoices without fiscal value: SEFAZ requires the fixed
    /// recipient name of homologation.
    #[default]
    Homologacao,
    Producao,
}

/// What the invoice needs that the order does not hold: the emitter and
/// the fiscal codes of its goods. Accounting decisions, given by the shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FiscalProfile {
    /// The emitter's CNPJ (digits; check digits valid).
    pub cnpj: String,
    /// The emitter's legal name.
    pub name: String,
    /// The emitter's state registration (inscrição estadual).
    pub state_registration: String,
    /// The emitter's state (UF): a recipient elsewhere is interstate.
    pub state: String,
    /// 1 Simples Nacional, 2 Simples with excess of gross revenue, 3 Normal.
    pub tax_regime: u8,
    /// CFOP of a sale within the state (e.g. 5102) and to another (6102).
    pub cfop_internal: String,
    pub cfop_interstate: String,
    /// NCM of items whose code is not in `ncmByCode` (8 digits).
    pub default_ncm: String,
    /// NCM per item code.
    #[serde(default)]
    pub ncm_by_code: BTreeMap<String, String>,
    /// ICMS situation (CST, or CSOSN under Simples: 102, 400, ...).
    pub icms_situation: String,
    /// PIS and COFINS situation (CST, e.g. 07 or 49).
    pub pis_situation: String,
    pub cofins_situation: String,
    #[serde(default)]
    pub environment: FiscalEnvironment,
}

const UFS: [&str; 27] = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR", "PE", "PI", "RJ",
    "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
];

fn all_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_digit())
}

impl FiscalProfile {
    /// Reads a profile (JSON) with field-level errors.
    pub fn parse(json: &[u8]) -> Result<FiscalProfile, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let p: FiscalProfile = match serde_json::from_slice(json) {
            Ok(p) => p,
            Err(e) => {
                errors.push("profile", "invalid", e.to_string());
                return Err(errors);
            }
        };
        let mut p = p;
        match Cnpj::parse(&p.cnpj) {
            Ok(c) => p.cnpj = c.as_str().to_string(),
            Err(why) => errors.push("cnpj", "invalid", why),
        }
        if p.name.trim().is_empty() || p.name.chars().count() > 60 {
            errors.push("name", "length", "the emitter's legal name, 1 to 60 characters");
        }
        if p.state_registration.trim().is_empty() || p.state_registration.len() > 14 {
            errors.push(
                "stateRegistration",
                "length",
                "the emitter's state registration (ISENTO when exempt), 1 to 14 characters",
            );
        }
        if !UFS.contains(&p.state.as_str()) {
            errors.push("state", "invalid", "a Brazilian state code (UF), e.g. PR");
        }
        if !(1..=3).contains(&p.tax_regime) {
            errors.push(
                "taxRegime",
                "invalid",
                "1 (Simples Nacional), 2 (Simples, excess) or 3 (Normal)",
            );
        }
        for (field, cfop, first) in [
            ("cfopInternal", &p.cfop_internal, '5'),
            ("cfopInterstate", &p.cfop_interstate, '6'),
        ] {
            if !all_digits(cfop, 4) || !cfop.starts_with(first) {
                errors.push(field, "invalid", format!("a CFOP of 4 digits starting with {first}"));
            }
        }
        if !all_digits(&p.default_ncm, 8) {
            errors.push("defaultNcm", "invalid", "an NCM of 8 digits");
        }
        for (code, ncm) in &p.ncm_by_code {
            if !all_digits(ncm, 8) {
                errors.push(format!("ncmByCode.{code}"), "invalid", "an NCM of 8 digits");
            }
        }
        if !(all_digits(&p.icms_situation, 2) || all_digits(&p.icms_situation, 3)) {
            errors.push("icmsSituation", "invalid", "an ICMS CST (2 digits) or CSOSN (3 digits)");
        }
        for (field, v) in [
            ("pisSituation", &p.pis_situation),
            ("cofinsSituation", &p.cofins_situation),
        ] {
            if !all_digits(v, 2) {
                errors.push(field, "invalid", "a CST of 2 digits");
            }
        }
        errors.into_result(p)
    }

    /// The NCM of an item by its code.
    pub fn ncm_for(&self, code: Option<&str>) -> &str {
        code.and_then(|c| self.ncm_by_code.get(c))
            .map(String::as_str)
            .unwrap_or(&self.default_ncm)
    }
}

/// Where an order's invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Asked for; the invoicing service has not answered it yet.
    Requested,
    /// Authorised: it has a number and its DANFE (PDF) and XML.
    Issued,
    /// Refused (by the service or SEFAZ), or the service stayed away: the
    /// reason says which; the shop's admin is told.
    Failed,
    /// Issued, then cancelled at the service (the order was refunded or
    /// cancelled): SEFAZ accepted the cancellation.
    Cancelled,
    /// Only in `invoice.updated`: the cancellation of an issued invoice was
    /// refused or the service stayed away. The stored invoice stays
    /// `issued` (it is still valid) with the reason; the shop's admin is told.
    CancelFailed,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Requested => "requested",
            InvoiceStatus::Issued => "issued",
            InvoiceStatus::Failed => "failed",
            InvoiceStatus::Cancelled => "cancelled",
            InvoiceStatus::CancelFailed => "cancel_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "cnpj": "11.222.333/0001-81", "name": "Loja Teste Ltda", "stateRegistration": "9044016688",
            "state": "PR", "taxRegime": 1, "cfopInternal": "5102", "cfopInterstate": "6102",
            "defaultNcm": "61091000", "ncmByCode": {"0000123": "61091000"},
            "icmsSituation": "102", "pisSituation": "07", "cofinsSituation": "07"
        })
    }

    #[test]
    fn a_profile_is_read_with_its_defaults() {
        let p = FiscalProfile::parse(sample().to_string().as_bytes()).unwrap();
        assert_eq!(p.cnpj, "11222333000181");
        assert_eq!(p.environment, FiscalEnvironment::Homologacao);
        assert_eq!(p.ncm_for(Some("0000123")), "61091000");
        assert_eq!(p.ncm_for(None), "61091000");
    }

    #[test]
    fn a_bad_profile_names_each_field() {
        let mut v = sample();
        v["cnpj"] = "11222333000182".into();
        v["cfopInternal"] = "6102".into();
        v["defaultNcm"] = "6109".into();
        v["state"] = "XX".into();
        v["taxRegime"] = 7.into();
        let e = FiscalProfile::parse(v.to_string().as_bytes()).unwrap_err();
        for field in ["cnpj", "cfopInternal", "defaultNcm", "state", "taxRegime"] {
            assert!(e.has(field, "invalid"), "{field}: {e:?}");
        }
        let e = FiscalProfile::parse(br#"{"cnpj": 1}"#).unwrap_err();
        assert!(e.has("profile", "invalid"));
    }
}
