-- Shop onboarding: webhook signing secrets encrypted at rest and rotated with
-- an overlap, the Wake Commerce connector's secret, the providers a shop may
-- use, and disabling. Idempotent: every statement may run again harmlessly.
--
-- Webhook signing secrets must be readable to sign, so they are sealed with
-- AES-256-GCM under PAYHUB_SECRETS_KEY by the application (the database never
-- sees the key): nonce (12 bytes) || ciphertext || tag (16 bytes), with the
-- shop id as associated data. API keys and the Wake secret are 32 random
-- bytes and are kept only as their SHA-256.
--
-- The plaintext `webhook_secret` column belongs to a released schema, so it
-- stays, as a read-only fallback: a row whose `webhook_secret_enc` is NULL
-- (created before this migration) is still read from it. Every new write
-- (shop creation, rotation) goes to `webhook_secret_enc` and sets the
-- plaintext column to NULL; `payhubctl shop encrypt-secrets` seals the
-- remaining plaintext rows at once. Binaries older than this migration cannot
-- read a shop whose plaintext column is NULL: upgrade the services before
-- creating or rotating shops. A later migration drops the column once no row
-- uses it.

ALTER TABLE shops ADD COLUMN IF NOT EXISTS webhook_secret_enc bytea;
-- The secret before the last rotation, still signed with until
-- webhook_secret_prev_valid_until (Standard Webhooks allows several signatures).
ALTER TABLE shops ADD COLUMN IF NOT EXISTS webhook_secret_prev_enc bytea;
ALTER TABLE shops ADD COLUMN IF NOT EXISTS webhook_secret_prev_valid_until timestamptz;
-- The Wake Commerce store this shop is, and the SHA-256 of the secret Wake
-- sends in its header.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS wake_store text;
ALTER TABLE shops ADD COLUMN IF NOT EXISTS wake_secret_hash bytea;
-- Providers the shop may create charges at.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS allowed_providers text[] NOT NULL DEFAULT '{openpix}';
-- When the shop was disabled (NULL while active); `active` stays the switch.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

-- New rows carry no plaintext.
ALTER TABLE shops ALTER COLUMN webhook_secret DROP NOT NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_webhook_secret_present') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_webhook_secret_present
            CHECK (webhook_secret_enc IS NOT NULL OR webhook_secret IS NOT NULL);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_webhook_secret_enc_length') THEN
        -- At least nonce + tag + a 16-byte secret.
        ALTER TABLE shops ADD CONSTRAINT shops_webhook_secret_enc_length
            CHECK (webhook_secret_enc IS NULL OR length(webhook_secret_enc) >= 44);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_webhook_secret_prev_pair') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_webhook_secret_prev_pair
            CHECK ((webhook_secret_prev_enc IS NULL) = (webhook_secret_prev_valid_until IS NULL));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_wake_secret_hash_length') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_wake_secret_hash_length
            CHECK (wake_secret_hash IS NULL OR length(wake_secret_hash) = 32);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_wake_store_name') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_wake_store_name
            CHECK (wake_store IS NULL OR length(wake_store) BETWEEN 1 AND 200);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_allowed_providers_nonempty') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_allowed_providers_nonempty
            CHECK (cardinality(allowed_providers) >= 1);
    END IF;
END;
$$;

-- Shops already disabled get a disabled time (unknown before now).
UPDATE shops SET disabled_at = now() WHERE NOT active AND disabled_at IS NULL;

-- The Wake connector finds its shop by the secret's hash; one Wake store is one shop.
CREATE UNIQUE INDEX IF NOT EXISTS shops_wake_secret_hash ON shops (wake_secret_hash) WHERE wake_secret_hash IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS shops_wake_store ON shops (wake_store) WHERE wake_store IS NOT NULL;
