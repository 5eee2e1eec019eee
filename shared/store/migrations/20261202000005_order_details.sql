-- What shop webhooks carry (issue 10 §5). Idempotent.

-- The shop's own metadata given with the order, returned unchanged in its
-- webhooks (PixelPay's `extra`). (ingress)
ALTER TABLE orders ADD COLUMN IF NOT EXISTS extra jsonb NOT NULL DEFAULT '{}';

-- Which body the shop's status webhooks have: payhub's own, or PixelPay's
-- success and error webhooks for shops that already integrate PixelPay
-- (still signed per Standard Webhooks). (payhubctl)
ALTER TABLE shops ADD COLUMN IF NOT EXISTS webhook_format text NOT NULL DEFAULT 'payhub';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_webhook_format_known') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_webhook_format_known CHECK (webhook_format IN ('payhub', 'pixelpay'));
    END IF;
END
$$;
