#!/usr/bin/env python3
"""Checks payhub's OpenAPI document against responses recorded from the running services.

    check_openapi.py OPENAPI.yaml SAMPLES.json

1. Validates the document (openapi-spec-validator, OpenAPI 3.1) and resolves every `$ref` in it,
   external ones included (the order contract in docs/contracts/).
2. For each recorded sample finds its operation and response and validates the body:
     {"service", "method", "path_template", "status", "content_type", "body"[, "request", "name"]}
   The operation is `paths[path_template][method]`, and `service` must be one of the path's
   servers (`x-payhub-service`). The response for `status` (or its `NXX` range, or `default`)
   must be documented, with the sample's media type; a JSON body is validated against that
   media type's schema (jsonschema, draft 2020-12, formats checked), a text/plain one too, a
   text/csv one only for its media type. `request`, when given, is validated against the
   operation's request body schema.
   A shop webhook sample {"webhook", "headers", "body"} is validated against
   `webhooks[webhook].post`: the request body schema and the required header parameters.
3. Every documented operation (per service serving it) and every documented webhook must be
   covered by at least one sample; an uncovered one is a failure. Documented statuses that no
   sample exercised are listed for information only.

The last line is `N passed, M failed`; the exit status is 1 when anything failed.
"""

import json
import pathlib
import sys
import urllib.parse

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
import yaml
from openapi_spec_validator import validate as validate_spec

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CONTRACTS_ID = "https://payhub.dev/contracts/"


