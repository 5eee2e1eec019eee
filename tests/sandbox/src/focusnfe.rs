//! A Focus NFe API v2 stand-in (providers-2.md §5.2), homologation flavour:
//! `POST /v2/nfe?ref=REF` queues an NF-e (`202`, `processando_autorizacao`),
//! `GET /v2/nfe/REF` reads it; SEFAZ's answer is given at the first read
//! after the request (`autorizado` with number, series, access key and the
//! DANFE and XML paths, relative to the host as Focus gives them, or
//! `erro_autorizacao` with SEFAZ's status and message). Auth is HTTP Basic
//! with the company's token as the user and an empty password.
//!
//! Like the real service it checks what it can before queueing
//! (`erro_validacao_schema` with per-field `erros`), refuses a second
//! request under a `ref` that is processing or authorised (a `ref` that
//! failed may be sent again), and rejects, as SEFAZ does in homologation,
//! a recipient name other than the fixed homologation text (598) and a
//! total that is not the sum of its parts (610).
//!
//! `DELETE /v2/nfe/REF {"justificativa": "15..255 chars"}` cancels an
//! authorised NF-e synchronously (`cancelado` with the cancellation's XML
//! path, or `erro_cancelamento` with SEFAZ's status and message); a
//! justification out of bounds is refused (`requisicao_invalida`), an NF-e
//! not authorised cannot be cancelled (`nfe_nao_autorizada`), and one
//! cancelled already answers its cancelled status again.
//!
//! `GET /sandbox/invoices` lists what it holds (the demo reads it).
//!
//! Faults ([`crate::Sandbox::focusnfe_fault_next`]): the next request is
//! received and queued but its answer is never sent (the client times
//! out), SEFAZ rejects the next invoice with a given message, SEFAZ is slow
//! (the next invoice stays `processando_autorizacao` for a number of status
//! reads), or SEFAZ refuses the next cancellation with a given message. An outage
//! (`POST /sandbox/outage {"provider": "focusnfe", "down": true}`) answers
//! every `/v2/...` call 503.

use crate::state::{Inner, lock};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// The homologation token of the sandbox's company.
pub const FOCUSNFE_SANDBOX_TOKEN: &str = "focus-homologacao-token-0001";
/// The CNPJ the sandbox's company is registered with (valid check digits).
pub const FOCUSNFE_SANDBOX_CNPJ: &str = "11222333000181";
/// What SEFAZ requires as the recipient's name in homologation.
pub const HOMOLOGATION_NAME: &str = "NF-E EMITIDA EM AMBIENTE DE HOMOLOGACAO - SEM VALOR FISCAL";

/// How the next invoice request misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FocusNfeFault {
    /// Queue the invoice as usual, then never answer: the client times out
    /// although the service received it.
    ReceiveThenHang,
    /// Queue it; SEFAZ then rejects it (`erro_autorizacao`) with this message.
    Reject(String),
    /// Queue it; SEFAZ answers only after this many status reads have
    /// found it still `processando_autorizacao`.
    SlowSefaz(u32),
    /// The next cancellation is refused (`erro_cancelamento`) with this
    /// message (e.g. past the deadline).
    CancelRefused(String),
}

/// One invoice as the sandbox holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInvoice {
    pub reference: String,
    pub request: Value,
    /// `processando_autorizacao`, `autorizado`, `erro_autorizacao`.
    pub status: String,
    pub status_sefaz: Option<String>,
    pub mensagem_sefaz: Option<String>,
    pub number: Option<String>,
    pub access_key: Option<String>,
    /// How many requests queued it (a ref sent again after an error counts again).
    pub requests: u32,
    /// The justification of the cancellation that was asked for.
    pub cancel_justificativa: Option<String>,
    /// How many `DELETE` requests arrived for it.
    pub cancels: u32,
    #[serde(skip)]
    reject: Option<String>,
    /// Status reads left before SEFAZ answers.
    #[serde(skip)]
    slow_reads: u32,
}

#[derive(Debug, Default)]
pub(crate) struct FocusState {
    invoices: BTreeMap<String, SandboxInvoice>,
    faults: VecDeque<FocusNfeFault>,
    cancel_faults: VecDeque<String>,
    posts: usize,
    next_number: u64,
}

type Shared = Arc<Inner>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/v2/nfe", post(create))
        .route("/v2/nfe/{reference}", get(read).delete(cancel))
        .route("/arquivos/{file}", get(file))
        .route("/sandbox/invoices", get(list))
        .with_state(state)
}

fn error(status: StatusCode, codigo: &str, mensagem: &str, erros: Vec<Value>) -> Response {
    let mut body = json!({"codigo": codigo, "mensagem": mensagem});
    if !erros.is_empty() {
        body["erros"] = Value::Array(erros);
    }
    (status, Json(body)).into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{FOCUSNFE_SANDBOX_TOKEN}:"))
    );
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

