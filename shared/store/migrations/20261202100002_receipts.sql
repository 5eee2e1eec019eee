-- Payment receipts ("comprovantes", issue 12 §2): each paid order's receipt in
-- each layout, rendered once from the stored order by payhub-documents,
-- kept with its SHA-256 so that every fetch returns the same bytes.
-- (notifier: it makes them for the buyer's confirmation e-mail)
CREATE TABLE IF NOT EXISTS receipts (
    order_id    uuid NOT NULL REFERENCES orders (id),
    -- a4 | 80mm
    layout      text NOT NULL CHECK (layout IN ('a4', '80mm')),
    sha256      bytea NOT NULL CHECK (length(sha256) = 32),
    pdf         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, layout)
);
