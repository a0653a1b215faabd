"""User errors: one paragraph naming the file/key/column, non-zero exit, no traceback."""
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT

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


def test_a_stage_section_missing_from_the_params_file_is_named_before_dvc_refuses_it(tiny_project):
    import yaml

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    del params["distill"]  # a params.yaml written before the distill stage existed
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    assert_clean_error(run("flows.training_pipeline"), "no distill section", "`distill: {enabled: false}`")
    assert not (tiny_project / "data" / "processed").exists()


def test_a_store_mlflow_cannot_use_stops_every_command_at_start(tiny_project, set_params, monkeypatch):
    bad = "ftp://example.invalid/x"
    set_params(tracking={"mlflow_uri": bad})
    assert_clean_error(run("flows.training_pipeline"), "tracking.mlflow_uri", f"(got '{bad}')", "scheme 'ftp'")
    assert not (tiny_project / "data" / "processed").exists()
    set_params(tracking={"mlflow_uri": None})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bad)
    assert_clean_error(run("flows.training_pipeline"), "[tracking.mlflow_uri is from $MLFLOW_TRACKING_URI]")
    assert_clean_error(run("mlcore.tracking.serving", "--check"), "[tracking.mlflow_uri is from $MLFLOW_TRACKING_URI]")
    # batch scoring reads no params file: the variable itself is named
    assert_clean_error(run("flows.batch_predict", "--model", "models:/m@champion", "--input", "data/raw/reviews.csv",
                           "--output", "scored.parquet"), f"$MLFLOW_TRACKING_URI is '{bad}'", "scheme 'ftp'")


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


def test_make_run_with_broken_params_shows_the_yaml_error(tiny_project):
    """make run starts with make data, whose DVC step used to fail first with only 'Error 1'."""
    for name in ("Makefile", "constraints.txt", "pyproject.toml"):  # the venv's stamp stays newer
        shutil.copy2(ROOT / name, tiny_project / name)
    (tiny_project / ".venv").symlink_to(ROOT / ".venv")
    with open("params.yaml", "a") as params:
        params.write("search: [unclosed\n")
    proc = subprocess.run(["make", "run"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "params.yaml: not valid YAML" in proc.stderr and "line" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tiny_project / "data" / "processed").exists()