fn unauthorised() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "permissao_negada",
        "Token inválido ou sem permissão para esta empresa",
        vec![],
    )
}

/// The exact decimal of a Focus value (string or number), in hundredths.
fn cents(v: &Value) -> Option<i64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    if frac.len() > 2 || whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

fn digits(v: &Value, n: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == n && s.chars().all(|c| c.is_ascii_digit()))
}

/// Schema checks the real API makes before queueing (a subset).
fn schema_errors(b: &Value) -> Vec<Value> {
    let mut erros = Vec::new();
    let mut need = |campo: &str, ok: bool, mensagem: &str| {
        if !ok {
            erros.push(json!({"codigo": "erro_validacao_schema", "campo": campo, "mensagem": mensagem}));
        }
    };
    for campo in [
        "natureza_operacao",
        "data_emissao",
        "nome_destinatario",
        "logradouro_destinatario",
        "numero_destinatario",
        "bairro_destinatario",
        "municipio_destinatario",
        "uf_destinatario",
    ] {
        need(
            campo,
            b[campo].as_str().is_some_and(|s| !s.trim().is_empty()),
            "campo obrigatório",
        );
    }
    need("cnpj_emitente", digits(&b["cnpj_emitente"], 14), "CNPJ inválido");
    need(
        "cpf_destinatario",
        digits(&b["cpf_destinatario"], 11) || digits(&b["cnpj_destinatario"], 14),
        "informe cpf_destinatario ou cnpj_destinatario",
    );
    need("cep_destinatario", digits(&b["cep_destinatario"], 8), "CEP inválido");
    let items = b["items"].as_array().cloned().unwrap_or_default();
    need("items", !items.is_empty(), "a nota precisa de ao menos um item");
    for (i, it) in items.iter().enumerate() {
        let at = |f: &str| format!("items[{i}].{f}");
        need(&at("cfop"), digits(&it["cfop"], 4), "CFOP deve ter 4 dígitos");
        need(
            &at("codigo_ncm"),
            digits(&it["codigo_ncm"], 8),
            "NCM deve ter 8 dígitos",
        );
        need(
            &at("codigo_produto"),
            it["codigo_produto"].as_str().is_some_and(|s| !s.is_empty()),
            "campo obrigatório",
        );
        need(
            &at("valor_bruto"),
            cents(&it["valor_bruto"]).is_some(),
            "valor inválido",
        );
    }
    need("valor_total", cents(&b["valor_total"]).is_some(), "valor inválido");
    erros
}

/// SEFAZ's verdict on a well-formed invoice: `None` authorises it.
fn sefaz_rejection(b: &Value) -> Option<(&'static str, String)> {
    if b["nome_destinatario"].as_str() != Some(HOMOLOGATION_NAME) {
        return Some((
            "598",
            format!(
                "Rejeicao: NF-e emitida em ambiente de homologacao com Razao Social do destinatario diferente de {HOMOLOGATION_NAME}"
            ),
        ));
    }
    let items = b["items"].as_array().cloned().unwrap_or_default();
    let sum = |f: &str| items.iter().map(|i| cents(&i[f]).unwrap_or(0)).sum::<i64>();
    let header_or_items = |f: &str| cents(&b[f]).unwrap_or_else(|| sum(f));
    let expected = sum("valor_bruto") + header_or_items("valor_frete") + header_or_items("valor_outras_despesas")
        - header_or_items("valor_desconto");
    if cents(&b["valor_total"]) != Some(expected) {
        return Some((
            "610",
            "Rejeicao: Total da NF difere do somatorio dos Valores compoe o valor Total da NF.".into(),
        ));
    }
    None
}

#[derive(Deserialize)]
struct RefQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

