"""fleetctl's entry point: version and help as fleet prints them, unknown commands fail."""

from __future__ import annotations

import pytest

from fleetctl.app import main
from fleetd import __version__


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out == f"fleetctl version {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"]])
def test_help_succeeds_and_shows_the_version(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert f"fleetctl version {__version__}" in capsys.readouterr().out


def test_an_unknown_command_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 1
    assert 'unknown command "frobnicate"' in capsys.readouterr().err
