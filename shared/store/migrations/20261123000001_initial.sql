-- payhub's state. Each service writes only the tables it owns (see DESIGN.md);
-- money is always integer minor units with its ISO-4217 currency.

-- Shops: who may submit orders, where their webhooks go. (ingress reads; payhubctl writes)
CREATE TABLE shops (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the API key. Keys are 32 random bytes, so a fast hash is safe.
    api_key_hash    bytea NOT NULL UNIQUE,
    webhook_url     text,
    -- The Standard Webhooks signing secret (whsec_...).
    webhook_secret  text NOT NULL,
    admin_email     text,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Orders. (ingress creates; order-updater moves the status)
CREATE TABLE orders (
    id                  uuid PRIMARY KEY,
    shop_id             uuid NOT NULL REFERENCES shops (id),
    correlation_id      text NOT NULL,
    provider            text NOT NULL,
    channel             text NOT NULL DEFAULT 'api',
    currency            char(3) NOT NULL,
    items_minor         bigint NOT NULL CHECK (items_minor >= 0),
    tax_minor           bigint NOT NULL CHECK (tax_minor >= 0),
    freight_minor       bigint NOT NULL CHECK (freight_minor >= 0),
    discount_minor      bigint NOT NULL CHECK (discount_minor >= 0),
    total_minor         bigint NOT NULL CHECK (total_minor > 0),
    status              text NOT NULL,
    status_reason       text,
    customer_name       text NOT NULL,
    customer_email      text NOT NULL,
    customer_tax_id     text NOT NULL,
    customer_phone      text,
    customer_birth_date date,
    shipping_address    jsonb,
    items               jsonb NOT NULL,
    summary             text NOT NULL,
    expires_in_secs     integer NOT NULL,
    -- SHA-256 of the validated order: a repeat with other content is refused.
    request_hash        bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    paid_at             timestamptz,
    end_to_end_id       text,
    UNIQUE (shop_id, correlation_id)
);
CREATE INDEX orders_created_at ON orders (created_at);

-- The audit trail: every status move, never updated or deleted.
CREATE TABLE order_history (
    id          bigserial PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id),
    from_status text,
    to_status   text NOT NULL,
    reason      text,
    event_id    uuid,
    actor       text NOT NULL,
    details     jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_order ON order_history (order_id, id);

CREATE FUNCTION order_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_history is append-only';
END;
$$;
CREATE TRIGGER order_history_append_only
    BEFORE UPDATE OR DELETE ON order_history
    FOR EACH ROW EXECUTE FUNCTION order_history_is_append_only();

-- Charges at the provider. (charge-creator)
CREATE TABLE charges (
    order_id            uuid PRIMARY KEY REFERENCES orders (id),
    provider            text NOT NULL,
    -- What payhub sent the provider as its correlationID: the order's id.
    provider_reference  text NOT NULL UNIQUE,
    provider_charge_id  text NOT NULL,
    currency            char(3) NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    br_code             text NOT NULL,
    qr_code_image_url   text NOT NULL,
    payment_link_url    text NOT NULL,
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Every provider webhook, with its raw body and the verdict. (webhook-verifier)
CREATE TABLE webhook_events (
    id                  uuid PRIMARY KEY,
    provider            text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- accepted | rejected | test_call | ignored
    verdict             text NOT NULL,
    reason              text,
    event_type          text,
    provider_reference  text,
    signature           text,
    body                bytea NOT NULL
);
CREATE INDEX webhook_events_reference ON webhook_events (provider_reference);

-- Outgoing notifications and their outcome. (notifier)
CREATE TABLE deliveries (
    id                uuid PRIMARY KEY,
    event_id          uuid NOT NULL,
    order_id          uuid,
    shop_id           uuid,
    -- shop_webhook | buyer_email
    kind              text NOT NULL,
    -- The URL, or the masked e-mail address.
    target            text NOT NULL,
    -- Standard Webhooks webhook-id: the same on every attempt.
    webhook_id        text,
    -- pending | delivered | failed
    status            text NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (event_id, kind)
);
CREATE INDEX deliveries_order ON deliveries (order_id);

-- Idempotent consumers: an event's effect and this row commit together.
CREATE TABLE processed_events (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Transactional outbox: events are stored with the effect that caused them
-- and published after commit; a relay publishes whatever a crash left behind.
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,
    routing_key   text NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE published_at IS NULL;

-- Daily figures per shop, provider and status. (reporter)
CREATE TABLE report_daily (
    day           date NOT NULL,
    shop_id       uuid NOT NULL,
    provider      text NOT NULL,
    status        text NOT NULL,
    currency      char(3) NOT NULL,
    orders        bigint NOT NULL DEFAULT 0,
    amount_minor  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, shop_id, provider, status, currency)
);
