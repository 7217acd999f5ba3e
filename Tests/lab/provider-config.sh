# shellcheck shell=bash
# Tests/lab/provider-config.sh — `vpnsup run` on configuration files as providers publish them
# (issue 13), end to end in the lab. Sourced by e2e.sh after lab/lab.sh, tap.sh, features.sh and
# router.sh, with the lab up, the VPN server running and no vpnsup in the router.
#
#   provider_config_tests   runs every check below, each with a vpnsup of its own:
#     (a) a provider-style file with script-security 2 and up/down/route-up/ipchange scripts (also
#         as `setenv opt up` and inside a <connection> block), user/group, persist-tun,
#         ncp-disable and keysize: the tunnel comes up, no script ever runs (the marker file
#         never appears), the log and `vpnsup status` name each dropped line, ncp-disable and
#         keysize are warnings; OpenVPN reads the vetted text (RUNTIME_DIR/openvpn.conf, 0600)
#         with --script-security 0; the file is gone once vpnsup exits. SIGHUP meanwhile: a
#         dev tap line is refused as a reload (the tunnel stays up); an option OpenVPN refuses
#         kills the switch with OpenVPN's line, never retried; the good file again: TunnelUp
#     (b) a file with an option OpenVPN does not know: exit 78 within 2 s, the last stderr line
#         naming the file, the line and the option; OpenVPN spawned once; the lockdown committed
#     (c) a udp6-only file (the WAN is IPv4): exit 78 naming why; OpenVPN never spawned
#     (d) the server moves: it restarts on another address and the ISP's resolver answers the
#         name with that address; vpnsup, having failed a full round on the old one, resolves the
#         name again and follows; zero leaks (the capture's transport filter then admits the new
#         address, which the capture shows nothing was sent to before the move)
#
# Variables: PROVIDER_MARKER (the file a script would create).

PROVIDER_MARKER=${PROVIDER_MARKER:-$LAB_RUNDIR/provider-script-ran}
# Where the server moves to (inside the lab's ISP namespace only).
PROVIDER_MOVED_IP=198.51.100.3
PROVIDER_RUNTIME=$LAB_RUNDIR/runtime-provider

provider_env() { # CONFIG -> vpnsup's environment, one NAME=VALUE a line
    vpnsup_env | sed "s|^CONFIG=.*|CONFIG=$1|; s|^RUNTIME_DIR=.*|RUNTIME_DIR=$PROVIDER_RUNTIME|"
}

provider_status() {
    timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" status --json --runtime-dir "$PROVIDER_RUNTIME" \
        2>>"$LAB_RUNDIR/logs/status.err"
}
provider_state_is() { [ "$(provider_status | jq -r '.state' 2>/dev/null)" = "$1" ]; }

# Starts vpnsup on CONFIG in the background (log LOG); PROVIDER_PID is its pid.
provider_start() { # CONFIG LOG
    local vars
    mapfile -t vars < <(provider_env "$1")
    (exec ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >"$2" 2>&1 </dev/null) &
    PROVIDER_PID=$!
}

provider_stop() {
    kill -TERM "$PROVIDER_PID" 2>/dev/null || true
    PROVIDER_RC=0
    wait "$PROVIDER_PID" || PROVIDER_RC=$?
}

# Runs vpnsup on CONFIG in the foreground (bounded): PROVIDER_RC, PROVIDER_MS; stderr in ERR.
provider_run_to_exit() { # CONFIG ERR
    local vars t0
    mapfile -t vars < <(provider_env "$1")
    t0=$(lab_now_ms)
    PROVIDER_RC=0
    timeout 20 ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >/dev/null 2>"$2" </dev/null ||
        PROVIDER_RC=$?
    PROVIDER_MS=$(($(lab_now_ms) - t0))
}

# The lockdown, and nothing else, is what the router's table holds.
provider_lockdown_committed() {
    local table
    table=$(lab_exec router nft list table inet vpnsup 2>&1) &&
        grep -q 'hook forward priority filter; policy drop;' <<<"$table" && ! grep -q 'tun0\|dport 1194' <<<"$table"
}

