#!/usr/bin/env bash
# Tests/lab/soak.sh — fault-injection soak of vpnsup in the namespace lab (lab/lab.sh).
#
# One vpnsup runs throughout. Faults are drawn at random from a recorded seed (every kind once
# first, in random order, then at random): OpenVPN SIGKILL, VPN server outage and return, WAN
# link flap, tun0 deleted, LAN gateway address removed, `nft flush ruleset`, the management
# connection shut down, SIGHUP reload, a burst of netlink noise. With SOAK_TUNNEL=wireguard the
# router runs over WireGuard (lab/wireguard.sh) and the tunnel's faults are WireGuard's:
# wireguard-go SIGKILLed, its link deleted, the server forgetting the router's peer (its session
# gone), the server's outage; the others are the same. After each fault: the client's
# traffic goes through the tunnel again and the state is TunnelUp within RECOVER_BUDGET seconds,
# and a client fetch made while the state is not TunnelUp never gets out by any other way. Over
# the whole soak: zero leaked packets on the WAN (capture), only tunnel sources at the echo, and
# vpnsup's file descriptors, threads and RSS measured after the first recovery and at the end:
# descriptors and threads constant, RSS growth under 1 MiB; no zombie child.
#
#   SOAK_FAULTS=N (default 12)  SOAK_SEED=S (default: random, printed)  RECOVER_BUDGET=s (30)
#   SOAK_TUNNEL=openvpn|wireguard (default openvpn)  VPNSUP=path (default .build/debug/vpnsup)   needs root
# Prints a line per fault with its time to recover, ok/not ok lines and "lab: P passed, F failed".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
# shellcheck source=Tests/lab/harness.sh
. "$REPO/Tests/lab/harness.sh"
# shellcheck source=Tests/lab/features.sh
. "$REPO/Tests/lab/features.sh"
# shellcheck source=lab/wireguard.sh
. "$REPO/lab/wireguard.sh"

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP
SOAK_FAULTS=${SOAK_FAULTS:-12}
SOAK_SEED=${SOAK_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
RECOVER_BUDGET=${RECOVER_BUDGET:-30}
RSS_GROWTH_LIMIT_KB=1024
SOAK_TUNNEL=${SOAK_TUNNEL:-openvpn}
if [ "$SOAK_TUNNEL" = wireguard ]; then
    FAULTS=(wg-kill server-outage wan-flap wg-link-deleted lan-address-removed nft-flush
        peer-forgotten sighup netlink-noise)
else
    FAULTS=(openvpn-kill server-outage wan-flap tun-deleted lan-address-removed nft-flush
        management-shutdown sighup netlink-noise)
fi
LAB_FAILURE_NOTE="seed $SOAK_SEED (SOAK_SEED=$SOAK_SEED SOAK_FAULTS=$SOAK_FAULTS SOAK_TUNNEL=$SOAK_TUNNEL replays this run)"

trap lab_test_finish EXIT
trap 'exit 130' INT TERM

lab_init
lab_test_preflight
RUNTIME=$LAB_RUNDIR/runtime
# shellcheck source=Tests/lab/router.sh
. "$REPO/Tests/lab/router.sh"

# ---- the tunnel: OpenVPN, or WireGuard ----

if [ "$SOAK_TUNNEL" = wireguard ]; then
    lab_wg_init
    LAB_VPN_PREFIX=$LAB_WG_PREFIX # what came through the tunnel reaches the echo from 10.9.0.2
    start_vpnsup() {
        local vars
        mapfile -t vars < <(VPNSUP_CONFIG=$LAB_RUNDIR/config/client.conf vpnsup_env | grep -v '^CREDENTIALS_FILE='
            echo TUNNEL_IF="$LAB_WG_ROUTER_IF")
        lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
    }
    server_start() { lab_wg_server_start; }
    server_stop() { lab_wg_server_stop; }
else
    server_start() { lab_vpn_server_start; }
    server_stop() { lab_vpn_server_stop; }
fi

# The server drops the router's peer and takes it back: every session with it is gone, as
# after a server restart that kept its keys. The router must notice and handshake again.
peer_forgotten() {
    local peer
    peer=$(cat "$LAB_WG_DIR/client.pub")
    lab_exec isp wg set "$LAB_WG_SERVER_IF" peer "$peer" remove
    lab_exec isp wg set "$LAB_WG_SERVER_IF" peer "$peer" preshared-key "$LAB_WG_DIR/psk" allowed-ips "$LAB_WG_CLIENT_IP/32"
}

# ---- resources of the running vpnsup ----

fd_count() { find "/proc/$VPNSUP_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
thread_count() { awk '$1 == "Threads:" { print $2 }' "/proc/$VPNSUP_PID/status"; }
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$VPNSUP_PID/status"; }
# "fds threads rss" at rest: a DNS probe in flight holds a socket for up to PROBE_TIMEOUT, so the
# fewest seen over more than one probe interval (2 s) are the resting counts. (The probe's thread
# is started by the first probe, long before the first recovery, and kept.)
resting_resources() {
    local fds threads least_fds=999999 least_threads=999999 i
    for i in $(seq 25); do
        fds=$(fd_count) threads=$(thread_count)
        [ "$fds" -ge "$least_fds" ] || least_fds=$fds
        [ "$threads" -ge "$least_threads" ] || least_threads=$threads
        sleep 0.1
    done
    echo "$least_fds $least_threads $(rss_kb)"
}

# ---- faults ----

wait_left_tunnel_up() { lab_wait_for "${1:-10}" state_is_not TunnelUp; }

# A client fetch while vpnsup is not in TunnelUp: it may fail, or (the tunnel still carrying)
# arrive from the tunnel address; a LAN source would be a way out. Counted, not just logged.
ESCAPES=0
BLOCKED_PROBES=0
probe_while_down() {
    local seen
    state_is TunnelUp && return 0
    BLOCKED_PROBES=$((BLOCKED_PROBES + 1))
    seen=$(lab_exec client curl -s --max-time 1 "$LAB_ECHO_URL" 2>/dev/null) || return 0
    via_tunnel "$seen" || { ESCAPES=$((ESCAPES + 1)); tap_note "escape: the echo saw $seen"; }
}

# OpenVPN's end of the management connection, shut down from inside OpenVPN with gdb: both ends
# see the connection end, as when the socket dies.
management_shutdown() {
    local pid fd inode sockets
    pid=$(router_openvpns | head -n 1)
    [ -n "$pid" ] || return 1
    sockets=$(lab_exec router cat /proc/net/unix) # per namespace
    for fd in /proc/"$pid"/fd/*; do
        inode=$(readlink "$fd" 2>/dev/null | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p')
        [ -n "$inode" ] || continue
        # Unix stream sockets only (type 0001): the management connection.
        if awk -v inode="$inode" '$5 == "0001" && $7 == inode { found = 1 } END { exit !found }' <<<"$sockets"; then
            gdb -q -batch -p "$pid" -ex "call (int)shutdown(${fd##*/}, 2)" >>"$LAB_RUNDIR/logs/gdb.log" 2>&1
            return 0
        fi
    done
    return 1
}

