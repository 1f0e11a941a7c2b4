"""Job states and the transitions between them.

Two tables, written once here and once in `docs/states.md` (the test reads the page and checks it
against these tables row by row):

* `COMMAND_TRANSITIONS`: what each user command does to a unit's desired state;
* `CONVERGENCE_STEPS`: the agent steps that take a unit from its current state to its desired one.

A missing entry in `COMMAND_TRANSITIONS` means the command is refused in that state. The values of
`JobState` are the strings stored in etcd and sent over the API.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class JobState(StrEnum):
    """A unit's state in the cluster, desired or current."""

    INACTIVE = "inactive"
    LOADED = "loaded"
    LAUNCHED = "launched"


class Command(StrEnum):
    """A user command that sets a unit's desired state."""

    SUBMIT = "submit"
    LOAD = "load"
    START = "start"
    STOP = "stop"
    UNLOAD = "unload"
    DESTROY = "destroy"


class Step(StrEnum):
    """One thing the agent asks of systemd for a unit."""

    LOAD = "load"
    START = "start"
    STOP = "stop"
    UNLOAD = "unload"


class InvalidTransition(ValueError):
    """A command that is not allowed in the unit's present state."""


_I, _L, _U = JobState.INACTIVE, JobState.LOADED, JobState.LAUNCHED

# (command, desired state before or None for "no such unit") -> desired state after (None: gone)
COMMAND_TRANSITIONS: Final[dict[tuple[Command, JobState | None], JobState | None]] = {
    (Command.SUBMIT, None): _I,
    (Command.SUBMIT, _I): _I,
    (Command.SUBMIT, _L): _L,
    (Command.SUBMIT, _U): _U,
    (Command.LOAD, None): _L,
    (Command.LOAD, _I): _L,
    (Command.LOAD, _L): _L,
    (Command.LOAD, _U): _L,
    (Command.START, None): _U,
    (Command.START, _I): _U,
    (Command.START, _L): _U,
    (Command.START, _U): _U,
    (Command.STOP, _L): _L,
    (Command.STOP, _U): _L,
    (Command.UNLOAD, _I): _I,
    (Command.UNLOAD, _L): _I,
    (Command.UNLOAD, _U): _I,
    (Command.DESTROY, _I): None,
    (Command.DESTROY, _L): None,
    (Command.DESTROY, _U): None,
}

# (current, desired) -> the agent's steps, in order; pairs not listed need nothing
CONVERGENCE_STEPS: Final[dict[tuple[JobState, JobState], tuple[Step, ...]]] = {
    (_I, _L): (Step.LOAD,),
    (_I, _U): (Step.LOAD, Step.START),
    (_L, _U): (Step.START,),
    (_U, _L): (Step.STOP,),
    (_L, _I): (Step.UNLOAD,),
    (_U, _I): (Step.STOP, Step.UNLOAD),
}


def apply_command(unit: str, command: Command, desired: JobState | None) -> JobState | None:
    """Return the desired state after `command`, or raise `InvalidTransition` naming the problem."""
    try:
        return COMMAND_TRANSITIONS[(command, desired)]
    except KeyError:
        where = "it does not exist" if desired is None else f"its desired state is {desired}"
        raise InvalidTransition(f"cannot {command} unit {unit}: {where}") from None


def steps_towards(current: JobState, desired: JobState) -> tuple[Step, ...]:
    """The agent's steps from `current` to `desired`; empty when they already agree."""
    return CONVERGENCE_STEPS.get((current, desired), ())
