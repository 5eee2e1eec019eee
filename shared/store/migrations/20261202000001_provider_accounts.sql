-- A hub of providers (issue 10): each shop's own provider accounts.
-- Idempotent: every statement may run again.

-- (payhubctl) A shop's credentials at one provider, set and rotated with
-- `payhubctl shop set-provider`. The secrets (OpenPix AppID, PixelPay
-- Secret Key, Pago Seguro API key) are sealed in `credentials_enc` under
-- PAYHUB_PROVIDER_KEY, bound to the row's id, which only charge-creator and
-- payhubctl hold. `public_id` and `endpoint` are what may be shown (PixelPay's
-- Key ID, Pago Seguro's Account ID, a bank's white-label endpoint). A shop
-- without a row for a provider uses the platform's account (settings).
CREATE TABLE IF NOT EXISTS provider_accounts (
    id              uuid PRIMARY KEY,
    shop_id         uuid NOT NULL REFERENCES shops (id),
    provider        text NOT NULL,
    public_id       text,
    endpoint        text,
    credentials_enc bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, provider)
);

-- (charge-creator) What charge-creator found at the provider about the
-- webhooks payhub needs there (OpenPix: one per event), one row per account
-- and event: registered, missing, or the error of the last attempt.
CREATE TABLE IF NOT EXISTS provider_webhooks (
    account_id  uuid NOT NULL REFERENCES provider_accounts (id),
    event       text NOT NULL,
    url         text NOT NULL,
    state       text NOT NULL,
    provider_id text,
    detail      text,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event)
);

-- How the charge was paid: 'pix' or 'card'.
ALTER TABLE charges ADD COLUMN IF NOT EXISTS method text NOT NULL DEFAULT 'pix';
