#!/usr/bin/env bash
# Regenerate the Python code of the wire contracts in broker/proto/
# (broker.proto, inference.proto; committed, so an install needs no protoc).
# Run from anywhere; needs the test extra (grpcio-tools, mypy-protobuf) in
# .venv or $PYTHON.
#
#   scripts/gen-proto.sh                 # broker/proto/{broker,inference}_pb2{,_grpc}.py{,i}
#   scripts/gen-proto.sh OUT_DIR PACKAGE # a copy for another package, e.g.
#                                        #   scripts/gen-proto.sh tidegate/_proto tidegate._proto
#
# Each descriptor is always compiled as "broker/proto/NAME.proto", so a copy
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
mkdir -p "$out"
for name in broker inference; do
    "$python" -m grpc_tools.protoc -I . \
        --python_out="$tmp" --grpc_python_out="$tmp" \
        --plugin=protoc-gen-mypy="$plugin_dir/protoc-gen-mypy" \
        --plugin=protoc-gen-mypy_grpc="$plugin_dir/protoc-gen-mypy_grpc" \
        --mypy_out="$tmp" --mypy_grpc_out="$tmp" \
        "broker/proto/$name.proto"
    for f in "${name}_pb2.py" "${name}_pb2.pyi" "${name}_pb2_grpc.py" "${name}_pb2_grpc.pyi"; do
        sed -e "s/^from broker\.proto import ${name}_pb2/from ${package} import ${name}_pb2/" \
            -e "s/^import broker\.proto\.${name}_pb2$/import ${package}.${name}_pb2/" \
            -e "s/broker\.proto\.${name}_pb2\./${package}.${name}_pb2./g" \
            "$tmp/broker/proto/$f" > "$out/$f"
    done
done
