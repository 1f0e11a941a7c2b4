"""pyfleet's daemon: the engine, the registry on etcd and the API, wired by `fleetd.wiring`."""

__version__ = "0.1.0"
