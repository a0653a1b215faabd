"""One run per workspace: a second flow, stage or `dvc repro` beside a running one is refused with
the holder named, or waits with --wait; nothing is corrupted (tasks/_workspace.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks._workspace import WorkspaceBusy, holder, workspace_lock

HOLD = ("import sys, time\n"
        "from tasks._workspace import workspace_lock\n"
        "with workspace_lock('a test holder', hold_dvc=True):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(float(sys.argv[1]))\n"
        "    open('released', 'w').close()\n")


def start_holder(seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def wait_for_holder(proc: subprocess.Popen, needle: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        who = holder()
        if who and needle in who:
            return who
        assert proc.poll() is None, f"the run ended before it held the workspace: {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"no holder matching {needle!r} within {timeout} s")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=600)


def test_a_second_holder_is_refused_with_the_first_named_and_a_killed_holder_frees_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    first = start_holder(600)
    try:
        with pytest.raises(WorkspaceBusy) as refused, workspace_lock("a second run"):
            pass
        message = str(refused.value)
        assert f"pid {first.pid}" in message and "a test holder" in message and "--wait" in message
        assert "\n" not in message
        assert holder() is not None
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel alone releases the lock
        first.wait()
    assert holder() is None
    with workspace_lock("after the kill"):
        assert "after the kill" in holder()


def test_wait_queues_behind_the_holder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setattr("tasks._workspace.WAIT_POLL_S", 0.1)
    first = start_holder(2)
    with workspace_lock("a waiting run", wait=True):
        assert Path("released").exists()  # it got the lock only once the holder let go
    first.wait(timeout=30)
    assert "waiting for the workspace" in capsys.readouterr().err


@pytest.mark.slow
def test_two_flows_and_a_flow_beside_dvc_repro(tiny_project, tmp_path, set_params):
    """A flow runs; a second flow, a stage CLI and `dvc repro` are refused and change nothing;
    then a `dvc repro` runs and a flow started beside it is refused, or waits with --wait."""
    # A finetune of 40 epochs (no early stop) on top of the flow's start and first stages, so the runs
    # refused below start while one works.
    set_params(finetune={"epochs": 40, "patience": 40})
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "flows.training_pipeline"], stdout=log, stderr=log)
    wait_for_holder(first, "training-pipeline flow")

    second = run(sys.executable, "-m", "flows.training_pipeline")
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert f"pid {first.pid}" in second.stderr and "training-pipeline flow" in second.stderr
    stage = run(sys.executable, "-m", "tasks.prepare")
    assert stage.returncode == 2 and f"pid {first.pid}" in stage.stderr, stage.stderr
    repro = run("dvc", "repro")
    assert repro.returncode != 0 and "lock" in repro.stderr.lower(), repro.stdout + repro.stderr

    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert "up to date" in run("dvc", "status").stdout  # what the refused runs touched: nothing

    # The tiny finetune again: six stage processes are long enough to refuse a flow and queue one.
    set_params(finetune={"epochs": 5, "patience": 2})
    repro = subprocess.Popen(["dvc", "repro", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    wait_for_holder(repro, "stage ")
    beside = run(sys.executable, "-m", "flows.training_pipeline")
    assert beside.returncode == 2 and "in use by" in beside.stderr and "Traceback" not in beside.stderr
    waiting = subprocess.Popen([sys.executable, "-m", "flows.training_pipeline", "--wait"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert repro.wait(timeout=600) == 0, repro.stderr.read()
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, err[-3000:]
    assert "waiting for the workspace" in err
    assert "up to date" in run("dvc", "status").stdout
