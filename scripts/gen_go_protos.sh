#!/usr/bin/env bash
# Regenerates the Go stubs in clients/go/gen from protos/ (committed; see docs/protos.md).
# Needs protoc and the plugins: scripts/install_go_tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
module=github.com/dwcp/inference/clients/go
rm -rf clients/go/gen
mkdir -p clients/go/gen
protoc -I protos --go_out=clients/go --go_opt=module=$module \
    --go-grpc_out=clients/go --go-grpc_opt=module=$module \
    protos/dwcp/inference/v1/inference.proto protos/dwcp/inference/v1/admin.proto \
    protos/dwcp/inference/v1/distribution.proto
echo "generated: $(cd clients/go && find gen -name '*.go' | sort | tr '\n' ' ')"
