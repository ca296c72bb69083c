#!/usr/bin/env bash
# Installs what the Go client's code generation needs: protoc (Debian) and the Go protoc plugins (Go proxy),
# at pinned versions so `make go-protos` is reproducible.
set -euo pipefail
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
if ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq protobuf-compiler >/dev/null; fi
fi
gobin=$(go env GOPATH)/bin
[ -x "$gobin/protoc-gen-go" ] && "$gobin/protoc-gen-go" --version | grep -q "${PROTOC_GEN_GO}" ||
    go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO}"
[ -x "$gobin/protoc-gen-go-grpc" ] && "$gobin/protoc-gen-go-grpc" --version | grep -q "${PROTOC_GEN_GO_GRPC#v}" ||
    go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC}"
echo "protoc $(protoc --version), protoc-gen-go ${PROTOC_GEN_GO}, protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC}"
