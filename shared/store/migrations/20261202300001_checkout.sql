-- The hosted checkout page (issue 11 §1). Idempotent.

-- A checkout session: the buyer's way to pay one order on payhub's own page,
-- behind an unguessable token that expires with the order. (ingress)
CREATE TABLE IF NOT EXISTS checkout_sessions (
    order_id    uuid PRIMARY KEY REFERENCES orders (id),
    -- 256 random bits, hex: the checkout URL's only key.
    token       text NOT NULL UNIQUE CHECK (length(token) = 64),
    -- Bound to the card form: a POST without it is refused (CSRF).
    csrf_token  text NOT NULL CHECK (length(csrf_token) = 64),
    return_url  text NOT NULL,
    cancel_url  text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The shop's checkout settings: the page's language when the browser names
-- neither pt-BR nor es, and the origins that may embed payhub's pages in a
-- frame (Content-Security-Policy frame-ancestors). (payhubctl)
ALTER TABLE shops ADD COLUMN IF NOT EXISTS checkout_locale text NOT NULL DEFAULT 'pt-BR';
ALTER TABLE shops ADD COLUMN IF NOT EXISTS checkout_origins text[] NOT NULL DEFAULT '{}';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'shops_checkout_locale_known') THEN
        ALTER TABLE shops ADD CONSTRAINT shops_checkout_locale_known CHECK (checkout_locale IN ('pt-BR', 'es'));
    END IF;
END
$$;
