"""fleetd's metrics: one Prometheus registry per fleetd, and the instruments its parts update.

`Metrics` owns a `CollectorRegistry` of its own (never prometheus_client's global default
registry), so several fleetds in one process (the tests, the bench) keep separate counts. The
composition root (`fleetd.wiring`) makes one per fleetd and hands it to the etcd client, the
engine, the agent and the API; a part built without one (a test, the bench's thousands of agents
in one process) counts into `unserved()`, one shared instance that nobody scrapes.

Names follow fleet's `metrics/metrics.go`: namespace `fleet`, then the part (`engine`, `etcd`,
`api`, `agent`), in Prometheus' conventions (`_seconds`, counters exported with `_total`).

Invariants:
* Label values come from small fixed sets (etcd method names, route templates, task kinds,
  status codes, states), never from unit names or raw paths: the number of series is bounded.
* Updating an instrument never raises and never does I/O; the registry is read only when
  `/metrics` is scraped (`exposition`), and collectors registered with `add_collector` compute
  their values then, not on every change.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

NAMESPACE: Final = "fleet"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The media type of `exposition()`: Prometheus' text format, as prometheus_client names it."""

# Seconds. etcd answers in about a millisecond on a LAN; a request near the timeout (5 s) is
# an outage. The API answers from memory; writes wait for one etcd round trip.
FAST_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# An engine pass plans and writes: milliseconds for a change, seconds for 100,000 units.
PASS_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The instruments of one fleetd, in a registry of their own."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.etcd_request_seconds = Histogram(
            "etcd_request_duration_seconds",
            "Time etcd took to answer a unary request (reads, writes, transactions, leases).",
            ["method"],
            buckets=FAST_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.etcd_request_errors = Counter(
            "etcd_request_errors",
            "etcd requests that failed, by method and error (unavailable, timeout, ...).",
            ["method", "error"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_passes = Counter(
            "engine_passes",
            "Engine passes that planned, by planner: full or delta (incremental).",
            ["plan"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_pass_seconds = Histogram(
            "engine_pass_duration_seconds",
            "Time an engine pass took to plan and write its tasks.",
            buckets=PASS_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_tasks = Counter(
            "engine_tasks",
            "Engine tasks written, by kind: schedule (a placement), unschedule, "
            "mark_unplaceable, clear_unplaceable.",
            ["task"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_placements = Counter(
            "engine_placements",
            "Placements the engine wrote (new placements and changed ones).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_unplaceable_units = Gauge(
            "engine_unplaceable_units",
            "Units the leading engine could not place, after its last pass.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.engine_leader = Gauge(
            "engine_leader",
            "1 while this fleetd's engine leads the cluster, else 0.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.api_requests = Counter(
            "api_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.api_request_seconds = Histogram(
            "api_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route.",
            ["method", "route"],
            buckets=FAST_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.agent_unit_operations = Counter(
            "agent_unit_operations",
            "Unit operations the agent performed through systemd, by operation "
            "(write, link, reload, start, stop, unload).",
            ["operation"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.agent_unit_operation_failures = Counter(
            "agent_unit_operation_failures",
            "Unit operations that failed or that systemd refused, by operation.",
            ["operation"],
            namespace=NAMESPACE,
            registry=registry,
        )

    def add_collector(self, collector: Collector) -> None:
        """Register a collector whose values are computed when `/metrics` is scraped."""
        self.registry.register(collector)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


_UNSERVED: list[Metrics] = []


def unserved() -> Metrics:
    """The process' one `Metrics` for parts built without a fleetd's: counted, never served."""
    if not _UNSERVED:
        _UNSERVED.append(Metrics())
    return _UNSERVED[0]
