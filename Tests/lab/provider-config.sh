# shellcheck shell=bash
# Tests/lab/provider-config.sh — the end-to-end proof that nothing in a provider's file runs
# (issue 13). PENDING: it passes only once `vpnsup run` hands OpenVPN the vetted configuration
# (OpenVPNConfigVetting, phase 2 of issue 13); until then e2e.sh does not source it, and against
# today's driver the marker check would fail, as it should.
#
#   provider_config_write   after lab_up: <rundir>/config/provider.ovpn, the lab's client file as
#                           a provider ships one: script-security 2 with up/down scripts (also as
#                           `setenv opt up` and inside a <connection> block), user/group,
#                           persist-tun, ncp-disable and keysize; each script would create a marker
#   provider_config_checks  with vpnsup running on it (CONFIG=provider.ovpn) and the tunnel up:
#                           the marker never appears, and vpnsup's log names each dropped line
#
# Variables: PROVIDER_MARKER (the file a script would create), PROVIDER_LOG (vpnsup's log).

PROVIDER_MARKER=${PROVIDER_MARKER:-$LAB_RUNDIR/provider-script-ran}

provider_config_write() {
    local script="$LAB_RUNDIR/config/provider-up.sh"
    printf '#!/bin/sh\ntouch %s\n' "$PROVIDER_MARKER" >"$script"
    chmod 755 "$script"
    rm -f "$PROVIDER_MARKER"
    {
        # The lab's own client file (remote by host name, inline CA), without its closing remote
        # line, which moves into a <connection> block with a script of its own.
        grep -v "^remote " "$LAB_RUNDIR/config/client.ovpn"
        echo "script-security 2"
        echo "up $script"
        echo "down $script"
        echo "route-up $script"
        echo "setenv opt up $script"
        echo "user nobody"
        echo "group nogroup"
        echo "persist-tun"
        echo "ncp-disable"
        echo "keysize 128"
        echo "<connection>"
        grep "^remote " "$LAB_RUNDIR/config/client.ovpn" | head -1
        echo "ipchange $script"
        echo "</connection>"
    } >"$LAB_RUNDIR/config/provider.ovpn"
}

provider_config_checks() {
    if [ -e "$PROVIDER_MARKER" ]; then
        tap_not_ok "a provider's up/down/route-up/ipchange scripts never run (the marker exists)"
    else
        tap_ok "a provider's up/down/route-up/ipchange scripts never run (no marker with the tunnel up)"
    fi
    local directive
    for directive in "script-security 2" "up $LAB_RUNDIR/config/provider-up.sh" "setenv opt up" "ipchange" "ncp-disable" "keysize 128"; do
        if grep -F "$directive" "$PROVIDER_LOG" | grep -q "dropped"; then
            tap_ok "vpnsup's log names the dropped line: $directive"
        else
            tap_not_ok "vpnsup's log names the dropped line: $directive"
        fi
    done
}
