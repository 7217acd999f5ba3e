# shellcheck shell=bash
# lab/require.sh — make sure the commands the lab needs exist; install the missing ones from
# Debian's archive, quietly. Sourced by lab/lab.sh and the lab's tests.
#
#   lab_require CMD...   installs the Debian package of each missing CMD (as root, via apt-get);
#                        prints nothing when all are there; on failure prints apt's log, returns 1.

# The Debian package that provides each command the lab uses.
_lab_package_of() {
    case "$1" in
        ip | ss) echo iproute2 ;;
        nft) echo nftables ;;
        tcpdump) echo tcpdump ;;
        openvpn) echo openvpn ;;
        openssl) echo openssl ;;
        socat) echo socat ;;
        dnsmasq) echo dnsmasq-base ;;
        dig) echo bind9-dnsutils ;;
        iperf3) echo iperf3 ;;
        wg) echo wireguard-tools ;;
        curl) echo curl ;;
        python3) echo python3 ;;
        ping) echo iputils-ping ;;
        shellcheck) echo shellcheck ;;
        timeout | sort | stat | od) echo coreutils ;;
        awk) echo mawk ;;
        perf) echo linux-perf ;;
        *) echo "$1" ;;
    esac
}

lab_require() {
    local cmd pkgs=() log
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || pkgs+=("$(_lab_package_of "$cmd")")
    done
    [ ${#pkgs[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "lab: missing ${pkgs[*]} and not root to install them" >&2
        return 1
    fi
    log=$(mktemp)
    # A fresh machine may have empty package lists: update once, only when the first try fails.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >>"$log" 2>&1; then
            echo "lab: could not install ${pkgs[*]}:" >&2
            cat "$log" >&2
            rm -f "$log"
            return 1
        fi
    fi
    rm -f "$log"
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || { echo "lab: $cmd still missing after install" >&2; return 1; }
    done
}
