"""End-to-end tests: fleetctl against the real API, engine and etcd."""
