#!/usr/bin/env bash
# Tests/lab/metrics.sh — vpnsup's metrics in the namespace lab: vpnsup runs on the lab's router with
# METRICS_LISTEN on the LAN gateway address; the LAN client scrapes GET /metrics over HTTP, the
# scrape is read with the Prometheus project's own text parser (prometheus_client, from PyPI), and
# its values are checked against `vpnsup status --json` (state, forwards, the kernel's counters,
# repairs after an outside flush); the WAN side (the ISP) cannot connect, and the capture shows the
# router never answered it.
#
#   VPNSUP=path/to/vpnsup bash Tests/lab/metrics.sh     (default .build/debug/vpnsup; needs root)
#   LAB_KEEP=1 keeps the run directory (logs, scrapes, captures) even when everything passed.
# Prints ok/not ok lines and "lab: P passed, F failed"; exits non-zero on any failure. Everything is
# torn down by the EXIT trap.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
# shellcheck source=Tests/lab/harness.sh
. "$REPO/Tests/lab/harness.sh"
# shellcheck source=Tests/lab/features.sh
. "$REPO/Tests/lab/features.sh" # vpnsup_env's DNS and PORT_FWD

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP
METRICS_PORT=9477
METRICS_URL=http://$LAB_LAN_GW:$METRICS_PORT/metrics

trap lab_test_finish EXIT
trap 'exit 130' INT TERM

lab_init
lab_test_preflight
RUNTIME=$LAB_RUNDIR/runtime
# shellcheck source=Tests/lab/router.sh
. "$REPO/Tests/lab/router.sh"

# The interpreter that has prometheus_client (scripts/install-deps.sh installs it with pip).
METRICS_PYTHON=
for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import prometheus_client' 2>/dev/null; then METRICS_PYTHON=$candidate; break; fi
done
if [ -z "$METRICS_PYTHON" ]; then
    tap_not_ok "a Python with prometheus_client (scripts/install-deps.sh installs it from PyPI)"
    exit 1
fi

# parse_scrape FILE: the exposition read by prometheus_client's parser, as JSON: every family with
# its type and help, every sample with its labels and value. The parser raises on anything that is
# not the text format; then this fails.
parse_scrape() {
    "$METRICS_PYTHON" - "$1" <<'PYEOF'
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": None if math.isinf(s.value) else s.value}
                    for s in family.samples],
    }
json.dump(families, sys.stdout)
PYEOF
}

# scrape NAME: GET /metrics from the LAN client into $LAB_RUNDIR/metrics/NAME.{txt,headers,json}.
scrape() {
    local out=$LAB_RUNDIR/metrics/$1
    mkdir -p "$LAB_RUNDIR/metrics"
    lab_exec client curl -sS --max-time 5 -D "$out.headers" -o "$out.txt" "$METRICS_URL" 2>>"$LAB_RUNDIR/logs/client.err" &&
        parse_scrape "$out.txt" >"$out.json" 2>"$out.parse-err"
}

# sample NAME SAMPLE [LABELS_JSON]: the value of one sample of scrape NAME (empty when absent).
sample() {
    local labels=${3:-}
    [ -n "$labels" ] || labels='{}'
    jq -r --arg name "$2" --argjson labels "$labels" \
        '[.[].samples[] | select(.name == $name and .labels == $labels) | .value] | if length == 1 then .[0] else empty end' \
        "$LAB_RUNDIR/metrics/$1.json"
}

# equals A B: the same number (jq prints 1.0 as 1); false when either is not a number.
equals() { jq -e -n --arg a "$1" --arg b "$2" '($a | tonumber) == ($b | tonumber)' >/dev/null 2>&1; }

lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX, vpnsup $VPNSUP, parser $METRICS_PYTHON)"
lab_capture_start
mapfile -t vars < <(vpnsup_env; echo "METRICS_LISTEN=$LAB_LAN_GW:$METRICS_PORT")
lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
lab_vpn_server_start
if lab_wait_for 30 state_is TunnelUp; then
    tap_ok "vpnsup with METRICS_LISTEN=$LAB_LAN_GW:$METRICS_PORT reaches TunnelUp"
else
    tap_not_ok "vpnsup with METRICS_LISTEN=$LAB_LAN_GW:$METRICS_PORT reaches TunnelUp (state $(vpnsup_state || echo '?'))"
fi
# The probe has run once (every 2 s), so its families are there.
probed() { [ "$(status_json | jq -r '.probe.lastResult // ""')" = answered ]; }
lab_wait_for 10 probed || tap_note "the DNS probe has not answered yet"

