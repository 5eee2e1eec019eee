//! The HTTP doors while a provider is down (issue 13 §4): a shop that chose
//! `reject` (`payhubctl shop set-provider-down <shop> reject`) gets 503 with
//! `Retry-After` at once instead of orders piling up; a shop that chose
//! `hold` (the default) has its order accepted, and charge-creator creates
//! the charge once the provider is back. A card is never held (it lives only
//! in memory for the one call): a card order is refused while its provider
//! is down, whatever the shop chose. The AMQP door always holds: a message
//! has nobody to answer 503 to.

use crate::accept;
use payhub_core::events::OrderChannel;
use payhub_store::health::{self, DownAccount, DownPolicy, HealthCache};
use payhub_store::{Store, StoreError};
use uuid::Uuid;

/// `Some` when the order must be refused now.
pub async fn refuse_if_down(
    cache: &HealthCache,
    store: &Store,
    shop_id: Uuid,
    provider: &str,
    door: OrderChannel,
    card: bool,
) -> Result<Option<DownAccount>, StoreError> {
    let Some(down) = cache.down_for(shop_id, provider).await? else {
        return Ok(None);
    };
    if !card && health::policy(store, shop_id).await? == DownPolicy::Hold {
        return Ok(None);
    }
    accept::count(door, "provider_down");
    tracing::warn!(%shop_id, provider, account = %down.account, "provider down; refusing the order with 503");
    Ok(Some(down))
}

/// The 503 a door answers, with `Retry-After`.
pub fn unavailable(down: &DownAccount) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = payhub_service::problem::ApiError::Unavailable(format!(
        "{} is not answering payhub right now; no order was stored: retry after {} s",
        down.provider,
        down.retry_after_secs()
    ))
    .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(down.retry_after_secs()),
    );
    r
}
