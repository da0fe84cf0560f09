#!/usr/bin/env bash
# Podman's Docker-compatible API for the agent's container runtime and its
# tests. Idempotent and quick when everything is already in place:
#
#   1. install podman, runc and busybox-static if missing;
#   2. write /etc/containers/containers.conf (runc, cgroupfs, file events,
#      default ulimits this machine's hard limits allow);
#   3. start `podman system service` on a socket under .test-services/podman
#      (reused while its process is alive);
#   4. build localhost/hostplane-test:latest from the static busybox if it
#      does not exist (no registry is reachable: nothing is ever pulled).
#
# The last line of output is `DOCKER_HOST=unix://...` for the caller:
#   eval "$(scripts/podman.sh | tail -1)"; export DOCKER_HOST
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR="${HOSTPLANE_PODMAN_DIR:-$PWD/.test-services/podman}"
SOCKET="$STATE_DIR/podman.sock"
PID_FILE="$STATE_DIR/service.pid"
LOG_FILE="$STATE_DIR/service.log"
IMAGE="localhost/hostplane-test:latest"
CONF=/etc/containers/containers.conf

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf '%s\n' "$*" >&2; }

install_packages() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
    [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || missing+=(busybox-static)
    command -v curl >/dev/null || missing+=(curl)
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Podman's default ulimits exceed the hard limits of these machines; ask for
# no more than the machine allows.
ulimit_value() {
    local wanted="$1" hard="$2"
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$wanted" ]; then echo "$wanted"; else echo "$hard"; fi
}

write_config() {
    local nofile nproc content
    nofile="$(ulimit_value 1024 "$(ulimit -Hn)")"
    nproc="$(ulimit_value 4096 "$(ulimit -Hu)")"
    # crun fails on these hosts' hybrid cgroups; the journal is not running.
    content="# Written by hostplane scripts/podman.sh
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"
    if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$(printf '%s' "$content")" ]; then return 0; fi
    as_root mkdir -p /etc/containers
    printf '%s' "$content" | as_root tee "$CONF" >/dev/null
}

service_alive() {
    [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && [ -S "$SOCKET" ] \
        && curl -sf --unix-socket "$SOCKET" http://d/v1.41/_ping >/dev/null 2>&1
}

start_service() {
    mkdir -p "$STATE_DIR"
    if service_alive; then return 0; fi
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        # Alive but not answering: give it a moment before replacing it.
        for _ in $(seq 1 20); do service_alive && return 0; sleep 0.25; done
        kill "$(cat "$PID_FILE")" 2>/dev/null || true
    fi
    rm -f "$SOCKET"
    # setsid: the service must outlive this script and the test run's session.
    setsid podman system service --time=0 "unix://$SOCKET" >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
        service_alive && return 0
        sleep 0.1
    done
    say "podman system service did not answer on $SOCKET:"
    tail -20 "$LOG_FILE" >&2 || true
    return 1
}

build_image() {
    podman image exists "$IMAGE" && return 0
    local busybox work
    busybox="$(command -v busybox || echo /bin/busybox)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/data" "$work/root/mnt/server"
    cp "$busybox" "$work/root/bin/busybox"
    local applet
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$work/root/bin/$applet"
    done
    chmod 1777 "$work/root/tmp"
    tar -C "$work/root" -cf "$work/bb.tar" .
    podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
        "$work/bb.tar" "$IMAGE" >/dev/null
}

install_packages
write_config
start_service
build_image
echo "DOCKER_HOST=unix://$SOCKET"
