-- Issue 10 §2 and §4: what a provider account settles, and card
-- authorisations captured later (Wake's /authorize, then /capture).
-- Idempotent: every statement may run again.

-- (payhubctl) The currencies an account declares it settles (a bank's
-- white-label PixelPay host serving another country); NULL: the provider's
-- documented currencies (payhub_connectors::capabilities).
ALTER TABLE provider_accounts ADD COLUMN IF NOT EXISTS currencies text[];

-- (charge-creator) A card authorisation holds the money until its capture:
-- authorized_at is set by the approved `auth`, captured_at by the approved
-- capture. A sale has neither.
ALTER TABLE charges ADD COLUMN IF NOT EXISTS authorized_at timestamptz;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS captured_at timestamptz;
