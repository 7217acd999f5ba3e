#!/bin/bash
# scripts/image-root.sh OUT PROGRAM... — run inside the Dockerfile's Debian stage: copies PROGRAMs
# and exactly the shared libraries they load (ldd), the dynamic loader included, into OUT, with
# the symbolic links on their paths (Debian's /lib -> usr/lib and the sonames), so that OUT is the
# whole root of a distroless image. Adds what those programs need besides: /etc/passwd and
# /etc/group (root, nobody, nogroup: OpenVPN's `user`/`group` and STATUS_GROUP look names up
# there), /tmp, /run and /config. No shell, no package manager, no CA or zoneinfo data (neither
# vpnsup nor OpenVPN reads them: the OpenVPN configuration carries its own CA, and times are UTC).
set -euo pipefail
out=$1
shift
mkdir -p "$out"

# The merged-/usr links first, so that copies through /lib land in usr/lib as in Debian.
for top in /bin /sbin /lib /lib64; do
    [ -L "$top" ] || continue
    cp -P "$top" "$out$top"
    mkdir -p "$out/$(readlink -f "$top")"
done

# Copies PATH, and every symbolic link on the way to the file it names.
copy_path() {
    local path=$1 target
    while [ -L "$path" ]; do
        mkdir -p "$out$(dirname "$path")"
        cp -P "$path" "$out$path"
        target=$(readlink "$path")
        [[ $target == /* ]] || target=$(dirname "$path")/$target
        path=$target
    done
    mkdir -p "$out$(dirname "$path")"
    cp "$path" "$out$path"
}

for program in "$@"; do
    copy_path "$program"
    # "libx.so.1 => /lib/.../libx.so.1 (0x...)" and the loader's own line "/lib64/ld-linux-x86-64.so.2 (0x...)"
    ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
        while read -r library; do copy_path "$library"; done
done

mkdir -p "$out/etc" "$out/run" "$out/config"
install -d -m 1777 "$out/tmp"
cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
