-- Receipts are recorded by their hash, not their bytes (issue 14, and
-- issue 12 §2's "stored, or rendered deterministically, with its hash
-- recorded"): payhub-documents renders the same bytes from the same stored
-- order, so notifier records each layout's SHA-256 and what rendered it,
-- and every fetch renders again and checks the hash. Storing two PDFs per
-- paid order had tripled the WAL an order writes (about 50 kB of 74 kB).
-- Receipts stored with their bytes before this keep them and are served
-- from them.
ALTER TABLE receipts ALTER COLUMN pdf DROP NOT NULL;
ALTER TABLE receipts ADD COLUMN IF NOT EXISTS renderer text;
