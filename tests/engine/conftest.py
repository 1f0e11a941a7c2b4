"""Engine fixtures: a key layout under the test's own prefix."""

from __future__ import annotations

import pytest

from fleetd.registry.keys import Keys


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)
