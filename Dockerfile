# vpnsup container image: the router of the original vpn_nat_router scenario.
#
#   docker build -t vpnsup .                       # builds vpnsup in the official Swift image
#   docker build --target prebuilt -t vpnsup .     # copies dist/vpnsup, built outside the image
#                                                  # (scripts/build-static.sh), for machines where
#                                                  # no registry serves the Swift image
#
# The runtime stages come first: Docker's classic builder builds every stage before the target,
# so `--target prebuilt` then never needs the Swift image.

ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG SWIFT_IMAGE=swift:6.1-bookworm

FROM ${DEBIAN_IMAGE} AS runtime-base
# openvpn and the C libraries vpnsup links; the Swift standard library is linked statically.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openvpn libmnl0 libnftnl11 libsystemd0 libstdc++6 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
VOLUME ["/config"]
# vpnsup's status and management sockets; a tmpfs is fine.
ENV RUNTIME_DIR=/run/vpnsup
# SIGTERM makes vpnsup stop OpenVPN and leave the lockdown committed before it exits.
STOPSIGNAL SIGTERM
# Healthy means TunnelUp, nothing less (`vpnsup health` asks the running supervisor).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=1 \
    CMD ["/usr/local/bin/vpnsup", "health"]
ENTRYPOINT ["/usr/local/bin/vpnsup", "run"]

FROM runtime-base AS prebuilt
COPY dist/vpnsup /usr/local/bin/vpnsup

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        pkg-config libmnl-dev libnftnl-dev libsystemd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --static-swift-stdlib --product vpnsup \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/vpnsup" /out/vpnsup \
 && strip /out/vpnsup

FROM runtime-base AS runtime
COPY --from=build /out/vpnsup /usr/local/bin/vpnsup