# ---- (a) scripts, removed options ----

provider_config_write() {
    local script="$LAB_RUNDIR/config/provider-up.sh"
    printf '#!/bin/sh\ntouch %s\n' "$PROVIDER_MARKER" >"$script"
    chmod 755 "$script"
    rm -f "$PROVIDER_MARKER"
    {
        # The lab's own client file (remote by host name, inline CA), without its remote line,
        # which moves into a <connection> block with a script of its own.
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

provider_scripts_checks() {
    local log=$LAB_RUNDIR/logs/vpnsup-provider.log json vetted openvpn directive
    provider_config_write
    provider_start "$LAB_RUNDIR/config/provider.ovpn" "$log"
    local t0 up=no
    t0=$(lab_now_ms)
    if lab_wait_for 30 provider_state_is TunnelUp && lab_wait_for 10 client_via_tunnel; then
        up=yes
        tap_note "figure: provider-style file: start -> client traffic through the tunnel: $(seconds_since "$t0") s"
        tap_ok "a provider-style file with script-security 2 and up/down scripts: the tunnel comes up"
    else
        tap_not_ok "a provider-style file with script-security 2 and up/down scripts: the tunnel comes up (state $(provider_status | jq -r .state 2>/dev/null || echo '?'))"
    fi
    # route-up runs right after the routes are set, up once tun0 is configured, ipchange on the
    # connection: all are past with the traffic flowing. Without a tunnel this proves nothing.
    if [ -e "$PROVIDER_MARKER" ]; then
        tap_not_ok "no provider script runs: up/down/route-up/ipchange never ran (the marker exists)"
    elif [ "$up" = no ]; then
        tap_not_ok "no provider script runs: up/down/route-up/ipchange never ran (not shown: the tunnel never came up)"
    else
        tap_ok "no provider script runs: up/down/route-up/ipchange never ran (no marker with the tunnel up)"
    fi
    for directive in "script-security 2" "up $LAB_RUNDIR/config/provider-up.sh" "setenv opt up" "ipchange" "route-up" "user nobody" "persist-tun"; do
        tap_check "vpnsup's log names the dropped line: $directive" \
            bash -c 'grep -F -- "$1" "$2" | grep -q ": dropped: "' _ "$directive" "$log"
    done
    for directive in "ncp-disable" "keysize 128"; do
        tap_check "a removed option is dropped with a warning naming file:line: $directive" \
            bash -c 'grep -F -- "$1" "$2" | grep -q "warning.*provider.ovpn:[0-9]*: $1: dropped: removed in OpenVPN"' _ "$directive" "$log"
    done
    json=$(provider_status || true)
    findings_listed() {
        jq -e --arg file "$LAB_RUNDIR/config/provider.ovpn" '
            [.findings[] | select(.file == $file and .action == "dropped")] as $d
            | ($d | map(.directive) | index("script-security 2")) != null
              and ($d | map(select(.directive | startswith("up "))) | length) == 1
              and ($d | map(select(.directive == "ncp-disable" and .level == "warning")) | length) == 1
              and ($d | all(.line > 0))' <<<"$json" >/dev/null
    }
    tap_check "status --json lists the findings (file, line, directive, what was done)" findings_listed
    tap_last_failed && tap_note "findings: $(jq -c '.findings' <<<"$json" 2>/dev/null || echo "$json")"
    openvpn=$(router_openvpns | head -n 1)
    vetted=$PROVIDER_RUNTIME/openvpn.conf
    openvpn_reads_vetted() {
        [ -n "$openvpn" ] && tr '\0' ' ' <"/proc/$openvpn/cmdline" |
            grep -qF -- "--cd $LAB_RUNDIR/config --config $vetted " &&
            tr '\0' ' ' <"/proc/$openvpn/cmdline" | grep -qE -- "--script-security 0 ?$"
    }
    tap_check "OpenVPN reads the vetted text (--cd CONFIG's directory --config RUNTIME_DIR/openvpn.conf), --script-security 0 last" \
        openvpn_reads_vetted
    vetted_private() {
        [ "$(stat -c '%a %U' "$vetted")" = "600 root" ] && ! grep -qE '^(up|script-security|setenv|ipchange|user) ' "$vetted" &&
            ! grep -rlqE '^(up|script-security) ' "$PROVIDER_RUNTIME" --exclude=openvpn.conf
    }
    tap_check "the vetted text is mode 0600, root's, and holds none of the dropped lines" vetted_private
    tap_last_failed && tap_note "$(ls -l "$PROVIDER_RUNTIME" 2>&1 | tr '\n' ' ')"
    provider_reload_checks
    provider_stop
    tap_check "SIGTERM: vpnsup exits 0 (got $PROVIDER_RC) and removes the vetted text" \
        bash -c '[ "$1" -eq 0 ] && [ ! -e "$2" ]' _ "$PROVIDER_RC" "$vetted"
    tap_check "the marker never appeared (also not on OpenVPN's way down)" test ! -e "$PROVIDER_MARKER"
}

# SIGHUP with the provider file running: a line the vetting refuses is refused as a reload (the
# file in use stays, the tunnel too); an option only OpenVPN refuses kills the switch with
# OpenVPN's line, and nothing retries it until the next SIGHUP brings a good file.
provider_reload_checks() {
    local file=$LAB_RUNDIR/config/provider.ovpn good json started
    good=$(cat "$file")
    printf '%s\ndev tap\n' "$good" >"$file"
    kill -HUP "$PROVIDER_PID"
    reload_refused() { provider_status | jq -e '.lastReload.accepted == false' >/dev/null 2>&1; }
    lab_wait_for 5 reload_refused || true
    json=$(provider_status || true)
    tap_check "SIGHUP with a dev tap line: the reload is refused naming it, the tunnel stays up" \
        jq -e --arg file "$file" '.state == "TunnelUp" and (.lastReload.message | startswith("CONFIG=\($file):")
            and contains("dev tap: vpnsup routes at layer 3"))' <<<"$json"
    tap_last_failed && tap_note "lastReload: $(jq -c '{state, lastReload}' <<<"$json" 2>/dev/null || echo "$json")"

    printf '%s\nthis-option-does-not-exist 1\n' "$good" >"$file"
    started=$(grep -c 'started OpenVPN (pid' "$LAB_RUNDIR/logs/vpnsup-provider.log")
    kill -HUP "$PROVIDER_PID"
    killswitched_by_openvpn() {
        provider_status | jq -e '.state == "Killswitched" and (.reason | contains("Options error: Unrecognized option"))' >/dev/null 2>&1
    }
    if lab_wait_for 10 killswitched_by_openvpn; then
        json=$(provider_status || true)
        tap_check "SIGHUP with an option OpenVPN refuses: Killswitched with OpenVPN's line naming CONFIG's line" \
            jq -e --arg file "$file" '.reason | contains("in \($file):") and contains(": this-option-does-not-exist")' <<<"$json"
        tap_last_failed && tap_note "reason: $(jq -r .reason <<<"$json")"
        sleep 3 # the crash-loop handling would have started OpenVPN again by now
        no_retry() {
            [ "$(grep -c 'started OpenVPN (pid' "$LAB_RUNDIR/logs/vpnsup-provider.log")" -eq $((started + 1)) ] &&
                [ -z "$(router_openvpns)" ] && provider_state_is Killswitched && client_blocked
        }
        tap_check "no retry of the refused file (OpenVPN started once for it), vpnsup still running, the client blocked" no_retry
    else
        tap_not_ok "SIGHUP with an option OpenVPN refuses: Killswitched with OpenVPN's line naming CONFIG's line (state $(provider_status | jq -c '{state, reason}' 2>/dev/null || echo '?'))"
    fi
    printf '%s\n' "$good" >"$file"
    kill -HUP "$PROVIDER_PID"
    up_again() { lab_wait_for 30 provider_state_is TunnelUp && lab_wait_for 10 client_via_tunnel; }
    tap_check "SIGHUP with the good file again: TunnelUp, traffic through the tunnel" up_again
}

# ---- (b) an option OpenVPN does not know, (c) IPv6 only ----

provider_refusal_checks() {
    local err=$LAB_RUNDIR/logs/vpnsup-unknown.err bad
    bad=$LAB_RUNDIR/config/unknown-option.ovpn
    { sed -n '1,3p' "$LAB_RUNDIR/config/client-ip.ovpn"; echo "this-option-does-not-exist 1"; sed '1,3d' "$LAB_RUNDIR/config/client-ip.ovpn"; } >"$bad"
    provider_run_to_exit "$bad" "$err"
    tap_note "figure: unknown option: vpnsup start -> exit $PROVIDER_RC: $(lab_ms_to_s "$PROVIDER_MS") s"
    tap_check "an unknown option: vpnsup run exits 78 (got $PROVIDER_RC)" test "$PROVIDER_RC" -eq 78
    tap_check "an unknown option: exit within 2 s ($(lab_ms_to_s "$PROVIDER_MS") s)" test "$PROVIDER_MS" -le 2000
    local last
    last=$(tail -n 1 "$err")
    tap_check "an unknown option: the last stderr line names the file, line 4 and the option" \
        grep -qF "CONFIG=$bad: OpenVPN exited with status 1: Options error: Unrecognized option or missing or extra parameter(s) in $bad:4: this-option-does-not-exist" <<<"$last"
    tap_last_failed && tap_note "last line: $last"
    tap_check "an unknown option: OpenVPN was spawned once (no respawn)" \
        test "$(grep -c 'started OpenVPN (pid' "$err")" -eq 1
    tap_check "an unknown option: the lockdown is committed after the exit" provider_lockdown_committed
    tap_check "an unknown option: no OpenVPN is left" test -z "$(router_openvpns)"

    err=$LAB_RUNDIR/logs/vpnsup-udp6.err
    bad=$LAB_RUNDIR/config/udp6-only.ovpn
    sed 's/^proto udp$/proto udp6/' "$LAB_RUNDIR/config/client.ovpn" >"$bad"
    provider_run_to_exit "$bad" "$err"
    tap_check "udp6 only on an IPv4 WAN: vpnsup run exits 78 (got $PROVIDER_RC)" test "$PROVIDER_RC" -eq 78
    tap_check "udp6 only: one stderr line naming why" \
        bash -c '[ "$(wc -l <"$1")" -eq 1 ] && grep -qF "CONFIG=$2 has no usable remote: $3 1194 udp6 (udp6 is IPv6 only, and the WAN carries IPv4 only)" "$1"' \
        _ "$err" "$bad" "$LAB_VPN_NAME"
    tap_last_failed && tap_note_file 3 "$err"
    no_openvpn_started() { provider_lockdown_committed && ! grep -q "started OpenVPN" "$err"; }
    tap_check "udp6 only: the lockdown is committed, no OpenVPN was started" no_openvpn_started
}

# ---- (d) the server moves ----

# Restarts the ISP's resolver answering LAB_VPN_NAME with ADDRESS (as lab/lab.sh starts it).
provider_resolver_points_to() { # ADDRESS
    lab_daemon_stop resolver TERM 5
    lab_daemon_start resolver isp dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
        --no-hosts --bind-interfaces --listen-address="$LAB_RESOLVER_IP" --user=root --group=root \
        --pid-file --local=/test/ --host-record="$LAB_VPN_NAME,$1" \
        --log-queries=extra --log-facility="$LAB_RUNDIR/isp/dns.log"
    lab_wait_for 10 _lab_listening isp udp 53
}

# Restarts the lab's VPN server listening on ADDRESS.
provider_server_on() { # ADDRESS
    lab_vpn_server_stop
    sed -i "s/^local .*/local $1/" "$LAB_RUNDIR/server/server.conf"
    lab_vpn_server_start
}

provider_sent_to() { # ADDRESS: packets from the router to ADDRESS in the running capture
    tcpdump -nn -r "$(cat "$LAB_RUNDIR/capture/current")" "ip dst $1" 2>/dev/null | wc -l | tr -d ' '
}

provider_moving_server_checks() {
    local log=$LAB_RUNDIR/logs/vpnsup-moving.log t0 json
    lab_exec isp ip addr add "$PROVIDER_MOVED_IP/24" dev "$LAB_CAPTURE_IF"
    provider_start "$LAB_RUNDIR/config/client.ovpn" "$log"
    if ! lab_wait_for 30 provider_state_is TunnelUp; then
        tap_not_ok "the server moves: vpnsup follows (it never came up on $LAB_VPN_SERVER_IP)"
        provider_stop
        return
    fi
    tap_check "before the move: nothing was ever sent to $PROVIDER_MOVED_IP" test "$(provider_sent_to "$PROVIDER_MOVED_IP")" -eq 0
    t0=$(lab_now_ms)
    provider_resolver_points_to "$PROVIDER_MOVED_IP"
    provider_server_on "$PROVIDER_MOVED_IP"
    # From now on the tunnel's transport may go to the new address too (only there, udp 1194).
    # shellcheck disable=SC2034 # read by lab_leaks
    LAB_TRANSPORT_FILTER="arp or (ip src $LAB_ROUTER_WAN_IP and (ip dst $LAB_VPN_SERVER_IP or ip dst $PROVIDER_MOVED_IP) and (udp dst port $LAB_VPN_PORT or ip[6:2] & 0x1fff != 0))"
    followed() {
        json=$(provider_status) && jq -e --arg ip "$PROVIDER_MOVED_IP" --arg port "$LAB_VPN_PORT" \
            '.state == "TunnelUp" and .endpoints == ["\($ip):\($port)/udp"] and .remote == "\($ip):\($port)"' <<<"$json" >/dev/null &&
            client_via_tunnel
    }
    if lab_wait_for 60 followed; then
        tap_note "figure: server moved and the name re-pointed -> client traffic through the tunnel at the new address: $(seconds_since "$t0") s"
        tap_ok "the server moves to $PROVIDER_MOVED_IP and the name is re-pointed: vpnsup resolves it again and follows"
    else
        tap_not_ok "the server moves to $PROVIDER_MOVED_IP and the name is re-pointed: vpnsup resolves it again and follows (status $(provider_status | jq -c '{state, endpoints, remote}' 2>/dev/null || echo '?'))"
    fi
    json=$(provider_status || true)
    resolution_shown() {
        jq -e --arg name "$LAB_VPN_NAME" --arg ip "$PROVIDER_MOVED_IP" '
            .lastResolution.cause == "every pinned address failed to connect" and .lastResolution.names == [$name]
            and .lastResolution.addresses[$name] == [$ip] and .lastResolution.milliseconds >= 0
            and (.lastResolution.at | length) > 0 and .resolutions >= 2 and .resolvedRemotes[$name] == [$ip]' <<<"$json" >/dev/null
    }
    tap_check "status shows the last resolution (time, names, addresses, duration, why)" resolution_shown
    tap_note "lastResolution: $(jq -c '.lastResolution' <<<"$json" 2>/dev/null || echo '?')"
    tap_check "the log says every pinned address failed and the name was resolved again" \
        bash -c 'grep -q "every pinned address failed to connect" "$1" && grep -q "resolved again in .* ms: $2 -> $3" "$1"' \
        _ "$log" "$LAB_VPN_NAME" "$PROVIDER_MOVED_IP"
    tap_check "OpenVPN got the new address: remote MOD $PROVIDER_MOVED_IP $LAB_VPN_PORT" \
        grep -qF "MANAGEMENT: CMD 'remote MOD $PROVIDER_MOVED_IP $LAB_VPN_PORT'" "$log"
    tap_check "the same vpnsup followed (no restart, pid $PROVIDER_PID)" kill -0 "$PROVIDER_PID"
    provider_stop
    tap_check "after the move: SIGTERM, vpnsup exits 0 (got $PROVIDER_RC)" test "$PROVIDER_RC" -eq 0
    # The lab as it was: the server and its name at the usual address.
    provider_resolver_points_to "$LAB_VPN_SERVER_IP" || true
    provider_server_on "$LAB_VPN_SERVER_IP" || true
}

provider_config_tests() {
    provider_scripts_checks
    provider_refusal_checks
    provider_moving_server_checks
}
