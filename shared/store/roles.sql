-- Least privilege in PostgreSQL: one NOLOGIN group role per service, which
-- may write only the tables that service owns (the table comments in
-- migrations/). Applied by `payhubctl db roles` as the database owner after
-- `payhubctl migrate`; idempotent, and it converges: every run first revokes
-- what the roles had on payhub's tables, then grants exactly this.
--
-- Roles are cluster-wide, grants are per database. Login users get a role's
-- rights by membership (INHERIT, the default), e.g.
--   CREATE ROLE ingress_app LOGIN PASSWORD '...' IN ROLE payhub_ingress;
-- and each service connects as its own login user. payhubctl (migrations,
-- shops) connects as the database owner.

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['payhub_ingress', 'payhub_charge_creator', 'payhub_webhook_verifier',
                             'payhub_order_updater', 'payhub_notifier', 'payhub_reporter'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- exists already (or another database's run created it just now)
        END;
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %I', r);
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
        -- Every service reads what it needs; shops (written by payhubctl only)
        -- are read by all, their webhook secrets sealed under a key only the
        -- notifier holds.
        EXECUTE format('GRANT SELECT ON shops, orders, order_history, charges, webhook_events, deliveries,
                               processed_events, outbox, report_daily, stale_orders, provider_webhooks, card_attempts,
                               refunds TO %I', r);
        -- Issue 12: late and on-time deliveries (reporter's).
        EXECUTE format('GRANT SELECT ON delivery_outcomes TO %I', r);
        -- Issue 12: payment receipts (notifier's).
        EXECUTE format('GRANT SELECT ON receipts TO %I', r);
        -- Issue 12: the satisfaction survey (invitations notifier's, answers ingress's).
        EXECUTE format('GRANT SELECT ON survey_invitations, survey_answers TO %I', r);
        -- Every publisher stores its events in the outbox and marks them
        -- published; every consumer records the events it applied.
        EXECUTE format('GRANT INSERT, UPDATE ON outbox TO %I', r);
        EXECUTE format('GRANT INSERT ON processed_events TO %I', r);
        -- Which provider accounts a shop has is no secret (the sealed
        -- credentials column is charge-creator's alone, below).
        EXECUTE format('GRANT SELECT (id, shop_id, provider, public_id, endpoint, created_at, rotated_at)
                               ON provider_accounts TO %I', r);
    END LOOP;
END
$roles$;

-- ingress creates orders and their first history entry.
GRANT INSERT ON orders, order_history TO payhub_ingress;
GRANT USAGE ON SEQUENCE order_history_id_seq TO payhub_ingress;
-- ... and keeps the buyers' survey answers (issue 12).
GRANT INSERT ON survey_answers TO payhub_ingress;

-- charge-creator owns charges, refunds and what it found of the webhooks at
-- each provider account; it alone reads the shops' sealed provider credentials.
GRANT INSERT, UPDATE ON charges, provider_webhooks, card_attempts, refunds TO payhub_charge_creator;
GRANT SELECT ON provider_accounts TO payhub_charge_creator;

-- webhook-verifier owns webhook_events (each webhook and its verdict).
GRANT INSERT ON webhook_events TO payhub_webhook_verifier;

-- order-updater moves an order's status (those columns only) and writes its history.
GRANT UPDATE (status, status_reason, updated_at, paid_at, end_to_end_id) ON orders TO payhub_order_updater;
GRANT INSERT ON order_history TO payhub_order_updater;
-- ... and, after payment, the shipment and the delivery promise (issue 12).
GRANT UPDATE (carrier, tracking_code, tracking_url, promised_delivery_on, shipped_at, delivered_at)
    ON orders TO payhub_order_updater;
GRANT USAGE ON SEQUENCE order_history_id_seq TO payhub_order_updater;

-- notifier owns deliveries.
GRANT INSERT, UPDATE ON deliveries TO payhub_notifier;
GRANT INSERT ON receipts TO payhub_notifier;
GRANT INSERT, UPDATE ON survey_invitations TO payhub_notifier;

-- reporter owns the daily figures and the sweeper's findings. order-updater
-- writes a status move's figures (its report row, ledger line and delivery
-- outcome) in the move's own transaction (issue 14); reporter writes them
-- for events still queued for it from before.
GRANT INSERT, UPDATE ON report_daily, stale_orders TO payhub_reporter;
GRANT INSERT ON delivery_outcomes TO payhub_reporter;
GRANT INSERT, UPDATE ON report_daily TO payhub_order_updater;
GRANT INSERT ON delivery_outcomes, ledger_lines TO payhub_order_updater;

-- charge-creator owns provider_health (its probes of each provider account);
-- ingress reads it to refuse orders while a shop's provider is down.
GRANT SELECT ON provider_health TO payhub_ingress, payhub_charge_creator, payhub_webhook_verifier,
                                   payhub_order_updater, payhub_notifier, payhub_reporter;
GRANT INSERT, UPDATE ON provider_health TO payhub_charge_creator;

-- reporter owns the settlement ledger and its exports (payhubctl, as the
-- database owner, exports too).
GRANT SELECT ON ledger_lines, ledger_exports TO payhub_ingress, payhub_charge_creator, payhub_webhook_verifier,
                                              payhub_order_updater, payhub_notifier, payhub_reporter;
GRANT INSERT, UPDATE ON ledger_lines, ledger_exports TO payhub_reporter;

-- reporter owns reconciliation (its runs and what they found).
GRANT SELECT ON reconciliation_runs, reconciliation_discrepancies TO payhub_ingress, payhub_charge_creator,
    payhub_webhook_verifier, payhub_order_updater, payhub_notifier, payhub_reporter;
GRANT INSERT, UPDATE ON reconciliation_runs, reconciliation_discrepancies TO payhub_reporter;

-- ingress owns the hosted checkout's sessions (issue 11); the notifier reads
-- them for the order links it puts in buyers' e-mails.
GRANT SELECT, INSERT ON checkout_sessions TO payhub_ingress;
GRANT SELECT ON checkout_sessions TO payhub_notifier;

-- charge-creator owns Pago Seguro's returns (issue 11 §2): it alone holds the
-- API key that checks them; ingress reads them for the buyer's result page.
-- It reads the checkout sessions to find the order a return URL names.
GRANT SELECT ON checkout_sessions TO payhub_charge_creator;
GRANT SELECT ON pagoseguro_returns TO payhub_ingress, payhub_charge_creator, payhub_notifier, payhub_reporter;
GRANT INSERT ON pagoseguro_returns TO payhub_charge_creator;

-- Issue 12 §3: charge-creator owns the invoices it asks the shops' invoicing
-- services for; every service reads them (the order view, the e-mails) and
-- the shops' invoicing settings (written by payhubctl only). Issue 12 §4:
-- reporter records the surveys it asked for after payment.
GRANT SELECT ON invoices, shop_invoicing, survey_due TO payhub_ingress, payhub_charge_creator,
    payhub_webhook_verifier, payhub_order_updater, payhub_notifier, payhub_reporter;
GRANT INSERT, UPDATE ON invoices TO payhub_charge_creator;
GRANT INSERT ON survey_due TO payhub_reporter;

-- Issue 13 §3: reporter owns the management reports' snapshots; notifier
-- reads them to e-mail them.
GRANT SELECT ON report_snapshots TO payhub_ingress, payhub_charge_creator, payhub_webhook_verifier,
    payhub_order_updater, payhub_notifier, payhub_reporter;
GRANT INSERT ON report_snapshots TO payhub_reporter;
