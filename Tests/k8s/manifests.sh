#!/usr/bin/env bash
# Tests/k8s/manifests.sh — the Kubernetes manifests (deploy/kubernetes): every kustomization
# renders with `kubectl kustomize`, every object validates (strict: no unknown field) against the
# API schemas of Kubernetes 1.29 (the first release with sidecar init containers on by default)
# and 1.37, offline (kubernetes-validate bundles them), and the rendered objects keep what
# docs/kubernetes.md promises (Tests/k8s/check_manifests.py). A few seconds; no cluster needed.
# Prints ok/not ok lines and "manifests: P passed, F failed"; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
PYTHON=${PYTHON:-python3}
VERSIONS=(1.29.0 1.37.0)
OUT=$(mktemp -d /tmp/vpnsup-k8s-manifests.XXXXXX)

finish() {
    local status=$?
    trap - EXIT
    rm -rf "$OUT"
    if [ "$status" -ne 0 ] && [ "$TAP_FAIL" -eq 0 ]; then tap_not_ok "test script aborted (status $status)"; fi
    echo "manifests: $TAP_PASS passed, $TAP_FAIL failed"
    [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ]
}
trap finish EXIT

tap_note "kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' '), kubernetes-validate $("$PYTHON" -m kubernetes_validate --version)"

kustomizations=(base examples/gateway examples/client)
for k in "${kustomizations[@]}"; do
    file=$OUT/${k//\//-}.yaml
    if kubectl kustomize "$REPO/deploy/kubernetes/$k" >"$file" 2>"$OUT/render.err"; then
        tap_ok "kubectl kustomize deploy/kubernetes/$k ($(grep -c '^kind: ' "$file") objects)"
    else
        tap_not_ok "kubectl kustomize deploy/kubernetes/$k: $(head -c 500 "$OUT/render.err")"
        continue
    fi
    for version in "${VERSIONS[@]}"; do
        if "$PYTHON" -m kubernetes_validate --strict --quiet -k "$version" "$file" >"$OUT/validate.out" 2>&1; then
            tap_ok "deploy/kubernetes/$k validates against Kubernetes $version (strict)"
        else
            tap_not_ok "deploy/kubernetes/$k validates against Kubernetes $version (strict)"
            tap_note_file 20 "$OUT/validate.out"
        fi
    done
done

# The opt-in: labelled StatefulSets, DaemonSets and Jobs get the sidecar; an unlabelled workload not.
opt_in=$OUT/opt-in.yaml
if kubectl kustomize "$REPO/Tests/k8s/opt-in" >"$opt_in" 2>"$OUT/render.err"; then
    sidecars() {
        "$PYTHON" - "$opt_in" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] != "ConfigMap":
        names = [c["name"] for c in d["spec"]["template"]["spec"].get("initContainers", [])]
        print(f'{d["kind"]}/{d["metadata"]["name"]}:{",".join(names) or "-"}')
PY
    }
    got=$(sidecars | sort | tr '\n' ' ')
    tap_check "the component patches labelled workloads of every kind, and no other ($got)" \
        test "$got" = "DaemonSet/daemon:vpnsup-join Deployment/not-opted-in:- Job/job:vpnsup-join StatefulSet/stateful:vpnsup-join "
    validates() { "$PYTHON" -m kubernetes_validate --strict --quiet -k 1.37.0 "$opt_in" >"$OUT/validate.out" 2>&1; }
    tap_check "the patched workloads validate against Kubernetes 1.37.0 (strict)" validates
else
    tap_not_ok "kubectl kustomize Tests/k8s/opt-in: $(head -c 500 "$OUT/render.err")"
fi

# The validator itself rejects what it should: an unknown field and a wrong type.
cat >"$OUT/bad.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: two
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i, restartPolicyy: Always}]}}
YAML
rejects() { ! "$PYTHON" -m kubernetes_validate --strict --quiet -k 1.37.0 "$OUT/bad.yaml" >/dev/null 2>&1; }
tap_check "kubernetes-validate rejects a wrong type and an unknown field" rejects

if [ -s "$OUT/examples-gateway.yaml" ] && [ -s "$OUT/examples-client.yaml" ]; then
    "$PYTHON" "$REPO/Tests/k8s/check_manifests.py" "$OUT/examples-gateway.yaml" "$OUT/examples-client.yaml" >"$OUT/checks.out" 2>&1 || true
    while IFS= read -r line; do
        case "$line" in
            "ok "*) tap_ok "${line#ok * - }" ;;
            "not ok "*) tap_not_ok "${line#not ok * - }" ;;
            *) tap_note "$line" ;;
        esac
    done <"$OUT/checks.out"
    grep -q '^# [0-9]* checks, 0 failed$' "$OUT/checks.out" || tap_not_ok "check_manifests.py finished (see the lines above)"
    # The checker catches a broken promise: a Service that hides an unready gateway, and a
    # client overlay that disagrees with the gateway's.
    sed 's/publishNotReadyAddresses: true/publishNotReadyAddresses: false/' "$OUT/examples-gateway.yaml" >"$OUT/broken-gateway.yaml"
    sed 's|GATEWAY_ADDR: 172.30.0.1/15|GATEWAY_ADDR: 172.30.0.1/14|' "$OUT/examples-client.yaml" >"$OUT/broken-client.yaml"
    caught() {
        ! "$PYTHON" "$REPO/Tests/k8s/check_manifests.py" "$OUT/broken-gateway.yaml" "$OUT/broken-client.yaml" >"$OUT/broken.out" 2>&1 &&
            grep -q '^not ok .* the Service is headless' "$OUT/broken.out" && grep -q "^not ok .* GATEWAY_ADDR is the gateway's IP_ADDR" "$OUT/broken.out" &&
            [ "$(grep -c '^not ok' "$OUT/broken.out")" -eq 2 ]
    }
    tap_check "check_manifests.py fails on a Service hiding unready gateways and a mismatched GATEWAY_ADDR (and on nothing else)" caught
fi
