-- Shops that publish order messages over RabbitMQ are identified by the
-- RabbitMQ user that published (the broker validates the AMQP user-id
-- property against the connection's user). One user belongs to one shop.
ALTER TABLE shops ADD COLUMN IF NOT EXISTS amqp_user text UNIQUE;

-- Wake Commerce orders: the order number (pedido) Wake gave the order, for
-- reconciliation; the chave is the order's correlation_id.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS external_order_number text;