async fn create(State(state): State<Shared>, Query(q): Query<RefQuery>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let Some(reference) = q.reference.filter(|r| !r.is_empty() && r.len() <= 50) else {
        return error(
            StatusCode::BAD_REQUEST,
            "requisicao_invalida",
            "Parâmetro ref não informado",
            vec![],
        );
    };
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "requisicao_invalida", "JSON inválido", vec![]);
    };
    let erros = schema_errors(&b);
    if !erros.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "erro_validacao_schema",
            "Erro de validação do Schema XML",
            erros,
        );
    }
    let fault = {
        let mut s = lock(&state.focusnfe);
        s.posts += 1;
        if let Some(existing) = s.invoices.get(&reference)
            && existing.status != "erro_autorizacao"
        {
            let (codigo, mensagem) = if existing.status == "autorizado" {
                ("nfe_autorizada", "Nota fiscal já autorizada")
            } else {
                ("em_processamento", "Nota fiscal em processamento")
            };
            return error(StatusCode::UNPROCESSABLE_ENTITY, codigo, mensagem, vec![]);
        }
        let fault = s.faults.pop_front();
        let requests = s.invoices.get(&reference).map_or(0, |i| i.requests) + 1;
        s.invoices.insert(
            reference.clone(),
            SandboxInvoice {
                reference: reference.clone(),
                request: b.clone(),
                status: "processando_autorizacao".into(),
                status_sefaz: None,
                mensagem_sefaz: None,
                number: None,
                access_key: None,
                requests,
                cancel_justificativa: None,
                cancels: 0,
                reject: match &fault {
                    Some(FocusNfeFault::Reject(m)) => Some(m.clone()),
                    _ => None,
                },
                slow_reads: match &fault {
                    Some(FocusNfeFault::SlowSefaz(n)) => *n,
                    _ => 0,
                },
            },
        );
        fault
    };
    tracing::info!(%reference, ?fault, "focusnfe: invoice queued");
    if fault == Some(FocusNfeFault::ReceiveThenHang) {
        crate::faults::hold_until_shutdown(&state.shutdown).await;
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "cnpj_emitente": b["cnpj_emitente"],
            "ref": reference,
            "status": "processando_autorizacao",
        })),
    )
        .into_response()
}

fn view(i: &SandboxInvoice) -> Value {
    let mut v = json!({
        "cnpj_emitente": i.request["cnpj_emitente"],
        "ref": i.reference,
        "status": i.status,
        "status_sefaz": i.status_sefaz,
        "mensagem_sefaz": i.mensagem_sefaz,
    });
    if let (Some(number), Some(key)) = (&i.number, &i.access_key) {
        v["numero"] = json!(number);
        v["serie"] = json!("1");
        v["chave_nfe"] = json!(format!("NFe{key}"));
        v["caminho_xml_nota_fiscal"] = json!(format!("/arquivos/{key}-nfe.xml"));
        v["caminho_danfe"] = json!(format!("/arquivos/{key}.pdf"));
        if i.status == "cancelado" {
            v["caminho_xml_cancelamento"] = json!(format!("/arquivos/{key}-can.xml"));
        }
    }
    v
}

#[derive(Deserialize)]
struct CancelBody {
    justificativa: Option<String>,
}

/// `DELETE /v2/nfe/REF`: the synchronous cancellation of an authorised NF-e.
async fn cancel(
    State(state): State<Shared>,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let justificativa = serde_json::from_slice::<CancelBody>(&body)
        .ok()
        .and_then(|b| b.justificativa)
        .unwrap_or_default();
    let mut s = lock(&state.focusnfe);
    let refusal = s.cancel_faults.front().cloned();
    let Some(inv) = s.invoices.get_mut(&reference) else {
        return error(
            StatusCode::NOT_FOUND,
            "nao_encontrado",
            "Nota fiscal não encontrada",
            vec![],
        );
    };
    inv.cancels += 1;
    if !(15..=255).contains(&justificativa.trim().chars().count()) {
        return error(
            StatusCode::BAD_REQUEST,
            "requisicao_invalida",
            "Parâmetro justificativa deve ter entre 15 e 255 caracteres",
            vec![],
        );
    }
    match inv.status.as_str() {
        "autorizado" => {}
        "cancelado" => return (StatusCode::OK, Json(view(inv))).into_response(),
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nfe_nao_autorizada",
                "Nota fiscal não autorizada não pode ser cancelada",
                vec![],
            );
        }
    }
    inv.cancel_justificativa = Some(justificativa);
    if let Some(message) = refusal {
        let answer = json!({
            "status": "erro_cancelamento",
            "status_sefaz": "501",
            "mensagem_sefaz": message,
        });
        s.cancel_faults.pop_front();
        tracing::info!(%reference, "focusnfe: cancellation refused");
        return (StatusCode::OK, Json(answer)).into_response();
    }
    inv.status = "cancelado".into();
    inv.status_sefaz = Some("135".into());
    inv.mensagem_sefaz = Some("Evento registrado e vinculado a NF-e".into());
    tracing::info!(%reference, "focusnfe: invoice cancelled");
    (StatusCode::OK, Json(view(inv))).into_response()
}

/// A 44-digit access key for the `number`-th invoice of the sandbox's company.
fn access_key(number: u64) -> String {
    // cUF 41 (PR), AAMM, CNPJ, model 55, series 001, number, emission 1, code, check digit.
    let base = format!(
        "412612{FOCUSNFE_SANDBOX_CNPJ}55001{number:09}1{:08}",
        number * 7919 % 100_000_000
    );
    // Check digit: modulo 11 with weights 2..9 from the right.
    let sum: u32 = base
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap_or(0) * (2 + (i as u32 % 8)))
        .sum();
    let dv = match 11 - sum % 11 {
        10 | 11 => 0,
        d => d,
    };
    format!("{base}{dv}")
}

