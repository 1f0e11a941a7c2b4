"""The `fleetd` command line: version, help, and clear errors for bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.etcd_server import EtcdServer, free_port
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


@pytest.mark.parametrize(
    ("content", "problem"), [(None, "no such file"), ("", "is empty"), (" \n", "is empty")]
)
def test_a_missing_or_empty_token_file_exits_2_with_one_line(
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    etcd_server: EtcdServer,
    key_prefix: str,
    content: str | None,
    problem: str,
) -> None:
    """Refused with the configuration's errors, before any component starts (this fleetd would
    otherwise reach etcd and fail in its API component, with a traceback)."""
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
        token.chmod(0o600)
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0" * 32 + "\n")
    conf = tmp_path / "fleet.conf"
    conf.write_text(
        f"etcd_servers={etcd_server.endpoint}\netcd_key_prefix={key_prefix}\n"
        f"machine_id_file={machine_id}\nlisten=127.0.0.1:{free_port()}\n"
        "disable_agent=true\ndisable_engine=true\n"
    )
    assert main([f"--config={conf}", f"--api-token-file={token}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"fleetd: api_token_file: {problem}")
    assert str(token) in err
