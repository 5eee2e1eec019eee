-- The invoice ("nota fiscal", issue 12 §3) and the survey after payment for
-- shops that report no shipping (issue 12 §4). Idempotent.

-- (payhubctl) How a shop invoices: `enabled` (payhub asks the shop's
-- invoicing service for each paid order's invoice) and the fiscal profile
-- the invoice needs beyond the order (the emitter's CNPJ, state
-- registration, tax regime, CFOP/NCM and tax situation codes). The
-- invoicing account's token is a provider account (`provider_accounts`,
-- provider `focusnfe`), sealed like every provider secret. A shop without
-- a row here does not invoice through payhub.
CREATE TABLE IF NOT EXISTS shop_invoicing (
    shop_id     uuid PRIMARY KEY REFERENCES shops (id),
    enabled     boolean NOT NULL,
    profile     jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- (charge-creator) One invoice per paid order: `requested` once asked for,
-- then `issued` (number, series, access key, PDF and XML links) or
-- `failed` (the reason). `reference` is the invoicing service's own
-- idempotency key (Focus NFe's `ref`): a retry asks for the same one and
-- never issues twice.
CREATE TABLE IF NOT EXISTS invoices (
    order_id     uuid PRIMARY KEY REFERENCES orders (id),
    shop_id      uuid NOT NULL REFERENCES shops (id),
    service      text NOT NULL,
    reference    text NOT NULL,
    status       text NOT NULL CHECK (status IN ('requested', 'issued', 'failed')),
    number       text,
    series       text,
    access_key   text,
    pdf_url      text,
    xml_url      text,
    reason       text,
    attempts     integer NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS invoices_shop ON invoices (shop_id, status);

-- (payhubctl) A shop that reports no shipping has its buyers invited to the
-- satisfaction survey this many days after payment (reporter's sweeper);
-- NULL: after delivery (the default).
ALTER TABLE shops ADD COLUMN IF NOT EXISTS survey_after_payment_days integer
    CHECK (survey_after_payment_days BETWEEN 1 AND 90);

-- (reporter) Orders whose survey the sweeper asked for after payment: once each.
CREATE TABLE IF NOT EXISTS survey_due (
    order_id   uuid PRIMARY KEY REFERENCES orders (id),
    shop_id    uuid NOT NULL REFERENCES shops (id),
    due_at     timestamptz NOT NULL DEFAULT now()
);
