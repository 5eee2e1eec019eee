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
print(f"{len(examples) - failures if failures <= len(examples) else 0} passed, {failures} failed")
sys.exit(1 if failures else 0)
