#!/usr/bin/env bash
# shellcheck disable=SC2016 # the bash -c programs expand their own variables
# 3. Port forwards. (a) Apply time for 1, 100, 1,000 and 10,000 forwards: vpnsup's commit (libnftnl,
# one transaction, two maps, read-back included; vpnsup-bench) and `nft -f` of the same ruleset,
# against the iptables way — one DNAT rule per forward, one iptables process each (the original's
# shell loop; at 10,000 only SLOW_RUNS runs, it takes most of a minute) or all in one
# iptables-restore. (b) The data plane with 1 and with 10,000 forwards: new TCP connections per
# second through a forward, and iperf3 throughput through one, to a LAN host; vpnsup's maps against
# iptables' DNAT chain with the used forward last (its worst case). tun0 is a veth here: the
# benchmark is about the rules, not OpenVPN.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
for section in forwards-apply forwards-rate forwards-throughput; do bench_reset_section "$section"; done
SLOW_RUNS=${SLOW_RUNS:-1}
IPERF_SECONDS=${IPERF_SECONDS:-3}
CONNECTIONS=${CONNECTIONS:-2000}
COUNTS=${COUNTS:-1 100 1000 10000}

if [ "${BENCH_BUILD:-1}" = 1 ] || [ ! -x "$SCRATCH/release/vpnsup-bench" ]; then
    (cd "$REPO" && "$SWIFT" build -c release --scratch-path "$SCRATCH" --product vpnsup-bench >&2)
fi
BENCH_BIN=$SCRATCH/release/vpnsup-bench
# "1 forward", "10,000 forwards" (thousands grouped without relying on the locale).
label() { if [ "$1" = 1 ]; then echo "1 forward"; else echo "$(sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1") forwards"; fi; }

# ---- (a) apply time ----
APPLY=$(bench_ns apply)
ip netns exec "$APPLY" "$BENCH_BIN" --runs "$RUNS" --forwards "$(tr ' ' , <<<"$COUNTS")" --samples >"$BENCH_TMP/vpnsup-apply.jsonl"
while read -r line; do
    count=$(jq -r .forwards <<<"$line")
    series=$(jq -r .series <<<"$line")
    # shellcheck disable=SC2046 # one sample per word
    case "$series" in
        "fresh commit") bench_record forwards-apply "vpnsup (one commit, maps, read back)" "$(label "$count")" ms $(jq -r '.samples[]' <<<"$line") ;;
        "nft -f") bench_record forwards-apply "nft -f of vpnsup's ruleset" "$(label "$count")" ms $(jq -r '.samples[]' <<<"$line") ;;
    esac
done <"$BENCH_TMP/vpnsup-apply.jsonl"

# The same forwards as vpnsup-bench's: public port 20000+i to 172.30.x.y:1024+i, every third UDP.
dnat_rules() { # COUNT -> iptables-restore lines for the nat table
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "-A PREROUTING -i tun0 -p %s --dport %d -j DNAT --to-destination 172.30.%d.%d:%d\n", (i % 3 == 0 ? "udp" : "tcp"), 20000 + i, int(i / 250), i % 250 + 2, 1024 + i }'
}
time_iptables_loop() { # COUNT -> ms, one iptables process per forward
    dnat_rules "$1" | sed 's/^/iptables -t nat /' >"$BENCH_TMP/loop.sh"
    ip netns exec "$APPLY" nft flush ruleset
    ip netns exec "$APPLY" bash -c 't0=${EPOCHREALTIME/./}; while read -r -a c; do "${c[@]}"; done <"$1"; echo $(( ${EPOCHREALTIME/./} - t0 ))' _ "$BENCH_TMP/loop.sh" |
        awk '{ printf "%.3f\n", $1 / 1000 }'
}
time_iptables_restore() { # COUNT -> ms, one iptables-restore
    { echo "*nat"; dnat_rules "$1"; echo "COMMIT"; } >"$BENCH_TMP/restore.rules"
    ip netns exec "$APPLY" nft flush ruleset
    ip netns exec "$APPLY" bash -c 't0=${EPOCHREALTIME/./}; iptables-restore <"$1"; echo $(( ${EPOCHREALTIME/./} - t0 ))' _ "$BENCH_TMP/restore.rules" |
        awk '{ printf "%.3f\n", $1 / 1000 }'
}
for count in $COUNTS; do
    runs=$RUNS
    [ "$count" -lt 10000 ] || runs=$SLOW_RUNS
    loop=() restore=()
    for ((run = 0; run < runs; run++)); do loop+=("$(time_iptables_loop "$count")"); done
    for ((run = 0; run < RUNS; run++)); do restore+=("$(time_iptables_restore "$count")"); done
    bench_record forwards-apply "iptables, one process per forward" "$(label "$count")" ms "${loop[@]}"
    bench_record forwards-apply "iptables-restore, one DNAT rule per forward" "$(label "$count")" ms "${restore[@]}"
done
bench_summary forwards-apply

