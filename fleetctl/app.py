"""fleetctl's entry point.

The commands that talk to the API arrive with the API issue; until then `version` and
`help` answer as fleet's do, and anything else exits non-zero with a message.
"""

from __future__ import annotations

import sys

from fleetd import __version__

USAGE = """\
fleetctl - pyfleet's command-line client (fleet v1 API)

Usage: fleetctl <command> [options]

Commands:
  version   print the version and exit
  help      show this help
"""


def main(argv: list[str] | None = None) -> int:
    """Run one fleetctl command and return its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"help", "-h", "--help"}:
        sys.stdout.write(f"{USAGE}\nfleetctl version {__version__}\n")
        return 0
    if args[0] in {"version", "--version", "-v"}:
        sys.stdout.write(f"fleetctl version {__version__}\n")
        return 0
    sys.stderr.write(f'Error: unknown command "{args[0]}" for "fleetctl"\n')
    return 1


if __name__ == "__main__":
    sys.exit(main())
