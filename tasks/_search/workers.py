"""Extra search workers on this machine: `search.workers: N` runs N-1 of these beside the
search stage's own loop. Each is a process with cores/N threads that claims trials of
the same study (JournalFile or PostgreSQL storage) until the budget is taken, and
nests its trial runs under the search stage's MLflow run.

On another machine, the same worker joins a PostgreSQL study (see docs/search.md):
    python -m tasks._search.workers CONFIG_JSON WORKER_NUMBER [PARENT_RUN_ID]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mlcore.config import Config, parse_config
from mlcore.errors import UserError


def start(cfg: Config, n: int, parent_run_id: str | None) -> list[subprocess.Popen]:
    if n < 1:
        return []
    frozen = Path(tempfile.mkdtemp(prefix="search-worker-")) / "config.json"
    frozen.write_text(json.dumps(cfg.model_dump()))  # the exact, validated config of this run
    cmd = [sys.executable, "-m", "tasks._search.workers", str(frozen)]
    return [subprocess.Popen(cmd + [str(i)] + ([parent_run_id] if parent_run_id else [])) for i in range(1, n + 1)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def wait(procs: list[subprocess.Popen]) -> None:
    failed = [p.wait() for p in procs]
    if any(failed):
        raise UserError(f"search: {sum(1 for c in failed if c)} of {len(procs)} extra worker(s) failed "
                        f"(exit codes {failed}); their trials are marked FAIL. See their output above.")


def main(argv: list[str]) -> int:
    from mlcore.search import claims
    from tasks._process import exit_on_sigterm
    from tasks._search import trials

    exit_on_sigterm()  # the stage or the scheduler stopping: the current trial ends as FAIL
    cfg = parse_config(json.loads(Path(argv[0]).read_text()), argv[0])
    worker = int(argv[1]) if len(argv) > 1 else 1
    parent = argv[2] if len(argv) > 2 else None
    handle, objective = trials.start_worker(cfg, worker, parent)
    ran = claims.run_trials(handle, cfg.search.n_trials, trials.claim_lock(handle.study.study_name),
                            claims.run_here(handle, objective))
    print(f"search worker: {ran} trial(s) run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
