#!/usr/bin/env bash
# 1. Kill-switch arm time: process start -> ruleset committed in the kernel, stamped by a netlink
# listener on the nftables group (bench/nlwatch.py). vpnsup (release build, dynamically and
# statically linked Swift runtime; `run` commits the lockdown before anything else) against the
# same lockdown through a bare `nft -f` and through a shell entrypoint running `nft -f`, the
# original's shell entrypoint (one iptables process per rule) and its rules through one `nft -f`.
# RUNS runs each, in a namespace of its own.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_reset_section arm

VPNSUP=${VPNSUP:-$(bench_vpnsup)}
VPNSUP_STATIC=${VPNSUP_STATIC:-}
NS=$(bench_ns arm)
# A LAN and a WAN link, both ends inside the namespace: vpnsup finds the interfaces it expects.
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
ip -n "$NS" addr add 198.51.100.2/24 dev eth0
ip -n "$NS" route add default via 198.51.100.1

printf 'client\ndev tun\nproto udp\nremote 192.0.2.1 1194\nnobind\nauth-user-pass\nverb 1\n' >"$BENCH_TMP/client.ovpn"
printf 'user\npassword\n' >"$BENCH_TMP/credentials"
chmod 600 "$BENCH_TMP/credentials"
export LAN_IF=eth1 WAN_IF=eth0 TUN_IF=tun0 SERVER_IP=192.0.2.1 SERVER_PORT=1194 DNS=1.1.1.1 FORWARDS=172.22.0.128:4666
# shellcheck source=bench/baseline/original-rules.sh
. "$BENCH_DIR/baseline/original-rules.sh"
original_nft_ruleset >"$BENCH_TMP/original.nft"
# vpnsup's own lockdown as nft text (the dry run prints it; it needs no configuration but the
# two variables every command checks), and an entrypoint that is a shell running nft with it.
CONFIG=/dev/null IP_ADDR=172.22.0.1/24 "$VPNSUP" rules --state Init >"$BENCH_TMP/lockdown.nft"
printf '#!/bin/sh\n# an entrypoint that commits the lockdown, then would exec the VPN client\nnft -f "$1"\n' >"$BENCH_TMP/entrypoint.sh"

# Each run starts from a namespace without rules, address or policy routing.
RESET="nft flush ruleset; ip addr flush dev eth1; ip rule del pref 100 2>/dev/null || true; ip route flush table 30320 2>/dev/null || true"

# One run of each subject in turn, RUNS times: a change in the machine's load hits all alike.
watch() { ip netns exec "$NS" "$PYTHON" "$BENCH_DIR/nlwatch.py" spawn --runs 1 "$@"; }
run_vpnsup() { # SUBJECT BINARY
    ip netns exec "$NS" env -i PATH="$PATH" CONFIG="$BENCH_TMP/client.ovpn" IP_ADDR=172.22.0.1/24 \
        LAN_IF=eth1 WAN_IF=eth0 CREDENTIALS_FILE="$BENCH_TMP/credentials" RUNTIME_DIR="$BENCH_TMP/run" \
        DNS=1.1.1.1 PORT_FWD=172.22.0.128:4666 \
        "$PYTHON" "$BENCH_DIR/nlwatch.py" spawn --runs 1 --kind daemon --setup "$RESET" --log "$BENCH_TMP/vpnsup.log" -- "$2" run \
        >>"$BENCH_TMP/$1.jsonl"
}
for ((run = 0; run < RUNS; run++)); do
    run_vpnsup vpnsup "$VPNSUP"
    [ -z "$VPNSUP_STATIC" ] || run_vpnsup static "$VPNSUP_STATIC"
    watch --kind oneshot --setup "$RESET" -- /usr/sbin/nft -f "$BENCH_TMP/lockdown.nft" >>"$BENCH_TMP/nft-lockdown.jsonl"
    watch --kind oneshot --setup "$RESET" -- /bin/sh "$BENCH_TMP/entrypoint.sh" "$BENCH_TMP/lockdown.nft" >>"$BENCH_TMP/sh-nft-lockdown.jsonl"
    watch --kind oneshot --setup "$RESET" -- /bin/bash "$BENCH_DIR/baseline/original-entrypoint.sh" >>"$BENCH_TMP/shell.jsonl"
    watch --kind oneshot --setup "$RESET" -- /usr/sbin/nft -f "$BENCH_TMP/original.nft" >>"$BENCH_TMP/nft.jsonl"
    # Floors: a process that only starts and exits, and vpnsup printing its help (runtime loaded,
    # arguments parsed, nothing committed).
    watch --kind plain -- /bin/true >>"$BENCH_TMP/true.jsonl"
    watch --kind plain -- "$VPNSUP" --help >>"$BENCH_TMP/help.jsonl"
    [ -z "$VPNSUP_STATIC" ] || watch --kind plain -- "$VPNSUP_STATIC" --help >>"$BENCH_TMP/help-static.jsonl"
