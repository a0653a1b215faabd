"""How every process of the pipeline stops: SIGTERM unwinds like an exception."""
from __future__ import annotations

import signal
import sys


def exit_on_sigterm() -> None:
    """`kill`, a scheduler, a cancelled deployment or a stopping search stage sends SIGTERM,
    which by default ends Python without unwinding. As SystemExit it unwinds, so open
    MLflow runs close as FAILED and a running Optuna trial is told FAIL, never left RUNNING."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
