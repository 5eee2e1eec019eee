//! The satisfaction survey's invitation (issue 12 §4): once an order is
//! delivered, the buyer gets one e-mail with a link to the survey page
//! (ingress, `GET /survey/{token}`), in the buyer's language, valid for
//! `PAYHUB_SURVEY_VALID_DAYS`. Only the token's SHA-256 is stored.

use crate::mail::Mail;
use payhub_core::Currency;
use payhub_store::{Store, StoreError};
use sha2::Digest;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct SurveyConfig {
    /// Where buyers reach ingress's survey page (`PAYHUB_SURVEY_BASE_URL`).
    pub base_url: String,
    /// How long a link stays valid (`PAYHUB_SURVEY_VALID_DAYS`).
    pub valid_for: Duration,
}

impl Default for SurveyConfig {
    fn default() -> Self {
        SurveyConfig {
            base_url: "http://127.0.0.1:8080".into(),
            valid_for: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The buyer's language: Brazil's for reais, Spanish for the Central
/// American currencies payhub takes (orders carry no language of their own).
pub fn language(currency: Currency) -> &'static str {
    match currency {
        Currency::Brl => "pt-BR",
        Currency::Hnl | Currency::Nio | Currency::Usd | Currency::Cop => "es",
    }
}

/// A fresh link token (244 random bits) and its SHA-256.
fn token() -> (String, Vec<u8>) {
    let t = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let hash = sha2::Sha256::digest(t.as_bytes()).to_vec();
    (t, hash)
}

/// Makes (or, when an earlier invitation mail was not delivered, renews)
/// the order's invitation; `None` once the buyer has answered.
pub async fn invite(
    store: &Store,
    config: &SurveyConfig,
    order_id: Uuid,
    shop_id: Uuid,
    lang: &str,
) -> Result<Option<String>, StoreError> {
    let answered: Option<(Uuid,)> = sqlx::query_as("SELECT order_id FROM survey_answers WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&store.pool)
        .await?;
    if answered.is_some() {
        return Ok(None);
    }
    let (token, hash) = token();
    sqlx::query(
        "INSERT INTO survey_invitations (order_id, shop_id, token_sha256, language, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (order_id) DO UPDATE
            SET token_sha256 = EXCLUDED.token_sha256, expires_at = EXCLUDED.expires_at, invited_at = now()",
    )
    .bind(order_id)
    .bind(shop_id)
    .bind(&hash)
    .bind(lang)
    .bind(config.valid_for.as_secs_f64())
    .execute(&store.pool)
    .await?;
    Ok(Some(format!(
        "{}/survey/{token}",
        config.base_url.trim_end_matches('/')
    )))
}

/// The invitation e-mail; it ends with the order's own page ("my orders",
/// issue 11 §3), after the survey's link.
pub fn mail(
    order: &str,
    customer_name: &str,
    lang: &str,
    link: &str,
    valid_days: u64,
    days_after_payment: Option<u16>,
    order_link: &str,
) -> Mail {
    if lang == "es" {
        let what = match days_after_payment {
            None => "fue entregado".to_string(),
            Some(d) => format!("fue pagado hace {d} días"),
        };
        Mail {
            subject: format!("¿Qué le pareció su pedido {order}?"),
            body: format!(
                "¡Hola, {customer_name}!\n\nSu pedido {order} {what}. ¿Recomendaría la tienda a un amigo?\n\
                 Responda en un minuto (de 0 a 10, y un comentario si quiere):\n{link}\n\n\
                 El enlace vale {valid_days} días y acepta una sola respuesta.\n\n\
                 Sigue tu pedido (estado, productos, comprobante):\n{order_link}\n"
            ),
        }
    } else {
        let what = match days_after_payment {
            None => "foi entregue".to_string(),
            Some(d) => format!("foi pago há {d} dias"),
        };
        Mail {
            subject: format!("Como foi o seu pedido {order}?"),
            body: format!(
                "Olá, {customer_name}!\n\nO seu pedido {order} {what}. Você recomendaria a loja a um amigo?\n\
                 Responda em um minuto (de 0 a 10, e um comentário se quiser):\n{link}\n\n\
                 O link vale {valid_days} dias e aceita uma única resposta.\n\n\
                 Acompanhe o seu pedido (status, itens, comprovante):\n{order_link}\n"
            ),
        }
    }
}
