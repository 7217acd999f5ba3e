# The Docker tests' other hosts (OpenVPN and WireGuard servers, HTTP echo with DNS, LAN client): Debian's tools.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openvpn wireguard-go wireguard-tools python3 dnsmasq-base iproute2 iputils-ping curl bind9-dnsutils \
 && rm -rf /var/lib/apt/lists/*
