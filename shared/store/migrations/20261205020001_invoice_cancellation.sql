-- Issue 12 §3: an issued NF-e is cancelled when its paid order is refunded in
-- full or cancelled (charge-creator asks the invoicing service; Focus NFe's
-- `DELETE /v2/nfe/REF` with a justification of 15 to 255 characters, within
-- SEFAZ's deadline). Idempotent.
--
-- `cancelled`: SEFAZ accepted the cancellation (`cancelled_at`, the
-- cancellation's XML). A cancellation refused (past the deadline, ...) or
-- never answered leaves the invoice `issued` (it is still valid) with
-- `cancel_error`; the shop's admin is told. `cancel_reason` is the
-- justification sent; `cancel_attempts` counts the attempts.
ALTER TABLE invoices DROP CONSTRAINT IF EXISTS invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('requested', 'issued', 'failed', 'cancelled'));
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS cancel_reason text;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS cancel_error text;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS cancel_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS cancelled_at timestamptz;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS cancel_xml_url text;
