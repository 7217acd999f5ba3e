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
test=(socat iperf3 util-linux procps docker.io docker-compose slirp4netns debootstrap iptables python3-yaml
      systemd strace gdb)
bench=(conntrack)

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
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
