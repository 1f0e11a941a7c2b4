"""fleetctl's entry point (the `fleetctl` script).

`fleetctl fd-forward PATH`, exactly as every tunnelled connection runs it on the node, goes
straight to the standard-library relay (`fleetctl.relay`): it starts in a fraction of the time
the CLI takes to import. Every other command line, other spellings of fd-forward included, goes
to the CLI (`fleetctl.app.main`).
"""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "fd-forward" and args[1].startswith("/"):
        from fleetctl.relay import forward  # noqa: PLC0415 - the point: nothing else loads

        return forward(args[1])
    # httpx imports its own command line tool (click, rich, pygments) whenever they are
    # installed, as they are here for typer: about 60 ms of every fleetctl start. A None entry
    # in sys.modules makes that import fail, and httpx then goes without its tool.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from fleetctl.app import main as cli  # noqa: PLC0415 - loaded only when needed

    return cli()


if __name__ == "__main__":
    sys.exit(main())
