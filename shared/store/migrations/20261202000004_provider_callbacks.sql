-- What providers call back on (issue 10 §1 and §3). Idempotent: every
-- statement may run again.

-- (ingress) The secret part of the order's PixelPay callback URL,
-- `{PAYHUB_PUBLIC_WEBHOOK_BASE_URL}/webhooks/pixelpay/{callback_token}`, where
-- PixelPay posts the QuickPay collection webhooks of the order (and the card
-- sale's `order_callback`). 244 random bits (two gen_random_uuid(), drawn
-- from PostgreSQL's strong random source), made when the order is stored: it
-- cannot be derived from the order's id, no service needs a key to make or
-- check it, and rotating no key ever breaks a URL a shop already gave
-- PixelPay. PixelPay signs nothing, so this URL and the re-query with
-- `status` are what make a collection webhook count.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS callback_token text;
ALTER TABLE orders ALTER COLUMN callback_token
    SET DEFAULT replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
-- PixelPay orders stored before this migration get one too (few rows; the
-- others keep none: only PixelPay calls back per order).
UPDATE orders SET callback_token = DEFAULT WHERE callback_token IS NULL AND provider = 'pixelpay';
CREATE UNIQUE INDEX IF NOT EXISTS orders_callback_token ON orders (callback_token);

-- One PixelPay payment pays one order at most: charge-creator looks a
-- payment up by its id before it records it for an order.
CREATE INDEX IF NOT EXISTS charges_provider_charge_id ON charges (provider, provider_charge_id);
