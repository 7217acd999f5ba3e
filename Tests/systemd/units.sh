#!/usr/bin/env bash
# Tests/systemd/units.sh — the systemd packaging (packaging/systemd/):
#  - both units pass `systemd-analyze verify` in a scratch root holding what they name (and a
#    deliberately broken copy does not: the check can fail);
#  - vpnsup-netns up/down for real: links moved into a new namespace, renamed, addressed, routed,
#    resolv.conf written, forwarding left off; down brings them back and removes everything;
#  - vpnsup runs inside that namespace the way the unit runs it (env file, RUNTIME_DIR) and
#    commits its lockdown there, and nowhere else; it starts no program but OpenVPN (traced);
#    STATUS_GROUP lets that group read the status socket and nobody reach the management socket.
# Every link lives in namespaces this test makes (a scratch "host" namespace stands in for the
# machine); the EXIT trap removes them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh" # lab_wait_for
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
UNITS=$REPO/packaging/systemd
VPNSUP=${VPNSUP:-$REPO/.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP

HOST_NS=vpst$$-host
ROUTER_NS=vpst$$-router
SCRATCH=$(mktemp -d /var/tmp/vpnsup-units.XXXXXX)
STATUS_DIR=/run/vpnsup-units-$$ # under /run (0755): reachable for the group checks
VPNSUP_PID=
STRACE_PID=

# A pid that no longer runs (or is a zombie its parent has not reaped yet).
gone() { [ ! -d "/proc/$1" ] || [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
# The one child of PID (vpnsup under strace).
child_of() { awk -v p="$1" '{ sub(/^[^)]*\) /, ""); if ($2 == p) { split(FILENAME, f, "/"); print f[3] } }' /proc/[0-9]*/stat 2>/dev/null | head -n 1; }

finish() {
    local status=$?
    trap - EXIT
    set +e
    # vpnsup by its own pid, then strace (which exits once its tracee has).
    [ -n "$VPNSUP_PID" ] && kill "$VPNSUP_PID" 2>/dev/null
    if [ -n "$STRACE_PID" ]; then
        lab_wait_for 5 gone "$STRACE_PID" || kill -KILL "$STRACE_PID" "$VPNSUP_PID" 2>/dev/null
        wait "$STRACE_PID" 2>/dev/null
    fi
    for ns in "$ROUTER_NS" "$HOST_NS"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9
        ip netns delete "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$SCRATCH" "$STATUS_DIR"
    tap_finish "$status"
    exit $?
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- systemd-analyze verify ----

root=$SCRATCH/root
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/vpnsup" "$root/etc/systemd/system" "$root/bin" \
    "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp /bin/sh "$root/bin/sh"
cp /bin/mkdir "$root/bin/mkdir" # the WireGuard socket directory (ExecStartPre)
install -m 0755 "$UNITS/vpnsup-netns" "$root/usr/local/lib/vpnsup/vpnsup-netns"
printf '#!/bin/sh\n' >"$root/usr/local/bin/vpnsup" # verify checks that it is there and executable
chmod 0755 "$root/usr/local/bin/vpnsup"
cp "$UNITS/vpnsup@.service" "$UNITS/vpnsup-netns@.service" "$root/etc/systemd/system/"
verify() { # prints what systemd-analyze says; succeeds only when it says nothing
    local out
    out=$(systemd-analyze verify --root="$root" vpnsup@lab.service vpnsup-netns@lab.service 2>&1) || true
    [ -z "$out" ] || { echo "$out" | sed 's/^/#   /'; return 1; }
}
tap_check "systemd-analyze verify: vpnsup@.service and vpnsup-netns@.service are clean" verify
sed -i 's/^Type=notify$/Type=notifyy/' "$root/etc/systemd/system/vpnsup@.service"
tap_check "systemd-analyze verify catches a broken copy (Type=notifyy)" eval '! verify >/dev/null'
tap_check "vpnsup@.service is Type=notify with a watchdog, a restart policy and the namespace path" \
    sh -c "grep -qx 'Type=notify' '$UNITS/vpnsup@.service' && grep -qx 'WatchdogSec=10s' '$UNITS/vpnsup@.service' &&
        grep -qx 'Restart=always' '$UNITS/vpnsup@.service' && grep -qx 'NetworkNamespacePath=/run/netns/%i' '$UNITS/vpnsup@.service'"

# ---- vpnsup-netns up/down ----

ip netns add "$HOST_NS"
ip -n "$HOST_NS" link set lo up
ip -n "$HOST_NS" link add wan0 type veth peer name isp0
ip -n "$HOST_NS" link add lan0 type veth peer name sw0
netns_script() { # up|down, in the stand-in host namespace, with the env file's variables
    nsenter --net="/run/netns/$HOST_NS" env NETNS_WAN_LINK=wan0 NETNS_LAN_LINK=lan0 \
        NETNS_WAN_ADDRESS=198.51.100.2/24 NETNS_WAN_GATEWAY=198.51.100.1 NETNS_NAMESERVER=198.51.100.1 \
        NETNS_HOME="$HOST_NS" "$UNITS/vpnsup-netns" "$1" "$ROUTER_NS"
}
ip -n "$HOST_NS" addr add 198.51.100.1/24 dev isp0
ip -n "$HOST_NS" link set isp0 up
tap_check "vpnsup-netns up $ROUTER_NS succeeds" netns_script up
in_router() { ip netns exec "$ROUTER_NS" "$@"; }
tap_check "the WAN link is eth0 there, up, with 198.51.100.2/24 and the default route" \
    sh -c "ip -n '$ROUTER_NS' -4 -o addr show dev eth0 | grep -q ' 198.51.100.2/24 ' &&
        ip -n '$ROUTER_NS' route show default | grep -q 'via 198.51.100.1 dev eth0'"
tap_check "the LAN link is eth1 there, up" sh -c "ip -n '$ROUTER_NS' link show dev eth1 | grep -q ',UP'"
tap_check "the links left the host namespace" sh -c "! ip -n '$HOST_NS' link show dev wan0 2>/dev/null && ! ip -n '$HOST_NS' link show dev lan0 2>/dev/null"
tap_check "resolv.conf for the namespace names 198.51.100.1" grep -qx 'nameserver 198.51.100.1' "/etc/netns/$ROUTER_NS/resolv.conf"
tap_check "IP forwarding is off until the tunnel is up" test "$(in_router cat /proc/sys/net/ipv4/ip_forward)" = 0
tap_check "vpnsup-netns up again leaves the namespace as it is" netns_script up
bad_link() {
    local out status=0
    out=$(nsenter --net="/run/netns/$HOST_NS" env NETNS_WAN_LINK=nosuch0 NETNS_LAN_LINK=sw0 \
        "$UNITS/vpnsup-netns" up "vpst$$-bad" 2>&1) || status=$?
    [ "$status" -eq 78 ] && [[ $out == *"NETNS_WAN_LINK: no link 'nosuch0'"* ]] && [ ! -e "/run/netns/vpst$$-bad" ]
}
tap_check "a WAN link that does not exist: exit 78 naming NETNS_WAN_LINK, no namespace made" bad_link

# ---- vpnsup in the namespace, as the unit runs it ----

if [ -x "$VPNSUP" ]; then
    mkdir -p "$SCRATCH/config"
    # A file OpenVPN accepts up to its connection (it needs a CA: any directory as capath will do,
    # no server answers here), with a script OpenVPN never gets (vpnsup drops it).
    printf 'client\ndev tun\nremote 198.51.100.1 1194\ncapath %s\nscript-security 2\nup /bin/true\n' "$SCRATCH/config" \
        >"$SCRATCH/config/provider.ovpn"
    (umask 077 && printf 'user\npass\n' >"$SCRATCH/credentials")
    # Every program vpnsup starts, followed through forks: OpenVPN only, never a shell.
    # Started without a function or subshell in between: `ip netns exec` and env exec, so $! is
    # strace itself, and vpnsup is its child.
    ip netns exec "$ROUTER_NS" env -i PATH="$PATH" CONFIG="$SCRATCH/config/provider.ovpn" CREDENTIALS_FILE="$SCRATCH/credentials" \
        IP_ADDR=172.22.0.1/24 RUNTIME_DIR="$STATUS_DIR" STATUS_GROUP=nogroup \
        strace -f -qq -e trace=execve -o "$SCRATCH/exec.trace" "$VPNSUP" run >"$SCRATCH/vpnsup.log" 2>&1 &
    STRACE_PID=$!
    vpnsup_started() { VPNSUP_PID=$(child_of "$STRACE_PID") && [ -n "$VPNSUP_PID" ] && [ "$(readlink "/proc/$VPNSUP_PID/exe")" -ef "$VPNSUP" ]; }
    tap_check "vpnsup runs under strace, as its child" lab_wait_for 10 vpnsup_started
    table_there() { in_router nft list tables 2>/dev/null | grep -q vpnsup; }
    openvpn_started() { grep -q 'execve("[^"]*/openvpn"' "$SCRATCH/exec.trace" 2>/dev/null; }
    tap_check "vpnsup in the namespace commits its ruleset there" lab_wait_for 10 table_there
    tap_check "and the stand-in host namespace has none of it" sh -c "! ip netns exec '$HOST_NS' nft list tables | grep -q vpnsup"
    lab_wait_for 10 openvpn_started || tap_note "OpenVPN was not started within 10 s"

    # STATUS_GROUP=nogroup: that group reads the status, nobody else; the management socket
    # stays root's.
    as_user() { local gid=$1; shift; setpriv --reuid=nobody --regid="$gid" --clear-groups "$@"; }
    tap_check "STATUS_GROUP=nogroup: a member (nobody:nogroup) runs vpnsup status" \
        eval "as_user nogroup '$VPNSUP' status --runtime-dir '$STATUS_DIR' >/dev/null"
    tap_check "STATUS_GROUP=nogroup: a non-member (nobody:12345) cannot" \
        eval "! as_user 12345 '$VPNSUP' status --runtime-dir '$STATUS_DIR' >/dev/null 2>&1"
    management_closed() {
        as_user nogroup /usr/bin/python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    sys.exit(0)
sys.exit(1)' "$STATUS_DIR/management.sock"
    }
    tap_check "STATUS_GROUP=nogroup: the group cannot connect to the management socket (root only)" management_closed
    modes() { stat -c '%a %U:%G' "$STATUS_DIR" "$STATUS_DIR/status.sock" "$STATUS_DIR/management.sock" | xargs; }
    tap_check "runtime dir 710 root:nogroup, status.sock 660 root:nogroup, management.sock 600 root:root ($(modes))" \
        test "$(modes)" = "710 root:nogroup 660 root:nogroup 600 root:root"

    # SIGTERM to vpnsup itself, by its own pid; strace then exits with vpnsup's status.
    stopped_pid=$VPNSUP_PID
    [ -n "$stopped_pid" ] && kill -TERM "$stopped_pid"
    tap_check "SIGTERM to vpnsup (pid ${stopped_pid:-none}): it exits within 10 s" lab_wait_for 10 gone "${stopped_pid:-0}"
    rc=0
    lab_wait_for 5 gone "$STRACE_PID" || kill -KILL "$STRACE_PID" 2>/dev/null
    wait "$STRACE_PID" 2>/dev/null || rc=$?
    STRACE_PID= VPNSUP_PID=
    tap_check "vpnsup exits 0 after SIGTERM (got $rc)" test "$rc" -eq 0
    tap_check "after SIGTERM the lockdown stays committed in the namespace" table_there
    programs=$(sed -n 's/^[0-9]* *execve("\([^"]*\)".*/\1/p' "$SCRATCH/exec.trace" | sort -u | xargs)
    only_openvpn() {
        local program
        [ -n "$programs" ] || return 1
        for program in $programs; do
            [ "$program" -ef "$VPNSUP" ] || [ "$(basename "$program")" = openvpn ] || return 1
        done
        [[ " $programs " == *openvpn* ]]
    }
    tap_check "vpnsup started no program but OpenVPN, never a shell ($programs)" only_openvpn

    rc=0
    in_router env -i PATH="$PATH" CONFIG="$SCRATCH/config/provider.ovpn" CREDENTIALS_FILE="$SCRATCH/credentials" \
        IP_ADDR=172.22.0.1/24 RUNTIME_DIR="$STATUS_DIR" STATUS_GROUP=no-such-group \
        timeout 20 "$VPNSUP" run >"$SCRATCH/bad-group.out" 2>"$SCRATCH/bad-group.err" || rc=$?
    tap_check "STATUS_GROUP=no-such-group: exit 78 naming it (got $rc: $(head -c 200 "$SCRATCH/bad-group.err"))" \
        sh -c "[ $rc -eq 78 ] && grep -q 'STATUS_GROUP=no-such-group' '$SCRATCH/bad-group.err'"
    tap_check "STATUS_GROUP=no-such-group: the lockdown is committed" table_there
    # A WireGuard CONFIG under the unit's sandbox as far as it can be had without systemd: the
    # whole file system read-only (ProtectSystem=strict) but the runtime directory and
    # /run/wireguard (ReadWritePaths); TUNNEL_IF as the unit sets it. vpnsup starts wireguard-go
    # and nothing else, pins the peer's endpoint, and SIGTERM stops it.
    if command -v wireguard-go >/dev/null && command -v wg >/dev/null; then
        wg_if=wg-vpst$$
        wg_if=${wg_if:0:15}
        (umask 077 && printf '[Interface]\nPrivateKey = %s\nAddress = 10.9.0.2/32\n[Peer]\nPublicKey = %s\nEndpoint = 198.51.100.1:51820\nAllowedIPs = 0.0.0.0/0\n' \
            "$(wg genkey)" "$(wg genkey | wg pubkey)" >"$SCRATCH/config/provider-wg.conf")
        mkdir -p -m 0755 /run/wireguard
        sandboxed() { # the unit's file-system view, then the namespace
            # (and the test's scratch directory, for strace's trace)
            # (a bind of a read-only mount is read-only until remounted).
            unshare --mount --propagation private -- sh -c 'mount --rbind / / && mount -o remount,bind,ro / &&
                for path in "$1" /run/wireguard "$2"; do mount --bind "$path" "$path" && mount -o remount,bind,rw "$path" || exit 1; done &&
                shift 2 && exec "$@"' _ "$STATUS_DIR" "$SCRATCH" ip netns exec "$ROUTER_NS" "$@"
        }
        sandboxed env -i PATH="$PATH" CONFIG="$SCRATCH/config/provider-wg.conf" IP_ADDR=172.22.0.1/24 \
            RUNTIME_DIR="$STATUS_DIR" TUNNEL_IF="$wg_if" \
            strace -f -qq -e trace=execve -o "$SCRATCH/exec-wg.trace" "$VPNSUP" run >"$SCRATCH/vpnsup-wg.log" 2>&1 &
        VPNSUP_PID=$!
        wg_running() {
            in_router ip link show dev "$wg_if" >/dev/null 2>&1 && [ -S "/run/wireguard/$wg_if.sock" ] &&
                in_router nft list table inet vpnsup 2>/dev/null | grep -q 'ip daddr 198.51.100.1 udp dport 51820 accept'
        }
        tap_check "WireGuard CONFIG, read-only file system but RUNTIME_DIR and /run/wireguard: wireguard-go runs, $wg_if exists, the endpoint is pinned" \
            lab_wait_for 15 wg_running
        tap_last_failed && tap_note_file 10 "$SCRATCH/vpnsup-wg.log"
        # SIGTERM to vpnsup itself, by its own pid: strace's trace names it (its first execve);
        # $! is the subshell around the sandbox, which would pass no signal on.
        wg_vpnsup_pid=$(awk '/execve\(/ { print $1; exit }' "$SCRATCH/exec-wg.trace" 2>/dev/null) || wg_vpnsup_pid=
        if [ -n "$wg_vpnsup_pid" ] && [ "$(readlink "/proc/$wg_vpnsup_pid/exe")" -ef "$VPNSUP" ]; then
            kill -TERM "$wg_vpnsup_pid"
            lab_wait_for 10 gone "$wg_vpnsup_pid" || tap_note "vpnsup (pid $wg_vpnsup_pid) still runs 10 s after SIGTERM"
        else
            tap_note "vpnsup's pid is not in $SCRATCH/exec-wg.trace: no SIGTERM sent"
        fi
        wait "$VPNSUP_PID" 2>/dev/null || true
        VPNSUP_PID=
        wg_stopped() { ! in_router ip link show dev "$wg_if" >/dev/null 2>&1 && [ ! -e "/run/wireguard/$wg_if.sock" ]; }
        stopped_under_lockdown() {
            local table
            lab_wait_for 5 wg_stopped && table=$(in_router nft list table inet vpnsup) &&
                grep -q 'hook forward priority filter; policy drop;' <<<"$table" && ! grep -q 51820 <<<"$table"
        }
        tap_check "WireGuard CONFIG: SIGTERM stops wireguard-go (its link and socket gone), the lockdown stays" stopped_under_lockdown
        programs=$(sed -n 's/^[0-9]* *execve("\([^"]*\)".*/\1/p' "$SCRATCH/exec-wg.trace" | sort -u | xargs)
        only_wireguard_go() {
            local program
            for program in $programs; do
                [ "$program" -ef "$VPNSUP" ] || [ "$(basename "$program")" = wireguard-go ] || return 1
            done
            [[ " $programs " == *wireguard-go* ]]
        }
        tap_check "WireGuard CONFIG: vpnsup started no program but wireguard-go ($programs)" only_wireguard_go
    else
        tap_not_ok "wireguard-go and wg for the WireGuard unit check (scripts/install-deps.sh installs them)"
    fi
else
    tap_not_ok "vpnsup binary at $VPNSUP (make build)"
fi

tap_check "vpnsup-netns down succeeds" netns_script down
tap_check "down: the namespace and its resolv.conf are gone" sh -c "[ ! -e '/run/netns/$ROUTER_NS' ] && [ ! -e '/etc/netns/$ROUTER_NS' ]"
tap_check "down: wan0 and lan0 are back under their names" sh -c "ip -n '$HOST_NS' link show dev wan0 >/dev/null && ip -n '$HOST_NS' link show dev lan0 >/dev/null"
