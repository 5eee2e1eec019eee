-- The order's life after payment (issue 12 §1): forwarded, shipped,
-- delivered, returned or cancelled, as the shop reports it.

-- The shipment and the delivery promise. (order-updater, with the status)
ALTER TABLE orders ADD COLUMN IF NOT EXISTS carrier text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS tracking_code text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS tracking_url text;
-- The shop's local date the order is to be delivered by, set at payment
-- from the shop's `deliveryTime` rule; NULL when the shop promises nothing.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS promised_delivery_on date;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS shipped_at timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS delivered_at timestamptz;
-- The sweeper looks for promised orders not delivered yet.
CREATE INDEX IF NOT EXISTS orders_promised_open ON orders (promised_delivery_on)
    WHERE promised_delivery_on IS NOT NULL AND status IN ('paid', 'fulfilling', 'shipped');

-- Each delivered order once: on time or late against its promise. (reporter)
CREATE TABLE IF NOT EXISTS delivery_outcomes (
    order_id      uuid PRIMARY KEY REFERENCES orders (id),
    shop_id       uuid NOT NULL REFERENCES shops (id),
    promised_on   date NOT NULL,
    delivered_on  date NOT NULL,
    on_time       boolean NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS delivery_outcomes_shop ON delivery_outcomes (shop_id, delivered_on);
