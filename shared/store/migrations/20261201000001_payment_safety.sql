-- A payment counts only when payhub confirmed it with the provider (see
-- payhub_connectors::psync). Idempotent: every statement may run again.

-- The webhook's identity: (provider, transaction, event). An accepted webhook
-- is unique by it, so the same payment reported again changes nothing.
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS dedupe_key text;
-- Rejected webhooks keep only a capped prefix of the body, with the hash and
-- size of the whole, so anonymous traffic cannot fill the database.
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS body_sha256 bytea;
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS body_size integer;
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS body_truncated boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS webhook_events_accepted_once
    ON webhook_events (provider, dedupe_key) WHERE verdict = 'accepted' AND dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_events_received ON webhook_events (received_at);

-- Which of payhub's provider accounts created the charge (a name, never a
-- secret); every re-query uses the same account.
ALTER TABLE charges ADD COLUMN IF NOT EXISTS provider_account text NOT NULL DEFAULT 'platform';

-- The sweeper's findings: orders that stayed in a non-final state too long.
-- (reporter) One row per order and kind; `resolved_at` set once settled.
CREATE TABLE IF NOT EXISTS stale_orders (
    order_id     uuid NOT NULL REFERENCES orders (id),
    kind         text NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_checked timestamptz NOT NULL DEFAULT now(),
    checks       integer NOT NULL DEFAULT 1,
    last_result  text,
    alerted_at   timestamptz,
    resolved_at  timestamptz,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX IF NOT EXISTS stale_orders_open ON stale_orders (kind) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS orders_open_status ON orders (status, updated_at)
    WHERE status IN ('accepted', 'awaiting_payment', 'paid');

-- One outbox row that cannot be published must not hold back the rest: the
-- relay counts its attempts and tries it after the others.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS publish_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS last_error text;
