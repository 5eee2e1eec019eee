//! The satisfaction survey page (issue 12 §4): `GET /survey/{token}` shows
//! a plain server-rendered form (0–10 "would you recommend", a comment) in
//! the invitation's language (pt-BR or es); `POST /survey/{token}` keeps
//! one answer per order, with the `survey.answered` event in the same
//! transaction, so the shop is told by webhook. An expired link answers
//! 410, an unknown one 404, a second answer 409; nothing but the token's
//! SHA-256 identifies the order.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use payhub_core::events::{EventPayload, SurveyAnswered};
use payhub_core::{Envelope, identity::check_visible_text};
use payhub_service::problem::ApiError;
use payhub_store::Store;
use payhub_store::outbox::{self, Outbox};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest comment kept.
pub const MAX_COMMENT_CHARS: usize = 1000;

#[derive(Clone)]
pub struct SurveyState {
    pub store: Store,
    pub outbox: Outbox,
}

pub fn router(state: SurveyState) -> Router {
    Router::new()
        .route("/survey/{token}", get(show).post(answer))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// The page's words in one language.
struct Words {
    lang: &'static str,
    title: &'static str,
    question: &'static str,
    not_likely: &'static str,
    very_likely: &'static str,
    comment: &'static str,
    send: &'static str,
    thanks: &'static str,
    already: &'static str,
    expired: &'static str,
    unknown: &'static str,
    pick_score: &'static str,
    comment_too_long: &'static str,
    order: &'static str,
}

const PT_BR: Words = Words {
    lang: "pt-BR",
    title: "Pesquisa de satisfação",
    question: "De 0 a 10, quanto você recomendaria a loja a um amigo?",
    not_likely: "nada provável",
    very_likely: "muito provável",
    comment: "Quer contar mais? (opcional)",
    send: "Enviar resposta",
    thanks: "Obrigado! A sua resposta foi registrada.",
    already: "Esta pesquisa já foi respondida. Obrigado!",
    expired: "Este link expirou.",
    unknown: "Link de pesquisa desconhecido.",
    pick_score: "Escolha uma nota de 0 a 10.",
    comment_too_long: "O comentário pode ter até 1000 caracteres.",
    order: "Pedido",
};

const ES: Words = Words {
    lang: "es",
    title: "Encuesta de satisfacción",
    question: "Del 0 al 10, ¿qué tan probable es que recomiende la tienda a un amigo?",
    not_likely: "nada probable",
    very_likely: "muy probable",
    comment: "¿Quiere contarnos más? (opcional)",
    send: "Enviar respuesta",
    thanks: "¡Gracias! Su respuesta fue registrada.",
    already: "Esta encuesta ya fue respondida. ¡Gracias!",
    expired: "Este enlace expiró.",
    unknown: "Enlace de encuesta desconocido.",
    pick_score: "Elija una nota del 0 al 10.",
    comment_too_long: "El comentario puede tener hasta 1000 caracteres.",
    order: "Pedido",
};

fn words(lang: &str) -> &'static Words {
    if lang == "es" { &ES } else { &PT_BR }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, w: &Words, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body></html>\n",
        lang = w.lang,
        title = escape(w.title),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script, no outside resource; the form posts to this page only.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The form, with an error message and the values given, when any.
pub fn form_html(lang: &str, correlation_id: &str, error: Option<&str>, score: Option<u8>, comment: &str) -> String {
    let w = words(lang);
    let mut scores = String::new();
    for n in 0..=10u8 {
        let checked = if score == Some(n) { " checked" } else { "" };
        scores.push_str(&format!(
            "<label><input type=\"radio\" name=\"score\" value=\"{n}\" required{checked}> {n}</label>\n"
        ));
    }
    format!(
        "<p>{order} {cid}</p>\n{error}<form method=\"post\">\n<fieldset><legend>{question}</legend>\n\
         <p><small>0 = {low}, 10 = {high}</small></p>\n{scores}</fieldset>\n\
         <p><label for=\"comment\">{comment_label}</label><br>\
         <textarea id=\"comment\" name=\"comment\" rows=\"4\" cols=\"50\" maxlength=\"{max}\">{comment}</textarea></p>\n\
         <p><button type=\"submit\">{send}</button></p>\n</form>",
        order = escape(w.order),
        cid = escape(correlation_id),
        error = error
            .map(|e| format!("<p role=\"alert\"><strong>{}</strong></p>\n", escape(e)))
            .unwrap_or_default(),
        question = escape(w.question),
        low = escape(w.not_likely),
        high = escape(w.very_likely),
        comment_label = escape(w.comment),
        max = MAX_COMMENT_CHARS,
        comment = escape(comment),
        send = escape(w.send),
    )
}

#[derive(sqlx::FromRow)]
struct Invitation {
    order_id: Uuid,
    shop_id: Uuid,
    language: String,
    expires_at: OffsetDateTime,
    correlation_id: String,
    answered: bool,
}

fn token_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

async fn invitation(store: &Store, token: &str) -> Result<Option<Invitation>, ApiError> {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "SELECT i.order_id, i.shop_id, i.language, i.expires_at, o.correlation_id,
                EXISTS (SELECT 1 FROM survey_answers a WHERE a.order_id = i.order_id) AS answered
         FROM survey_invitations i JOIN orders o ON o.id = i.order_id WHERE i.token_sha256 = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(&store.pool)
    .await?)
}

