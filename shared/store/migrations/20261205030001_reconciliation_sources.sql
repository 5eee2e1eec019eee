-- Issue 13 §1: what each run compared with, and how (OpenPix's listing;
-- PixelPay, which has no listing: payhub's own orders, each payment
-- re-queried with status).
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS sources jsonb NOT NULL DEFAULT '[]';
