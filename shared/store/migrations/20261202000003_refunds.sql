-- Refunds (issue 10 §6). Idempotent: every statement may run again.

-- (charge-creator) Every refund a shop asked for, recorded before the
-- provider is called and completed with its answer, under the account that
-- took the payment. `status`: requested (the provider's answer is not known
-- yet), processing (accepted, not settled), confirmed (the money went back),
-- refused (`provider_detail` says why). What remains refundable is the
-- charge's amount minus every refund not refused, checked under a lock on
-- the charge row. The id is also the refund's correlationID at the provider.
CREATE TABLE IF NOT EXISTS refunds (
    id                 uuid PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id),
    -- The shop's key: the same key for the same order is the same refund.
    idempotency_key    text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 100),
    provider           text NOT NULL,
    provider_account   text NOT NULL,
    currency           char(3) NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    status             text NOT NULL CHECK (status IN ('requested', 'processing', 'confirmed', 'refused')),
    reason             text,
    provider_refund_id text,
    provider_detail    text,
    requested_at       timestamptz NOT NULL DEFAULT now(),
    -- The last call to the provider began, and ended (with or without an
    -- answer): a call begun and not ended is in flight, and the same key
    -- meanwhile gets 409 instead of a second call.
    attempted_at       timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    UNIQUE (order_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS refunds_open ON refunds (requested_at) WHERE status IN ('requested', 'processing');