listening() { grep -qF "$LAB_LAN_GW:$METRICS_PORT" <<<"$(lab_exec router ss -Hltn "sport = :$METRICS_PORT")"; }
tap_check "the router listens on $LAB_LAN_GW:$METRICS_PORT (the gateway address only)" listening

# 1. A scrape from the LAN, read by prometheus_client, agrees with the status around it.
status_json >"$LAB_RUNDIR/status-before.json"
scrape first || true
status_json >"$LAB_RUNDIR/status-after.json"
tap_check "the LAN client scrapes $METRICS_URL: 200, text format 0.0.4" \
    bash -c 'head -n 1 "$1" | grep -q "^HTTP/1.1 200 " && grep -qi "^content-type: text/plain; version=0.0.4" "$1"' _ \
    "$LAB_RUNDIR/metrics/first.headers"
tap_check "prometheus_client parses the scrape" test -s "$LAB_RUNDIR/metrics/first.json"
tap_last_failed && tap_note_file 5 "$LAB_RUNDIR/metrics/first.parse-err"
families=$(jq -r 'keys | length' "$LAB_RUNDIR/metrics/first.json" 2>/dev/null || echo 0)
typed() { jq -e 'length > 10 and all(.[]; (.type == "gauge" or .type == "counter" or .type == "histogram") and (.help | length) > 0)' \
    "$LAB_RUNDIR/metrics/first.json" >/dev/null; }
tap_check "every family ($families) has a type (gauge, counter, histogram) and a help text" typed

# check JQ: true when the jq program JQ holds, given $scrape (the parsed first scrape), $before and
# $after (the statuses around it), and v(name; labels), a sample's value (null when absent).
check() {
    jq -e -n --slurpfile scrape "$LAB_RUNDIR/metrics/first.json" \
        --slurpfile before "$LAB_RUNDIR/status-before.json" --slurpfile after "$LAB_RUNDIR/status-after.json" "
        def v(\$name; \$labels): [\$scrape[0][].samples[] | select(.name == \$name and .labels == \$labels) | .value]
            | if length == 1 then .[0] else null end;
        def v(\$name): v(\$name; {});
        def within(\$x; \$low; \$high): \$x != null and \$low != null and \$high != null and \$low <= \$x and \$x <= \$high;
        \$before[0] as \$b | \$after[0] as \$a | $1" >/dev/null
}
state=$(jq -r .state "$LAB_RUNDIR/status-after.json")
tap_check "vpnsup_state is one-hot over the six states, 1 for $state as status says" \
    check '$b.state == $a.state and v("vpnsup_state"; {state: $a.state}) == 1
        and ([$scrape[0].vpnsup_state.samples[].value] | length == 6 and add == 1)'
tap_check "vpnsup_port_forwards is $(jq '.portForwards | length' "$LAB_RUNDIR/status-after.json"), as status lists them" \
    check 'v("vpnsup_port_forwards") == ($a.portForwards | length)'
# Kernel counters are read at the request: the scrape's lie between the two statuses around it.
tap_check "tunnel bytes received and sent: tun0's counters, between the statuses" \
    check 'within(v("vpnsup_tunnel_receive_bytes_total"); $b.bytesIn; $a.bytesIn)
        and within(v("vpnsup_tunnel_transmit_bytes_total"); $b.bytesOut; $a.bytesOut)'
tap_check "dropped packets and bytes per chain: the kernel's counters, between the statuses" \
    check 'all("input", "forward", "output", "egress"; . as $chain
        | within(v("vpnsup_dropped_packets_total"; {chain: $chain}); $b.blocked[$chain].packets; $a.blocked[$chain].packets)
        and within(v("vpnsup_dropped_bytes_total"; {chain: $chain}); $b.blocked[$chain].bytes; $a.blocked[$chain].bytes))'
tap_check "the policy (up) and OpenVPN (running) as status says" \
    check '$a.policy == "up" and v("vpnsup_firewall_policy"; {policy: "up"}) == 1 and v("vpnsup_firewall_policy"; {policy: "lockdown"}) == 0
        and ($a.openvpnPID != null) and v("vpnsup_openvpn_running") == 1'
tap_check "vpnsup_resolution_last_addresses is the number of addresses status pinned" \
    check 'v("vpnsup_resolution_last_addresses") == ([$a.resolvedRemotes[]] | add | length)'
tap_check "the probe's last success and failures in a row, as status says" \
    check '$a.probe.lastResult == "answered" and v("vpnsup_probe_last_success") == 1
        and v("vpnsup_probe_consecutive_failures") == $a.probe.consecutiveFailures'
tap_check "vpnsup_state_seconds: under a minute in $state, and counted from status's since" \
    check 'v("vpnsup_state_seconds") as $seconds | $seconds >= 0 and $seconds < 60
        and (v("vpnsup_start_time_seconds") | floor) == ($a.startedAt | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601)'

