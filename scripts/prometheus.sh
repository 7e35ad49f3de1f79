#!/bin/sh
# A throwaway Prometheus on loopback that scrapes one tidegate server, for the
# observability tests and for a quick look at the dashboards.
#
#   scripts/prometheus.sh install                       # Debian's package, when missing
#   scripts/prometheus.sh start DIR LISTEN TARGET [INTERVAL]
#       writes DIR/prometheus.yml (scrape TARGET, e.g. 127.0.0.1:9464, every
#       INTERVAL, default 1s), keeps its data in DIR/data, logs to
#       DIR/prometheus.log, serves on LISTEN (e.g. 127.0.0.1:9090) and writes
#       its pid to DIR/prometheus.pid; `start` also installs when missing
#   scripts/prometheus.sh stop DIR                       # by that pid (TERM, then KILL)
#
# Exit status: 0 done; 3 prometheus is missing and this is not root (cannot
# install); 4 it is missing and apt-get cannot install it; 2 bad usage.
# The package's own service is not started here: installing under a
# policy-rc.d that denies it (Docker's) or without systemd leaves it off.
set -eu

die() { code=$1; shift; echo "prometheus.sh: $*" >&2; exit "$code"; }

find_bin() {
    for candidate in "${PROMETHEUS:-}" "$(command -v prometheus 2>/dev/null || true)" \
        /usr/bin/prometheus /usr/sbin/prometheus; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install() {
    if find_bin >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        die 3 "prometheus is not installed and this is not root; as root run:" \
            "apt-get update && apt-get install -y prometheus"
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        die 4 "prometheus is not installed and there is no apt-get to install it" \
            "(install Prometheus 2.x and put it on PATH, or set PROMETHEUS=/path/to/it)"
    fi
    echo "prometheus.sh: installing Debian's prometheus package" >&2
    if ! apt-get update -qq >&2; then
        die 4 "apt-get update failed (no network or no package sources?)"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus >&2; then
        die 4 "apt-get install prometheus failed"
    fi
    find_bin >/dev/null || die 4 "apt-get installed prometheus but no binary is on PATH"
}

alive() {
    # A zombie (exited, not yet reaped by a parent that never waits) counts as gone.
    [ -d "/proc/$1" ] || return 1
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
    [ "$state" != "Z" ]
}

start() {
    [ $# -ge 3 ] || die 2 "usage: start DIR LISTEN TARGET [INTERVAL]"
    dir=$1 listen=$2 target=$3 interval=${4:-1s}
    install
    bin=$(find_bin)
    mkdir -p "$dir/data"
    cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: $interval
  scrape_timeout: $interval
  evaluation_interval: $interval
scrape_configs:
  - job_name: tidegate
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
EOF
    "$bin" \
        --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$dir/data" \
        --web.listen-address="$listen" \
        --log.level=warn \
        >"$dir/prometheus.log" 2>&1 </dev/null &
    echo $! >"$dir/prometheus.pid"
    echo $!
}

stop() {
    [ $# -eq 1 ] || die 2 "usage: stop DIR"
    pidfile="$1/prometheus.pid"
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        tries=0
        while alive "$pid" && [ $tries -lt 100 ]; do
            sleep 0.1
            tries=$((tries + 1))
        done
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

[ $# -ge 1 ] || die 2 "usage: $0 install | start DIR LISTEN TARGET [INTERVAL] | stop DIR"
command=$1
shift
case "$command" in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) die 2 "unknown command $command (install, start, stop)" ;;
esac
