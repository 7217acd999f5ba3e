#!/usr/bin/env bash
# The differential corpus test (Tests/corpus/differential.py): vpnsup's reading of OpenVPN
# configurations against OpenVPN 2.6's own, file by file. Needs root (namespaces).
#
#   bash Tests/corpus/run.sh                       committed edge cases + the Debian files of debian.tsv
#   CORPUS_DIR=/path/to/configs bash Tests/corpus/run.sh     another collection (never committed)
#
# debian.tsv names published configurations by Debian source package, version, path and sha256;
# they are fetched with apt-get source into .build-corpus/ (gitignored, kept as a cache) through
# apt's own client with a private sources list (deb-src of this machine's Debian suite), so the
# machine's apt configuration is not touched. A package version the archive no longer serves is
# reported and skipped; a file whose sha256 differs fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
CACHE=${CORPUS_CACHE:-.build-corpus}
[ "$(id -u)" -eq 0 ] || { echo "corpus: needs root (network and PID namespaces)" >&2; exit 2; }
[ -x "$VPNSUP" ] || { echo "corpus: no vpnsup at $VPNSUP (swift build first)" >&2; exit 2; }

if [ -n "${CORPUS_DIR:-}" ]; then
    exec python3 Tests/corpus/differential.py --quiet --vpnsup "$VPNSUP" --summary-json "$CACHE/summary.json" "$CORPUS_DIR"
fi

mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/archives/partial"
fetch_package() { # package version -> unpacked source tree path on stdout
    local package=$1 version=$2 tree="$CACHE/src/$1-$2"
    if [ ! -d "$tree" ]; then
        . /etc/os-release
        local sources="$CACHE/apt/sources.list"
        printf 'deb-src http://deb.debian.org/debian %s main\ndeb-src http://deb.debian.org/debian %s-updates main\ndeb-src http://deb.debian.org/debian-security %s-security main\n' \
            "$VERSION_CODENAME" "$VERSION_CODENAME" "$VERSION_CODENAME" >"$sources"
        local apt=(-o "Dir::Etc::SourceList=$PWD/$sources" -o Dir::Etc::SourceParts=/dev/null
                   -o "Dir::State::Lists=$PWD/$CACHE/apt/lists" -o "Dir::Cache=$PWD/$CACHE/apt" -o APT::Sandbox::User=root)
        apt-get "${apt[@]}" -qq update >&2 || return 1
        mkdir -p "$CACHE/src/download"
        (cd "$CACHE/src/download" && apt-get "${apt[@]}" -qq source --download-only "$package=$version" >&2) || return 1
        mkdir -p "$tree"
        tar -xf "$(ls "$CACHE"/src/download/"${package}_${version%%-*}".orig.tar.* | head -1)" -C "$tree" --strip-components=1
    fi
    echo "$tree"
}

status=0
published=()
while IFS=$'\t' read -r package version path sha256; do
    [[ -z "$package" || "$package" == \#* ]] && continue
    if ! tree=$(fetch_package "$package" "$version"); then
        echo "corpus: $package $version is not served by the archive any more: its files are skipped" >&2
        continue
    fi
    if [ "$(sha256sum "$tree/$path" | cut -d' ' -f1)" != "$sha256" ]; then
        echo "corpus: $package $version $path does not have the recorded sha256" >&2
        status=1
        continue
    fi
    # In place: the files they name (sample keys) are where their relative paths say.
    published+=("$tree/$path")
done < Tests/corpus/debian.tsv

python3 Tests/corpus/differential.py --vpnsup "$VPNSUP" --summary-json "$CACHE/summary.json" Tests/corpus/files "${published[@]}" || status=1
exit $status