# ---- (b) data plane ----
PEER=$(bench_ns peer) ROUTER=$(bench_ns router) LAN=$(bench_ns lan)
ip link add eth0 netns "$PEER" type veth peer name tun0 netns "$ROUTER"
ip link add eth1 netns "$ROUTER" type veth peer name eth0 netns "$LAN"
ip -n "$PEER" addr add 10.8.0.1/24 dev eth0
ip -n "$ROUTER" addr add 10.8.0.2/24 dev tun0
ip -n "$ROUTER" addr add 172.22.0.1/24 dev eth1
ip -n "$LAN" addr add 172.22.0.128/24 dev eth0
for ns_link in "$PEER eth0" "$ROUTER tun0" "$ROUTER eth1" "$LAN eth0"; do
    read -r ns link <<<"$ns_link"
    ip -n "$ns" link set "$link" up
done
ip -n "$LAN" route add default via 172.22.0.1
ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$LAN" iperf3 -s -p 5201 >/dev/null 2>&1 &
disown # the EXIT trap kills what runs in the namespaces; no job notice then
cat >"$BENCH_TMP/accept.py" <<'PY'
import socket
server = socket.create_server(("172.22.0.128", 7000), backlog=512)
while True:
    connection, _ = server.accept()
    connection.close()
PY
cat >"$BENCH_TMP/connect.py" <<'PY'
"""Opens and closes N TCP connections one after another; prints connections per second."""
import socket, struct, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
for _ in range(count):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # no TIME_WAIT pile-up
    s.close()
print(f"{count / (time.perf_counter() - start):.1f}")
PY
ip netns exec "$LAN" "$PYTHON" "$BENCH_TMP/accept.py" &
disown
wait_listening() { for _ in $(seq 50); do ip netns exec "$LAN" ss -Hlnt "sport = :$1" | grep -q . && return 0; sleep 0.1; done; return 1; }
if ! wait_listening 5201 || ! wait_listening 7000; then
    _bench_log "LAN servers not listening"
    exit 1
fi

IPERF_PORT_OF() { echo $((20000 + $1 - 1)); } # the targets take the highest public ports
CONNECT_PORT_OF() { echo $((20000 + $1 - 2)); }
load_vpnsup() { # COUNT
    ip netns exec "$ROUTER" nft flush ruleset
    ip netns exec "$ROUTER" "$BENCH_BIN" apply --forwards "$1" --targets 172.22.0.128:5201/tcp,172.22.0.128:7000/tcp
}
load_iptables() { # COUNT: the original's forward chain, one DNAT + one accept per forward, targets last
    local n=$1
    {
        echo "*filter"
        echo ":FORWARD DROP [0:0]"
        echo "-A FORWARD -i eth1 -o tun0 -j ACCEPT"
        echo "-A FORWARD -i tun0 -o eth1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        awk -v n="$n" 'BEGIN { for (i = 0; i < n - 2; i++) printf "-A FORWARD -i tun0 -o eth1 -p %s -d 172.30.%d.%d --dport %d -j ACCEPT\n", (i % 3 == 0 ? "udp" : "tcp"), int(i / 250), i % 250 + 2, 1024 + i }'
        echo "-A FORWARD -i tun0 -o eth1 -p tcp -d 172.22.0.128 --dport 7000 -j ACCEPT"
        echo "-A FORWARD -i tun0 -o eth1 -p tcp -d 172.22.0.128 --dport 5201 -j ACCEPT"
        echo "COMMIT"
        echo "*nat"
        dnat_rules $((n - 2))
        echo "-A PREROUTING -i tun0 -p tcp --dport $(CONNECT_PORT_OF "$n") -j DNAT --to-destination 172.22.0.128:7000"
        echo "-A PREROUTING -i tun0 -p tcp --dport $(IPERF_PORT_OF "$n") -j DNAT --to-destination 172.22.0.128:5201"
        echo "COMMIT"
    } >"$BENCH_TMP/dataplane.rules"
    ip netns exec "$ROUTER" nft flush ruleset
    ip netns exec "$ROUTER" iptables-restore <"$BENCH_TMP/dataplane.rules"
}
declare -A RATE THROUGHPUT
for ((run = 0; run < RUNS; run++)); do
    for subject in vpnsup iptables; do
        for count in 2 10000; do
            "load_$subject" "$count"
            ip netns exec "$ROUTER" conntrack -F >/dev/null 2>&1 || true
            rate=$(ip netns exec "$PEER" "$PYTHON" "$BENCH_TMP/connect.py" 10.8.0.2 "$(CONNECT_PORT_OF "$count")" "$CONNECTIONS")
            RATE[$subject,$count]+="$rate "
            if [ "$run" -lt "${IPERF_RUNS:-3}" ]; then
                mbits=$(ip netns exec "$PEER" iperf3 -c 10.8.0.2 -p "$(IPERF_PORT_OF "$count")" -t "$IPERF_SECONDS" -J |
                    jq -r '.end.sum_received.bits_per_second / 1e6')
                THROUGHPUT[$subject,$count]+="$mbits "
            fi
        done
    done
done
for subject in vpnsup iptables; do
    name=$subject
    [ "$subject" = vpnsup ] && name="vpnsup (maps)" || name="iptables (one DNAT + accept per forward)"
    for count in 2 10000; do
        # shellcheck disable=SC2086 # one sample per word
        bench_record forwards-rate "$name" "$(label "$count")" "conn/s" ${RATE[$subject,$count]}
        # shellcheck disable=SC2086
        bench_record forwards-throughput "$name" "$(label "$count")" "Mbit/s" ${THROUGHPUT[$subject,$count]}
    done
done
bench_summary forwards-rate
bench_summary forwards-throughput