done

# shellcheck disable=SC2046 # one sample per word
{
    # The shipped binary (static) first: it is the one the ratios of this section refer to.
    if [ -n "$VPNSUP_STATIC" ]; then
        bench_record arm "vpnsup (static stdlib, shipped)" lockdown ms $(bench_field first <"$BENCH_TMP/static.jsonl")
        bench_record arm "vpnsup (static stdlib, shipped)" "full ruleset" ms $(bench_field connecting <"$BENCH_TMP/static.jsonl")
    fi
    bench_record arm vpnsup lockdown ms $(bench_field first <"$BENCH_TMP/vpnsup.jsonl")
    bench_record arm vpnsup "full ruleset" ms $(bench_field connecting <"$BENCH_TMP/vpnsup.jsonl")
    bench_record arm "nft -f (the same lockdown)" lockdown ms $(bench_field last <"$BENCH_TMP/nft-lockdown.jsonl")
    bench_record arm "sh entrypoint running nft -f (the same lockdown)" lockdown ms $(bench_field last <"$BENCH_TMP/sh-nft-lockdown.jsonl")
    bench_record arm "shell + iptables" "first drop policy" ms $(bench_field first <"$BENCH_TMP/shell.jsonl")
    bench_record arm "shell + iptables" "full ruleset" ms $(bench_field last <"$BENCH_TMP/shell.jsonl")
    bench_record arm "shell + iptables" transactions count $(bench_field transactions <"$BENCH_TMP/shell.jsonl")
    bench_record arm "nft -f" "full ruleset" ms $(bench_field last <"$BENCH_TMP/nft.jsonl")
    bench_record arm "floor: /bin/true" "start and exit, no commit" ms $(bench_field exit <"$BENCH_TMP/true.jsonl")
    bench_record arm "floor: vpnsup --help" "start and exit, no commit" ms $(bench_field exit <"$BENCH_TMP/help.jsonl")
    [ -z "$VPNSUP_STATIC" ] || bench_record arm "floor: vpnsup --help (static stdlib)" "start and exit, no commit" ms $(bench_field exit <"$BENCH_TMP/help-static.jsonl")
}

bench_summary arm
# The goal: the shipped binary's lockdown within 1.5x of a bare `nft -f` of the same lockdown.
"$PYTHON" - "$BENCH_RESULTS" <<'PY'
import json, statistics, sys
series = {(s["subject"], s["metric"]): s["samples"] for s in map(json.loads, open(sys.argv[1])) if s["section"] == "arm"}
nft = series.get(("nft -f (the same lockdown)", "lockdown"))
for subject in ("vpnsup (static stdlib, shipped)", "vpnsup"):
    own = series.get((subject, "lockdown"))
    if own and nft:
        print(f"arm: {subject} lockdown / bare nft -f of the same lockdown = "
              f"{statistics.median(own) / statistics.median(nft):.2f}x (goal: at most 1.5x)")
PY
