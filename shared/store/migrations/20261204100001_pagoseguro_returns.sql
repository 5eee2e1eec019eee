-- Pago Seguro web checkout returns (issue 11 §2). Idempotent.

-- Every return a buyer's browser brought back from Pago Seguro to
-- `url_response`, with charge-creator's verdict. (charge-creator)
--
-- A return never pays an order: its `sign` covers the reference, the amount,
-- the product and the buyer, but not `status` (providers.md §3.3), and Pago
-- Seguro documents no status query (§3.4) to confirm it with. `verdict` is
-- `verified` (the sign recomputed with the shop's API key, the reference and
-- the amount those of the order) or `rejected` (unverifiable; `reason` says
-- why). `status` is what a verified return says: authorised (22), rejected
-- (17) or pending (anything else).
CREATE TABLE IF NOT EXISTS pagoseguro_returns (
    id            uuid PRIMARY KEY,
    order_id      uuid REFERENCES orders (id),
    received_at   timestamptz NOT NULL DEFAULT now(),
    verdict       text NOT NULL CHECK (verdict IN ('verified', 'rejected')),
    reason        text,
    status        text CHECK (status IN ('authorised', 'rejected', 'pending')),
    -- What the return said, as received (no secret: the API key is never in it).
    status_code   text,
    reference     text,
    value         text,
    approval      text,
    params        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS pagoseguro_returns_order ON pagoseguro_returns (order_id, received_at);
