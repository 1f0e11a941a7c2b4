"""A run's session: lazy client, one machine list per run, errors printed at the end."""

from __future__ import annotations

import pytest
import typer

from fleetctl.client import FleetAPIError
from fleetctl.output import OutputFormat
from fleetctl.session import Session, Settings
from tests.fleetctl.conftest import MACHINE_A, MACHINE_B
from tests.fleetctl.fake_api import FakeFleet


def session_for(fleet: FakeFleet, **settings: object) -> Session:
    return Session(Settings(transport=fleet.transport(), **settings), command="test")  # type: ignore[arg-type]


def test_the_client_is_made_once_and_only_when_needed(fleet: FakeFleet) -> None:
    session = session_for(fleet)
    assert fleet.requests == []
    assert session.client is session.client


def test_legends_share_one_machine_list(fleet: FakeFleet) -> None:
    session = session_for(fleet)
    assert session.legend(MACHINE_A) == "113f16a7.../172.17.8.103"
    assert session.legend(MACHINE_B, full=True) == f"{MACHINE_B}/172.17.8.104"
    assert session.legend("f" * 32) == "ffffffff..."
    assert len(fleet.requests) == 1


def test_run_exits_with_the_bodys_code(fleet: FakeFleet) -> None:
    with pytest.raises(typer.Exit) as caught:
        session_for(fleet).run(lambda: 3)
    assert caught.value.exit_code == 3


def test_run_prints_unhandled_errors(fleet: FakeFleet, capsys: pytest.CaptureFixture[str]) -> None:
    def failing_command() -> int:
        raise FleetAPIError(500, "boom")

    with pytest.raises(typer.Exit) as caught:
        session_for(fleet, output=OutputFormat.JSON).run(failing_command)
    assert caught.value.exit_code == 1
    captured = capsys.readouterr()
    assert captured.err == "Error: boom (HTTP 500)\n"
    assert '"errors": [\n    "Error: boom (HTTP 500)"\n  ]' in captured.out


def test_run_closes_the_client(fleet: FakeFleet) -> None:
    session = session_for(fleet)
    client = session.client
    with pytest.raises(typer.Exit):
        session.run(lambda: len(client.machines()) - 2)
    assert client._http.is_closed
