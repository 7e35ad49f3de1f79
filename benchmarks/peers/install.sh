#!/bin/sh
# Install the peer servers from Debian's packages when they are missing.
# Debian 12 names them redis-server (7.0) and nats-server (2.9); the
# package's own service is not started here (the benchmark starts its own
# servers on loopback, on free ports, and stops them by pid).
set -eu

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

if have redis-server && have nats-server; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-peers: redis-server and nats-server are needed; install them as root:" >&2
    echo "  apt-get update && apt-get install -y redis-server nats-server" >&2
    exit 2
fi
echo "bench-peers: installing redis-server and nats-server from Debian's packages" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server nats-server
