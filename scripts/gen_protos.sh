#!/usr/bin/env bash
# Regenerates the Python stubs in dwcp_inference/api from protos/ (committed; see docs/protos.md).
# Usage: scripts/gen_protos.sh [PYTHON]   (PYTHON needs grpcio-tools, from the dev extra)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
out=dwcp_inference/api
rm -f "$out"/*_pb2*.py "$out"/*_pb2*.pyi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -m grpc_tools.protoc -I protos --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
    protos/dwcp/inference/v1/inference.proto protos/dwcp/inference/v1/admin.proto \
    protos/dwcp/inference/v1/distribution.proto
for f in "$tmp"/dwcp/inference/v1/*; do
    # The stubs import each other by proto package; ours live in one Python package instead.
    sed -e 's/^from dwcp\.inference\.v1 import /from . import /' "$f" > "$out/$(basename "$f")"
done
echo "generated: $(ls "$out" | tr '\n' ' ')"
