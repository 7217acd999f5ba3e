#!/usr/bin/env bash
# 5. Footprint and 6. event storm, in the namespace lab with vpnsup (release) as the router.
# Footprint: binary sizes; RSS after start-up, after a series of events and after the storm; CPU
# time and wake-ups per second (context switches of every vpnsup thread, those that end meanwhile
# included, from perf stat) while idle in TunnelUp for IDLE_SECONDS, with the DNS probe off and
# every 2 s. OpenVPN's figures are
# printed beside them (it is the whole of the original's resident footprint: its shell execs it).
# Storm: STORM_EVENTS rtnetlink events in one burst (`ip -batch` flapping veths, addresses and
# routes in the router namespace), with the WAN link taken down and up in the middle and the LAN
# gateway address removed at the end: time until vpnsup is idle again in the right state (TunnelUp,
# address back), its CPU time, and the events the kernel dropped on its netlink sockets
# (/proc/net/netlink "Drops": lost events, which vpnsup must recover by re-dumping).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_reset_section footprint
bench_reset_section storm
VPNSUP=${VPNSUP:-$(bench_vpnsup)}
VPNSUP_STATIC=${VPNSUP_STATIC:-}
IDLE_SECONDS=${IDLE_SECONDS:-10}
STORM_EVENTS=${STORM_EVENTS:-10000}
# shellcheck source=bench/lablib.sh
. "$BENCH_DIR/lablib.sh"

# ---- sizes ----
size_mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.2f", b / 1048576 }'; }
strip -o "$BENCH_TMP/vpnsup.stripped" "$VPNSUP"
bench_record footprint vpnsup "binary size (release, Swift runtime shared)" MiB "$(size_mib "$VPNSUP")"
bench_record footprint vpnsup "binary size (release, stripped)" MiB "$(size_mib "$BENCH_TMP/vpnsup.stripped")"
if [ -n "$VPNSUP_STATIC" ]; then
    strip -o "$BENCH_TMP/vpnsup-static.stripped" "$VPNSUP_STATIC"
    bench_record footprint vpnsup "binary size (static Swift stdlib, stripped)" MiB "$(size_mib "$BENCH_TMP/vpnsup-static.stripped")"
fi
runtime_libs=0
for lib in $(ldd "$VPNSUP" | awk '/libswift|libdispatch|libBlocksRuntime|libFoundation/ { print $3 }'); do
    runtime_libs=$((runtime_libs + $(stat -L -c %s "$lib")))
done
bench_record footprint vpnsup "Swift runtime libraries it loads (shared build)" MiB "$(awk -v b="$runtime_libs" 'BEGIN { printf "%.2f", b / 1048576 }')"