/// The page for a link that cannot take an answer, if so.
fn closed(inv: &Option<Invitation>) -> Option<Response> {
    match inv {
        None => Some(page(
            StatusCode::NOT_FOUND,
            &PT_BR,
            &format!("<p>{}</p>\n<p lang=\"es\">{}</p>", PT_BR.unknown, ES.unknown),
        )),
        Some(i) if i.answered => {
            let w = words(&i.language);
            Some(page(StatusCode::CONFLICT, w, &format!("<p>{}</p>", escape(w.already))))
        }
        Some(i) if i.expires_at <= OffsetDateTime::now_utc() => {
            let w = words(&i.language);
            Some(page(StatusCode::GONE, w, &format!("<p>{}</p>", escape(w.expired))))
        }
        Some(_) => None,
    }
}

async fn show(State(st): State<SurveyState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let inv = invitation(&st.store, &token).await?;
    if let Some(r) = closed(&inv) {
        return Ok(r);
    }
    let inv = inv.expect("open invitation");
    let w = words(&inv.language);
    Ok(page(
        StatusCode::OK,
        w,
        &form_html(&inv.language, &inv.correlation_id, None, None, ""),
    ))
}

#[derive(Debug, Deserialize)]
pub struct AnswerForm {
    score: Option<String>,
    comment: Option<String>,
}

/// The answer, checked: (score, comment), or the message to show.
pub fn check(form: &AnswerForm, lang: &str) -> Result<(u8, Option<String>), &'static str> {
    let w = words(lang);
    let score = form
        .score
        .as_deref()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|s| *s <= 10)
        .ok_or(w.pick_score)?;
    let comment = form.comment.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if let Some(c) = comment
        && (c.chars().count() > MAX_COMMENT_CHARS || check_visible_text(&c.replace(['\n', '\r', '\t'], " ")).is_err())
    {
        return Err(w.comment_too_long);
    }
    Ok((score, comment.map(str::to_string)))
}

async fn answer(
    State(st): State<SurveyState>,
    Path(token): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Result<Response, ApiError> {
    let inv = invitation(&st.store, &token).await?;
    if let Some(r) = closed(&inv) {
        return Ok(r);
    }
    let inv = inv.expect("open invitation");
    let w = words(&inv.language);
    let (score, comment) = match check(&form, &inv.language) {
        Ok(a) => a,
        Err(msg) => {
            let score = form.score.as_deref().and_then(|s| s.parse().ok()).filter(|s| *s <= 10);
            let comment: String = form
                .comment
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(MAX_COMMENT_CHARS)
                .collect();
            return Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                w,
                &form_html(&inv.language, &inv.correlation_id, Some(msg), score, &comment),
            ));
        }
    };
    let mut env = Envelope::for_order(
        EventPayload::SurveyAnswered(SurveyAnswered {
            score,
            comment: comment.clone(),
            language: inv.language.clone(),
        }),
        inv.order_id,
        inv.shop_id,
        &inv.correlation_id,
    );
    env.trace = payhub_telemetry::trace::current_context();
    let mut tx = st.store.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO survey_answers (order_id, shop_id, score, comment, language) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(inv.order_id)
    .bind(inv.shop_id)
    .bind(i16::from(score))
    .bind(comment.as_deref())
    .bind(&inv.language)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Answered a moment ago, in another request.
        return Ok(page(StatusCode::CONFLICT, w, &format!("<p>{}</p>", escape(w.already))));
    }
    outbox::add(&mut tx, &env).await?;
    tx.commit().await?;
    if let Err(e) = st.outbox.publish_now(std::slice::from_ref(&env)).await {
        tracing::warn!(error = %e, "publish after commit failed; the outbox relay will publish it");
    }
    Ok(page(StatusCode::OK, w, &format!("<p>{}</p>", escape(w.thanks))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_speaks_the_buyers_language_and_escapes_what_it_echoes() {
        let pt = form_html("pt-BR", "p-1", None, None, "");
        assert!(pt.contains("recomendaria") && pt.contains("value=\"10\""), "{pt}");
        let es = form_html("es", "p-1", Some(ES.pick_score), Some(7), "<b>hola</b>");
        assert!(es.contains("recomiende") && es.contains("Elija una nota"), "{es}");
        assert!(es.contains("&lt;b&gt;hola&lt;/b&gt;") && !es.contains("<b>hola"));
        assert!(es.contains("value=\"7\" required checked"));
    }

    #[test]
    fn an_answer_is_a_score_from_0_to_10_and_an_optional_comment() {
        let f = |s: Option<&str>, c: Option<&str>| AnswerForm {
            score: s.map(str::to_string),
            comment: c.map(str::to_string),
        };
        assert_eq!(
            check(&f(Some("9"), Some(" ótimo ")), "pt-BR"),
            Ok((9, Some("ótimo".into())))
        );
        assert_eq!(check(&f(Some("0"), Some("")), "pt-BR"), Ok((0, None)));
        assert_eq!(check(&f(Some("11"), None), "pt-BR"), Err(PT_BR.pick_score));
        assert_eq!(check(&f(None, None), "es"), Err(ES.pick_score));
        assert_eq!(check(&f(Some("x"), None), "es"), Err(ES.pick_score));
        let long = "a".repeat(MAX_COMMENT_CHARS + 1);
        assert_eq!(check(&f(Some("5"), Some(&long)), "pt-BR"), Err(PT_BR.comment_too_long));
        assert!(check(&f(Some("5"), Some("linha 1\nlinha 2")), "pt-BR").is_ok());
    }
}
