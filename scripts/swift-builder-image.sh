#!/usr/bin/env bash
# Makes the image the Dockerfile's build stage runs in (SWIFT_IMAGE) from the Swift toolchain
# installed on this machine, for an engine that no registry serves the official Swift image:
# debian:bookworm-slim (scripts/debian-base-image.sh makes it locally) with what the official
# image has for building (binutils, git, the C and C++ development files, pkg-config, the
# libraries the toolchain loads), the toolchain at /opt/swift (the same release, less what no
# build needs: debugger, language server, formatter, documentation compiler, Embedded Swift and
# WebAssembly), and the git repositories of the packages vpnsup depends on, where git finds
# github.com (as on this machine), so that `swift build` in the build stage resolves them
# without a network.
#
# Prints the image name (vpnsup-swift-builder:<swift version>); does nothing when it exists
# already (FORCE=1 makes it again). Needs a Docker engine (DOCKER_HOST as usual).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT_ROOT=${SWIFT_ROOT:-/opt/swift}
PACKAGES=${PACKAGES:-/opt/swift-packages}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
version=$("$SWIFT_ROOT/usr/bin/swift" --version 2>/dev/null | sed -n 's/.*Swift version \([0-9][0-9.]*\).*/\1/p' | head -n 1)
[ -n "$version" ] || { echo "swift-builder-image: no Swift toolchain at $SWIFT_ROOT" >&2; exit 1; }
IMAGE=${IMAGE:-vpnsup-swift-builder:$version}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi

# The packages: every pin of Package.resolved (resolved here first if there is none yet).
[ -f Package.resolved ] || "$SWIFT_ROOT/usr/bin/swift" package resolve >&2
repositories=()
while read -r location; do
    repository=${location#https://github.com/}
    [ -d "$PACKAGES/$repository" ] || { echo "swift-builder-image: $location is not in $PACKAGES" >&2; exit 1; }
    repositories+=("$(basename "$PACKAGES")/$repository")
done < <(sed -n 's/^ *"location" : "\(https:\/\/github.com\/[^"]*\)",*$/\1/p' Package.resolved)
[ ${#repositories[@]} -gt 0 ] || { echo "swift-builder-image: Package.resolved names no package" >&2; exit 1; }

context=$(mktemp -d /var/tmp/vpnsup-builder.XXXXXX)
trap 'rm -rf "$context"' EXIT
cat >"$context/gitconfig" <<'EOF'
[url "/opt/swift-packages/"]
	insteadOf = https://github.com/
EOF
cat >"$context/Dockerfile" <<EOF
FROM $BASE_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        binutils git libc6-dev libgcc-12-dev libstdc++-12-dev libncurses6 libsqlite3-0 libcurl4 libxml2 pkg-config zlib1g-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY swift /opt/swift
COPY swift-packages /opt/swift-packages
COPY gitconfig /etc/gitconfig
ENV PATH=/opt/swift/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
echo "swift-builder-image: making $IMAGE from $SWIFT_ROOT (Swift $version) and ${#repositories[@]} package repositories" >&2
# The context goes to the engine as one tar stream: nothing of the toolchain is copied here.
tar -c -C "$context" Dockerfile gitconfig \
    -C "$(dirname "$PACKAGES")" --transform "s,^$(basename "$PACKAGES")/,swift-packages/," "${repositories[@]}" \
    -C "$(dirname "$SWIFT_ROOT")" --transform "s,^$(basename "$SWIFT_ROOT")\\(/\\|\$\\),swift\\1," \
    --exclude='usr/bin/lldb*' --exclude=usr/bin/sourcekit-lsp --exclude=usr/bin/clangd --exclude=usr/bin/docc \
    --exclude=usr/bin/swift-format --exclude=usr/bin/wasmkit --exclude=usr/bin/repl_swift \
    --exclude='usr/lib/liblldb*' --exclude=usr/lib/libsourcekitdInProc.so --exclude='usr/lib/libSwiftSourceKit*' \
    --exclude=usr/lib/swift/embedded --exclude=usr/lib/swift/FrameworkABIBaseline --exclude=usr/share/docc \
    "$(basename "$SWIFT_ROOT")" |
    docker build -q -t "$IMAGE" - >&2
echo "$IMAGE"
