-- Only PixelPay orders have a callback URL, so only they carry a callback
-- token: a PIX order no longer pays for a random 64-character key and its
-- unique-index entry on every insert (the bench's knee felt it). ingress
-- sets the token for PixelPay orders; the index covers just those rows.
-- Idempotent.
ALTER TABLE orders ALTER COLUMN callback_token DROP DEFAULT;
UPDATE orders SET callback_token = NULL WHERE provider <> 'pixelpay' AND callback_token IS NOT NULL;
DROP INDEX IF EXISTS orders_callback_token;
CREATE UNIQUE INDEX IF NOT EXISTS orders_callback_token_pixelpay ON orders (callback_token)
    WHERE callback_token IS NOT NULL;
