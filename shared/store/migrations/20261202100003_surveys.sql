-- The satisfaction survey (issue 12 §4).

-- One invitation per delivered order: the link's token (its SHA-256 only),
-- the page's language and when the link expires. (notifier)
CREATE TABLE IF NOT EXISTS survey_invitations (
    order_id      uuid PRIMARY KEY REFERENCES orders (id),
    shop_id       uuid NOT NULL REFERENCES shops (id),
    token_sha256  bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    -- pt-BR | es
    language      text NOT NULL,
    expires_at    timestamptz NOT NULL,
    invited_at    timestamptz NOT NULL DEFAULT now()
);

-- One answer per order. (ingress: the survey page)
CREATE TABLE IF NOT EXISTS survey_answers (
    order_id     uuid PRIMARY KEY REFERENCES orders (id),
    shop_id      uuid NOT NULL REFERENCES shops (id),
    score        smallint NOT NULL CHECK (score BETWEEN 0 AND 10),
    comment      text CHECK (length(comment) <= 1000),
    language     text NOT NULL,
    answered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS survey_answers_shop ON survey_answers (shop_id, answered_at);
