#!/usr/bin/env python3
"""Publishes one order message to payhub the way a shop does, with pika.

    publish_order.py --url amqp://shop-user:secret@127.0.0.1:5672/%2f \
        --exchange payhub.orders --routing-key orders.loja --file order.json

The AMQP user_id property is set to the connection's user: payhub identifies
the shop by it, and RabbitMQ itself refuses a user_id that is not the
connection's user. The publish is persistent, mandatory and confirmed, so
an exit status of 0 means the broker holds the message.
"""
import argparse
import json
import sys
import urllib.parse
import uuid

import pika


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--exchange", default="payhub.orders")
    parser.add_argument("--routing-key", default="orders")
    parser.add_argument("--file", required=True, help="the order JSON, or - for standard input")
    args = parser.parse_args()

    body = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    json.loads(body)  # refuse to publish something that is not JSON
    user = urllib.parse.unquote(urllib.parse.urlparse(args.url).username or "")

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange=args.exchange,
            routing_key=args.routing_key,
            body=body.encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=str(uuid.uuid4()),
                user_id=user,
            ),
            mandatory=True,
        )
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
        print(f"the broker did not take the message: {e}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print("published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
