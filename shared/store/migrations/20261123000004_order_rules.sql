-- A shop's own order rules (seed 004): delivery coverage, stock, provider
-- fees. JSON validated by payhubctl before it is stored (core::rules).
ALTER TABLE shops ADD COLUMN IF NOT EXISTS order_rules jsonb NOT NULL DEFAULT '{}';

-- What the provider charges the shop for the order, computed from the
-- shop's rules when the order is accepted; the shop's net is total - fee.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS provider_fee_minor bigint NOT NULL DEFAULT 0 CHECK (provider_fee_minor >= 0);
