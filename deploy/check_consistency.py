#!/usr/bin/env python3
"""Cross-file checks of the deployment artefacts that no single validator does.

Called by deploy/validate.sh; needs Python 3.11+ and PyYAML, nothing else.

  check_consistency.py check BASE_RENDERED KEDA_RENDERED
      consistency of Dockerfile, docker-compose.yml, rendered kustomize output
      (base and keda overlay), Prometheus config, alerts and dashboard.
  check_consistency.py promconfig OUT_DIR
      writes OUT_DIR/prometheus.yml (kubernetes_sd swapped for a placeholder
      static target, see below) and OUT_DIR/alerts.yml, for Debian's promtool,
      which is built without Kubernetes service discovery.
  check_consistency.py dashrules OUT_FILE
      writes every dashboard query as a recording rule (Grafana macros
      replaced) so that `promtool check rules` parses the PromQL.
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

SERVICES = {  # name -> (port, http-facing)
    "ingress": (8080, True),
    "webhook-verifier": (8081, True),
    "reporter": (8082, True),
    "charge-creator": (9101, False),
    "order-updater": (9102, False),
    "notifier": (9103, False),
}
WORKER_QUEUES = {
    "charge-creator": "charge-creator.orders",
    "order-updater": "order-updater.events",
    "notifier": "notifier.status",
}
SECRET_KEYS = {"database-url", "amqp-url", "openpix-app-id", "smtp-url", "secrets-key", "internal-token",
               "provider-key", "order-link-key"}
SECRET_ENV = {
    "PAYHUB_DATABASE_URL": "database-url",
    "PAYHUB_AMQP_URL": "amqp-url",
    "PAYHUB_OPENPIX_APP_ID": "openpix-app-id",
    "PAYHUB_SMTP_URL": "smtp-url",
    "PAYHUB_SECRETS_KEY": "secrets-key",
    "PAYHUB_INTERNAL_TOKEN": "internal-token",
    "PAYHUB_PROVIDER_KEY": "provider-key",
    "PAYHUB_ORDER_LINK_KEY": "order-link-key",
}
# Secret keys every pod that opens the database needs. The master key of the
# webhook secrets (secrets-key) only the notifier holds: no other service
# opens a secret (shared/store/src/secrets.rs, Secrets::for_store).
DB_SECRET_KEYS = {"database-url"}
# Secrets reach the pods as files: Secret payhub-secrets mounted read-only
# here, each key the pod needs as an item (0400), read through <VAR>_FILE.
SECRETS_DIR = "/etc/payhub/secrets"
# The services on either end of the internal confirmation call
# (POST /internal/v1/confirm): charge-creator serves it, webhook-verifier and
# reporter (its sweeper) call it; each needs PAYHUB_INTERNAL_TOKEN
# (shared/service/src/internal.rs), required in production.
INTERNAL_TOKEN_SERVICES = {"charge-creator", "webhook-verifier", "reporter", "ingress"}
# The "my orders" link key (PAYHUB_ORDER_LINK_KEY): notifier writes the
# links, ingress checks them.
ORDER_LINK_SERVICES = {"ingress", "notifier"}
# Where the callers reach charge-creator's listener.
CHARGE_CREATOR_URL = "PAYHUB_CHARGE_CREATOR_URL"
# The metrics the dashboard must show (each must also be exported by the code).
DASHBOARD_METRICS = {
    "payhub_http_requests_total",
    "payhub_http_request_duration_seconds_bucket",
    "payhub_messages_published_total",
    "payhub_messages_consumed_total",
    "payhub_message_handle_seconds_bucket",
    "payhub_messages_dead_lettered_total",
    "payhub_broker_connections_total",
    "payhub_queue_messages",
    "payhub_messages_retried_total",
    "payhub_messages_replayed_total",
    "payhub_deliveries_total",
    "payhub_dependency_unavailable_total",
    "payhub_stale_orders",
    "payhub_stale_order_oldest_seconds",
    "payhub_provider_webhooks_total",
    "payhub_provider_webhooks_rejected_total",
    "payhub_payment_confirmations_total",
    # Issue 13 §4: providers, orders by door, payment latencies and SLOs, backlogs.
    "payhub_provider_calls_total",
    "payhub_provider_call_duration_seconds_bucket",
    "payhub_provider_accounts",
    "payhub_card_payments_total",
    "payhub_provider_webhook_lag_seconds_bucket",
    "payhub_orders_received_total",
    "payhub_order_transitions_total",
    "payhub_order_time_to_paid_seconds_bucket",
    "payhub_payment_reported_to_paid_seconds_bucket",
    "payhub_payment_reported_to_paid_seconds_count",
    "payhub_paid_order_notified_seconds_bucket",
    "payhub_paid_order_notified_seconds_count",
    "payhub_outbox_unpublished",
    "payhub_outbox_oldest_unpublished_seconds",
    "payhub_sweeper_actions_total",
    "payhub_reconciliation_discrepancies",
    "payhub_order_deliveries_total",
}
# Labels Prometheus attaches to every scraped series (prometheus.yml).
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod"}
# Settings as the Kubernetes base and the compose stack must have them.
K8S_CONFIG = {"PAYHUB_ENV": "production", "PAYHUB_ALLOW_PRIVATE_WEBHOOKS": "false"}
COMPOSE_ENV = {"PAYHUB_ENV": "development"}
PROBE_ROUTES = ("/metrics", "/healthz", "/readyz")

errors: list[str] = []

CODE_DIRS = ("services", "shared", "tools")


def code_texts():
    """Every Rust source of the services, shared crates and tools, without its
    trailing `#[cfg(test)] mod tests` or its crate's `tests/` (test-only
    settings and metrics)."""
    for d in CODE_DIRS:
        for f in sorted((ROOT / d).rglob("*.rs")):
            if "tests" in f.relative_to(ROOT / d).parts:
                continue  # a crate's integration tests: test-only settings
            text = f.read_text()
            cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
            yield f, text[: cut.start()] if cut else text


def exported_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from the `register_*!` calls in the code
    (histograms export _bucket with `le`, _sum and _count)."""
    out = {}
    pattern = re.compile(
        r'register_(\w+?)!\(\s*"(payhub_[a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*",\s*&\[([^\]]*)\]', re.S)
    # Metrics without labels (register_gauge!, register_int_gauge!, ...).
    bare = re.compile(r'register_(\w+?)!\(\s*"(payhub_[a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*"\s*,?\s*\)', re.S)
    for _, text in code_texts():
        for kind, name in bare.findall(text):
            out.setdefault(name, set())
        for kind, name, labels in pattern.findall(text):
            names = set(re.findall(r'"([a-z_]+)"', labels))
            if kind.startswith("histogram"):
                out[f"{name}_bucket"] = names | {"le"}
                out[f"{name}_sum"] = names
                out[f"{name}_count"] = names
            else:
                out[name] = names
    return out


