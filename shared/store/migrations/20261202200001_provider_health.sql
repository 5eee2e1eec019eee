-- Provider health (issue 13 §4). Idempotent: every statement may run again.

-- (charge-creator) What the last probes of each provider account found: a
-- cheap authenticated call every PAYHUB_PROVIDER_PROBE_INTERVAL_MS. `account`
-- is `platform:<provider>` for the platform's own account (settings), or a
-- provider_accounts id. `state`: up (answered), refused (answered, but
-- refused payhub's credentials), down (no usable answer for
-- PAYHUB_PROVIDER_DOWN_AFTER probes in a row). While an account is down,
-- charge-creator holds the orders it would charge there, and ingress answers
-- 503 with Retry-After to the shops that chose so (shops.provider_down_policy).
CREATE TABLE IF NOT EXISTS provider_health (
    account       text PRIMARY KEY,
    provider      text NOT NULL,
    shop_id       uuid REFERENCES shops (id),
    state         text NOT NULL CHECK (state IN ('up', 'refused', 'down')),
    failures      integer NOT NULL DEFAULT 0,
    detail        text,
    down_since    timestamptz,
    checked_at    timestamptz NOT NULL DEFAULT now(),
    next_probe_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS provider_health_down ON provider_health (provider) WHERE state = 'down';

-- (payhubctl) What a shop wants while its provider account is down:
-- 'hold' (accept the order; its charge is created once the provider is back)
-- or 'reject' (the HTTP doors answer 503 with Retry-After). A card is never
-- held: a card order is refused with 503 while its provider is down.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS provider_down_policy text NOT NULL DEFAULT 'hold';
DO $$
BEGIN
    ALTER TABLE shops ADD CONSTRAINT shops_provider_down_policy CHECK (provider_down_policy IN ('hold', 'reject'));
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
