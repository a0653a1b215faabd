"""python -m mlcore.config: print every key's default and help, check a params file, or print one key."""
from __future__ import annotations

import argparse
import json
import sys

from mlcore.config.defaults import render_defaults
from mlcore.config.loading import ConfigError, load_config
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
    what.add_argument("--get", metavar="KEY",
                      help="print KEY's value (dotted, e.g. register.model_name) from the validated --params, "
                           "environment overrides applied: a string as it is, anything else as JSON (null, 3, [..])")
    parser.add_argument("--params", default="params.yaml", help="the params file --get reads (default: params.yaml)")
    args = parser.parse_args(argv)
    if args.get:
        print(get_value(args.params, args.get))
        return 0
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


def get_value(params: str, key: str) -> str:
    """KEY's value, for a shell script (a string as it is, anything else as JSON)."""
    value = load_config(params).model_dump(mode="json")
    for i, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(key.split(".")[:i]) or "the top level"
            has = f"has no {part!r} (its keys: {', '.join(value)})" if isinstance(value, dict) else "is a value"
            raise ConfigError(f"{params}: no key {key!r}: {where} {has}. "
                              f"`python -m mlcore.config --defaults` lists every key.")
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value)


if __name__ == "__main__":
    sys.exit(main())
