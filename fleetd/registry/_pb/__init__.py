"""Generated etcd v3 protobuf and gRPC modules; do not edit, run scripts/gen-proto."""
