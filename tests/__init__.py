"""pyfleet test suite: mirrors the packages; etcd tests run a real etcd."""
