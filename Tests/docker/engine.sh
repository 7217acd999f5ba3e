# shellcheck shell=bash
# Tests/docker/engine.sh — a Docker engine of the tests' own, which changes nothing outside itself:
# dockerd runs in a network namespace made for it, so docker0, the bridges of the scenario,
# Docker's iptables chains, its FORWARD policy and ip_forward all live and die with that
# namespace; slirp4netns gives the namespace a user-mode way out (the Debian archive for the
# image builds) without a link, route or rule on the host. Its images, containers and state are
# under DOCKER_ENGINE_ROOT (default /var/lib/vpnsup-docker), its socket and pid file under /run.
#
#   docker_engine_start LOGDIR   start it (prefix vpsd<pid>); exports DOCKER_HOST; waits until it answers
#   docker_engine_exec CMD...    run CMD in the engine's network namespace (tcpdump on a bridge, iptables)
#   docker_engine_stop           stop dockerd and slirp4netns by their pids, check they are gone,
#                                delete the namespace; unless KEEP_IMAGES=1, remove DOCKER_ENGINE_ROOT
#
# Source lab/lab.sh first (lab_wait_for).

DOCKER_ENGINE_ROOT=${DOCKER_ENGINE_ROOT:-/var/lib/vpnsup-docker}
DOCKER_ENGINE_NS=vpsd$$-engine
DOCKER_ENGINE_RUN=/run/vpnsup-docker-$$
DOCKER_ENGINE_PID=
DOCKER_ENGINE_SLIRP_PID=

docker_engine_exec() { ip netns exec "$DOCKER_ENGINE_NS" "$@"; }
_docker_engine_routed() { [ -n "$(ip -n "$DOCKER_ENGINE_NS" route show default dev tap0 2>/dev/null)" ]; }

docker_engine_start() { # LOGDIR
    local logs=$1
    command -v dockerd >/dev/null || { echo "docker-engine: dockerd is missing (apt-get install docker.io)" >&2; return 1; }
    command -v slirp4netns >/dev/null || { echo "docker-engine: slirp4netns is missing" >&2; return 1; }
    mkdir -p "$DOCKER_ENGINE_RUN" "$DOCKER_ENGINE_ROOT" "$logs"
    ip netns add "$DOCKER_ENGINE_NS"
    ip -n "$DOCKER_ENGINE_NS" link set lo up
    slirp4netns --netns-type=path --configure --mtu=65520 --disable-host-loopback \
        "/run/netns/$DOCKER_ENGINE_NS" tap0 >"$logs/slirp4netns.log" 2>&1 &
    DOCKER_ENGINE_SLIRP_PID=$!
    if ! lab_wait_for 10 _docker_engine_routed; then
        echo "docker-engine: slirp4netns gave the namespace no default route" >&2
        return 1
    fi
    # dockerd in a mount namespace of its own (its mounts stay there), entered in the engine's
    # network namespace, with a sysfs of that namespace (bridges are configured through /sys)
    # and the host's cgroup hierarchy moved onto it (dockerd needs the devices controller).
    nsenter --net="/run/netns/$DOCKER_ENGINE_NS" unshare --mount --propagation slave sh -c '
        set -e
        mkdir -p "$1/cgroup"
        mount --rbind /sys/fs/cgroup "$1/cgroup"
        mount -t sysfs sysfs /sys
        mount --move "$1/cgroup" /sys/fs/cgroup
        shift
        exec "$@"' sh "$DOCKER_ENGINE_RUN" dockerd --data-root "$DOCKER_ENGINE_ROOT" \
        --exec-root "$DOCKER_ENGINE_RUN/exec" --pidfile "$DOCKER_ENGINE_RUN/dockerd.pid" \
        -H "unix://$DOCKER_ENGINE_RUN/docker.sock" >"$logs/dockerd.log" 2>&1 &
    DOCKER_ENGINE_PID=$!
    export DOCKER_HOST=unix://$DOCKER_ENGINE_RUN/docker.sock
    if ! lab_wait_for 60 _docker_engine_answers; then
        echo "docker-engine: dockerd does not answer within 60 s; its log ends:" >&2
        tail -n 20 "$logs/dockerd.log" >&2
        return 1
    fi
}

_docker_engine_answers() { docker info >/dev/null 2>&1; }

# A pid is gone when it no longer exists or is a zombie nobody has reaped yet.
_docker_engine_gone() { [ ! -d "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

docker_engine_stop() {
    local pid status=0
    for pid in $DOCKER_ENGINE_PID $DOCKER_ENGINE_SLIRP_PID; do
        kill -TERM "$pid" 2>/dev/null || continue
        lab_wait_for 30 _docker_engine_gone "$pid" || { kill -KILL "$pid" 2>/dev/null; sleep 0.5; }
        wait "$pid" 2>/dev/null || true
        _docker_engine_gone "$pid" || { echo "docker-engine: pid $pid survived SIGKILL" >&2; status=1; }
    done
    # containerd-shims of containers that outlived the engine (none once dockerd stopped cleanly)
    ip netns pids "$DOCKER_ENGINE_NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns delete "$DOCKER_ENGINE_NS" 2>/dev/null || true
    rm -rf "$DOCKER_ENGINE_RUN"
    if [ "${KEEP_IMAGES:-0}" != 1 ]; then
        rm -rf "${DOCKER_ENGINE_ROOT:?}"
    fi
    DOCKER_ENGINE_PID= DOCKER_ENGINE_SLIRP_PID=
    return "$status"
}