netlink_noise() {
    local batch=$LAB_RUNDIR/noise.batch i
    : >"$batch"
    # veth pairs (the dummy driver may be missing): 200 links up, addressed, routed, then deleted.
    for i in $(seq 1 100); do
        echo "link add soak$i type veth peer name soakp$i"
        echo "link set soak$i up"
        echo "link set soakp$i up"
        echo "address add 10.99.$((i / 250)).$((i % 250 + 1))/32 dev soak$i"
        echo "route add 10.98.$i.0/24 dev soak$i"
    done >>"$batch"
    for i in $(seq 1 100); do echo "link del soak$i"; done >>"$batch"
    lab_exec router ip -batch "$batch"
}

inject() {
    case $1 in
    openvpn-kill) kill -KILL "$(router_openvpns | head -n 1)" ;;
    wg-kill) kill -KILL "$(lab_wg_router_pid)" ;;
    wg-link-deleted) lab_exec router ip link del "$LAB_WG_ROUTER_IF" ;;
    peer-forgotten) peer_forgotten ;;
    server-outage)
        server_stop
        wait_left_tunnel_up 20 || tap_note "server-outage: still TunnelUp 20 s after the server stopped"
        probe_while_down
        tap_check "server-outage: the client cannot get out while the server is away" client_blocked
        ;;
    wan-flap)
        lab_exec router ip link set eth0 down
        wait_left_tunnel_up 5 || true
        probe_while_down
        lab_exec router ip link set eth0 up
        lab_exec router ip route replace default via "$LAB_ISP_WAN_IP" dev eth0
        ;;
    tun-deleted) lab_exec router ip link del tun0 ;;
    lan-address-removed) lab_exec router ip addr del "$LAB_LAN_GW_CIDR" dev eth1 ;;
    nft-flush) lab_exec router nft flush ruleset ;;
    management-shutdown) management_shutdown ;;
    sighup) kill -HUP "$VPNSUP_PID" ;;
    netlink-noise) netlink_noise ;;
    esac
}

# After the fault: the outage ends (its recovery is timed from the server's return, the others'
# from the injection); the rest get a client probe while vpnsup is not TunnelUp.
after_inject() {
    case $1 in
    server-outage)
        server_start
        RECOVERY_FROM=$(lab_now_ms)
        ;;
    *) probe_while_down ;;
    esac
}

recovered() { state_is TunnelUp && client_via_tunnel; }

# ---- the soak ----

lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s; $SOAK_TUNNEL; seed $SOAK_SEED, $SOAK_FAULTS faults, budget $RECOVER_BUDGET s"
feature_setup
if [ "$SOAK_TUNNEL" = wireguard ]; then
    lab_wg_setup
    lab_wg_use_transport
fi
lab_capture_start
start_vpnsup
lab_wait_for 5 lab_daemon_pid vpnsup >/dev/null || true
VPNSUP_PID=$(lab_daemon_pid vpnsup || echo none)
server_start
if ! lab_wait_for 30 recovered; then
    tap_not_ok "TunnelUp before the first fault (state $(vpnsup_state || echo '?'))"
    exit 1
fi
tap_ok "TunnelUp before the first fault"

RANDOM=$SOAK_SEED
plan=()
order=("${FAULTS[@]}")
for ((i = ${#order[@]} - 1; i > 0; i--)); do # Fisher-Yates: every kind once, in random order
    j=$((RANDOM % (i + 1)))
    tmp=${order[i]} order[i]=${order[j]} order[j]=$tmp
done
for ((n = 0; n < SOAK_FAULTS; n++)); do
    if [ "$n" -lt "${#order[@]}" ]; then plan+=("${order[n]}"); else plan+=("${FAULTS[RANDOM % ${#FAULTS[@]}]}"); fi
done

declare -A worst=() count=()
failed_recoveries=0
fds_start= threads_start= rss_start=
for ((n = 0; n < ${#plan[@]}; n++)); do
    fault=${plan[n]}
    RECOVERY_FROM=$(lab_now_ms)
    if ! inject "$fault"; then
        tap_not_ok "fault $((n + 1)) $fault could not be injected"
        continue
    fi
    after_inject "$fault"
    if lab_wait_for "$RECOVER_BUDGET" recovered; then
        took=$(($(lab_now_ms) - RECOVERY_FROM))
        printf '# fault %3d  %-20s recovered in %s s\n' $((n + 1)) "$fault" "$(lab_ms_to_s "$took")"
        count[$fault]=$((${count[$fault]:-0} + 1))
        [ "$took" -le "${worst[$fault]:-0}" ] || worst[$fault]=$took
    else
        failed_recoveries=$((failed_recoveries + 1))
        tap_not_ok "fault $((n + 1)) $fault: not recovered within $RECOVER_BUDGET s (state $(vpnsup_state || echo '?'))"
    fi
    if [ -z "$fds_start" ]; then
        read -r fds_start threads_start rss_start < <(resting_resources)
    fi
done

for fault in "${FAULTS[@]}"; do
    [ -n "${count[$fault]:-}" ] &&
        tap_note "figure: $fault: ${count[$fault]} injected, slowest recovery $(lab_ms_to_s "${worst[$fault]}") s"
done
tap_check "every fault recovered within $RECOVER_BUDGET s ($failed_recoveries did not)" test "$failed_recoveries" -eq 0
tap_check "the same vpnsup ran throughout (pid $VPNSUP_PID)" test "$(lab_daemon_pid vpnsup || echo gone)" = "$VPNSUP_PID"
tap_check "no client fetch got out other than through the tunnel while not TunnelUp ($ESCAPES of $BLOCKED_PROBES)" \
    test "$ESCAPES" -eq 0 -a "$BLOCKED_PROBES" -gt 0

read -r fds_end threads_end rss_end < <(resting_resources)
tap_note "figure: vpnsup after the first recovery: $fds_start fds, $threads_start threads, RSS $rss_start KiB; at the end: $fds_end fds, $threads_end threads, RSS $rss_end KiB"
tap_check "file descriptors constant ($fds_start -> $fds_end)" test "$fds_start" -eq "$fds_end"
tap_check "threads constant ($threads_start -> $threads_end)" test "$threads_start" -eq "$threads_end"
tap_check "RSS growth under 1 MiB ($((rss_end - rss_start)) KiB)" test $((rss_end - rss_start)) -lt "$RSS_GROWTH_LIMIT_KB"
tap_check "no zombie child of vpnsup" test -z "$(zombies_of_vpnsup "$VPNSUP_PID")"

if leaks=$(lab_leaks); then
    tap_check "zero leaked packets on the WAN across the soak ($leaks of $(lab_capture_count) captured)" test "$leaks" -eq 0
    [ "$leaks" -eq 0 ] || tap_note_file 20 "$LAB_RUNDIR/capture/leaks.txt"
else
    tap_not_ok "zero leaked packets on the WAN (the capture could not be read)"
fi
sources=$(lab_echo_sources | tr '\n' ' ')
only_tunnel_sources() {
    local src
    [ -n "$sources" ] || return 1
    for src in $sources; do via_tunnel "$src" || return 1; done
}
tap_check "the echo saw tunnel sources only ($sources)" only_tunnel_sources
