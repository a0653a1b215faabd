"""python -m tasks STAGE [--params params.yaml] [--wait]: run one stage by hand, as `dvc repro` runs it.

The same as `python -m tasks.STAGE` (the command dvc.yaml holds); only that stage's module is imported.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mlcore.config import STAGES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks", description=__doc__.split("\n\n")[0],
                                     epilog="`python -m tasks STAGE --help` lists a stage's options.")
    parser.add_argument("stage", metavar="STAGE", choices=STAGES,
                        help=f"one of, in pipeline order: {', '.join(STAGES)}")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the stage's own options")
    args = parser.parse_args(argv)
    return importlib.import_module(f"tasks.{args.stage}").main(args.options)


if __name__ == "__main__":
    sys.exit(main())
