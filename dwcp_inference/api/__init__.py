"""Generated gRPC stubs of protos/dwcp/inference/v1 (do not edit; run `make protos`)."""
