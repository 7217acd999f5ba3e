#!/usr/bin/env bash
# make bench: every benchmark, baselines in the same run, then docs/benchmarks.md's generated
# section and charts. Needs root (namespaces); installs what it misses (Debian packages, matplotlib).
#   RUNS=N (default 7)          repetitions of each timed measurement
#   SECTIONS="arm react forwards tunnel footprint wireguard"   which scripts run (all by default)
#   SLOW_RUNS=N (default 1)     runs of the 10,000-process iptables loop (about 45 s each; 0 skips it)
#   BENCH_STATIC=0              skip the statically linked build (saves its compile)
#   BENCH_DOCS=0                print only, leave docs/ alone
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
cd "$REPO"
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-$REPO/.build-bench}
SECTIONS=${SECTIONS:-arm react forwards tunnel footprint wireguard}
export BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results/latest.jsonl}
export RUNS=${RUNS:-7} SWIFT SCRATCH
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces, nftables inside them)" >&2
    exit 1
fi
# shellcheck source=lab/require.sh
. "$REPO/lab/require.sh"
lab_require ip nft iptables iperf3 jq openvpn openssl curl dig dnsmasq tcpdump ping conntrack wireguard-go wg perf
command -v strip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib

started=$(date +%s)
echo "bench: building (release, scratch $SCRATCH)"
"$SWIFT" build -c release --scratch-path "$SCRATCH" --product vpnsup
"$SWIFT" build -c release --scratch-path "$SCRATCH" --product vpnsup-bench
export VPNSUP=$SCRATCH/release/vpnsup BENCH_BUILD=0
if [ "${BENCH_STATIC:-1}" = 1 ]; then
    # The shipped binary: built as scripts/build-static.sh builds the image's (static Swift
    # runtime and libstdc++, lld, DT_RELR, stripped).
    # (One variable for the path: a command's prefix assignments see the ones before them.)
    static_scratch=$SCRATCH-static
    SCRATCH=$static_scratch OUT=$static_scratch/vpnsup-shipped SWIFT=$SWIFT bash "$REPO/scripts/build-static.sh"
    export VPNSUP_STATIC=$static_scratch/vpnsup-shipped
fi

mkdir -p "$(dirname "$BENCH_RESULTS")"
# A full run starts a new results file; a run of some sections replaces only theirs.
[ "$SECTIONS" != "arm react forwards tunnel footprint wireguard" ] || : >"$BENCH_RESULTS"
machine=$BENCH_DIR/results/machine.md
{
    echo "- CPU: $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r)"
    echo "- $("$SWIFT" --version 2>/dev/null | head -n 1); $(nft --version); $(iptables --version); $(openvpn --version | head -n 1 | cut -d' ' -f1-2); $(iperf3 --version | head -n 1 | cut -d' ' -f1-2)"
    echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine is not stopped)"
} >"$machine"
for section in $SECTIONS; do
    echo "bench: ---- $section ----"
    bash "$BENCH_DIR/$section.sh"
done
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); the whole run took $(( $(date +%s) - started )) s" >>"$machine"
if [ "${BENCH_DOCS:-1}" = 1 ]; then
    python3 "$BENCH_DIR/report.py" docs "$BENCH_RESULTS" "$REPO/docs/benchmarks.md" "$REPO/docs" "$machine"
    echo "bench: docs/benchmarks.md and its charts regenerated"
fi
