"""The `fleetd` command line: version, help, and clear errors for bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd import __version__
from fleetd.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fleetd version {__version__}\n"


def test_help_lists_fleet_option_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--etcd-servers", "--metadata", "--agent-ttl", "--disable-engine", "--listen"):
        assert option in out


def test_a_bad_option_value_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--agent-ttl=soon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetd: agent_ttl")
    assert "soon" in err


def test_a_missing_machine_id_exits_1_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "machine-id"
    assert main([f"--config={tmp_path / 'none.conf'}"]) == 2  # a named config must exist
    capsys.readouterr()
    conf = tmp_path / "fleet.conf"
    conf.write_text(f"machine_id_file={missing}\n")
    assert main([f"--config={conf}", "--disable-agent"]) == 1
    assert f"cannot read machine id from {missing}" in capsys.readouterr().err
