"""fleetctl's entry point: the typer app, its global flags, and `main`.

Role: parse the command line as fleet's cobra-based fleetctl did and hand a `Settings` object to
the command (through typer's `ctx.obj`). The commands live in `fleetctl.commands`, one module
each; this module only registers them.

Behaviour kept from fleet: the global flags (each also read from
`FLEETCTL_<FLAG>` when absent), `--version`/`-v`/`version`, `help`, usage with no arguments,
unique command prefixes (`fleetctl list-m`), and global flags given after the command
(`fleetctl list-units --endpoint ...`, cobra's persistent flags). Fixed: an unknown command or a
bad flag exits 2 (fleet exited 0).

Invariants: `main` never raises for a command-line or API problem; it returns the exit code.
Tests pass their transport to `main(argv, transport=...)`; nothing else reaches the network.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import httpx
import typer
from typer.core import TyperGroup

from fleetctl.client import DEFAULT_ENDPOINT, DEFAULT_REQUEST_TIMEOUT, TlsFiles
from fleetctl.commands import (
    cat,
    destroy,
    events,
    fd_forward,
    journal,
    list_machines,
    list_subnets,
    list_unit_files,
    list_units,
    load,
    network_config,
    restart,
    ssh,
    start,
    status,
    stop,
    submit,
    unload,
    verify,
    version,
)
from fleetctl.output import OutputFormat
from fleetctl.session import Settings
from fleetctl.tunnel import DEFAULT_KNOWN_HOSTS, DEFAULT_SSH_TIMEOUT, DEFAULT_SSH_USER, SshOptions

EXIT_USAGE = 2
VALUE_FLAGS = frozenset(
    {
        "--endpoint",
        "--request-timeout",
        "--output",
        "--ca-file",
        "--cert-file",
        "--key-file",
        "--tunnel",
        "--ssh-username",
        "--known-hosts-file",
        "--strict-host-key-checking",
        "--ssh-timeout",
    }
)
GO_BOOLEAN_FLAGS = frozenset({"--strict-host-key-checking"})
"""Go boolean flags: bare means true, `--flag=false` turns them off (cobra's rule)."""
_GO_TRUE, _GO_FALSE = (
    {"1", "t", "true", "TRUE", "True", "T"},
    {"0", "f", "false", "FALSE", "False", "F"},
)
OWN_FLAGS = {"journal": frozenset({"--output"})}
"""Flags a command has of its own, under a global flag's name: after the command, they are the
command's (fleet's `journal --output=MODE` is journalctl's mode, not fleetctl's format)."""
SWITCH_FLAGS = frozenset({"--debug"})


class FleetctlGroup(TyperGroup):
    """Commands by name or unique prefix; fleet's message for an unknown one."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        return super().get_command(ctx, matches[0]) if len(matches) == 1 else None

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        found = self.get_command(ctx, args[0])
        if found is None:
            ctx.fail(f'unknown command "{args[0]}" for "fleetctl"')
        return found.name, found, args[1:]


app = typer.Typer(
    cls=FleetctlGroup,
    name="fleetctl",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=version.version_line(),
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(version.version_line() + "\n")
        raise typer.Exit(0)


@app.callback()
def fleetctl(
    ctx: typer.Context,
    *,
    endpoint: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_ENDPOINT",
            help="Location of the fleet API: unix:///path, http://host:port or https://host:port.",
        ),
    ] = DEFAULT_ENDPOINT,
    request_timeout: Annotated[
        float,
        typer.Option(
            envvar="FLEETCTL_REQUEST_TIMEOUT", help="Seconds to wait for each API request."
        ),
    ] = DEFAULT_REQUEST_TIMEOUT,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="FLEETCTL_DEBUG", help="Print debug output to stderr."),
    ] = False,
    output: Annotated[
        OutputFormat,
        typer.Option(envvar="FLEETCTL_OUTPUT", help="text (fleet's output) or json (for scripts)."),
    ] = OutputFormat.TEXT,
    ca_file: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_CA_FILE",
            help="Location of the TLS CA file that verifies the fleet API's certificate.",
        ),
    ] = "",
    cert_file: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_CERT_FILE",
            help="Location of the TLS cert file presented to the fleet API (with --key-file).",
        ),
    ] = "",
    key_file: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_KEY_FILE", help="Location of the TLS key file of --cert-file."
        ),
    ] = "",
    tunnel: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_TUNNEL",
            help="Establish an SSH tunnel through the provided address for communication with "
            "fleet (host[:port], port 22 by default).",
        ),
    ] = "",
    ssh_username: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_SSH_USERNAME",
            help="Username to use when connecting to CoreOS instance.",
        ),
    ] = DEFAULT_SSH_USER,
    known_hosts_file: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_KNOWN_HOSTS_FILE",
            help="File used to store remote machine fingerprints. Ignored if strict host key "
            "checking is disabled.",
        ),
    ] = DEFAULT_KNOWN_HOSTS,
    strict_host_key_checking: Annotated[
        str,
        typer.Option(
            envvar="FLEETCTL_STRICT_HOST_KEY_CHECKING",
            metavar="BOOL",
            help="Verify host keys presented by remote machines before initiating SSH "
            "connections (--strict-host-key-checking=false turns it off).",
        ),
    ] = "true",
    ssh_timeout: Annotated[
        float,
        typer.Option(
            envvar="FLEETCTL_SSH_TIMEOUT",
            help="Amount of time in seconds to allow for SSH connection initialization before "
            "failing.",
        ),
    ] = DEFAULT_SSH_TIMEOUT,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", "-v", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """fleetctl: manage systemd units across a pyfleet (or fleet) cluster through its v1 API.

    FLEETCTL_API_TOKEN, when set, is sent as a bearer token (a TCP endpoint needs one).
    """
    if request_timeout <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint="'--request-timeout'")
    settings = ctx.ensure_object(Settings)
    settings.endpoint = endpoint
    settings.request_timeout = request_timeout
    settings.debug = debug
    settings.output = output
    settings.tls = TlsFiles(ca_file, cert_file, key_file)
    if strict_host_key_checking not in _GO_TRUE | _GO_FALSE:
        raise typer.BadParameter(
            f"invalid boolean {strict_host_key_checking!r}",
            param_hint="'--strict-host-key-checking'",
        )
    if ssh_timeout <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint="'--ssh-timeout'")
    settings.tunnel = tunnel
    settings.ssh = SshOptions(
        user=ssh_username,
        known_hosts_file=known_hosts_file,
        strict_host_key_checking=strict_host_key_checking in _GO_TRUE,
        timeout=ssh_timeout,
    )


def help_command(
    ctx: typer.Context,
    topic: Annotated[list[str] | None, typer.Argument(metavar="[COMMAND]")] = None,
) -> None:
    """Help about any command."""
    root = ctx.parent
    assert root is not None
    group = root.command
    assert isinstance(group, FleetctlGroup)
    found = group.get_command(root, topic[0]) if topic else None
    if found is None:
        sys.stdout.write(root.get_help() + "\n")
    else:
        sub = typer.Context(found, info_name=found.name, parent=root)
        sys.stdout.write(found.get_help(sub) + "\n")


for _name, _function in (
    ("cat", cat.cat),
    ("destroy", destroy.destroy),
    ("events", events.events),
    ("fd-forward", fd_forward.fd_forward),
    ("help", help_command),
    ("journal", journal.journal),
    ("list-machines", list_machines.list_machines),
    ("list-subnets", list_subnets.list_subnets),
    ("list-unit-files", list_unit_files.list_unit_files),
    ("list-units", list_units.list_units),
    ("load", load.load),
    ("network-config", network_config.network_config),
    ("restart", restart.restart),
    ("start", start.start),
    ("status", status.status),
    ("stop", stop.stop),
    ("submit", submit.submit),
    ("unload", unload.unload),
    ("verify", verify.verify),
    ("version", version.version),
):
    app.command(_name)(_function)


app.command(
    "ssh",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)(ssh.ssh)


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move global flags given after the command name in front of it, as cobra accepts them."""
    before: list[str] = []
    hoisted: list[str] = []
    after: list[str] = []
    index = 0
    command_seen = False
    own: frozenset[str] = frozenset()
    while index < len(args):
        token = args[index]
        if token in GO_BOOLEAN_FLAGS:
            token = f"{token}=true"
        flag = token.split("=", 1)[0]
        if token == "--":
            after.extend(args[index:])
            break
        if not command_seen:
            before.append(token)
            if token in VALUE_FLAGS and index + 1 < len(args):
                before.append(args[index + 1])
                index += 1
            command_seen = not token.startswith("-")
            own = OWN_FLAGS.get(token, frozenset()) if command_seen else own
        elif flag in own:
            after.append(token)
        elif flag in VALUE_FLAGS and ("=" in token or index + 1 < len(args)):
            hoisted.append(token)
            if "=" not in token:
                hoisted.append(args[index + 1])
                index += 1
        elif token in SWITCH_FLAGS:
            hoisted.append(token)
        else:
            after.append(token)
        index += 1
    if not command_seen:
        return args
    return before[:-1] + hoisted + before[-1:] + after


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run one fleetctl command and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    command = typer.main.get_command(app)
    try:
        command.main(
            args=hoist_global_flags(args),
            prog_name="fleetctl",
            standalone_mode=True,
            obj=Settings(transport=transport),
        )
    except SystemExit as exc:
        return _exit_code(exc.code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
