"""The cluster model's rules: the agent's lease TTL."""

from __future__ import annotations

import pytest

from fleetd.core.model import AGENT_LEASE_TTL, AGENT_TTL, lease_seconds


@pytest.mark.parametrize(("ttl", "lease"), [(10.0, 10), (2.5, 3), (0.2, 1), (1.0, 1)])
def test_a_lease_lasts_whole_seconds_rounded_up(ttl: float, lease: int) -> None:
    assert lease_seconds(ttl) == lease


def test_the_default_agent_lease_is_fleets_agent_ttl() -> None:
    assert AGENT_TTL == 10.0
    assert AGENT_LEASE_TTL == 10
