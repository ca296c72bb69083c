#!/usr/bin/env bash
# Regenerates the Python stubs of the vendored Open Inference Protocol (protos/inference/v2, package `inference`)
# into dwcp_inference/api/grpc_predict_v2_pb2*.py (committed; see docs/protos.md and docs/v2.md).
# Usage: scripts/gen_v2_protos.sh [PYTHON]   (PYTHON needs grpcio-tools, from the dev extra)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
out=dwcp_inference/api
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$py" -m grpc_tools.protoc -I protos --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
    protos/inference/v2/grpc_predict_v2.proto
for f in "$tmp"/inference/v2/*; do
    # The grpc stub imports the messages by proto path; they live beside it in one Python package.
    sed -e 's/^from inference\.v2 import /from . import /' "$f" > "$out/$(basename "$f")"
done
echo "generated: $(cd "$tmp/inference/v2" && ls | tr '\n' ' ')"
