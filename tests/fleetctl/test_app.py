"""fleetctl's entry point: global flags, version and help, unknown commands, flag placement."""

from __future__ import annotations

import httpx
import pytest

from fleetctl.app import hoist_global_flags, main
from fleetd import __version__
from tests.fleetctl.conftest import HELLO, MACHINE_A, Run
from tests.fleetctl.fake_api import FakeFleet

VERSION_LINE = f"fleetctl version {__version__}\n"


@pytest.mark.parametrize("argv", [["version"], ["--version"], ["-v"]])
def test_version(argv: list[str], run: Run) -> None:
    result = run(*argv)
    assert (result.code, result.out, result.err) == (0, VERSION_LINE, "")


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"]])
def test_help_lists_the_commands_and_the_version(argv: list[str], run: Run) -> None:
    result = run(*argv)
    assert result.code == 0
    assert VERSION_LINE.strip() in result.out
    for command in (
        "submit",
        "load",
        "start",
        "stop",
        "unload",
        "destroy",
        "list-units",
        "list-unit-files",
        "list-machines",
        "cat",
        "status",
        "verify",
        "version",
        "restart",
        "ssh",
        "fd-forward",
    ):
        assert f"  {command} " in result.out


def test_help_for_one_command(run: Run) -> None:
    result = run("help", "start")
    assert result.code == 0
    assert result.out.startswith("Usage: fleetctl start [OPTIONS] [UNIT]...")
    assert "--block-attempts" in result.out


def test_main_reads_sys_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["fleetctl", "version"])
    assert main() == 0
    assert capsys.readouterr().out == VERSION_LINE


def test_an_unknown_command_exits_non_zero(run: Run) -> None:
    result = run("frobnicate")
    assert result.code == 2
    assert 'Error: unknown command "frobnicate" for "fleetctl"' in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["start", "--bogus", "x"],
        ["--bogus", "list-units"],
        ["start", "--block-attempts", "many", "x"],
        ["list-unit-files", "-l"],
        ["--output", "yaml", "list-units"],
        ["list-units", "extra-argument"],
        ["--endpoint"],
        ["--strict-host-key-checking=maybe", "list-units"],
        ["--ssh-timeout=0", "list-units"],
    ],
)
def test_flag_errors_exit_non_zero(argv: list[str], run: Run, fleet: FakeFleet) -> None:
    result = run(*argv)
    assert result.code == 2
    assert "Error" in result.err
    assert fleet.requests == []


def test_a_missing_command_exits_non_zero(run: Run) -> None:
    assert run("--debug").code == 2


def test_commands_answer_to_a_unique_prefix(run: Run) -> None:
    result = run("list-m", "--no-legend")
    assert (result.code, result.out.split()[0]) == (0, "113f16a7...")
    assert run("vers").out == VERSION_LINE


def test_an_ambiguous_prefix_is_unknown(run: Run) -> None:
    for prefix in ("list", "ver"):
        result = run(prefix)
        assert result.code == 2
        assert f'unknown command "{prefix}"' in result.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list-units"], ["list-units"]),
        (["list-units", "--endpoint", "e", "-l"], ["--endpoint", "e", "list-units", "-l"]),
        (["start", "--debug", "a", "--output=json"], ["--debug", "--output=json", "start", "a"]),
        (
            ["--endpoint", "e", "start", "--request-timeout", "9", "a"],
            ["--endpoint", "e", "--request-timeout", "9", "start", "a"],
        ),
        (["start", "--", "--debug"], ["start", "--", "--debug"]),
        (["start", "a", "--endpoint"], ["start", "a", "--endpoint"]),
        (["--debug"], ["--debug"]),
        ([], []),
        (
            ["list-units", "--tunnel", "n1", "--strict-host-key-checking", "--ca-file=c"],
            ["--tunnel", "n1", "--strict-host-key-checking=true", "--ca-file=c", "list-units"],
        ),
        (  # a Go boolean flag takes no separate value (cobra's rule)
            ["--strict-host-key-checking", "false", "x"],
            ["--strict-host-key-checking=true", "false", "x"],
        ),
        (
            ["ssh", "--ssh-username", "root", "m1", "--", "ls", "--tunnel"],
            ["--ssh-username", "root", "ssh", "m1", "--", "ls", "--tunnel"],
        ),
    ],
)
def test_global_flags_after_the_command_move_before_it(
    argv: list[str], expected: list[str]
) -> None:
    assert hoist_global_flags(argv) == expected


def test_global_flags_work_after_the_command(run: Run) -> None:
    result = run("list-machines", "--output", "json")
    assert result.code == 0
    assert '"command": "list-machines"' in result.out


# -- endpoint, timeout, token, debug ---------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_host_in_a_unix_endpoint_is_an_error(
    how: str, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["list-machines"]
    if how == "flag":
        argv = ["--endpoint", "unix://var/run/x", *argv]
    else:
        monkeypatch.setenv("FLEETCTL_ENDPOINT", "unix://var/run/x")
    result = run(*argv)
    assert result.code == 1
    assert (
        "Error: invalid endpoint 'unix://var/run/x': the socket path must be absolute" in result.err
    )


def test_the_flag_beats_the_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCTL_ENDPOINT", "unix://bad")
    assert run("--endpoint", "unix:///ok.sock", "list-machines").code == 0


def test_a_comma_list_warns_and_uses_the_first(run: Run) -> None:
    result = run("--endpoint", "http://a:1,http://b:2", "list-machines", "--no-legend")
    assert result.code == 0
    assert (
        "WARNING: --endpoint lists 2 endpoints; fleetctl uses only the first, http://a:1"
        in result.err
    )


def test_commands_without_the_api_ignore_a_bad_endpoint(run: Run) -> None:
    assert run("--endpoint", "bogus", "version").code == 0


@pytest.mark.parametrize("value", ["0", "-1"])
def test_the_request_timeout_must_be_positive(value: str, run: Run) -> None:
    result = run("--request-timeout", value, "list-machines")
    assert result.code == 2
    assert "must be greater than 0" in result.err


def test_the_request_timeout_applies_to_every_request(
    fleet: FakeFleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETCTL_REQUEST_TIMEOUT", "7.5")
    fleet.add_unit("hello.service", HELLO, desired="launched")
    timeouts = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        return fleet.handle(request)

    assert main(["list-units"], transport=httpx.MockTransport(handler)) == 0
    assert (
        main(["--request-timeout", "0.5", "list-units"], transport=httpx.MockTransport(handler))
        == 0
    )
    assert timeouts == [7.5, 7.5, 0.5, 0.5]  # states, then machines for the legend


def test_the_api_token_goes_out_as_a_bearer_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeFleet(token="s3cret")
    fake.add_machine(MACHINE_A, "10.0.0.1")
    assert (
        main(["--endpoint", "http://10.0.0.1:49153", "list-machines"], transport=fake.transport())
        == 1
    )
    assert "a valid bearer token is required (HTTP 401)" in capsys.readouterr().err
    monkeypatch.setenv("FLEETCTL_API_TOKEN", "s3cret")
    assert (
        main(["--endpoint", "http://10.0.0.1:49153", "list-machines"], transport=fake.transport())
        == 0
    )
    assert fake.requests[-1].headers["authorization"] == "Bearer s3cret"
    assert str(fake.requests[-1].url) == "http://10.0.0.1:49153/fleet/v1/machines"


def test_debug_logs_each_request(run: Run) -> None:
    result = run("--debug", "list-machines")
    assert result.code == 0
    assert " DEBUG GET http://localhost/fleet/v1/machines -> 200" in result.err
    assert run("list-machines").err == ""
