"""`fleetctl ssh [-A] [--ssh-port=N] [--machine|--unit] {MACHINE|UNIT} [--] [CMD...]`: a shell,
or a command, on a machine of the cluster, through the system's `ssh`.

fleet's semantics (fleetctl/ssh.go):
* the target is a machine (an id or a unique prefix of one) or a unit (its machine); with
  neither `--machine` nor `--unit`, both are looked up, and a name that is both is refused;
* the machine's public IP is the SSH address, with `--ssh-port` when it is not 22; the user,
  host key checking and timeout are the global SSH flags (`fleetctl.tunnel`);
* with `--tunnel`, the connection goes through that node (a `ProxyCommand` of `ssh -W`, with
  the same SSH flags), as fleet's tunnelled client did;
* arguments after the target (after `--`, when given) are run as a command, and its exit status
  is fleetctl's; without them, an interactive shell;
* fleet's messages: `Both machine and unit flags provided, please specify only one.`, `Unable to
  proceed: ...` (no target, nothing matches, ambiguous, more than one machine, a global unit),
  `Could not determine address of machine.`; all exit 1. An SSH failure is ssh's own message
  and its exit status (255), where fleet printed `Failed building SSH client: ...`.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Annotated

import typer

from fleetctl.client import FleetctlError
from fleetctl.session import Session
from fleetctl.tunnel import DEFAULT_SSH_PORT, ssh_argv
from fleetd.core.names import mangle_unit_name


class LookupFailed(Exception):
    """Why no address was found (fleet's words)."""


def machine_address(session: Session, lookup: str) -> str:
    """fleet's `findAddressInMachineList`: the public IP of the one machine whose id starts so."""
    matches = [m for m in session.machines().values() if m.id.startswith(lookup)]
    if len(matches) > 1:
        raise LookupFailed("found more than one machine")
    if not matches:
        raise LookupFailed("machine does not exist")
    return matches[0].primary_ip


def unit_address(session: Session, name: str) -> str:
    """fleet's `findAddressInRunningUnits`: the public IP of the machine the unit is on."""
    unit = session.client.unit(mangle_unit_name(name))
    if unit is None:
        raise LookupFailed("unit does not exist")
    if unit.is_global:
        raise LookupFailed("global units unsupported")
    machine = session.machines().get(unit.machine_id)
    return machine.primary_ip if machine is not None else ""


def either_address(session: Session, lookup: str) -> str:
    """fleet's `globalMachineLookup`: a machine or a unit, not both."""
    found: dict[str, str] = {}
    for kind, find in (("machine", machine_address), ("unit", unit_address)):
        try:
            found[kind] = find(session, lookup)
        except LookupFailed:
            continue
    if len(found) == 2:
        raise LookupFailed(
            f"ambiguous argument, both machine and unit found for `{lookup}`.\n"
            "Please use flag `-m` or `-u` to refine the search"
        )
    if not found:
        raise LookupFailed("could not find matching unit or machine")
    return next(iter(found.values()))


def ssh(
    ctx: typer.Context,
    *,
    args: Annotated[list[str] | None, typer.Argument(metavar="{MACHINE|UNIT} [CMD]...")] = None,
    machine: Annotated[
        str, typer.Option("--machine", "-m", help="Open SSH connection to a specific machine.")
    ] = "",
    unit: Annotated[
        str,
        typer.Option("--unit", "-u", help="Open SSH connection to machine running provided unit."),
    ] = "",
    forward_agent: Annotated[
        bool,
        typer.Option("--forward-agent", "-A", help="Forward local ssh-agent to target machine."),
    ] = False,
    ssh_port: Annotated[
        int,
        typer.Option(help="Connect to remote hosts over SSH using this TCP port."),
    ] = DEFAULT_SSH_PORT,
) -> None:
    """Open interactive shell on a machine in the cluster.

    Open an interactive shell on a specific machine in the cluster or on the machine where the
    specified unit is located. fleetctl tries to detect whether your first argument is a machine
    or a unit; to skip this check use the --machine or --unit flags. This command does not work
    with global units.
    """
    session = Session.of(ctx)
    words = list(args or [])

    def run_ssh_command() -> int:
        out = session.out
        if unit and machine:
            out.error("Both machine and unit flags provided, please specify only one.")
            return 1
        try:
            if machine:
                address = machine_address(session, machine)
            elif unit:
                address = unit_address(session, unit)
            elif not words:
                raise LookupFailed("one machine or unit must be provided")
            else:
                address = either_address(session, words.pop(0))
        except (LookupFailed, FleetctlError) as exc:
            out.error(f"Unable to proceed: {exc}")
            return 1
        if not address:
            out.error("Could not determine address of machine.")
            return 1
        command = words[words.index("--") + 1 :] if "--" in words else words
        return run_ssh(session, address, ssh_port, command, forward_agent=forward_agent)

    session.run(run_ssh_command)


def run_ssh(
    session: Session, address: str, port: int, command: list[str], *, forward_agent: bool
) -> int:
    """ssh to `address` (through `--tunnel` when given) and run `command`, or a shell; its exit
    status."""
    options = session.settings.ssh
    target = address if port == DEFAULT_SSH_PORT or ":" in address else f"{address}:{port}"
    argv = ssh_argv(options, target, command, forward_agent=forward_agent)
    if session.settings.tunnel:
        # not `-J`: the jump's own ssh would not get the host key options given here
        hop = ssh_argv(options, session.settings.tunnel, forward_to="%h:%p")
        argv[1:1] = ["-o", f"ProxyCommand={shlex.join(hop)}"]
    session.out.debug(f"ssh: {shlex.join(argv)}")
    return subprocess.run(argv, check=False).returncode
