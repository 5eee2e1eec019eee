-- Reconciliation runs say what they could not compare (issue 13 §1). Idempotent.

-- (reporter) What a run left out, and why, e.g.
-- [{"provider": "pixelpay", "charges": 2, "reason": "..."}]: payments not
-- compared are said so in the run, not counted as reconciled.
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS not_compared jsonb NOT NULL DEFAULT '[]';
