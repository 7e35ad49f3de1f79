#!/usr/bin/env bash
# Regenerate the Python code of broker/proto/broker.proto (committed, so an
# install needs no protoc). Run from anywhere; needs the test extra
# (grpcio-tools, mypy-protobuf) in .venv or $PYTHON.
#
#   scripts/gen-proto.sh                 # broker/proto/broker_pb2{,_grpc}.py{,i}
#   scripts/gen-proto.sh OUT_DIR PACKAGE # a copy for another package, e.g.
#                                        #   scripts/gen-proto.sh tidegate/_proto tidegate._proto
#
# The descriptor is always compiled as "broker/proto/broker.proto", so a copy
# and the original can live in one process (protobuf accepts the same file
# twice when it is byte for byte the same).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"
out="${1:-broker/proto}"
package="${2:-broker.proto}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
plugin_dir="$(dirname "$python")"
"$python" -m grpc_tools.protoc -I . \
    --python_out="$tmp" --grpc_python_out="$tmp" \
    --plugin=protoc-gen-mypy="$plugin_dir/protoc-gen-mypy" \
    --plugin=protoc-gen-mypy_grpc="$plugin_dir/protoc-gen-mypy_grpc" \
    --mypy_out="$tmp" --mypy_grpc_out="$tmp" \
    broker/proto/broker.proto
mkdir -p "$out"
for f in broker_pb2.py broker_pb2.pyi broker_pb2_grpc.py broker_pb2_grpc.pyi; do
    sed -e "s/^from broker\.proto import broker_pb2/from ${package} import broker_pb2/" \
        -e "s/^import broker\.proto\.broker_pb2$/import ${package}.broker_pb2/" \
        -e "s/broker\.proto\.broker_pb2\./${package}.broker_pb2./g" \
        "$tmp/broker/proto/$f" > "$out/$f"
done
