#!/usr/bin/env python3
"""Checks every example order message against the JSON Schema contract."""
import json
import pathlib
import sys

import jsonschema

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/contracts")
schema = json.loads((root / "order-message.schema.json").read_text(encoding="utf-8"))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
failures = 0
examples = sorted((root / "examples").glob("*.json"))
for path in examples:
    errors = list(validator.iter_errors(json.loads(path.read_text(encoding="utf-8"))))
    for e in errors:
        print(f"{path.name}: {'/'.join(map(str, e.path))}: {e.message}")
    failures += bool(errors)
# An invalid message must fail the schema too (the schema is not vacuous).
bad = json.loads(examples[0].read_text(encoding="utf-8"))
bad["items"][0]["qty"] = 0
del bad["customer"]
if validator.is_valid(bad):
    print("the schema accepts an order without a customer and with qty 0")
    failures += 1
# Fulfilment messages (issue 12): their own schema and examples.
fulfilment_schema_path = root / "fulfilment-message.schema.json"
if fulfilment_schema_path.exists():
    fschema = json.loads(fulfilment_schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(fschema)
    fvalidator = jsonschema.Draft202012Validator(fschema, format_checker=jsonschema.FormatChecker())
    fexamples = sorted((root / "fulfilment-examples").glob("*.json"))
    for path in fexamples:
        errors = list(fvalidator.iter_errors(json.loads(path.read_text(encoding="utf-8"))))
        for e in errors:
            print(f"fulfilment/{path.name}: {'/'.join(map(str, e.path))}: {e.message}")
        failures += bool(errors)
    for bad in (
        {"type": "order.shipped", "correlationID": "c"},
        {"type": "order.delivered", "correlationID": "c", "trackingCode": "X1"},
        {"type": "order.paid", "correlationID": "c"},
    ):
        if fvalidator.is_valid(bad):
            print(f"the fulfilment schema accepts {bad}")
            failures += 1
    examples = examples + fexamples
print(f"{len(examples) - failures if failures <= len(examples) else 0} passed, {failures} failed")
sys.exit(1 if failures else 0)
