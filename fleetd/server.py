"""fleetd's wiring: config -> etcd client -> engine and API (the agent joins in its issue).

Every component runs under one `run_components` task group; a crashed component takes fleetd
down loudly (systemd restarts it), and shutdown on SIGTERM is bounded. An unreachable etcd is
never fatal: the client, the watches and the election retry with backoff and log it.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from fleetd.api.serve import serve_api
from fleetd.config import Config
from fleetd.engine.engine import Engine
from fleetd.registry.client import EtcdClient
from fleetd.registry.errors import EtcdUnavailable
from fleetd.registry.keys import Keys
from fleetd.runtime.backoff import Backoff
from fleetd.runtime.supervise import run_components

log = structlog.get_logger(__name__)

_MACHINE_ID = re.compile(r"[0-9a-f]{32}")


class MachineIdError(RuntimeError):
    """The machine id file is missing or does not hold a 32-hex-digit id."""


def read_machine_id(path: str) -> str:
    """The id in `/etc/machine-id` (or the configured file), checked."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise MachineIdError(f"cannot read machine id from {path}: {exc.strerror}") from None
    if not _MACHINE_ID.fullmatch(text):
        raise MachineIdError(f"{path} does not hold a machine id (32 hex digits): {text[:40]!r}")
    return text


async def connect_with_retry(config: Config) -> EtcdClient:
    """Connect to etcd, retrying with backoff for as long as it takes, and saying so."""
    backoff = Backoff(initial=0.5, maximum=10.0)
    while True:
        try:
            return await EtcdClient.connect(
                config.etcd_servers, timeout=config.etcd_request_timeout
            )
        except EtcdUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("etcd unreachable, retrying", error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)


async def serve(config: Config, stop: asyncio.Event, *, shutdown_timeout: float = 10.0) -> None:
    """Run this fleetd's components until `stop` is set."""
    machine_id = read_machine_id(config.machine_id_file)
    keys = Keys(config.etcd_key_prefix)
    client = await connect_with_retry(config)
    try:
        components: dict[str, Callable[[], Awaitable[None]]] = {}
        if not config.disable_engine:
            engine = Engine(
                client, keys, machine_id, reconcile_interval=config.engine_reconcile_interval
            )
            components["engine"] = engine.run
        if config.listen:
            components["api"] = functools.partial(
                serve_api, config, client, keys, shutdown_timeout=shutdown_timeout / 2
            )
        if not config.disable_agent:
            log.info("the agent arrives with the agent issue; this fleetd runs no units yet")
        log.info(
            "fleetd starting",
            machine=machine_id,
            etcd=list(config.etcd_servers),
            prefix=keys.prefix,
            components=sorted(components),
        )
        if components:
            await run_components(components, stop=stop, shutdown_timeout=shutdown_timeout)
        else:
            await stop.wait()
    finally:
        await client.close()
        log.info("fleetd stopped", machine=machine_id)
