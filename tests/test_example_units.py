"""The example units in `units/` pass the submission gate, and the container one expands."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.core.container import container_dropin, parse_container
from fleetd.core.names import parse_unit_name
from fleetd.core.states import JobState
from fleetd.core.submission import check_unit, parse_unit_text

UNITS = Path(__file__).resolve().parents[1] / "units"


@pytest.mark.parametrize("path", sorted(UNITS.iterdir()), ids=lambda p: p.name)
def test_every_example_unit_is_accepted(path: Path) -> None:
    unit = parse_unit_text(path.read_text())
    template = parse_unit_name(path.name).is_template
    check_unit(path.name, unit, JobState.INACTIVE if template else JobState.LAUNCHED)


def test_the_example_container_runs_the_rigs_image() -> None:
    path = UNITS / "hello-container.service"
    spec = parse_container(parse_unit_text(path.read_text()))
    assert spec is not None
    assert spec.image == "/srv/images/hello-1.0.aci"  # where scripts/rig-image puts it
    assert '"--memory" "64M"' in container_dropin(spec, "fleet-pod")
