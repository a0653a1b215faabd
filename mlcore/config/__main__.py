"""python -m mlcore.config: print every key's default and help, or check a params file."""
from __future__ import annotations

import argparse
import sys

from mlcore.config.defaults import render_defaults
from mlcore.config.loading import load_config
from mlcore.config.overrides import MARKER, undocumented_overrides
from mlcore.errors import entry_point


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.config",
        description="The pipeline's configuration: every params.yaml key with its default and help.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--defaults", action="store_true",
                      help="print a commented params.yaml with every key, its default and its help (valid YAML)")
    what.add_argument("--check", metavar="PARAMS", nargs="?", const="params.yaml",
                      help=f"list the keys of PARAMS (default: params.yaml) set to a value other than their "
                           f"default without a trailing `# {MARKER} <why>`; exit status 1 if any")
    what.add_argument("--validate", metavar="PARAMS", nargs="?", const="params.yaml",
                      help="load and validate PARAMS (default: params.yaml) as every command does; "
                           "exit status 2 with the problem if it is invalid (`make data` runs this first)")
    args = parser.parse_args(argv)
    if args.validate:
        load_config(args.validate)
        return 0
    if args.defaults:
        sys.stdout.write(render_defaults())
        return 0
    problems = undocumented_overrides(args.check)
    for line in problems:
        print(f"{args.check}: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
