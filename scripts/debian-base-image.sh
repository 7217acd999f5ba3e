#!/usr/bin/env bash
# Makes the image debian:bookworm-slim locally with debootstrap, for a Docker engine that no
# registry serves. Trimmed like Debian's own slim image (no apt caches, docs, man pages or
# locales), so image sizes measured on top of it are comparable. Does nothing when the image
# exists already; FORCE=1 makes it again.
set -euo pipefail
IMAGE=${IMAGE:-debian:bookworm-slim}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "debian-base-image: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}
root=$(mktemp -d /var/tmp/vpnsup-debootstrap.XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
echo "debian-base-image: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    exit 1
}
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
# As in Debian's images: apt keeps no downloaded packages and no docs after installing.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CONF
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
CONF
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "debian-base-image: $IMAGE made ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)" >&2
