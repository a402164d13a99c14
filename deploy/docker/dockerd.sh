#!/usr/bin/env bash
# A private Docker engine for `make test-container` on machines without one (CI runners, these dev boxes).
#   eval "$(deploy/docker/dockerd.sh start STATE_DIR)"   # prints `export DOCKER_HOST=...`; reuses a running one
#   deploy/docker/dockerd.sh stop STATE_DIR              # stops it, unmounts what it left (the state stays)
# Its state (images, layer cache, containers) lives under STATE_DIR; keep that directory between runs for a warm
# layer cache. No bridge network and no iptables rules: builds and containers use `--network host` (loopback and
# the host's own routes), so nothing on the machine's firewall or interfaces changes.
set -euo pipefail
command=${1:?usage: dockerd.sh start|stop STATE_DIR}
state=$(realpath -m "${2:?usage: dockerd.sh start|stop STATE_DIR}")
socket="$state/docker.sock"
pidfile="$state/dockerd.pid"

case "$command" in
start)
    mkdir -p "$state"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "export DOCKER_HOST=unix://$socket"
        exit 0
    fi
    rm -f "$pidfile" "$socket"
    # setsid: the daemon outlives the shell that started it (make runs each recipe line in its own shell).
    setsid dockerd --data-root "$state/data" --exec-root "$state/exec" --pidfile "$pidfile" \
        --host "unix://$socket" --iptables=false --ip-masq=false --bridge=none \
        >"$state/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        if DOCKER_HOST="unix://$socket" docker version >/dev/null 2>&1; then
            echo "export DOCKER_HOST=unix://$socket"
            exit 0
        fi
        sleep 0.5
    done
    echo "dockerd did not answer within 60 s; its log:" >&2
    tail -n 30 "$state/dockerd.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    fi
    # What dockerd leaves mounted (the default network namespace under exec-root, overlays of killed containers),
    # deepest first, so that the caller can delete the state.
    awk -v prefix="$state/" 'index($2, prefix) == 1 {print $2}' /proc/mounts | sort -r | while read -r mount; do
        umount -l "$mount" 2>/dev/null || true
    done
    ;;
*)
    echo "usage: dockerd.sh start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
