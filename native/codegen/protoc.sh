#!/bin/sh
# protoc for prost-build: the one grpcio-tools ships (the same that makes the Python stubs), so no system protoc.
exec "${PYTHON:-python3}" -m grpc_tools.protoc "$@"