# The event-fed families: the transitions counted agree with status's list of them (it keeps the
# last 20; this run makes fewer), answered probes were timed, and OpenVPN was not restarted.
tap_check "vpnsup_transitions_total agrees with the transitions status lists" \
    check '($a.transitions | length) < 20 and
        ([$scrape[0].vpnsup_transitions.samples[] | {from: .labels.from, to: .labels.to, n: .value}] | sort)
        == ($a.transitions | group_by([.from, .to]) | map({from: .[0].from, to: .[0].to, n: length}) | sort)'
tap_check "vpnsup_probe_duration_seconds has timed the answered probes" check 'v("vpnsup_probe_duration_seconds_count") >= 1'
tap_check "vpnsup_openvpn_restarts_total is 0: OpenVPN started once" check 'v("vpnsup_openvpn_restarts_total") == 0'

# 2. The unix socket: `vpnsup metrics` in the router says the same.
lab_exec router "$VPNSUP" metrics --runtime-dir "$RUNTIME" >"$LAB_RUNDIR/metrics/socket.txt" 2>>"$LAB_RUNDIR/logs/status.err" || true
parse_scrape "$LAB_RUNDIR/metrics/socket.txt" >"$LAB_RUNDIR/metrics/socket.json" 2>/dev/null || true
tap_check "vpnsup metrics (metrics.sock) parses and shows $state" \
    equals "$(sample socket vpnsup_state "{\"state\":\"$state\"}")" 1

# 3. An outside flush: vpnsup repairs the table (with the admission in it), and the repairs count.
lab_exec router nft flush ruleset
repaired() { [ "$(status_json | jq -r '.firewallRepairs // 0')" -ge 1 ] && state_is TunnelUp; }
lab_wait_for 10 repaired || tap_note "no repair counted after the flush"
scrape repaired || true
tap_check "after an outside nft flush ruleset the LAN scrapes again (the admission is re-committed)" \
    test -s "$LAB_RUNDIR/metrics/repaired.json"
repairs=$(status_json | jq -r '.firewallRepairs // 0')
tap_check "vpnsup_firewall_repairs_total is $repairs, as status counts the repairs" \
    equals "$(sample repaired vpnsup_firewall_repairs_total)" "$repairs"
tap_check "vpnsup_firewall_repair_last_duration_seconds is there ($(sample repaired vpnsup_firewall_repair_last_duration_seconds) s)" \
    test -n "$(sample repaired vpnsup_firewall_repair_last_duration_seconds)"

# 4. The WAN side cannot connect: the ISP routes the LAN subnet through the router, so its SYNs
# to the gateway address (and to the router's WAN address) arrive on eth0; the input chain drops
# them, counted, and nothing answers (the capture below would hold a SYN-ACK or RST).
input_drops() { status_json | jq -r '.blocked.input.packets // 0'; }
drops_before=$(input_drops)
wan_refused() { ! lab_exec isp curl -s --max-time 1 -o /dev/null "http://$1:$METRICS_PORT/metrics"; }
tap_check "from the WAN (ISP) to $LAB_LAN_GW:$METRICS_PORT: no connection" wan_refused "$LAB_LAN_GW"
tap_check "from the WAN (ISP) to the router's WAN address $LAB_ROUTER_WAN_IP:$METRICS_PORT: no connection" \
    wan_refused "$LAB_ROUTER_WAN_IP"
drops_after=$(input_drops)
tap_check "the router received those SYNs and its input chain dropped them ($((drops_after - drops_before)) counted drops)" \
    test $((drops_after - drops_before)) -ge 2
tap_check "meanwhile the LAN still scrapes" scrape last

# 5. Over the whole run: nothing but the tunnel's transport on the WAN.
if leaks=$(lab_leaks); then
    tap_check "zero leaked packets on the WAN ($leaks of $(lab_capture_count) captured are not tunnel transport)" test "$leaks" -eq 0
    [ "$leaks" -eq 0 ] || tap_note_file 20 "$LAB_RUNDIR/capture/leaks.txt"
else
    tap_not_ok "zero leaked packets on the WAN (the capture could not be read)"
fi

# 6. SIGTERM: vpnsup exits and takes metrics.sock with it.
pid=$(lab_daemon_pid vpnsup || echo none)
lab_daemon_stop vpnsup TERM 5
gone() { ! lab_daemon_pid vpnsup >/dev/null && [ ! -e "$RUNTIME/metrics.sock" ]; }
tap_check "SIGTERM: vpnsup (pid $pid) is gone and metrics.sock with it" gone
