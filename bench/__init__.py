"""Scale and latency benchmarks: real etcd, real engine, simulated agents; JSON results."""