# ---- /proc readings ----
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# CPU time of every thread, ns (schedstat's first field).
cpu_ns() { cat "/proc/$1"/task/*/schedstat 2>/dev/null | awk '{ n += $1 } END { printf "%d\n", n }'; }
openvpn_pid() {
    local pid
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [ "$(awk '{ print $4 }' "/proc/$pid/stat" 2>/dev/null)" = "$VPNSUP_PID" ] && { echo "$pid"; return 0; }
    done
    return 1
}
# "tid name switches cpu-ns" per thread of PID, sorted by tid (for join).
per_thread() {
    local task
    for task in "/proc/$1"/task/*; do
        echo "${task##*/} $(tr ' ' _ <"$task/comm") $(awk '/ctxt_switches:/ { n += $2 } END { print n }' "$task/status") $(cut -d' ' -f1 "$task/schedstat")"
    done 2>/dev/null | sort
}
# Switches and CPU ns within a window from two per_thread snapshots: threads in both count their
# difference, threads born meanwhile all of theirs; threads that ended meanwhile are missed (the
# kernel keeps no per-thread figures for them), so this is a lower bound.
window_sum() { # BEFORE AFTER FIELD(3 switches, 4 cpu)
    join -a 2 -e 0 -o 0,1.3,1.4,2.3,2.4 "$1" "$2" | awk -v f="$3" '{ n += (f == 3 ? $4 - $2 : $5 - $3) } END { printf "%d\n", n }'
}
# The whole process's CPU time and context switches while COMMAND runs, threads that start or end
# meanwhile included (a build that starts a thread per DNS probe, say, is charged for them):
# `perf stat` follows every thread. Prints "cpu-ns switches".
process_counts() { # PID COMMAND...
    local pid=$1 out=$BENCH_TMP/perf-stat
    shift
    perf stat -x, -e task-clock,context-switches -p "$pid" -o "$out" -- "$@" >/dev/null 2>&1
    perf_counts "$out"
}
perf_counts() { # perf stat's CSV output: "cpu-ns switches"
    awk -F, '$3 ~ /^task-clock/ { c = $1 * 1e6 } $3 ~ /^context-switches/ { s = $1 } END { printf "%d %d\n", c, s }' "$1"
}
idle_window() { # LABEL: wake-ups/s and CPU ms/s of vpnsup (and OpenVPN) over IDLE_SECONDS
    local ovpn s c o counts
    ovpn=$(openvpn_pid)
    per_thread "$VPNSUP_PID" >"$BENCH_TMP/threads0"
    per_thread "$ovpn" >"$BENCH_TMP/openvpn0"
    counts=$(process_counts "$VPNSUP_PID" sleep "$IDLE_SECONDS")
    per_thread "$VPNSUP_PID" >"$BENCH_TMP/threads1"
    per_thread "$ovpn" >"$BENCH_TMP/openvpn1"
    c=${counts% *} s=${counts#* }
    o=$(window_sum "$BENCH_TMP/openvpn0" "$BENCH_TMP/openvpn1" 3)
    echo "vpnsup's threads over ${IDLE_SECONDS} s idle ($1): tid name switches (born: all of theirs; gone: not listed)"
    join -a 1 -a 2 -e 0 -o 0,2.2,1.3,2.3 "$BENCH_TMP/threads0" "$BENCH_TMP/threads1" |
        awk '{ printf "  %-8s %-24s %s\n", $1, ($2 == "0" ? "(ended)" : $2), ($2 == "0" ? "-" : $4 - $3) }' 
    bench_record footprint vpnsup "wake-ups/s idle in TunnelUp, $1" "/s" "$(awk -v d="$s" -v t="$IDLE_SECONDS" 'BEGIN { printf "%.2f", d / t }')"
    bench_record footprint vpnsup "CPU idle in TunnelUp, $1" "ms/s" "$(awk -v d="$c" -v t="$IDLE_SECONDS" 'BEGIN { printf "%.4f", d / 1e6 / t }')"
    bench_record footprint "OpenVPN (for scale)" "wake-ups/s idle in TunnelUp, $1" "/s" "$(awk -v d="$o" -v t="$IDLE_SECONDS" 'BEGIN { printf "%.2f", d / t }')"
}

bench_lab_up
lab_require perf
bench_vpnsup_start # defaults: probe off
sleep 1
bench_record footprint vpnsup "RSS after start-up (TunnelUp)" MiB "$(awk -v k="$(rss_kib "$VPNSUP_PID")" 'BEGIN { printf "%.2f", k / 1024 }')"
# Private memory apart from mapped files (the shared Swift runtime's pages count in VmRSS).
bench_record footprint vpnsup "RssAnon after start-up (private memory)" MiB "$(awk '/^RssAnon:/ { printf "%.2f", $2 / 1024 }' "/proc/$VPNSUP_PID/status")"
# The binary's own file pages (its code and read-only data) apart: the page cache holds a file
# just built or read in large folios, mapped whole, so they follow the binary's size more than
# what runs. What remains is what vpnsup's running costs beyond its code.
own_file_kib=$(awk -v exe="$(readlink "/proc/$VPNSUP_PID/exe")" '
    /^[0-9a-f]+-[0-9a-f]+ / { mine = ($6 == exe) }
    mine && $1 == "Rss:" { rss += $2 } mine && $1 == "Anonymous:" { anon += $2 }
    END { print rss - anon }' "/proc/$VPNSUP_PID/smaps")
bench_record footprint vpnsup "its binary's file pages (code, read-only data) after start-up" MiB "$(awk -v k="$own_file_kib" 'BEGIN { printf "%.2f", k / 1024 }')"
bench_record footprint vpnsup "RSS after start-up apart from its binary's file pages" MiB "$(awk -v k="$(rss_kib "$VPNSUP_PID")" -v o="$own_file_kib" 'BEGIN { printf "%.2f", (k - o) / 1024 }')"
bench_record footprint "OpenVPN (for scale)" "RSS after start-up (TunnelUp)" MiB "$(awk -v k="$(rss_kib "$(openvpn_pid)")" 'BEGIN { printf "%.2f", k / 1024 }')"
idle_window "probe off"

# ---- a series of events: reconnects, outside flushes, LAN address removals ----
up_table() { lab_exec router nft list table inet vpnsup 2>/dev/null | grep -q masquerade; }
gateway_back() { lab_exec router ip -4 -o addr show dev eth1 | grep -q " $LAB_LAN_GW_CIDR "; }
EVENT_ROUNDS=${EVENT_ROUNDS:-20}
for ((round = 0; round < EVENT_ROUNDS; round++)); do
    kill -USR1 "$(openvpn_pid)"
    lab_wait_for 30 bench_state_is TunnelUp
    for _ in 1 2 3 4 5; do
        lab_exec router nft flush ruleset
        lab_wait_for 5 up_table
        lab_exec router ip addr del "$LAB_LAN_GW_CIDR" dev eth1
        lab_wait_for 5 gateway_back
    done
done
lab_wait_for 30 bench_state_is TunnelUp
bench_record footprint vpnsup "RSS after $EVENT_ROUNDS reconnects, $((EVENT_ROUNDS * 5)) flushes and address removals" MiB \
    "$(awk -v k="$(rss_kib "$VPNSUP_PID")" 'BEGIN { printf "%.2f", k / 1024 }')"

# ---- the storm ----
# Veth pairs inside the router namespace; each batch line makes at least one rtnetlink event.
FLAPS=16
for ((i = 0; i < FLAPS; i++)); do lab_exec router ip link add "flap$i" type veth peer name "flap${i}p"; done
{
    i=0
    while [ "$i" -lt "$STORM_EVENTS" ]; do
        link=flap$((i % FLAPS))
        case $((i / FLAPS % 6)) in
            0) echo "link set $link up" ;;
            1) echo "address add 10.99.$((i % FLAPS)).$((i / FLAPS % 250 + 1))/32 dev $link" ;;
            2) echo "route add 10.98.$((i % FLAPS)).0/24 dev $link" ;;
            3) echo "route del 10.98.$((i % FLAPS)).0/24 dev $link" ;;
            4) echo "address flush dev $link" ;;
            5) echo "link set $link down" ;;
        esac
        [ "$i" -ne $((STORM_EVENTS / 2)) ] || { echo "link set eth0 down"; echo "link set eth0 up"; }
        i=$((i + 1))
    done
    echo "address del $LAB_LAN_GW_CIDR dev eth1"
} >"$BENCH_TMP/storm.batch"
# Count what the kernel announces, with a listener of our own (large buffer, so it loses none).
lab_exec router ip monitor link address route >"$BENCH_TMP/storm.monitor" 2>/dev/null &
MONITOR=$!
disown
sleep 0.3
netlink_drops() { # vpnsup's netlink sockets, by inode, in /proc/net/netlink of the router namespace
    local inodes
    inodes=$(find "/proc/$VPNSUP_PID/fd" -type l -printf '%l\n' 2>/dev/null | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p' | tr '\n' ' ')
    lab_exec router cat /proc/net/netlink | awk -v list="$inodes" 'BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) mine[a[i]] = 1 } NR > 1 && ($10 in mine) { d += $9 } END { print d + 0 }'
}
drops0=$(netlink_drops)
perf stat -x, -e task-clock,context-switches -p "$VPNSUP_PID" -o "$BENCH_TMP/storm-perf" >/dev/null 2>&1 &
STORM_PERF=$!
sleep 0.2 # perf attached to every thread
t0=${EPOCHREALTIME/./}
lab_exec router ip -force -batch "$BENCH_TMP/storm.batch" 2>"$BENCH_TMP/storm.err" || true
t_burst=${EPOCHREALTIME/./}
# Settled: right state and address, and vpnsup's CPU time unchanged for 200 ms.
settled_at=""
last=$(cpu_ns "$VPNSUP_PID") still_since=$t_burst
while [ $(( ${EPOCHREALTIME/./} - t0 )) -lt 60000000 ]; do
    sleep 0.02
    now=${EPOCHREALTIME/./} cpu=$(cpu_ns "$VPNSUP_PID")
    if [ "$cpu" != "$last" ]; then last=$cpu still_since=$now; continue; fi
    if [ $((now - still_since)) -ge 200000 ] && gateway_back && bench_state_is TunnelUp && up_table; then
        settled_at=$still_since
        break
    fi
done
kill -INT "$STORM_PERF"
wait "$STORM_PERF" || true
storm_counts=$(perf_counts "$BENCH_TMP/storm-perf")
drops1=$(netlink_drops)
sleep 0.3
kill "$MONITOR" 2>/dev/null || true
announced=$(wc -l <"$BENCH_TMP/storm.monitor")
bench_record storm "ip -batch" "events announced by the kernel (ip monitor lines)" count "$announced"
bench_record storm "ip -batch" "burst duration" ms "$(( (t_burst - t0) / 1000 ))"
if [ -n "$settled_at" ]; then
    bench_record storm vpnsup "burst start -> idle, TunnelUp, gateway address back (20 ms polls)" ms "$(( (settled_at - t0) / 1000 ))"
    bench_record storm vpnsup "burst end -> idle in that state (20 ms polls)" ms "$(( (settled_at - t_burst) / 1000 ))"
else
    _bench_log "storm: vpnsup did not settle in the right state within 60 s (state $(bench_state || echo '?'))"
    bench_record storm vpnsup "settled in the right state within 60 s (1 yes, 0 no)" count 0
fi
bench_record storm vpnsup "CPU time during the storm" ms "$(( ${storm_counts% *} / 1000000 ))"
bench_record storm vpnsup "events the kernel dropped on vpnsup's netlink sockets (recovered by re-dump)" count "$((drops1 - drops0))"
bench_record storm vpnsup "final state TunnelUp with the gateway address (1 yes, 0 no)" count "$([ -n "$settled_at" ] && echo 1 || echo 0)"
bench_record footprint vpnsup "RSS after the storm" MiB "$(awk -v k="$(rss_kib "$VPNSUP_PID")" 'BEGIN { printf "%.2f", k / 1024 }')"

# ---- idle with the DNS probe on ----
bench_vpnsup_stop
bench_vpnsup_start PROBE_INTERVAL=2 PROBE_TIMEOUT=1
sleep 1
idle_window "probe every 2 s"

# ---- the shipped (static) binary in TunnelUp: RSS, private memory, and whose pages they are ----
if [ -n "$VPNSUP_STATIC" ]; then
    bench_vpnsup_stop
    dynamic=$VPNSUP
    VPNSUP=$VPNSUP_STATIC
    bench_vpnsup_start
    VPNSUP=$dynamic
    sleep 1
    rollup() { awk -v k="$1" '$1 == k ":" { printf "%.2f", $2 / 1024 }' "/proc/$VPNSUP_PID/smaps_rollup"; }
    private=$(awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { n += $2 } END { printf "%.2f", n / 1024 }' "/proc/$VPNSUP_PID/smaps_rollup")
    bench_record footprint "vpnsup (static stdlib, shipped)" "RSS in TunnelUp (smaps_rollup)" MiB "$(rollup Rss)"
    bench_record footprint "vpnsup (static stdlib, shipped)" "PSS in TunnelUp" MiB "$(rollup Pss)"
    bench_record footprint "vpnsup (static stdlib, shipped)" "private memory in TunnelUp (Private_Clean + Private_Dirty)" MiB "$private"
    bench_record footprint "vpnsup (static stdlib, shipped)" "anonymous memory in TunnelUp (heap, stacks)" MiB "$(rollup Anonymous)"
    # Resident pages per mapped file (and [heap], [stack], anonymous), largest first.
    echo "vpnsup (shipped) in TunnelUp: resident KiB by mapping (Rss, of which private)"
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anonymous]") }
         $1 == "Rss:" { rss[name] += $2 }
         $1 == "Private_Clean:" || $1 == "Private_Dirty:" { priv[name] += $2 }
         END { for (n in rss) if (rss[n] > 0) printf "%8d %8d  %s\n", rss[n], priv[n], n }' "/proc/$VPNSUP_PID/smaps" |
        sort -rn | head -n 15 | tee "$BENCH_TMP/rss-by-mapping.txt"
    for mapping in "$(basename "$VPNSUP_STATIC")" libc.so.6 libsystemd.so.0.35.0 libm.so.6 libgcrypt.so.20.4.1 '[heap]' '[anonymous]'; do
        kib=$(awk -v m="$mapping" '{ n = $3; sub(/.*\//, "", n) } n == m { print $1 }' "$BENCH_TMP/rss-by-mapping.txt")
        label=$mapping
        [ "$mapping" != "$(basename "$VPNSUP_STATIC")" ] || label="the vpnsup binary itself"
        [ -z "$kib" ] || bench_record footprint "vpnsup (static stdlib, shipped)" "RSS in TunnelUp: $label" MiB \
            "$(awk -v k="$kib" 'BEGIN { printf "%.2f", k / 1024 }')"
    done
fi

bench_summary footprint
bench_summary storm
