#!/usr/bin/env bash
# Debian packages the tests use: prometheus and promtool (a real Prometheus scrapes the server in the tests),
# docker-compose (validates the local stack), zlib1g-dev and gcc (the Go embedded runtime's cgo), and kustomize
# from the Go module proxy.
# protoc comes with scripts/install_go_tools.sh, only for regenerating stubs.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
# clients/go/embedded (cgo) links libz for the payload sample's zlib ratio, and needs a C compiler.
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
command -v gcc >/dev/null || missing+=(gcc)
gobin=$(go env GOPATH 2>/dev/null)/bin
if command -v go >/dev/null && ! "$gobin/kustomize" version 2>/dev/null | grep -q v5.7.1; then
    GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo=sudo; else
    echo "install ${missing[*]} (Debian packages) to run every test; without them those tests skip" >&2
    exit 0
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
