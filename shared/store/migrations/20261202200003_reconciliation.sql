-- Reconciliation with the providers (issue 13 §1). Idempotent.

-- (reporter) Each run: the day compared, what started it, how it ended.
CREATE TABLE IF NOT EXISTS reconciliation_runs (
    id            uuid PRIMARY KEY,
    day           date NOT NULL,
    trigger       text NOT NULL,
    status        text NOT NULL CHECK (status IN ('clean', 'discrepancies', 'incomplete')),
    checked       integer NOT NULL,
    discrepancies integer NOT NULL,
    detail        text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reconciliation_runs_day ON reconciliation_runs (day, finished_at DESC);

-- (reporter) What a run found, one row per (day, reference, kind), and how
-- it was resolved: `settled` (payhub applied the provider's confirmed
-- payment), `resolved` (a later run no longer finds it), or `open` (a
-- person must look: the shop's admin and the platform are alerted once).
CREATE TABLE IF NOT EXISTS reconciliation_discrepancies (
    id                uuid PRIMARY KEY,
    day               date NOT NULL,
    shop_id           uuid REFERENCES shops (id),
    order_id          uuid REFERENCES orders (id),
    reference         text NOT NULL,
    provider          text NOT NULL,
    account           text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('paid_at_provider_only', 'unknown_at_provider',
                                                    'not_paid_at_provider', 'amount_mismatch', 'duplicate')),
    detail            text NOT NULL,
    resolution        text NOT NULL CHECK (resolution IN ('open', 'settled', 'resolved')),
    resolution_detail text,
    first_run         uuid NOT NULL,
    last_run          uuid NOT NULL,
    found_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    alerted_at        timestamptz,
    UNIQUE (day, reference, kind)
);
CREATE INDEX IF NOT EXISTS reconciliation_discrepancies_open ON reconciliation_discrepancies (day) WHERE resolution = 'open';
