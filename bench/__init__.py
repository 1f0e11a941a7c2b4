"""Scale and latency benchmarks: real etcd, real engine and API, real agents on the fake systemd;
JSON results."""
