//! Focus NFe API v2 wire types (providers-2.md §5.2): the NF-e request
//! built from a paid order and the shop's fiscal profile, and the status
//! answer read into an [`InvoiceState`].

use super::{InvoiceOrder, InvoiceState};
use payhub_core::PaymentMethod;
use payhub_core::identity::TaxId;
use payhub_core::invoice::{FiscalEnvironment, FiscalProfile};
use serde::{Deserialize, Serialize};

/// What SEFAZ requires as the recipient's name in homologation.
pub const HOMOLOGATION_NAME: &str = "NF-E EMITIDA EM AMBIENTE DE HOMOLOGACAO - SEM VALOR FISCAL";

/// Why an order cannot become an invoice (before anything is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct NotInvoiceable {
    pub field: &'static str,
    pub message: String,
}

fn not(field: &'static str, message: impl Into<String>) -> NotInvoiceable {
    NotInvoiceable {
        field,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NfeItem {
    pub numero_item: String,
    pub codigo_produto: String,
    pub descricao: String,
    pub cfop: String,
    pub codigo_ncm: String,
    pub unidade_comercial: &'static str,
    pub quantidade_comercial: String,
    pub valor_unitario_comercial: String,
    pub unidade_tributavel: &'static str,
    pub quantidade_tributavel: String,
    pub valor_unitario_tributavel: String,
    pub valor_bruto: String,
    /// The line's tax the buyer paid on top of the price (other accessory
    /// expenses of the line, so the invoice's total is what was paid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valor_outras_despesas: Option<String>,
    /// The same tax, as the approximate taxes of the line (Lei 12.741).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valor_total_tributos: Option<String>,
    pub inclui_no_total: u8,
    pub icms_origem: u8,
    pub icms_situacao_tributaria: String,
    pub pis_situacao_tributaria: String,
    pub cofins_situacao_tributaria: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FormaPagamento {
    /// 17 PIX (Pagamento Instantâneo), 03 credit card.
    pub forma_pagamento: &'static str,
    pub valor_pagamento: String,
}

/// `POST /v2/nfe?ref=REF`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NfeRequest {
    pub natureza_operacao: &'static str,
    pub data_emissao: String,
    pub tipo_documento: u8,
    pub finalidade_emissao: u8,
    /// 1 within the state, 2 interstate.
    pub local_destino: u8,
    pub consumidor_final: u8,
    /// 2: a sale over the internet.
    pub presenca_comprador: u8,
    /// 0 freight by the emitter, 9 no transport.
    pub modalidade_frete: u8,
    pub cnpj_emitente: String,
    pub nome_emitente: String,
    pub inscricao_estadual_emitente: String,
    pub regime_tributario_emitente: u8,
    pub nome_destinatario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpf_destinatario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnpj_destinatario: Option<String>,
    /// 9: not a contributor of ICMS (a consumer).
    pub indicador_inscricao_estadual_destinatario: u8,
    pub email_destinatario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telefone_destinatario: Option<String>,
    pub logradouro_destinatario: String,
    pub numero_destinatario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complemento_destinatario: Option<String>,
    pub bairro_destinatario: String,
    pub municipio_destinatario: String,
    pub uf_destinatario: String,
    pub pais_destinatario: &'static str,
    pub cep_destinatario: String,
    pub valor_produtos: String,
    pub valor_frete: String,
    pub valor_desconto: String,
    pub valor_outras_despesas: String,
    pub valor_total: String,
    pub items: Vec<NfeItem>,
    pub formas_pagamento: Vec<FormaPagamento>,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl NfeRequest {
    /// The NF-e of a paid order. Only BRL orders of Brazilian buyers with a
    /// CPF or CNPJ and a shipping address can be invoiced.
    pub fn from_order(order: &InvoiceOrder, profile: &FiscalProfile) -> Result<NfeRequest, NotInvoiceable> {
        if order.total.currency() != payhub_core::Currency::Brl {
            return Err(not(
                "currency",
                format!("an NF-e is in reais, the order is in {}", order.total.currency().code()),
            ));
        }
        let (cpf, cnpj) = match &order.customer_tax_id {
            TaxId::Cpf(c) => (Some(c.as_str().to_string()), None),
            TaxId::Cnpj(c) => (None, Some(c.as_str().to_string())),
            TaxId::National(_) => {
                return Err(not("customer.taxID", "the buyer's CPF or CNPJ is needed for an NF-e"));
            }
        };
        let a = order
            .shipping_address
            .as_ref()
            .ok_or_else(|| not("shippingAddress", "the buyer's address is needed for an NF-e"))?;
        let bairro = a.neighborhood.clone().filter(|n| !n.trim().is_empty()).ok_or_else(|| {
            not(
                "shippingAddress.neighborhood",
                "the NF-e needs the buyer's neighbourhood (bairro)",
            )
        })?;
        let interstate = a.state != profile.state;
        let cfop = if interstate {
            &profile.cfop_interstate
        } else {
            &profile.cfop_internal
        };
        let mut items = Vec::with_capacity(order.items.len());
        for (i, it) in order.items.iter().enumerate() {
            let tax = (it.tax.minor() > 0).then(|| it.tax.to_major_string());
            items.push(NfeItem {
                numero_item: (i + 1).to_string(),
                codigo_produto: it.code.clone().unwrap_or_else(|| format!("ITEM{}", i + 1)),
                descricao: it.title.clone(),
                cfop: cfop.clone(),
                codigo_ncm: profile.ncm_for(it.code.as_deref()).to_string(),
                unidade_comercial: "UN",
                quantidade_comercial: format!("{}.0000", it.qty),
                valor_unitario_comercial: it.unit_price.to_major_string(),
                unidade_tributavel: "UN",
                quantidade_tributavel: format!("{}.0000", it.qty),
                valor_unitario_tributavel: it.unit_price.to_major_string(),
                valor_bruto: it.total.to_major_string(),
                valor_outras_despesas: tax.clone(),
                valor_total_tributos: tax,
                inclui_no_total: 1,
                icms_origem: 0,
                icms_situacao_tributaria: profile.icms_situation.clone(),
                pis_situacao_tributaria: profile.pis_situation.clone(),
                cofins_situacao_tributaria: profile.cofins_situation.clone(),
            });
        }
        let name = match profile.environment {
            FiscalEnvironment::Homologacao => HOMOLOGATION_NAME.to_string(),
            FiscalEnvironment::Producao => order.customer_name.clone(),
        };
        let paid_at = order
            .paid_at
            .to_offset(time::UtcOffset::from_hms(-3, 0, 0).expect("a valid offset"));
        Ok(NfeRequest {
            natureza_operacao: "Venda de mercadoria",
            data_emissao: paid_at
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| not("paidAt", e.to_string()))?,
            tipo_documento: 1,
            finalidade_emissao: 1,
            local_destino: if interstate { 2 } else { 1 },
            consumidor_final: 1,
            presenca_comprador: 2,
            modalidade_frete: if order.freight.minor() > 0 { 0 } else { 9 },
            cnpj_emitente: profile.cnpj.clone(),
            nome_emitente: profile.name.clone(),
            inscricao_estadual_emitente: profile.state_registration.clone(),
            regime_tributario_emitente: profile.tax_regime,
            nome_destinatario: name,
            cpf_destinatario: cpf,
            cnpj_destinatario: cnpj,
            indicador_inscricao_estadual_destinatario: 9,
            email_destinatario: order.customer_email.clone(),
            telefone_destinatario: order.customer_phone.as_deref().map(digits),
            logradouro_destinatario: a.street.clone(),
            numero_destinatario: a.number.clone(),
            complemento_destinatario: a.complement.clone(),
            bairro_destinatario: bairro,
            municipio_destinatario: a.city.clone(),
            uf_destinatario: a.state.clone(),
            pais_destinatario: "Brasil",
            cep_destinatario: digits(&a.zipcode),
            valor_produtos: order.items_total.to_major_string(),
            valor_frete: order.freight.to_major_string(),
            valor_desconto: order.discount.to_major_string(),
            valor_outras_despesas: order.tax.to_major_string(),
            valor_total: order.total.to_major_string(),
            items,
            formas_pagamento: vec![FormaPagamento {
                forma_pagamento: match order.method {
                    PaymentMethod::Pix => "17",
                    PaymentMethod::Card => "03",
                    // A web checkout (Pago Seguro settles COP, so this is
                    // never a Brazilian invoice today): NF-e's "99 outros".
                    PaymentMethod::Redirect => "99",
                },
                valor_pagamento: order.total.to_major_string(),
            }],
        })
    }
}

/// `GET /v2/nfe/REF` (and the `202` of the request).
#[derive(Debug, Clone, Deserialize)]
pub struct NfeStatus {
    pub status: String,
    #[serde(default)]
    pub status_sefaz: Option<String>,
    #[serde(default)]
    pub mensagem_sefaz: Option<String>,
    #[serde(default)]
    pub numero: Option<String>,
    #[serde(default)]
    pub serie: Option<String>,
    #[serde(default)]
    pub chave_nfe: Option<String>,
    #[serde(default)]
    pub caminho_xml_nota_fiscal: Option<String>,
    #[serde(default)]
    pub caminho_danfe: Option<String>,
    /// The cancellation's XML (`cancelado` only).
    #[serde(default)]
    pub caminho_xml_cancelamento: Option<String>,
}

/// An error body: `{codigo, mensagem, erros?[{mensagem, campo}]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct FocusError {
    #[serde(default)]
    pub codigo: Option<String>,
    #[serde(default)]
    pub mensagem: Option<String>,
    #[serde(default)]
    pub erros: Vec<FocusFieldError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FocusFieldError {
    #[serde(default)]
    pub campo: Option<String>,
    #[serde(default)]
    pub mensagem: Option<String>,
}

/// The error body as one line: code, message and each field's message.
pub fn error_message(text: &str) -> String {
    match serde_json::from_str::<FocusError>(text) {
        Ok(e) => {
            let mut s = format!(
                "{}: {}",
                e.codigo.unwrap_or_else(|| "erro".into()),
                e.mensagem.unwrap_or_default()
            );
            for f in e.erros.iter().take(5) {
                s.push_str(&format!(
                    "; {} {}",
                    f.campo.as_deref().unwrap_or("-"),
                    f.mensagem.as_deref().unwrap_or("")
                ));
            }
            s.chars().take(500).collect()
        }
        Err(_) => "an answer that is not Focus NFe's error body".into(),
    }
}

/// The error body's `codigo`.
pub fn error_code(text: &str) -> Option<String> {
    serde_json::from_str::<FocusError>(text).ok().and_then(|e| e.codigo)
}

/// Reads a cancellation's answer (`DELETE /v2/nfe/REF`).
pub fn parse_cancel(text: &str, base_url: &str) -> Result<super::CancelState, String> {
    let s: NfeStatus =
        serde_json::from_str(text).map_err(|e| format!("Focus NFe's cancellation answer is unreadable: {e}"))?;
    Ok(match s.status.as_str() {
        "cancelado" => super::CancelState::Cancelled {
            xml_url: s.caminho_xml_cancelamento.map(|p| {
                if p.starts_with("http://") || p.starts_with("https://") {
                    p
                } else {
                    format!("{base_url}{p}")
                }
            }),
        },
        "erro_cancelamento" => super::CancelState::Refused {
            reason: format!(
                "SEFAZ {}: {}",
                s.status_sefaz.as_deref().unwrap_or("-"),
                s.mensagem_sefaz.as_deref().unwrap_or("no message")
            ),
        },
        other => return Err(format!("Focus NFe answered a cancellation with status {other:?}")),
    })
}

/// Reads a status answer; paths are made absolute under `base_url`.
pub fn parse_status(text: &str, base_url: &str) -> Result<InvoiceState, String> {
    let s: NfeStatus =
        serde_json::from_str(text).map_err(|e| format!("Focus NFe's status answer is unreadable: {e}"))?;
    let absolute = |p: Option<String>| {
        p.map(|p| {
            if p.starts_with("http://") || p.starts_with("https://") {
                p
            } else {
                format!("{base_url}{p}")
            }
        })
    };
    let sefaz = || {
        format!(
            "SEFAZ {}: {}",
            s.status_sefaz.as_deref().unwrap_or("-"),
            s.mensagem_sefaz.as_deref().unwrap_or("no message")
        )
    };
    Ok(match s.status.as_str() {
        "processando_autorizacao" => InvoiceState::Processing,
        "autorizado" => InvoiceState::Issued {
            number: s.numero.clone().ok_or("an authorised NF-e without a number")?,
            series: s.serie.clone(),
            access_key: s.chave_nfe.clone().map(|k| k.trim_start_matches("NFe").to_string()),
            pdf_url: absolute(s.caminho_danfe.clone()),
            xml_url: absolute(s.caminho_xml_nota_fiscal.clone()),
        },
        "erro_autorizacao" | "denegado" => InvoiceState::Rejected { reason: sefaz() },
        "cancelado" => InvoiceState::Cancelled {
            xml_url: absolute(s.caminho_xml_cancelamento.clone()),
        },
        other => return Err(format!("Focus NFe reported an unknown status {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::order::{Address, Item};
    use payhub_core::{Currency, Money};

    fn brl(m: i64) -> Money {
        Money::from_minor(m, Currency::Brl)
    }

    pub(crate) fn order() -> InvoiceOrder {
        InvoiceOrder {
            correlation_id: "pedido-1001".into(),
            items: vec![
                Item {
                    code: Some("0000123".into()),
                    title: "Camiseta Branca Unissex".into(),
                    description: None,
                    unit_price: brl(9990),
                    qty: 2,
                    tax: brl(300),
                    total: brl(19980),
                },
                Item {
                    code: None,
                    title: "Meia esportiva".into(),
                    description: None,
                    unit_price: brl(1999),
                    qty: 1,
                    tax: brl(0),
                    total: brl(1999),
                },
            ],
            items_total: brl(21979),
            tax: brl(300),
            freight: brl(1500),
            discount: brl(1000),
            total: brl(22779),
            customer_name: "Maria Oliveira".into(),
            customer_email: "maria@example.com".into(),
            customer_phone: Some("(41) 99876-5432".into()),
            customer_tax_id: TaxId::parse("470.436.220-50").unwrap(),
            shipping_address: Some(Address {
                street: "Rua Encantado".into(),
                number: "860".into(),
                complement: None,
                neighborhood: Some("Centro".into()),
                city: "Dez de Maio".into(),
                state: "PR".into(),
                zipcode: "85920-970".into(),
            }),
            method: PaymentMethod::Pix,
            paid_at: time::macros::datetime!(2026-12-02 18:04:05 UTC),
        }
    }

    pub(crate) fn profile() -> FiscalProfile {
        FiscalProfile::parse(
            serde_json::json!({
                "cnpj": "11222333000181", "name": "Loja Teste Ltda", "stateRegistration": "9044016688",
                "state": "SC", "taxRegime": 1, "cfopInternal": "5102", "cfopInterstate": "6102",
                "defaultNcm": "61159500", "ncmByCode": {"0000123": "61091000"},
                "icmsSituation": "102", "pisSituation": "07", "cofinsSituation": "07"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn an_order_becomes_the_documented_nfe_body() {
        let r = NfeRequest::from_order(&order(), &profile()).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cpf_destinatario"], "47043622050");
        assert!(v.get("cnpj_destinatario").is_none());
        assert_eq!(v["nome_destinatario"], HOMOLOGATION_NAME);
        assert_eq!(v["local_destino"], 2, "PR buyer, SC shop");
        assert_eq!(v["items"][0]["cfop"], "6102");
        assert_eq!(v["items"][0]["codigo_ncm"], "61091000");
        assert_eq!(v["items"][1]["codigo_ncm"], "61159500");
        assert_eq!(v["items"][1]["codigo_produto"], "ITEM2");
        assert_eq!(v["items"][0]["valor_bruto"], "199.80");
        assert_eq!(v["items"][0]["valor_outras_despesas"], "3.00");
        assert_eq!(v["valor_total"], "227.79");
        assert_eq!(v["cep_destinatario"], "85920970");
        assert_eq!(v["telefone_destinatario"], "41998765432");
        assert_eq!(v["formas_pagamento"][0]["forma_pagamento"], "17");
        assert_eq!(v["data_emissao"], "2026-12-02T15:04:05-03:00");
        assert_eq!(v["modalidade_frete"], 0);
    }

    #[test]
    fn an_order_without_what_the_nfe_needs_is_named_by_field() {
        let mut o = order();
        o.shipping_address.as_mut().unwrap().neighborhood = None;
        assert_eq!(
            NfeRequest::from_order(&o, &profile()).unwrap_err().field,
            "shippingAddress.neighborhood"
        );
        o.shipping_address = None;
        assert_eq!(
            NfeRequest::from_order(&o, &profile()).unwrap_err().field,
            "shippingAddress"
        );
        let mut o = order();
        o.customer_tax_id = TaxId::none();
        assert_eq!(
            NfeRequest::from_order(&o, &profile()).unwrap_err().field,
            "customer.taxID"
        );
    }

    #[test]
    fn statuses_are_read_into_states() {
        let base = "https://homologacao.focusnfe.com.br";
        let issued = parse_status(
            r#"{"status":"autorizado","numero":"42","serie":"1","chave_nfe":"NFe4126","caminho_danfe":"/arquivos/x.pdf","caminho_xml_nota_fiscal":"/arquivos/x-nfe.xml"}"#,
            base,
        )
        .unwrap();
        assert_eq!(
            issued,
            InvoiceState::Issued {
                number: "42".into(),
                series: Some("1".into()),
                access_key: Some("4126".into()),
                pdf_url: Some(format!("{base}/arquivos/x.pdf")),
                xml_url: Some(format!("{base}/arquivos/x-nfe.xml")),
            }
        );
        assert_eq!(
            parse_status(r#"{"status":"processando_autorizacao"}"#, base).unwrap(),
            InvoiceState::Processing
        );
        let InvoiceState::Rejected { reason } = parse_status(
            r#"{"status":"erro_autorizacao","status_sefaz":"598","mensagem_sefaz":"Rejeicao: x"}"#,
            base,
        )
        .unwrap() else {
            panic!("rejected")
        };
        assert_eq!(reason, "SEFAZ 598: Rejeicao: x");
        assert!(parse_status(r#"{"status":"weird"}"#, base).is_err());
        assert_eq!(
            error_message(
                r#"{"codigo":"erro_validacao_schema","mensagem":"m","erros":[{"campo":"cfop","mensagem":"x"}]}"#
            ),
            "erro_validacao_schema: m; cfop x"
        );
    }
}
