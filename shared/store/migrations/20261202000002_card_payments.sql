-- Card payments (issue 10 §3). Idempotent: every statement may run again.
-- The card itself is never stored: only what a merchant may see (the masked
-- number and the brand) and the provider's answer.

-- A card charge has no PIX code.
ALTER TABLE charges ALTER COLUMN br_code DROP NOT NULL;
ALTER TABLE charges ALTER COLUMN qr_code_image_url DROP NOT NULL;
ALTER TABLE charges ALTER COLUMN payment_link_url DROP NOT NULL;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS card_masked text;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS card_brand text;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS auth_code text;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS transaction_id text;

-- (charge-creator) Every card call to a provider, recorded before the call
-- and completed with its outcome: approved, declined, three_d_secure,
-- refused, indeterminate (the answer was lost: a person must look, the
-- card is never charged again). Declines and errors stay here for diagnosis.
CREATE TABLE IF NOT EXISTS card_attempts (
    order_id         uuid PRIMARY KEY REFERENCES orders (id),
    provider         text NOT NULL,
    provider_account text NOT NULL,
    card_masked      text NOT NULL,
    card_brand       text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    outcome          text,
    payment_uuid     text,
    response_code    text,
    detail           text
);
