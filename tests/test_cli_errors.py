"""User errors: one paragraph naming the file/key/column, non-zero exit, no traceback."""
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # each test starts Python subprocesses that import the pipeline


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_key_stops_before_any_work(tiny_project, set_params):
    set_params(finetune={"epoch": 3})
    proc = run("flows.training_pipeline")
    assert_clean_error(proc, "finetune.epoch", "params.yaml")
    assert not (tiny_project / "data" / "processed").exists()


def test_missing_data_file(tiny_project, set_params):
    set_params(prepare={"input": "data/raw/nope.csv"})
    assert_clean_error(run("flows.training_pipeline"), "data/raw/nope.csv", "not found")
    assert_clean_error(run("tasks.prepare"), "data/raw/nope.csv")


def test_missing_column(tiny_project, set_params):
    set_params(prepare={"text_column": "review"})
    assert_clean_error(run("flows.training_pipeline"), "'review'", "prepare.text_column")


def test_missing_checkpoint(tiny_project, set_params):
    set_params(pretrain={"init_from": "models/does-not-exist"})
    assert_clean_error(run("flows.training_pipeline"), "models/does-not-exist", "pretrain.init_from")


def test_bad_data_found_inside_the_flow_has_no_traceback(tiny_project):
    data = pd.read_csv("data/raw/reviews.csv").assign(category="fresh")
    data.to_csv("data/raw/reviews.csv", index=False)  # one class: prepare cannot split it
    proc = run("flows.training_pipeline")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "at least 2" in proc.stderr and "prepare.label_column" in proc.stderr
    assert "data/raw/reviews.csv (label column 'category')" in proc.stderr


def test_stage_before_its_inputs_exist(tiny_project):
    assert_clean_error(run("tasks.finetune"), "data/processed/prepare/label_map.json", "prepare")


def test_help_works():
    for module in ("flows.training_pipeline", "tasks.search", "flows.deploy", "mlcore.data.sample"):
        proc = run(module, "--help")
        assert proc.returncode == 0 and "usage" in proc.stdout.lower()
