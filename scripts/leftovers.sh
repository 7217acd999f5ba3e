#!/usr/bin/env bash
# scripts/leftovers.sh start|check STATE — `make test`'s guard against tests that leave things
# behind.
#
#   start STATE   records the session, the moment and the named network namespaces there are
#   check STATE   fails, listing them, if any process of this session started after `start` is
#                 still running (other than this check and its ancestors: make, its shell), or if
#                 a test namespace made since then remains
#
# Processes: every program a test starts stays in make's session (none of them calls setsid(),
# and the Docker engine's shims go with the engine), even once reparented to PID 1 after its
# parent died: the session id, the start time (clock ticks since boot, /proc/PID/stat) and a
# parent chain of such processes up to PID 1 find them, vpnsup, openvpn, strace, tcpdump,
# dnsmasq, socat, iperf3, python servers alike, whatever their name. (Where orphans go to a
# child subreaper started before the run instead of PID 1, they would escape this check.) Namespaces: the tests name theirs vpl<pid>- (lab), vpst<pid>- (units), vpb<pid>-
# (bench), vpsd<pid>- (Docker engine); one that appeared since `start` and whose owner <pid> is no
# longer running is a leftover (a live owner is a concurrent run of someone else's, still going).
set -euo pipefail

field() { awk -v n="$2" '{ sub(/^.*\) /, ""); print $(n - 2) }' "/proc/$1/stat" 2>/dev/null; } # PID FIELD (stat numbering)
namespaces() { ip netns list 2>/dev/null | awk '{ print $1 }' | sort; }

case ${1:-} in
start)
    state=${2:?state file}
    mkdir -p "$(dirname "$state")"
    {
        echo "session $(field $$ 6)"
        echo "since $(awk '{ printf "%d\n", $1 * '"$(getconf CLK_TCK)"' }' /proc/uptime)"
        namespaces | sed 's/^/namespace /'
    } >"$state"
    ;;
check)
    state=${2:?state file}
    [ -f "$state" ] || { echo "leftovers: no state file $state (run start first)" >&2; exit 2; }
    session=$(awk '$1 == "session" { print $2 }' "$state")
    since=$(awk '$1 == "since" { print $2 }' "$state")
    # This check and every process it descends from are not leftovers.
    ancestors=" "
    pid=$$
    while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
        ancestors+="$pid "
        pid=$(field "$pid" 4)
    done
    # Left behind: its parents, up to PID 1, all started after `start` (the test's own processes,
    # orphaned when the script that started them ended). A process whose parents lead to one that
    # was running before (the shell of another command of this session) is someone's live work.
    orphaned() {
        local pid=$1 parent started
        while true; do
            parent=$(field "$pid" 4) || return 1
            [ -n "$parent" ] || return 1
            [ "$parent" -gt 1 ] || return 0
            started=$(field "$parent" 22) || return 1
            [ -n "$started" ] && [ "$started" -ge "$since" ] || return 1
            pid=$parent
        done
    }
    leftover=()
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [[ $ancestors == *" $pid "* ]] && continue
        [ "$(field "$pid" 6)" = "$session" ] || continue
        started=$(field "$pid" 22) || continue
        [ -n "$started" ] && [ "$started" -ge "$since" ] || continue
        [ "$(field "$pid" 3)" != Z ] || continue
        orphaned "$pid" || continue
        leftover+=("pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)")
    done
    before=$(awk '$1 == "namespace" { print $2 }' "$state")
    for ns in $(namespaces); do
        grep -qx -- "$ns" <<<"$before" && continue
        [[ $ns =~ ^(vpl|vpst|vpb|vpsd)([0-9]+)- ]] || continue
        owner=${BASH_REMATCH[2]}
        [ -d "/proc/$owner" ] && continue
        leftover+=("network namespace $ns (its owner, pid $owner, has exited)")
    done
    if [ ${#leftover[@]} -gt 0 ]; then
        echo "leftovers: the tests left ${#leftover[@]} thing(s) behind:" >&2
        printf '  %s\n' "${leftover[@]}" >&2
        exit 1
    fi
    echo "leftovers: none (no process of this run still running, no test namespace left)"
    ;;
*)
    echo "usage: leftovers.sh start|check STATE" >&2
    exit 64
    ;;
esac
