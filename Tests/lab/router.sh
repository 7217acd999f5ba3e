# shellcheck shell=bash
# Tests/lab/router.sh — vpnsup in the lab's router namespace, as the lab tests (e2e.sh, soak.sh)
# run and watch it. Sourced after lab/lab.sh, Tests/lab/features.sh and lab_init, with VPNSUP and
# RUNTIME set.

# ---- vpnsup in the router namespace ----

# The environment of `vpnsup run`, nothing inherited but PATH (so DNS, PORT_FWD... of the caller
# cannot change what is tested).
vpnsup_env() {
    echo PATH="$PATH"
    echo CONFIG="${VPNSUP_CONFIG:-$LAB_RUNDIR/config/client.ovpn}" # remote by host name unless VPNSUP_CONFIG
    echo IP_ADDR="$LAB_LAN_GW_CIDR"
    echo LAN_IF=eth1
    echo WAN_IF=eth0
    echo CREDENTIALS_FILE="$LAB_RUNDIR/credentials"
    echo RUNTIME_DIR="$RUNTIME"
    feature_env # DNS, PORT_FWD
    # The DNS probe asks DNS (the echo's dnsmasq) through tun0 every 2 s; 3 failures -> Degraded.
    echo PROBE_INTERVAL=2
    echo PROBE_TIMEOUT=1
    echo PROBE_FAILURES=3
}

start_vpnsup() {
    local vars
    mapfile -t vars < <(vpnsup_env)
    lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
}

status_json() {
    timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" status --json --runtime-dir "$RUNTIME" \
        2>>"$LAB_RUNDIR/logs/status.err"
}

vpnsup_state() {
    local json
    json=$(status_json) || return 1
    jq -er '.state' <<<"$json" 2>/dev/null
}

state_is() { [ "$(vpnsup_state)" = "$1" ]; }
state_is_not() {
    local s
    s=$(vpnsup_state) || return 1
    [ "$s" != "$1" ]
}
status_answers() { vpnsup_state >/dev/null; }

gateway_on_lan() {
    local addrs
    addrs=$(lab_exec router ip -4 -o addr show dev eth1) || return 1
    [[ $addrs == *" $LAB_LAN_GW_CIDR "* ]]
}

# ---- the client's view ----

# What the echo saw as our source, or failure.
client_fetch() { lab_exec client curl -sS --max-time "${1:-3}" "$LAB_ECHO_URL" 2>>"$LAB_RUNDIR/logs/client.err"; }
via_tunnel() { [[ $1 == "$LAB_VPN_PREFIX"* ]]; }
client_via_tunnel() {
    local seen
    seen=$(client_fetch 1) || return 1
    via_tunnel "$seen"
}
client_blocked() { ! lab_exec client curl -s --max-time 2 -o /dev/null "$LAB_ECHO_URL"; }
ping_blocked() { ! lab_exec client ping -q -c 3 -i 0.3 -W 1 "$LAB_ECHO_IP" >/dev/null 2>&1; }
dns_blocked() { ! lab_exec client dig +short +time=1 +tries=1 "@$LAB_ECHO_IP" "$LAB_DNS_NAME" >/dev/null 2>&1; }

seconds_since() { lab_ms_to_s $(($(lab_now_ms) - $1)); }


router_openvpns() {
    local pid
    for pid in $(ip netns pids "$(lab_ns router)"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != openvpn ] || echo "$pid"
    done
}
# Children of vpnsup in state Z, found through every process's PPid (zombies have no readable
# namespace link, so `ip netns pids` would not list them).
zombies_of_vpnsup() {
    awk -v parent="$1" '$1 == "State:" { state = $2 } $1 == "PPid:" && $2 == parent && state == "Z" { print FILENAME }' \
        /proc/[0-9]*/status 2>/dev/null
}
children_of_vpnsup() { awk -v parent="$1" '$1 == "PPid:" && $2 == parent { print FILENAME }' /proc/[0-9]*/status 2>/dev/null; }
