"""`fleetctl ssh`: the address fleet would pick, and the ssh command line it runs (a stand-in
`ssh` on PATH records it; tests/rig/test_remote.py runs the real one)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from tests.fleetctl.conftest import GLOBAL, HELLO, MACHINE_A, Result, Run
from tests.fleetctl.fake_api import FakeFleet

FAKE_SSH = """#!{python}
import sys
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
sys.exit({code})
"""


@pytest.fixture
def ssh_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fake_ssh(tmp_path, monkeypatch, 0)


def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> Path:
    log = tmp_path / "ssh.log"
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable, log=str(log), code=code))
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    return log


def ran(log: Path) -> list[str]:
    """Each ssh run's arguments after the common options."""
    prefix = "-o StrictHostKeyChecking=ask -o UserKnownHostsFile="
    lines = log.read_text().splitlines()
    return [line.split(prefix, 1)[0] + line.split(prefix, 1)[1].split(" ", 1)[1] for line in lines]


def test_a_machine_by_id_prefix_gets_a_shell(run: Run, ssh_log: Path) -> None:
    assert run("ssh", MACHINE_A[:4]) == Result(0, "", "")
    assert ran(ssh_log) == ["-p 22 -l core -o ConnectTimeout=10 172.17.8.103"]


def test_a_unit_and_a_command_after_dashes(run: Run, fleet: FakeFleet, ssh_log: Path) -> None:
    fleet.add_unit("hello.service", HELLO, desired="launched")
    assert run("ssh", "hello", "--", "ls", "-l").code == 0
    assert run("ssh", "--unit", "hello.service", "uptime").code == 0
    assert ran(ssh_log) == [
        "-p 22 -l core -o ConnectTimeout=10 172.17.8.103 ls -l",
        "-p 22 -l core -o ConnectTimeout=10 172.17.8.103 uptime",
    ]


def test_port_agent_user_and_tunnel(run: Run, ssh_log: Path, tmp_path: Path) -> None:
    result = run(
        "--tunnel", "bastion:2200", "--ssh-username", "root", "ssh", "-A", "--ssh-port",
        "2222", "--machine", "2c7a",
    )  # fmt: skip
    assert result.code == 0, result
    (line,) = ssh_log.read_text().splitlines()
    ssh = f"{tmp_path}/ssh"
    known = f"{tmp_path}/.fleetctl/known_hosts"
    assert line == (
        f"-o ProxyCommand={ssh} -p 2200 -l root -o ConnectTimeout=10 "
        f"-o StrictHostKeyChecking=ask -o UserKnownHostsFile={known} -W %h:%p bastion "
        f"-p 2222 -l root -o ConnectTimeout=10 -o StrictHostKeyChecking=ask "
        f"-o UserKnownHostsFile={known} -A 172.17.8.104"
    )


def test_the_remote_exit_status_is_fleetctls(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ssh(tmp_path, monkeypatch, 3)
    assert run("ssh", MACHINE_A, "false").code == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ssh"], "Unable to proceed: one machine or unit must be provided\n"),
        (["ssh", "nothing"], "Unable to proceed: could not find matching unit or machine\n"),
        (["ssh", "-m", "ffff"], "Unable to proceed: machine does not exist\n"),
        (["ssh", "-u", "nope"], "Unable to proceed: unit does not exist\n"),
        (["ssh", "-u", "g"], "Unable to proceed: global units unsupported\n"),
        (
            ["ssh", "-m", "a", "-u", "b"],
            "Both machine and unit flags provided, please specify only one.\n",
        ),
        (
            ["ssh", "113f"],
            "Unable to proceed: ambiguous argument, both machine and unit found for `113f`.\n"
            "Please use flag `-m` or `-u` to refine the search\n",
        ),
    ],
)
def test_fleets_refusals(
    run: Run, fleet: FakeFleet, ssh_log: Path, argv: list[str], message: str
) -> None:
    fleet.add_unit("g.service", GLOBAL, desired="launched")
    fleet.add_unit("113f.service", HELLO, desired="launched")
    assert run(*argv) == Result(1, "", message)
    assert not ssh_log.exists()
