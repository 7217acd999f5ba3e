#!/usr/bin/env bash
# Times committing the `up` ruleset with 1, 1,000 and 10,000 port forwards (median of several
# runs; arguments go to vpnsup-bench: --runs N, --forwards N,N,...). Release build; runs in a
# throwaway network namespace, so nothing reaches this machine's own firewall.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-.build}
if [ "$(id -u)" != 0 ]; then
    echo "bench-firewall: needs root (nftables in a private network namespace)" >&2
    exit 1
fi
"$SWIFT" build -c release --scratch-path "$SCRATCH" --product vpnsup-bench
exec unshare --net -- "$SCRATCH/release/vpnsup-bench" "$@"
