#!/usr/bin/env bash
# Builds vpnsup in release mode with the Swift standard library linked statically and puts the
# stripped binary at dist/vpnsup, for `docker build --target prebuilt`. The result needs only
# glibc, libstdc++, libmnl, libnftnl and libsystemd at run time (Debian bookworm's).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-.build-static}
"$SWIFT" build -c release --static-swift-stdlib --product vpnsup --scratch-path "$SCRATCH"
mkdir -p dist
install -m 0755 "$SCRATCH/release/vpnsup" dist/vpnsup.tmp
strip dist/vpnsup.tmp
mv dist/vpnsup.tmp dist/vpnsup
echo "dist/vpnsup: $(stat -c %s dist/vpnsup) bytes"
