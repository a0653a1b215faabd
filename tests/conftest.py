"""Shared fixtures: tiny generated data, tiny configs, and a temporary copy of the project.

Nothing here needs the network or ../shared.
"""
from __future__ import annotations

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks._context import stage_context
from tests.servers import seed_prefect_home

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from test servers
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Each worker's share of the cores for torch's (OpenMP) threads, in this worker and, through the
    # environment, in every stage, flow and DVC subprocess its tests start. torch's default, one thread
    # per core in every worker, oversubscribes the cores: OpenMP threads spin waiting for a core another
    # worker holds. Measured on 2 cores, 2 workers: test_engine, test_training, test_transfer,
    # test_checkpoints and test_vision took 171 s and 180 s with the default, 68 s and 49 s with this.
    import torch

    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("OMP_NUM_THREADS", _threads)
    os.environ.setdefault("MKL_NUM_THREADS", _threads)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # this worker's torch is imported already
# A Prefect home (and so an ephemeral-server database) per test process, made before Prefect is
# imported: the suite runs in parallel workers (pytest-xdist), and two flows' temporary servers
# migrating and writing one SQLite file at once fail with "database is locked".
if "PREFECT_HOME" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"prefect-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
    os.environ["TEST_OWN_PREFECT_HOME"] = os.environ["PREFECT_HOME"]  # tiny_project gives it a migrated database

POSITIVE = ["great", "wonderful", "superb", "delightful", "moving", "brilliant", "charming", "masterful"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "mess", "tedious", "clumsy", "lifeless"]
FILLER = ["the", "film", "story", "actors", "plot", "this", "movie", "is", "a", "and", "with", "scenes",
          "director", "script", "ending", "music", "its", "cast", "was", "really", "quite", "truly"]


def make_reviews(n: int = 400, n_movies: int = 40, n_plots: int = 30, seed: int = 0) -> pd.DataFrame:
    """Separable sentiment data: each review carries two words of its class among filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "fresh" if i % 2 == 0 else "rotten"
        words = rng.sample(FILLER, 6) + rng.sample(POSITIVE if label == "fresh" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"category": label, "text": " ".join(words) + f" {i}",
                     "movie_name": f"movie {rng.randrange(n_movies)}"})
    for j in range(n_plots):
        rows.append({"category": "plot", "text": " ".join(rng.choices(FILLER + POSITIVE + NEGATIVE, k=30)),
                     "movie_name": f"movie {j % n_movies}"})
    return pd.DataFrame(rows)


def tiny_params(data_path: str) -> dict:
    """A config small enough for stage and end-to-end tests on a 2-core CPU."""
    return {
        "prepare": {"input": data_path, "text_column": "text", "label_column": "category",
                    "group_column": "movie_name", "unlabelled_labels": ["plot"],
                    "val_fraction": 0.15, "test_fraction": 0.15},
        # init_from None: a tiny BERT from scratch (the model default continues all-MiniLM-L6-v2)
        "pretrain": {"init_from": None, "vocab_size": 200, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                     "intermediate_size": 64, "max_length": 32, "epochs": 1, "batch_size": 16,
                     "learning_rate": 5e-4},
        "search": {"n_trials": 2, "epochs": 2, "lr_min": 0.002, "lr_max": 0.01, "optimizers": ["adam", "adamw"],
                   "batch_size": 16, "max_length": 32},
        "finetune": {"epochs": 5, "patience": 2, "batch_size": 16, "max_length": 32},
        "distill": {"enabled": False},
        "evaluate": {"batch_size": 64},
        "register": {"model_name": "tiny-sentiment", "metric": "macro_f1", "min_delta": 0.0},
        "runtime": {"device": "cpu"},
        "tracking": {"experiment": "tests"},
    }


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def set_params(**sections: dict) -> dict:
    """Deep-merge each section's dict into ./params.yaml (the tiny project's, once `tiny_project`
    has changed into it), write it back and return the new params.
    `set_params(search={"n_trials": 3})` changes one key and keeps the rest of `search`."""
    path = Path("params.yaml")
    params = _merge(yaml.safe_load(path.read_text()) or {}, sections)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


PROJECT_FILES = ["mlcore", "tasks", "flows", "dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"]


def copy_project(dest: Path) -> Path:
    """A temporary copy of the project's code with its own git and DVC repositories."""
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    from mlcore.models import checkpoint_link

    checkpoint_link.refresh(None, root=dest)  # pretrain's DVC dependency exists before any `dvc repro`
    (dest / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copy2(ROOT / ".dvc" / ".gitignore", dest / ".dvc" / ".gitignore")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=dest, check=True)
    return dest


