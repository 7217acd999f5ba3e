# vpnsup container image: the router of the original vpn_nat_router scenario. A distroless image:
# vpnsup, OpenVPN, wireguard-go (for a WireGuard CONFIG) and the shared libraries they load (copied from a Debian stage by
# scripts/image-root.sh), /etc/passwd and /etc/group; no shell, no package manager.
#
#   docker build -t vpnsup .                       # builds vpnsup in a Swift image (stage build)
#   docker build --target prebuilt -t vpnsup .     # copies dist/vpnsup, built outside the image
#                                                  # (scripts/build-static.sh): fast iteration
#
# Where no registry serves the Swift image, scripts/swift-builder-image.sh makes one from the
# toolchain installed on the machine: --build-arg SWIFT_IMAGE=vpnsup-swift-builder:6.3.1.
#
# The prebuilt stages come first: Docker's classic builder builds every stage before the target,
# so `--target prebuilt` never needs the Swift image (BuildKit builds only what the target uses).

ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG SWIFT_IMAGE=swift:6.1-bookworm

# The Debian packages whose files the image takes: OpenVPN, wireguard-go (WireGuard's userspace
# plane, 2.5 MB, libc only) and the C libraries vpnsup links (the Swift standard library and
# libstdc++ and libgcc are linked statically).
FROM ${DEBIAN_IMAGE} AS runtime-files
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openvpn wireguard-go libmnl0 libnftnl11 libsystemd0 \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/image-root.sh /usr/local/lib/image-root.sh

FROM runtime-files AS prebuilt-root
# The wildcard lets the classic builder pass this stage when dist/vpnsup is absent (a build of
# the default target); the prebuilt image then has no vpnsup, and says so here.
COPY Package.swift dist/vpnsu[p] /staging/
RUN if [ -f /staging/vpnsup ]; then \
        install -D -m 0755 /staging/vpnsup /usr/local/bin/vpnsup \
     && /usr/local/lib/image-root.sh /root-fs /usr/local/bin/vpnsup /usr/sbin/openvpn /usr/bin/wireguard-go; \
    else \
        echo "prebuilt: no dist/vpnsup in the build context (scripts/build-static.sh makes it)" >&2 \
     && /usr/local/lib/image-root.sh /root-fs /usr/sbin/openvpn /usr/bin/wireguard-go; \
    fi

# What both runtime images are, apart from their files.
FROM scratch AS runtime-base
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
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
COPY --from=prebuilt-root /root-fs/ /

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        pkg-config libmnl-dev libnftnl-dev libsystemd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
# The test targets' sources: SwiftPM refuses a manifest whose targets have no directory.
COPY Tests ./Tests
COPY scripts/build-static.sh scripts/commit.sh scripts/no-unwind-tables.ld ./scripts/
# The commit `vpnsup --version` names (the build context has no .git).
ARG VPNSUP_COMMIT=unknown
# The same release build as scripts/build-static.sh outside (static Swift runtime, libstdc++ and libgcc, no unwind tables).
RUN VPNSUP_COMMIT=${VPNSUP_COMMIT} OUT=/out/vpnsup bash scripts/build-static.sh

FROM runtime-files AS runtime-root
COPY --from=build /out/vpnsup /usr/local/bin/vpnsup
RUN /usr/local/lib/image-root.sh /root-fs /usr/local/bin/vpnsup /usr/sbin/openvpn /usr/bin/wireguard-go

FROM runtime-base AS runtime
COPY --from=runtime-root /root-fs/ /
