-- Settlement ledger and exports (issue 13 §2). Idempotent.

-- (reporter) One line per money movement of a paid order: the payment
-- (gross = the order's total, fee = the provider fee the shop's rules set
-- at acceptance, net = gross - fee) and each confirmed refund (negative
-- gross and net, no fee). `source_event_id` is the order.status_changed the
-- line came from: a redelivered event adds no second line. `export_id` is
-- set when the line is exported: the line is then `processed` and no later
-- export carries it again.
CREATE TABLE IF NOT EXISTS ledger_lines (
    id              uuid PRIMARY KEY,
    shop_id         uuid NOT NULL REFERENCES shops (id),
    order_id        uuid NOT NULL REFERENCES orders (id),
    correlation_id  text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('payment', 'refund')),
    source_event_id uuid NOT NULL UNIQUE,
    provider        text NOT NULL,
    method          text NOT NULL,
    currency        char(3) NOT NULL,
    gross_minor     bigint NOT NULL,
    fee_minor       bigint NOT NULL,
    net_minor       bigint NOT NULL,
    settlement_date date NOT NULL,
    occurred_at     timestamptz NOT NULL,
    export_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_lines_unexported ON ledger_lines (shop_id, settlement_date) WHERE export_id IS NULL;
CREATE INDEX IF NOT EXISTS ledger_lines_export ON ledger_lines (export_id) WHERE export_id IS NOT NULL;

-- (reporter) Each export as it was handed out, byte for byte: its CSV and
-- JSON bodies and their SHA-256, so that a re-download is identical.
-- `idempotency_key` (the client's Idempotency-Key) makes a repeated request
-- the same export.
CREATE TABLE IF NOT EXISTS ledger_exports (
    id              uuid PRIMARY KEY,
    shop_id         uuid NOT NULL REFERENCES shops (id),
    date_from       date NOT NULL,
    date_to         date NOT NULL,
    lines           integer NOT NULL,
    csv             bytea NOT NULL,
    csv_sha256      bytea NOT NULL,
    json            bytea NOT NULL,
    json_sha256     bytea NOT NULL,
    idempotency_key text,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shop_id, idempotency_key)
);