@pytest.fixture(autouse=True)
def _no_leftover_mlflow_uri():
    """mlflow.set_tracking_uri is global to the process and also writes $MLFLOW_TRACKING_URI: without
    this, a test that calls it points the later tests of its worker process at its (deleted) store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)  # no URI set in the process, and the variable unset
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """Project copy with tiny data and params, cwd set to it, MLflow in a temp SQLite file."""
    project = copy_project(tmp_path / "project")
    (project / "data" / "raw").mkdir(parents=True)
    make_reviews().to_csv(project / "data" / "raw" / "reviews.csv", index=False)
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params("data/raw/reviews.csv"), sort_keys=False))
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if os.environ["PREFECT_HOME"] == os.environ.get("TEST_OWN_PREFECT_HOME"):
        seed_prefect_home(Path(os.environ["PREFECT_HOME"]))  # a flow's ephemeral server starts without migrating
    return project


def write_digits(folder: Path, n: int = 600) -> None:
    """scikit-learn's 8x8 digits as grey PNGs in one folder per class (the ImageFolder layout)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images[:n], digits.target[:n], strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(folder / str(label) / f"{i}.png")


def image_params(data_path: str) -> dict:
    """The image pipeline, small enough for a 2-core CPU: a ResNet from scratch at 16 px."""
    return {
        "prepare": {"input": data_path, "group_column": None, "val_fraction": 0.15, "test_fraction": 0.15},
        "pretrain": {"init_from": None, "input_size": 16},
        "search": {"n_trials": 2, "epochs": 1, "max_train_rows": 300, "batch_size": 32, "lr_min": 0.002,
                   "lr_max": 0.01},
        "finetune": {"epochs": 3, "batch_size": 32, "augment": 0.3, "augment_flip": False},
        "distill": {"enabled": False},
        "evaluate": {"batch_size": 64},
        "register": {"model_name": "tiny-digits"},
        "runtime": {"device": "cpu"},
        "tracking": {"experiment": "tests"},
    }


@pytest.fixture
def image_project(tiny_project):
    """The tiny project with 600 of scikit-learn's digits as its data instead of reviews."""
    write_digits(tiny_project / "data" / "raw" / "digits")
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(image_params("data/raw/digits"), sort_keys=False))
    return tiny_project


@pytest.fixture(name="set_params")
def set_params_fixture(tiny_project):
    """`set_params(**sections)` on the tiny project's params.yaml (see the function above)."""
    return set_params


TINY_BERT = dict(vocab_size=200, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=32)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A WordPiece tokenizer (vocabulary 200, max_length 32) trained on `make_reviews(n=300)` and the
    words tests/ddp_worker.py uses. Shared by the session: use it, never change it."""
    from mlcore.models.wordpiece import train_wordpiece

    return train_wordpiece(make_reviews(n=300)["text"].tolist() + ["text number word"], vocab_size=200, max_length=32)


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_tokenizer, tmp_path_factory):
    """A saved, seeded 2-layer BERT MLM checkpoint (TINY_BERT) with `tiny_tokenizer`: a base to load
    classifiers from. Shared by the session: read it, never write into it."""
    import torch

    from mlcore.config import PretrainConfig
    from mlcore.models import modeling

    path = tmp_path_factory.mktemp("tiny_base")
    torch.manual_seed(0)
    model = modeling.new_mlm_model(PretrainConfig(**TINY_BERT), len(tiny_tokenizer), tiny_tokenizer.pad_token_id)
    modeling.save(model, tiny_tokenizer, path)
    return path


def run_two_worker_search(storage: str | None = None, in_flow: bool = False):
    """prepare, pretrain, then a 4-trial search with `search.workers: 2`; returns the study
    (and, with `in_flow`, the id of the Prefect flow run the search ran in)."""
    import json

    import optuna

    from mlcore.config import load_config
    from mlcore.search import studies
    from tasks import _paths as P
    from tasks import prepare, pretrain, search

    # Trials of several seconds: the second process needs ~10 s to import and load before it joins.
    set_params(search=dict(n_trials=4, workers=2, pruner="none", epochs=10, batch_size=2, storage=storage))
    cfg = load_config()
    prepare.run(stage_context(cfg))
    pretrain.run(stage_context(cfg))
    flow_run_id = None
    if in_flow:
        from prefect import flow
        from prefect.context import FlowRunContext

        @flow(name="search-in-a-flow")
        def searching():
            search.run(stage_context(cfg))
            return FlowRunContext.get().flow_run.id

        flow_run_id = searching()
    else:
        search.run(stage_context(cfg))
    name = json.loads(P.BEST_PARAMS.read_text())["study"]
    study = optuna.load_study(
        study_name=name, storage=studies.make_storage(storage, P.OPTUNA_DIR, cfg.search.study_name))
    return (study, flow_run_id) if in_flow else study


def assert_two_workers_filled_the_budget(study) -> None:
    """4 trials, all COMPLETE, numbered 0-3, run by two processes, no parameters twice."""
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert len({t.user_attrs["owner"]["pid"] for t in study.trials}) == 2  # both processes ran trials
    # seeds differ per worker
    assert len({(t.params["optimizer"], t.params["learning_rate"]) for t in study.trials}) == 4
