"""The team's shared servers, one command each (docs/team.md):

    python -m team up        # PostgreSQL, MLflow and Prefect, detached; prints the environment
    python -m team down      # stops them; the data stays for the next `up` (--purge deletes it)
    python -m team status    # what runs where (exit status 0 when all three are up, else 3)
    eval "$(python -m team env)"   # points this shell, and the pipeline run from it, at them
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from mlcore.errors import UserError, entry_point
from team import stack
from team.settings import Settings, add_flags, recorded, resolve

COMMANDS = {
    "up": "Start PostgreSQL, the MLflow tracking server and the Prefect server (those not running yet), "
          "detached, wait until each answers, and print the environment that points clients at them.",
    "down": "Stop the three servers. Their data stays in the state directory for the next `up`.",
    "status": "Say which of the three runs, where, with its pid and log (exit status 0 when all are up, else 3).",
    "env": "Print the environment that points the pipeline at the servers, as export lines: "
           "eval \"$(python -m team env)\".",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m team", description=__doc__.split("\n\n")[0],
                                     epilog="Each flag also has a variable (shown in its help); a flag wins.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status,env}")
    for name, text in COMMANDS.items():
        command = commands.add_parser(name, help=text.split(". ")[0], description=text)
        add_flags(command, [f.name for f in dataclasses.fields(Settings)] if name == "up" else ["dir"])
        if name == "down":
            command.add_argument("--purge", action="store_true",
                                 help="also delete the state directory: the databases, logs and local artifacts")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = resolve(args, os.environ)
    if args.command == "up":
        print(stack.up(settings), end="", flush=True)
    elif args.command == "down":
        stack.down(settings.dir, purge=args.purge)
    elif args.command == "status":
        return stack.status(settings.dir)
    else:
        if (started := recorded(settings.dir)) is None:
            raise UserError(stack.NOT_STARTED.format(dir=settings.dir))
        print(stack.export_lines(started), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
