"""Orchestration overhead: what a run costs beyond its stages' own compute.

Run in a project after a complete run (`make run`), so that every stage is up to date:

    .venv/bin/python bench/overhead.py              # the no-op figures, 3 repeats each (about 1 min)
    .venv/bin/python bench/overhead.py --full       # also one forced full run, split into stage
                                                    # compute and everything else (minutes)

Prints one JSON object on its last line. Each figure is the median wall time of a fresh process,
measured side by side in this run, next to its goal (the anchor):
- noop_flow_s: `python -m flows.training_pipeline` with nothing to do (goal <= 10 s). It asks DVC
  once and returns without starting Prefect;
- noop_flow_prefect_s: the flow itself with nothing to do, as a deployment runs it (Prefect's
  server, a pipeline MLflow run, six skipped tasks): what the CLI's shortcut saves;
- noop_dvc_repro_s: `dvc repro` with nothing to do (goal <= 3 s);
- noop_make_run_s: `make run` with nothing to do (params check, data check, dvc add, the flow, dvc push);
- import_s: importing the flow module (torch, transformers, Prefect, MLflow, DVC);
- with --full: full_wall_s, stage_compute_s (the stages' own timers) and orchestration_pct
  (everything else: imports, Prefect, MLflow runs, DVC hashing and commits; goal <= 5%).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"noop_flow_s": 10.0, "noop_dvc_repro_s": 3.0, "orchestration_pct": 5.0}
PY = sys.executable
FULL_RUN = """
import json, sys, time
t0 = time.perf_counter()
from flows.training_flow import training_pipeline
from mlcore.config import load_config
from flows.summary import check_inputs
imported = time.perf_counter() - t0
check_inputs(load_config("params.yaml"))
results = training_pipeline("params.yaml", force=True)
wall = time.perf_counter() - t0
stages = {name: r.get("seconds", 0.0) for name, r in results.items()}
print("RESULT " + json.dumps({"wall": wall, "imported": imported, "stages": stages}))
"""


def timed(cmd: list[str], project: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def median_of(cmd: list[str], project: Path, env: dict, repeats: int) -> float:
    return round(statistics.median(timed(cmd, project, env) for _ in range(repeats)), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("."), help="a project after a complete run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also time one forced full run (reruns every stage)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "TQDM_DISABLE": "1"}
    bindir = str(Path(PY).parent)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    status = subprocess.run(["dvc", "status", "--quiet"], cwd=project, env=env).returncode
    if status != 0:
        print(f"{project}: not up to date (dvc status); run the pipeline first (make run)", file=sys.stderr)
        return 2
    result: dict = {"project": project.name, "repeats": args.repeats, "goals": GOALS}
    result["import_s"] = median_of([PY, "-c", "import flows.training_flow"], project, env, args.repeats)
    result["noop_dvc_repro_s"] = median_of(["dvc", "repro"], project, env, args.repeats)
    result["noop_flow_s"] = median_of([PY, "-m", "flows.training_pipeline"], project, env, args.repeats)
    result["noop_flow_prefect_s"] = median_of(
        [PY, "-c", "from flows.training_flow import training_pipeline; training_pipeline()"],
        project, env, args.repeats)
    if (project / "Makefile").exists():
        result["noop_make_run_s"] = median_of(["make", "--no-print-directory", "run"], project, env, args.repeats)
    if args.full:
        proc = subprocess.run([PY, "-c", FULL_RUN], cwd=project, env=env, capture_output=True, text=True)
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"the full run failed:\n{proc.stderr[-3000:]}")
        full = json.loads(line.removeprefix("RESULT "))
        compute = sum(full["stages"].values())
        result |= {"full_wall_s": round(full["wall"], 1), "full_import_s": round(full["imported"], 1),
                   "stage_s": {k: round(v, 1) for k, v in full["stages"].items()},
                   "stage_compute_s": round(compute, 1), "orchestration_s": round(full["wall"] - compute, 1),
                   "orchestration_pct": round(100 * (full["wall"] - compute) / full["wall"], 2)}
    result["met"] = {key: result[key] <= goal for key, goal in GOALS.items() if key in result}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
