"""`--tunnel`'s pieces: addresses as fleet reads them, the ssh command lines fleet's flags make,
and the relay that hands each connection to a command."""

from __future__ import annotations

import shutil
import socket
import sys

import pytest

from fleetctl.tunnel import CommandRelay, SshOptions, TunnelError, split_address, ssh_argv


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("node1", ("node1", 22)),
        ("10.0.0.1:2222", ("10.0.0.1", 2222)),
        ("[::1]:2200", ("::1", 2200)),
        ("[fe80::1]", ("fe80::1", 22)),
        ("::1", ("::1", 22)),
    ],
)
def test_addresses_default_to_port_22(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["", ":22", "host:0", "host:x", "host:70000", "-oProxy=x"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(TunnelError, match="invalid address"):
        split_address(address)


def test_ssh_command_lines_follow_fleets_flags(tmp_path: object) -> None:
    ssh = shutil.which("ssh")
    assert ssh is not None, "OpenSSH's client is a test dependency (scripts/bootstrap)"
    strict = SshOptions(known_hosts_file="/tmp/kh", timeout=2.5)
    assert ssh_argv(strict, "n1:2222", ["fleetctl", "fd-forward", "/var/run/fleet.sock"]) == [
        ssh,
        "-p",
        "2222",
        "-l",
        "core",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "StrictHostKeyChecking=ask",
        "-o",
        "UserKnownHostsFile=/tmp/kh",
        "n1",
        "fleetctl",
        "fd-forward",
        "/var/run/fleet.sock",
    ]
    loose = SshOptions(user="root", strict_host_key_checking=False)
    assert ssh_argv(loose, "n1", forward_to="10.0.0.2:49153", tty=True, forward_agent=True) == [
        ssh,
        "-p",
        "22",
        "-l",
        "root",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-A",
        "-t",
        "-W",
        "10.0.0.2:49153",
        "n1",
    ]


def test_each_relayed_connection_gets_its_own_command() -> None:
    echo = [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.readline().upper())"]
    relay = CommandRelay(echo)
    try:
        for word in (b"one\n", b"two\n"):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(10)
                conn.connect(relay.path)
                conn.sendall(word)
                assert conn.makefile("rb").readline() == word.upper()
    finally:
        relay.close()
    assert not socket_exists(relay.path)


def socket_exists(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)
    except OSError:
        return False
    return True
