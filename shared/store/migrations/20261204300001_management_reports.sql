-- Management reports (issue 13 §3). Idempotent.

-- (payhubctl) Where a shop's management reports go: its management
-- addresses (`payhubctl shop set-report-emails`). Empty: the shop's admin.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS report_emails text[] NOT NULL DEFAULT '{}';

-- (reporter) Each report as it was made and sent, never changed: its HTML,
-- CSV and PDF and their SHA-256, and `content_sha256` over the three hashes.
-- One per (shop or the platform, period kind, first day): `scope_key` is
-- the shop's id or 'platform'. Two reporters making the same report meet on
-- the unique key; the one whose insert lands emits `report.ready` in the
-- same transaction, the other makes nothing.
CREATE TABLE IF NOT EXISTS report_snapshots (
    id               uuid PRIMARY KEY,
    scope_key        text NOT NULL,
    shop_id          uuid REFERENCES shops (id),
    period           text NOT NULL CHECK (period IN ('daily', 'monthly')),
    period_start     date NOT NULL,
    period_end       date NOT NULL,
    utc_offset_hours smallint NOT NULL,
    trigger          text NOT NULL,
    summary          jsonb NOT NULL,
    html             bytea NOT NULL,
    html_sha256      bytea NOT NULL,
    csv              bytea NOT NULL,
    csv_sha256       bytea NOT NULL,
    pdf              bytea NOT NULL,
    pdf_sha256       bytea NOT NULL,
    content_sha256   bytea NOT NULL,
    renderer         text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope_key, period, period_start),
    CHECK ((shop_id IS NULL) = (scope_key = 'platform'))
);
CREATE INDEX IF NOT EXISTS report_snapshots_shop ON report_snapshots (shop_id, period_start DESC);

-- A snapshot is immutable: "salvar uma cópia para futuras verificações".
CREATE OR REPLACE FUNCTION report_snapshots_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'report snapshots are immutable';
END $$;
DROP TRIGGER IF EXISTS report_snapshots_immutable ON report_snapshots;
CREATE TRIGGER report_snapshots_immutable BEFORE UPDATE OR DELETE ON report_snapshots
    FOR EACH ROW EXECUTE FUNCTION report_snapshots_immutable();