def pointer(*parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


class Spec:
    def __init__(self, path: pathlib.Path):
        self.path = path.resolve()
        self.uri = self.path.as_uri()
        self.doc = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        self.registry = referencing.Registry(retrieve=self._retrieve).with_resource(
            self.uri, referencing.jsonschema.DRAFT202012.create_resource(self.doc)
        )

    def _retrieve(self, uri: str) -> referencing.Resource:
        """Files next to the document, and the contracts by their `$id`."""
        if uri.startswith(CONTRACTS_ID):
            file = self.path.parent / "contracts" / uri[len(CONTRACTS_ID):]
        elif uri.startswith("file:"):
            file = pathlib.Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
        else:
            raise referencing.exceptions.NoSuchResource(ref=uri)
        text = file.read_text(encoding="utf-8")
        contents = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        return referencing.jsonschema.DRAFT202012.create_resource(contents)

    def at(self, ptr: str):
        """The document's value at a JSON pointer."""
        return self.registry.resolver(self.uri).lookup("#" + ptr).contents

    def deref(self, ptr: str) -> tuple[str, dict]:
        """Follows in-document `$ref`s (responses, parameters) to the object; returns its pointer too."""
        value = self.at(ptr)
        seen = set()
        while isinstance(value, dict) and "$ref" in value and value["$ref"].startswith("#"):
            ptr = value["$ref"][1:]
            if ptr in seen:
                raise ValueError(f"$ref loop at {ptr}")
            seen.add(ptr)
            value = self.at(ptr)
        return ptr, value

    def validator(self, schema_ptr: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(
            {"$ref": f"{self.uri}#{schema_ptr}"},
            registry=self.registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    def refs(self, node=None, ptr=""):
        """Every `$ref` in the document, with where it is."""
        node = self.doc if node is None else node
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield ptr, node["$ref"]
            for k, v in node.items():
                yield from self.refs(v, f"{ptr}{pointer(k)}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from self.refs(v, f"{ptr}{pointer(i)}")


def errors_of(validator, instance) -> list[str]:
    out = []
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/".join(map(str, e.absolute_path)) or "(root)"
        out.append(f"{where}: {e.message[:300]}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    spec = Spec(pathlib.Path(argv[1]))
    samples = json.loads(pathlib.Path(argv[2]).read_text(encoding="utf-8"))
    passed = failed = 0

    def ok(label: str) -> None:
        nonlocal passed
        passed += 1
        print(f"ok    {label}")

    def fail(label: str, why: list[str] | str) -> None:
        nonlocal failed
        failed += 1
        print(f"FAIL  {label}")
        for line in [why] if isinstance(why, str) else why:
            print(f"        {line}")

    # 1. The document itself.
    try:
        validate_spec(spec.doc, base_uri=spec.uri)
        ok(f"{argv[1]} is a valid OpenAPI {spec.doc.get('openapi')} document")
    except Exception as e:  # noqa: BLE001 - any validator error is a failure to report
        fail(f"{argv[1]} is not a valid OpenAPI document", str(e).splitlines()[:20])
        print(f"{passed} passed, {failed} failed")
        return 1
    bad_refs = []
    for where, ref in spec.refs():
        try:
            spec.registry.resolver(spec.uri).lookup(ref)
        except Exception as e:  # noqa: BLE001
            bad_refs.append(f"{where or '/'}: $ref {ref!r} does not resolve ({type(e).__name__})")
    if bad_refs:
        fail("every $ref resolves", bad_refs)
    else:
        ok("every $ref resolves")

    # The operations, per service.
    top_servers = spec.doc.get("servers", [])
    operations = {}  # (service, METHOD, path) -> pointer of the operation
    for path, item in spec.doc.get("paths", {}).items():
        services = [s.get("x-payhub-service") for s in item.get("servers", top_servers)]
        if None in services:
            fail(f"servers of {path}", "every server needs x-payhub-service")
        for method in METHODS:
            if method in item:
                for service in services:
                    operations[(service, method.upper(), path)] = pointer("paths", path, method)
    webhooks = {name: pointer("webhooks", name, "post") for name, item in spec.doc.get("webhooks", {}).items()
                if "post" in item}
    covered_ops, covered_hooks, exercised = set(), set(), set()

    # 2. The samples.
    for n, s in enumerate(samples):
        if "webhook" in s:
            label = f"webhook {s['webhook']}" + (f" ({s['name']})" if s.get("name") else "")
            op_ptr = webhooks.get(s["webhook"])
            if not op_ptr:
                fail(label, "no such webhook in the document")
                continue
            covered_hooks.add(s["webhook"])
            op = spec.at(op_ptr)
            problems = []
            headers = {k.lower(): v for k, v in (s.get("headers") or {}).items()}
            for i, _ in enumerate(op.get("parameters", [])):
                pptr, param = spec.deref(f"{op_ptr}{pointer('parameters', i)}")
                if param.get("in") != "header":
                    continue
                value = headers.get(param["name"].lower())
                if value is None:
                    if param.get("required"):
                        problems.append(f"header {param['name']} missing")
                    continue
                problems += [f"header {param['name']}: {e}"
                             for e in errors_of(spec.validator(f"{pptr}/schema"), value)]
            body_ptr = f"{op_ptr}/requestBody/content/application~1json/schema"
            problems += errors_of(spec.validator(body_ptr), s.get("body"))
            fail(label, problems) if problems else ok(label)
            continue

        service, method, path, status = s["service"], s["method"].upper(), s["path_template"], int(s["status"])
        label = f"{service} {method} {path} {status}" + (f" ({s['name']})" if s.get("name") else "")
        op_ptr = operations.get((service, method, path))
        if not op_ptr:
            fail(label, f"the document has no {method} {path} served by {service}")
            continue
        covered_ops.add((service, method, path))
        op = spec.at(op_ptr)
        responses = op.get("responses", {})
        code = next((c for c in (str(status), f"{str(status)[0]}XX", "default") if c in responses), None)
        if code is None:
            fail(label, f"status {status} is not documented (documented: {', '.join(responses)})")
            continue
        exercised.add((method, path, code))
        resp_ptr, resp = spec.deref(f"{op_ptr}{pointer('responses', code)}")
        content = resp.get("content") or {}
        problems = []
        mt = media_type(s.get("content_type"))
        body = s.get("body")
        if not content:
            if body not in (None, ""):
                problems.append("a body was sent but the response documents no content")
        elif mt not in content:
            problems.append(f"content type {mt or '(none)'!r} is not documented (documented: {', '.join(content)})")
        elif mt != "text/csv" and "schema" in content[mt]:
            if mt.endswith("json") and isinstance(body, str):
                problems.append("the body is not JSON")
            else:
                problems += errors_of(spec.validator(f"{resp_ptr}{pointer('content', mt, 'schema')}"), body)
        if "request" in s:
            req = op.get("requestBody", {}).get("content", {})
            if "application/json" not in req:
                problems.append("a request was recorded but the operation documents no JSON request body")
            else:
                req_ptr = f"{op_ptr}{pointer('requestBody', 'content', 'application/json', 'schema')}"
                problems += [f"request: {e}" for e in errors_of(spec.validator(req_ptr), s["request"])]
        fail(label, problems) if problems else ok(label)

    # 3. Coverage.
    for key in sorted(set(operations) - covered_ops):
        fail(f"uncovered operation: {key[0]} {key[1]} {key[2]}", "no sample exercised it")
    for name in sorted(set(webhooks) - covered_hooks):
        fail(f"uncovered webhook: {name}", "no sample exercised it")
    not_exercised = []
    for (service, method, path), op_ptr in sorted(operations.items()):
        for code in spec.at(op_ptr).get("responses", {}):
            if (method, path, code) not in exercised:
                not_exercised.append(f"{method} {path} {code}")
    if not_exercised:
        print("documented but not exercised (for information): " + ", ".join(sorted(set(not_exercised))))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
