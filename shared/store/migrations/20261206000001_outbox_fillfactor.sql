-- Issue 14: an outbox row is written once and marked published once, soon
-- after. Its mark is not a HOT update (published_at is in outbox_pending's
-- predicate), and on a full page the new version lands on another page, so
-- the WAL carried the whole row (the event's body, about 1 kB) a second
-- time. With room left on each page the new version stays on the row's page
-- and PostgreSQL logs only the bytes that changed (the mark). New pages
-- only; existing ones keep their layout.
ALTER TABLE outbox SET (fillfactor = 50);
