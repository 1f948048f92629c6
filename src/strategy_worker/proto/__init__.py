"""Generated gRPC code (see scripts/generate_protos.sh); the contract lives in proto/."""