async fn read(State(state): State<Shared>, Path(reference): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return unauthorised();
    }
    let mut s = lock(&state.focusnfe);
    let number = s.next_number + 1;
    let Some(inv) = s.invoices.get_mut(&reference) else {
        return error(
            StatusCode::NOT_FOUND,
            "nao_encontrado",
            "Nota fiscal não encontrada",
            vec![],
        );
    };
    let mut issued = false;
    if inv.status == "processando_autorizacao" && inv.slow_reads > 0 {
        inv.slow_reads -= 1;
    } else if inv.status == "processando_autorizacao" {
        // SEFAZ answers now.
        let verdict = match inv.reject.take() {
            Some(m) => Some(("999".to_string(), m)),
            None => sefaz_rejection(&inv.request).map(|(c, m)| (c.to_string(), m)),
        };
        match verdict {
            Some((code, message)) => {
                inv.status = "erro_autorizacao".into();
                inv.status_sefaz = Some(code);
                inv.mensagem_sefaz = Some(message);
            }
            None => {
                inv.status = "autorizado".into();
                inv.status_sefaz = Some("100".into());
                inv.mensagem_sefaz = Some("Autorizado o uso da NF-e".into());
                inv.number = Some(number.to_string());
                inv.access_key = Some(access_key(number));
                issued = true;
            }
        }
    }
    let v = view(inv);
    if issued {
        s.next_number = number;
    }
    (StatusCode::OK, Json(v)).into_response()
}

/// The DANFE (PDF) and XML of an authorised invoice, by the paths the status gives.
async fn file(State(state): State<Shared>, Path(file): Path<String>) -> Response {
    let s = lock(&state.focusnfe);
    let found = s.invoices.values().find(|i| {
        i.access_key.as_deref().is_some_and(|k| {
            file == format!("{k}.pdf")
                || file == format!("{k}-nfe.xml")
                || (i.status == "cancelado" && file == format!("{k}-can.xml"))
        })
    });
    let Some(inv) = found else {
        return error(
            StatusCode::NOT_FOUND,
            "nao_encontrado",
            "Arquivo não encontrado",
            vec![],
        );
    };
    let key = inv.access_key.clone().unwrap_or_default();
    if file.ends_with(".pdf") {
        let pdf = format!("%PDF-1.4\n% DANFE NF-e {key} (sandbox)\n%%EOF\n");
        ([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response()
    } else {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><nfeProc><NFe><infNFe Id=\"NFe{key}\"><ide><nNF>{}</nNF></ide></infNFe></NFe></nfeProc>",
            inv.number.clone().unwrap_or_default()
        );
        ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
    }
}

/// `GET /sandbox/invoices`: every invoice the service holds, and how many requests arrived.
async fn list(State(state): State<Shared>) -> Response {
    let s = lock(&state.focusnfe);
    let invoices: Vec<&SandboxInvoice> = s.invoices.values().collect();
    Json(json!({"invoices": invoices, "requests": s.posts})).into_response()
}

impl crate::Sandbox {
    /// The invoicing service's base URL (the same listener as the providers).
    pub fn focusnfe_url(&self) -> String {
        self.provider_url()
    }

    /// The next invoice request gets `fault` (the next cancellation, for
    /// [`FocusNfeFault::CancelRefused`]); several queue in order.
    pub fn focusnfe_fault_next(&self, fault: FocusNfeFault) {
        let mut s = lock(&self.inner.focusnfe);
        match fault {
            FocusNfeFault::CancelRefused(m) => s.cancel_faults.push_back(m),
            other => s.faults.push_back(other),
        }
    }

    /// Every invoice, by reference.
    pub fn invoices(&self) -> Vec<SandboxInvoice> {
        lock(&self.inner.focusnfe).invoices.values().cloned().collect()
    }

    /// How many `POST /v2/nfe` requests arrived (refused ones included).
    pub fn invoice_requests(&self) -> usize {
        lock(&self.inner.focusnfe).posts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_exactly() {
        assert_eq!(cents(&json!("227.79")), Some(22779));
        assert_eq!(cents(&json!("15")), Some(1500));
        assert_eq!(cents(&json!("0.5")), Some(50));
        assert_eq!(cents(&json!("1.234")), None);
        assert_eq!(cents(&json!(-1)), None);
    }

    #[test]
    fn access_keys_have_44_digits() {
        let k = access_key(1);
        assert_eq!(k.len(), 44, "{k}");
        assert!(k.chars().all(|c| c.is_ascii_digit()));
    }
}
