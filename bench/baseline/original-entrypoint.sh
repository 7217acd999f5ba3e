#!/usr/bin/env bash
# The original project's approach, as a baseline: a shell entrypoint that applies its firewall with
# one iptables process per rule (iptables-nft here: each one is its own nftables transaction),
# then execs OpenVPN (only when OPENVPN_CONFIG is set; the arm-time benchmark stops after the rules).
# Environment: see original-rules.sh; OPENVPN_CONFIG, OPENVPN_CREDENTIALS for the exec, whose
# extra arguments are this script's.
set -euo pipefail
# shellcheck source=bench/baseline/original-rules.sh
. "$(dirname "${BASH_SOURCE[0]}")/original-rules.sh"
while read -r -a command; do
    "${command[@]}"
done < <(original_iptables_commands)
[ -n "${OPENVPN_CONFIG:-}" ] || exit 0
exec openvpn --config "$OPENVPN_CONFIG" --auth-user-pass "$OPENVPN_CREDENTIALS" --dev tun0 --dev-type tun "$@"