def settings_read_by_code() -> set[str]:
    """The PAYHUB_* variables the code names (env reads, clap `env =`, consts)."""
    found = set()
    for _, text in code_texts():
        found |= set(re.findall(r'"(PAYHUB_[A-Z0-9_]+)"', text))
    return found


METRICS = exported_metrics()


def err(msg: str) -> None:
    errors.append(msg)


def load_all(path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# --------------------------------------------------------------- cargo ----
def workspace_bins() -> dict[str, set[str]]:
    """package name -> binary names, from the workspace manifests."""
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    out = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        pkg = manifest["package"]["name"]
        bins = {b["name"] for b in manifest.get("bin", [])}
        if not bins and (ROOT / member / "src" / "main.rs").exists():
            bins = {pkg}
        out[pkg] = bins
    return out


def check_dockerfile() -> set[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"cargo build (.*?)&&", text)
    if not m:
        err("Dockerfile: no `cargo build` line found")
        return set()
    cmd = m.group(1)
    if "--locked" not in cmd or "--release" not in cmd:
        err("Dockerfile: cargo build must use --release --locked")
    pkgs = set(re.findall(r"-p\s+(\S+)", cmd))
    bins = workspace_bins()
    built = set()
    for p in pkgs:
        if p not in bins:
            err(f"Dockerfile: -p {p} is not a workspace package")
        else:
            built |= bins[p]
    m = re.search(r"for bin in (.*?); do", text)
    copied = set(m.group(1).split()) if m else set()
    for b in copied - built:
        err(f"Dockerfile: copies binary {b!r} that the build does not produce")
    expected = {f"payhub-{s}" for s in SERVICES} | {"payhubctl"}
    for b in expected - copied:
        err(f"Dockerfile: binary {b} is not copied into the image")
    if "payhub-sandbox" in copied:
        err("Dockerfile: the runtime image must not contain payhub-sandbox (it has its own target)")
    # The runtime image is the last stage, runs in production and copies
    # only /out (the sandbox's binary is in /out-sandbox, for target sandbox).
    stages = re.split(r"^FROM\s", text, flags=re.M)
    last = stages[-1]
    if not re.match(r"\S+\s+AS\s+runtime\b", last):
        err("Dockerfile: the last stage must be the runtime (the default target)")
    if not re.search(r"^ENV\s+PAYHUB_ENV=production\s*$", last, re.M):
        err("Dockerfile: the runtime stage must set ENV PAYHUB_ENV=production")
    if "sandbox" in " ".join(re.findall(r"^COPY .*$", last, re.M)):
        err("Dockerfile: the runtime stage copies the sandbox")
    if not any(re.match(r"\S+\s+AS\s+sandbox\b", st) and "/out-sandbox/" in st for st in stages):
        err("Dockerfile: a sandbox stage should carry payhub-sandbox for compose")
    if not re.search(r"^USER\s+\d+(:\d+)?\s*$", text, re.M):
        err("Dockerfile: USER must be numeric (runAsNonRoot)")
    for port in [p for p, _ in SERVICES.values()]:
        if not re.search(rf"^EXPOSE .*\b{port}\b", text, re.M):
            err(f"Dockerfile: port {port} not EXPOSEd")
    return copied


# ------------------------------------------------------------- compose ----
def check_compose(image_bins: set[str]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svcs = compose["services"]
    for infra in ("rabbitmq", "postgres"):
        if svcs[infra].get("depends_on"):
            err(f"compose: {infra} must start alone (no depends_on)")
        if "healthcheck" not in svcs[infra]:
            err(f"compose: {infra} needs a healthcheck")
    for name, (port, public) in SERVICES.items():
        s = svcs.get(name)
        if not s:
            err(f"compose: service {name} missing")
            continue
        if s.get("command", [None])[0] != f"payhub-{name}":
            err(f"compose: {name} runs {s.get('command')}")
        deps = s.get("depends_on") or {}
        if deps.get("migrate", {}).get("condition") != "service_completed_successfully":
            err(f"compose: {name} must wait for migrate to complete")
        if deps.get("rabbitmq", {}).get("condition") != "service_healthy":
            err(f"compose: {name} must wait for a healthy rabbitmq")
        published = [str(p) for p in s.get("ports", [])]
        if public and not any(p.endswith(f":{port}:{port}") or p == f"{port}:{port}" for p in published):
            err(f"compose: {name} must publish {port}")
    sb = svcs["sandbox"]
    if not isinstance(sb.get("build"), dict) or sb["build"].get("target") != "sandbox" \
            or sb.get("image") == svcs["ingress"].get("image"):
        err("compose: sandbox must build Dockerfile target sandbox into its own image")
    for name, s in svcs.items():
        cmd = s.get("command")
        if name == "sandbox":
            continue
        if s.get("image", "").startswith("payhub") and cmd and cmd[0] not in image_bins:
            err(f"compose: {name} runs {cmd[0]}, which is not in the image")
    if svcs["migrate"].get("command") != ["payhubctl", "migrate"]:
        err("compose: migrate must run `payhubctl migrate`")
    if svcs["migrate"].get("restart") != "no":
        err('compose: migrate must have restart: "no"')
    if svcs["sandbox"].get("profiles") != ["sandbox"]:
        err("compose: sandbox must be in profile sandbox only")
    env = svcs["sandbox"].get("environment", {})
    want = {
        "SANDBOX_PROVIDER_ADDR": "0.0.0.0:8090",
        "SANDBOX_SHOP_ADDR": "0.0.0.0:8091",
        "SANDBOX_SMTP_ADDR": "0.0.0.0:2525",
        "SANDBOX_WEBHOOK_TARGET": "http://webhook-verifier:8081/webhooks/openpix",
    }
    for k, v in want.items():
        if env.get(k) != v:
            err(f"compose: sandbox {k} should be {v}")
    # The demo trusts the sandbox's signing key: it must be the fixture's.
    fixture = ROOT / "tests" / "fixtures" / "sandbox-openpix-public.pem"
    keys = svcs["webhook-verifier"].get("environment", {}).get("PAYHUB_OPENPIX_PUBLIC_KEYS")
    if fixture.exists() and (keys or "").strip() != fixture.read_text().strip():
        err("compose: webhook-verifier PAYHUB_OPENPIX_PUBLIC_KEYS differs from "
            "tests/fixtures/sandbox-openpix-public.pem")
    # Prometheus static targets must be the compose services and ports.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = {}
    for sc in jobs.get("payhub-compose", {}).get("static_configs", []):
        for t in sc["targets"]:
            targets[sc.get("labels", {}).get("service")] = t
    for name, (port, _) in SERVICES.items():
        if targets.get(name) != f"{name}:{port}":
            err(f"prometheus.yml: compose target for {name} should be {name}:{port}, is {targets.get(name)}")


# ----------------------------------------------------------- kubernetes ----
def index(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def check_pod_spec(where: str, spec: dict, image_bins: set[str]) -> None:
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err(f"{where}: pod securityContext needs runAsNonRoot and seccomp RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        err(f"{where}: automountServiceAccountToken should be false")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            err(f"{where}: container {c['name']} securityContext incomplete")
        res = c.get("resources", {})
        if not (res.get("requests") and res.get("limits")):
            err(f"{where}: container {c['name']} needs requests and limits")
        binary = pathlib.PurePosixPath(c["command"][0]).name
        if binary not in image_bins:
            err(f"{where}: runs {binary}, which is not in the image")
        for e in c.get("env", []):
            if e.get("valueFrom", {}).get("secretKeyRef") or e["name"] in SECRET_ENV:
                err(f"{where}: env {e['name']} is a secret in the environment; mount it and use "
                    f"{e['name']}_FILE")
            var = e["name"].removesuffix("_FILE")
            if e["name"].endswith("_FILE"):
                if var not in SECRET_ENV:
                    err(f"{where}: {e['name']} names no secret setting")
                elif e.get("value") != f"{SECRETS_DIR}/{SECRET_ENV[var]}":
                    err(f"{where}: {e['name']} should be {SECRETS_DIR}/{SECRET_ENV[var]}")
        if secret_file_keys(c):
            mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == SECRETS_DIR]
            if len(mounts) != 1 or mounts[0].get("readOnly") is not True:
                err(f"{where}: container {c['name']} must mount the secrets read-only at {SECRETS_DIR}")
                continue
            vols = [v for v in spec.get("volumes", []) if v["name"] == mounts[0]["name"]]
            sec = vols[0].get("secret", {}) if vols else {}
            if sec.get("secretName") != "payhub-secrets" or sec.get("defaultMode") != 0o400:
                err(f"{where}: volume {mounts[0]['name']} should be Secret payhub-secrets, defaultMode 0400")
            items = {i["key"]: i["path"] for i in sec.get("items", [])}
            if any(k != v for k, v in items.items()) or set(items) != secret_file_keys(c):
                err(f"{where}: the secrets volume should hold exactly the keys its _FILE settings read "
                    f"({sorted(secret_file_keys(c))}), not {sorted(items)}")
            if psc.get("fsGroup") != psc.get("runAsGroup"):
                err(f"{where}: fsGroup should be the runAsGroup, so the 0400 secret files are readable")


def secret_file_keys(c: dict) -> set[str]:
    """The payhub-secrets keys a container reads through <VAR>_FILE."""
    return {SECRET_ENV[e["name"].removesuffix("_FILE")] for e in c.get("env", [])
            if e["name"].endswith("_FILE") and e["name"].removesuffix("_FILE") in SECRET_ENV}


def check_k8s(base_path: str, keda_path: str, image_bins: set[str]) -> None:
    base = load_all(base_path)
    idx = index(base)
    kinds = [d["kind"] for d in base]
    if "Secret" in kinds:
        err("k8s base: must not contain a Secret (create payhub-secrets out of band)")
    if any("sandbox" in d["metadata"]["name"] for d in base):
        err("k8s base: the sandbox does not belong in Kubernetes")
    if ("Namespace", "payhub") not in idx:
        err("k8s base: Namespace payhub missing")
    for d in base:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "payhub":
            err(f"k8s base: {d['kind']}/{d['metadata']['name']} not in namespace payhub")
    ex = yaml.safe_load((DEPLOY / "k8s" / "base" / "secret.example.yaml").read_text())
    if set(ex["stringData"]) != SECRET_KEYS:
        err(f"secret.example.yaml: keys {sorted(ex['stringData'])} != {sorted(SECRET_KEYS)}")
    if "secret.example.yaml" in (DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text().split("resources:")[1]:
        err("kustomization.yaml must not reference secret.example.yaml")

    deployments = {n: d for (k, n), d in idx.items() if k == "Deployment"}
    if set(deployments) != set(SERVICES):
        err(f"k8s: Deployments {sorted(deployments)} != {sorted(SERVICES)}")
    for name, d in deployments.items():
        port, public = SERVICES.get(name, (None, False))
        spec = d["spec"]["template"]["spec"]
        where = f"Deployment/{name}"
        ann = d["spec"]["template"]["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
            err(f"{where}: prometheus annotations missing or wrong port")
        if spec.get("terminationGracePeriodSeconds") != 30:
            err(f"{where}: terminationGracePeriodSeconds should be 30")
        check_pod_spec(where, spec, image_bins)
        c = spec["containers"][0]
        if c["command"][0] != f"/usr/local/bin/payhub-{name}":
            err(f"{where}: command {c['command']}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if ports.get("http") != port:
            err(f"{where}: containerPort http should be {port}")
        env = {e["name"]: e for e in c.get("env", [])}
        if env.get("PAYHUB_HTTP_ADDR", {}).get("value") != f"0.0.0.0:{port}":
            err(f"{where}: PAYHUB_HTTP_ADDR should be 0.0.0.0:{port}")
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                err(f"{where}: {probe} should GET {path}")
        needed = DB_SECRET_KEYS | {"amqp-url"} | (
            {"openpix-app-id", "provider-key"} if name == "charge-creator" else set()) | (
            {"smtp-url", "secrets-key"} if name == "notifier" else set()) | (
            {"internal-token"} if name in INTERNAL_TOKEN_SERVICES else set()) | (
            {"order-link-key"} if name in ORDER_LINK_SERVICES else set())
        got = secret_file_keys(c)
        if got != needed:
            err(f"{where}: secret keys {sorted(got)} != {sorted(needed)}")
        cms = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        if not cms or not all(("ConfigMap", n) in idx for n in cms):
            err(f"{where}: envFrom ConfigMap missing from the output")
        if public:
            if "replicas" in d["spec"]:
                err(f"{where}: replicas is managed by its HPA; leave it out")
            svc = idx.get(("Service", name))
            if not svc or svc["spec"]["selector"] != d["spec"]["selector"]["matchLabels"]:
                err(f"{where}: Service {name} missing or selects other pods")
            elif svc["spec"]["ports"][0]["port"] != port:
                err(f"Service/{name}: port should be {port}")
            pdb = idx.get(("PodDisruptionBudget", name))
            if not pdb or pdb["spec"]["selector"]["matchLabels"] != d["spec"]["selector"]["matchLabels"]:
                err(f"{where}: PodDisruptionBudget missing or selects other pods")
            hpa = idx.get(("HorizontalPodAutoscaler", name))
            if not hpa or hpa["spec"]["scaleTargetRef"]["name"] != name:
                err(f"{where}: HorizontalPodAutoscaler missing")
            elif hpa["spec"]["metrics"][0]["resource"]["name"] != "cpu":
                err(f"HorizontalPodAutoscaler/{name}: should scale on cpu")
    for (k, n), d in idx.items():
        if k == "Service":
            sel = d["spec"].get("selector", {})
            if not any(sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
                       for dep in deployments.values()):
                err(f"Service/{n}: selects no Deployment")
    job = idx.get(("Job", "payhub-migrate"))
    if not job:
        err("k8s: Job payhub-migrate missing")
    else:
        spec = job["spec"]["template"]["spec"]
        check_pod_spec("Job/payhub-migrate", spec, image_bins)
        if spec["containers"][0]["command"] != ["/usr/local/bin/payhubctl", "migrate"]:
            err("Job/payhub-migrate: should run payhubctl migrate")
        got = {k for c in spec["containers"] for k in secret_file_keys(c)}
        if got != DB_SECRET_KEYS:
            err(f"Job/payhub-migrate: secret keys {sorted(got)} != {sorted(DB_SECRET_KEYS)}")
        # `kubectl apply -k base -l payhub/bootstrap=true` must bring up the Job
        # with everything it references (the Secret is created by hand).
        boot = {(d["kind"], d["metadata"]["name"]) for d in base
                if d["metadata"].get("labels", {}).get("payhub/bootstrap") == "true"}
        needs = {("Job", "payhub-migrate"), ("Namespace", "payhub"),
                 ("ServiceAccount", spec.get("serviceAccountName", "default"))}
        needs |= {("ConfigMap", e["configMapRef"]["name"])
                  for c in spec["containers"] for e in c.get("envFrom", []) if "configMapRef" in e}
        if needs - boot:
            err(f"bootstrap label missing on {sorted(needs - boot)}")
        if {k for k, _ in boot} - {"Job", "Namespace", "ServiceAccount", "ConfigMap"}:
            err(f"bootstrap label on more than the migration's needs: {sorted(boot)}")

    # ---- KEDA overlay
    keda = load_all(keda_path)
    kidx = index(keda)
    so_keys = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
               "cooldownPeriod", "idleReplicaCount", "advanced", "fallback", "triggers",
               "initialCooldownPeriod"}
    trig_keys = {"type", "metadata", "authenticationRef", "name", "metricType", "useCachedMetrics"}
    rabbit_keys = {"host", "protocol", "mode", "value", "activationValue", "queueName",
                   "vhostName", "unsafeSsl", "excludeUnacknowledged", "useRegex", "operation",
                   "pageSize", "timeout"}
    auths = {n for (k, n) in kidx if k == "TriggerAuthentication"}
    seen = {}
    for (k, n), d in kidx.items():
        if k == "TriggerAuthentication":
            for ref in d["spec"].get("secretTargetRef", []):
                if set(ref) != {"parameter", "name", "key"} or ref["name"] != "payhub-secrets" \
                        or ref["key"] not in SECRET_KEYS:
                    err(f"TriggerAuthentication/{n}: bad secretTargetRef {ref}")
        if k != "ScaledObject":
            continue
        if d["apiVersion"] != "keda.sh/v1alpha1":
            err(f"ScaledObject/{n}: apiVersion {d['apiVersion']}")
        spec = d["spec"]
        if set(spec) - so_keys:
            err(f"ScaledObject/{n}: unknown spec keys {sorted(set(spec) - so_keys)}")
        target = spec["scaleTargetRef"]["name"]
        dep = kidx.get(("Deployment", target))
        if not dep:
            err(f"ScaledObject/{n}: target Deployment {target} not in the overlay output")
        elif "replicas" in dep["spec"]:
            err(f"Deployment/{target}: replicas should be dropped when KEDA scales it")
        if not 0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
            err(f"ScaledObject/{n}: replica bounds")
        for t in spec["triggers"]:
            if set(t) - trig_keys:
                err(f"ScaledObject/{n}: unknown trigger keys {sorted(set(t) - trig_keys)}")
            md = t["metadata"]
            if t["type"] != "rabbitmq" or set(md) - rabbit_keys:
                err(f"ScaledObject/{n}: trigger must be rabbitmq with known metadata, got {sorted(md)}")
            if not all(isinstance(v, str) for v in md.values()):
                err(f"ScaledObject/{n}: trigger metadata values must be strings")
            if md.get("mode") != "QueueLength":
                err(f"ScaledObject/{n}: mode should be QueueLength")
            if t.get("authenticationRef", {}).get("name") not in auths and "host" not in md:
                err(f"ScaledObject/{n}: authenticationRef names no TriggerAuthentication")
            seen[target] = md.get("queueName")
    if seen != WORKER_QUEUES:
        err(f"KEDA: scaled queues {seen} != {WORKER_QUEUES}")
    for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"):
        if {n for (kk, n) in idx if kk == k} != {n for (kk, n) in kidx if kk == k}:
            err(f"KEDA overlay: {k} set differs from base")


# ---------------------------------------------------------- prometheus ----
def exprs_of_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "payhub-dashboard.json").read_text())


def dash_exprs(d) -> list[tuple[str, str]]:
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']}/{t['refId']}", t["expr"]))
    return out


def check_metric_names(where: str, expr: str) -> None:
    used = set(re.findall(r"\bpayhub_[a-z_]+\b", expr))
    for name in sorted(used):
        if name not in METRICS:
            err(f"{where}: unknown metric {name} (not registered by the code)")
    # Label names: in a metric's selector, its own labels or the target's; in
    # by/without/on/ignoring clauses, those of any metric of the expression.
    known = TARGET_LABELS | {"le", "pod_ready"}
    for name in used & set(METRICS):
        known |= METRICS[name]
    for name, matchers in re.findall(r"\b(payhub_[a-z_]+|up)\s*\{([^}]*)\}", expr):
        allowed = TARGET_LABELS | METRICS.get(name, set()) | ({"pod_ready"} if name == "up" else set())
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in allowed:
                err(f"{where}: {name} has no label {label!r}")
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        for label in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", clause):
            if label not in known:
                err(f"{where}: label {label!r} in a grouping clause belongs to none of the expression's metrics")
    # Any other bare metric selector than `up` would be a typo or a new metric.
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)
    # Grafana's variables (`offset $__range`) are durations, not metrics.
    stripped = re.sub(r"\$\w+", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", stripped))
    keywords = {"and", "or", "unless", "offset", "bool", "le", "by"}
    for w in words - set(METRICS) - keywords - {"up"}:
        if not re.fullmatch(r"\d.*|[a-z]", w):
            err(f"{where}: unexpected identifier {w!r} (only the payhub metrics and up are exported)")


def check_prometheus() -> None:
    for alert, expr in exprs_of_rules():
        check_metric_names(f"alerts.yml {alert}", expr)
        if "payhub_http_requests_total" in expr and "/readyz" not in expr:
            err(f"alerts.yml {alert}: exclude the probe routes from HTTP alerts")
    names = {a for a, _ in exprs_of_rules()}
    for a in ("PayhubServiceDown", "PayhubNotReady", "PayhubDeadLetters", "PayhubHighRetryRate",
              "PayhubPublishFailures", "PayhubHttp5xxRatio", "PayhubIngressLatencyHigh",
              "PayhubBrokerReconnectFlapping", "PayhubDeadLetterQueueNotEmpty", "PayhubQueueBacklog",
              "PayhubDependencyUnavailable", "PayhubDeliveriesFailing", "PayhubStaleOrders",
              "PayhubStaleOrderOld", "PayhubProviderWebhooksRejected",
              "PayhubPaymentConfirmationsUnavailable",
              # Issue 13 §4.
              "PayhubProviderDown", "PayhubProviderErrorRate", "PayhubProviderLatencyHigh",
              "PayhubCardDeclineRateHigh", "PayhubWebhooksNotArriving", "PayhubPaidWithin2sBudgetBurn",
              "PayhubPaidWithin2sBudgetBurnSlow", "PayhubNotifiedWithin10sBudgetBurn",
              "PayhubNotifiedWithin10sBudgetBurnSlow", "PayhubOutboxBacklog",
              "PayhubReconciliationDiscrepancies"):
        if a not in names:
            err(f"alerts.yml: alert {a} missing")
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    k8s = jobs.get("payhub", {})
    sd = k8s.get("kubernetes_sd_configs")
    # promtool (Debian) cannot parse this block: check it here.
    if not sd:
        err("prometheus.yml: job payhub needs kubernetes_sd_configs")
    else:
        for c in sd:
            if set(c) - {"role", "namespaces", "selectors", "api_server", "kubeconfig_file",
                         "attach_metadata", "authorization", "tls_config", "follow_redirects"}:
                err(f"prometheus.yml: unknown kubernetes_sd_configs keys {sorted(c)}")
            if c.get("role") != "pod":
                err("prometheus.yml: kubernetes_sd role should be pod")
            if set(c.get("namespaces", {})) - {"names", "own_namespace"}:
                err("prometheus.yml: bad kubernetes_sd namespaces")
    relabel = yaml.safe_dump(k8s.get("relabel_configs", []))
    for a in ("prometheus_io_scrape", "prometheus_io_port", "prometheus_io_path",
              "pod_label_app_kubernetes_io_name", "pod_ready"):
        if a not in relabel:
            err(f"prometheus.yml: relabelling does not use __meta_kubernetes_{a}")


def check_dashboard() -> None:
    d = dashboard()
    if not 36 <= d.get("schemaVersion", 0) <= 41:
        err(f"dashboard: schemaVersion {d.get('schemaVersion')}")
    vars_ = {v["name"]: v for v in d["templating"]["list"]}
    if vars_.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        err("dashboard: datasource variable DS_PROMETHEUS missing")
    ids = [p["id"] for p in d["panels"]]
    if len(ids) != len(set(ids)):
        err("dashboard: duplicate panel ids")
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            err(f"dashboard panel {p['title']!r}: datasource should be ${{DS_PROMETHEUS}}")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                err(f"dashboard panel {p['title']!r}: target datasource should be ${{DS_PROMETHEUS}}")
    for where, expr in dash_exprs(d):
        check_metric_names(f"dashboard {where}", expr)
    for name, v in vars_.items():
        if v.get("type") != "query":
            continue
        q = v.get("definition", "")
        m = re.fullmatch(r"label_values\((.*),\s*([a-z_]+)\)", q)
        if not m:
            err(f"dashboard variable {name}: unexpected query {q!r}")
            continue
        check_metric_names(f"dashboard variable {name}", m.group(1))
        metric = re.match(r"\s*([a-z_]+)", m.group(1)).group(1)
        if m.group(2) not in TARGET_LABELS | METRICS.get(metric, set()):
            err(f"dashboard variable {name}: {metric} has no label {m.group(2)!r}")
        used = any(f"${name}" in e for _, e in dash_exprs(d)) or any(
            f"${name}" in w.get("definition", "") for w in vars_.values())
        if not used:
            err(f"dashboard variable {name}: no panel or variable uses ${name}")
    all_exprs = " ".join(e for _, e in dash_exprs(d))
    for m in sorted(DASHBOARD_METRICS):
        if m not in METRICS:
            err(f"dashboard: {m} is required on the dashboard but not registered by the code")
        if m not in all_exprs:
            err(f"dashboard: no panel uses {m}")
    if 'route="/v1/orders", method="POST", status=~"2.."' not in all_exprs:
        err("dashboard: orders-accepted panel query missing")
    # The orders-accepted panel counts every door, not only the HTTP API.
    if not any("payhub_orders_received_total" in e and 'outcome="accepted"' in e and "by (door)" in e
               for _, e in dash_exprs(d)):
        err("dashboard: no panel shows accepted orders by door")


# ------------------------------------------------------------ settings ----
def config_table(path: pathlib.Path) -> set[str]:
    """The variables in the first column of a Markdown file's `## Configuration` table."""
    text = path.read_text()
    m = re.search(r"^## Configuration\s*$(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        err(f"{path.relative_to(ROOT)}: no ## Configuration section")
        return set()
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`", m.group(1), re.M))


def check_charge_creator_url(where: str, url, services) -> None:
    """PAYHUB_CHARGE_CREATOR_URL must reach charge-creator's listener: in
    Kubernetes a ClusterIP Service (not headless: kube-proxy spreads the calls
    over the ready pods) selecting charge-creator on its port; in compose the
    service itself. The default (127.0.0.1) only works on one machine."""
    port = SERVICES["charge-creator"][0]
    m = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)/?", url or "")
    if not m:
        err(f"{where}: {CHARGE_CREATOR_URL} should be http://<charge-creator>:{port}, is {url!r}")
        return
    host, p = m.group(1), int(m.group(2))
    if services is None:
        if (host, p) != ("charge-creator", port):
            err(f"{where}: {CHARGE_CREATOR_URL} should be http://charge-creator:{port}, is {url!r}")
        return
    svc = services.get(host.split(".")[0])
    if not svc:
        err(f"{where}: {CHARGE_CREATOR_URL} names Service {host!r}, which the base does not have")
        return
    spec = svc["spec"]
    if spec.get("selector", {}).get("app.kubernetes.io/name") != "charge-creator":
        err(f"{where}: Service {host!r} in {CHARGE_CREATOR_URL} does not select charge-creator")
    if spec.get("clusterIP") == "None":
        err(f"{where}: Service {host!r} in {CHARGE_CREATOR_URL} is headless; use a ClusterIP Service")
    if not any(sp["port"] == p and sp.get("targetPort") in ("http", port) for sp in spec.get("ports", [])):
        err(f"{where}: Service {host!r} has no port {p} to charge-creator's {port}")


def check_settings(base_path: str) -> None:
    """The new and old settings agree across code, Kubernetes, compose and docs."""
    code = settings_read_by_code()
    # Kubernetes: the rendered ConfigMap and the Secret-backed env.
    cms = [d for d in load_all(base_path) if d["kind"] == "ConfigMap"
           and d["metadata"]["name"].startswith("payhub-config")]
    if len(cms) != 1:
        err(f"k8s: expected one payhub-config ConfigMap, found {len(cms)}")
    data = cms[0].get("data", {}) if cms else {}
    for k, v in K8S_CONFIG.items():
        if data.get(k) != v:
            err(f"k8s config.env: {k} should be {v!r}, is {data.get(k)!r}")
    for k in sorted(set(data) - {"RUST_LOG"}):
        if k.startswith("PAYHUB_") and k not in code:
            err(f"k8s config.env: {k} is read by no service")
        if k in SECRET_ENV:
            err(f"k8s config.env: {k} is a secret; it belongs in payhub-secrets")
    for k in SECRET_ENV:
        if k not in code:
            err(f"check_consistency.py: secret {k} is read by no service")
    check_charge_creator_url("k8s config.env", data.get(CHARGE_CREATOR_URL), {
        d["metadata"]["name"]: d for d in load_all(base_path) if d["kind"] == "Service"})
    # Compose: development rules for every payhub process, the key passed through.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, s in compose["services"].items():
        cmd = (s.get("command") or [""])[0]
        if not s.get("image", "").startswith("payhub") or not (cmd.startswith("payhub-") or cmd == "payhubctl") \
                or cmd == "payhub-sandbox":
            continue
        env = s.get("environment") or {}
        for k, v in COMPOSE_ENV.items():
            if env.get(k) != v:
                err(f"compose: {name} should set {k}={v} (the sandbox is on private addresses)")
        if "PAYHUB_SECRETS_KEY" not in env:
            err(f"compose: {name} should pass PAYHUB_SECRETS_KEY through (empty = development key)")
        for k in env:
            if k.startswith("PAYHUB_") and k not in code:
                err(f"compose: {name} sets {k}, which no service reads")
        if name in INTERNAL_TOKEN_SERVICES - {"charge-creator"}:
            check_charge_creator_url(f"compose: {name}", env.get(CHARGE_CREATOR_URL), None)
    # The documentation tables name every setting the code reads, and no other.
    for doc in (ROOT / "README.md", DEPLOY / "README.md"):
        listed = config_table(doc)
        where = doc.relative_to(ROOT)
        for k in sorted(code - listed):
            err(f"{where}: Configuration table misses {k}")
        for k in sorted(k for k in listed - code if k.startswith("PAYHUB_")):
            err(f"{where}: Configuration table lists {k}, which no service reads")


# ---------------------------------------------------------------- main ----
def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "check" and len(argv) == 4:
        image_bins = check_dockerfile()
        check_compose(image_bins)
        check_k8s(argv[2], argv[3], image_bins)
        check_settings(argv[2])
        check_prometheus()
        check_dashboard()
        for e in errors:
            print(f"ERROR {e}")
        print(f"consistency: {len(errors)} problem(s)")
        return 1 if errors else 0
    if cmd == "promconfig" and len(argv) == 3:
        out = pathlib.Path(argv[2])
        prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        for job in prom["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                # Keeps the job's relabel and metric_relabel rules under check.
                job["static_configs"] = [{"targets": ["kubernetes-sd-placeholder:1"]}]
        (out / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
        (out / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
        return 0
    if cmd == "dashrules" and len(argv) == 3:
        rules = []
        for i, (where, expr) in enumerate(dash_exprs(dashboard())):
            e = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                 .replace("$__range", "1h").replace("$job", "payhub.*").replace("$service", ".*")
                 .replace("$shop", ".*"))
            rules.append({"record": f"dashboard:panel_{i}", "expr": e})
        pathlib.Path(argv[2]).write_text(
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
