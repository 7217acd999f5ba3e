#!/usr/bin/env bash
# Prints the commit `vpnsup --version` names for a build of this checkout: HEAD's first 12 hex
# digits, with "-dirty" when tracked files differ from it; "unknown" outside a git checkout.
# The Makefile and scripts/build-static.sh pass it to Package.swift as VPNSUP_COMMIT: SwiftPM
# evaluates the manifest again when the environment changes, not when HEAD moves.
cd "$(dirname "$0")/.." || exit 1
commit=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; exit 0; }
git diff --quiet HEAD -- 2>/dev/null || commit+=-dirty
echo "$commit"
