"""A stage stopped from outside (SIGTERM) closes its MLflow runs as FAILED, never leaves them RUNNING."""
import signal
import subprocess
import sys
import time

import yaml
from mlflow import MlflowClient

from mlcore.config import load_config


def test_sigterm_during_search_marks_runs_failed(tiny_project):
    from tasks import prepare, pretrain

    cfg = load_config()
    prepare.run(cfg)
    pretrain.run(cfg)
    params = yaml.safe_load(open("params.yaml"))
    params["search"].update(n_trials=2, epochs=500)  # trial 0 alone runs for minutes
    yaml.safe_dump(params, open("params.yaml", "w"))

    proc = subprocess.Popen([sys.executable, "-m", "tasks.search"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = MlflowClient()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("tests")
            filter_ = "attributes.status = 'RUNNING' and attributes.run_name = 'trial-0'"
            if exp and client.search_runs([exp.experiment_id], filter_):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM

    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id])}
    assert statuses["search"] == "FAILED" and statuses["trial-0"] == "FAILED"
    assert "RUNNING" not in statuses.values(), statuses
