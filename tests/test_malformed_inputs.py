"""Every malformed input a user can give (data files, params, checkpoints) ends as one clear
error: exit code 2, no traceback, the culprit named, and nothing saved is touched: not the
registry, not dvc.lock, not one byte of the stage outputs. Each case runs through both
drivers: the flow (`make run`) and the stage command that `dvc repro` runs.

The project is run once, for real, before the cases, so that there is something to lose.
Every case calls the two commands' main() in this process (a second each); one case of each
kind (AS_PROCESSES) also runs them as real processes (about 12 s a case), as a user would."""
from __future__ import annotations

import bz2
import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_project, make_reviews, tiny_params

pytestmark = pytest.mark.slow

BAD = Path("bad")  # where the cases put their files, inside the project
NOISE = random.Random(0).randbytes(4000)
OUTPUTS = ["dvc.lock", "data/processed", "models", "reports"]


@dataclass
class Case:
    name: str
    setup: Callable[[Path], dict]  # writes the case's files; returns the params changes
    needles: list[str]
    stage: str = "prepare"  # the stage command that meets the problem under `dvc repro`
    permissions: bool = False  # made by file modes, which root bypasses: run as processes without that power


def csv_text(df: pd.DataFrame | None = None) -> str:
    return (make_reviews() if df is None else df).to_csv(index=False)


def data_file(name: str, content: bytes | str | Callable[[], bytes | str], **prepare) -> Callable[[Path], dict]:
    def setup(project: Path) -> dict:
        body = content() if callable(content) else content
        path = project / BAD / name
        path.write_bytes(body.encode() if isinstance(body, str) else body)
        return {"prepare": {"input": str(BAD / name), **prepare}}
    return setup


def reviews(**changes) -> Callable[[], str]:
    def make() -> str:
        df = make_reviews()
        for column, value in changes.items():
            df[column] = value(df) if callable(value) else value
        return csv_text(df)
    return make


def params_text(text: bytes | str) -> Callable[[Path], dict]:
    def setup(project: Path) -> dict:
        path = project / "params.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return {}
    return setup


def params_change(**sections) -> Callable[[Path], dict]:
    return lambda project: sections


def checkpoint(files: dict[str, bytes | str | Callable[[Path], None]] | None) -> Callable[[Path], dict]:
    def setup(project: Path) -> dict:
        ckpt = project / BAD / "ckpt"
        ckpt.mkdir()
        for name, body in (files or {}).items():
            if callable(body):
                body(ckpt / name)
            else:
                (ckpt / name).write_bytes(body.encode() if isinstance(body, str) else body)
        return {"pretrain": {"init_from": str(BAD / "ckpt")}}
    return setup


def link(name: str, to: str, **prepare) -> Callable[[Path], dict]:
    """bad/<name> as a symbolic link to `to` (relative to bad/), named by prepare.input."""
    def setup(project: Path) -> dict:
        (project / BAD / name).symlink_to(to)
        return {"prepare": {"input": str(BAD / name), **prepare}}
    return setup


def closed(setup: Callable[[Path], dict], path: str) -> Callable[[Path], dict]:
    """The setup, then bad/<path> with mode 000: no one but root may read, list or enter it."""
    def closing(project: Path) -> dict:
        changes = setup(project)
        (project / BAD / path).chmod(0)
        return changes
    return closing


def checkpoint_link(to: str | None) -> Callable[[Path], dict]:
    """bad/ckpt, named by pretrain.init_from, as a symbolic link to `to`, or with None a file."""
    def setup(project: Path) -> dict:
        if to is None:
            (project / BAD / "ckpt").write_text(BERT_CONFIG)
        else:
            (project / BAD / "ckpt").symlink_to(to)
        return {"pretrain": {"init_from": str(BAD / "ckpt")}}
    return setup


def truncated_safetensors(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(4096)}, str(path))
    path.write_bytes(path.read_bytes()[:6000])


def gpt2_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(8)}, str(path))


BERT_CONFIG = json.dumps({"model_type": "bert", "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1,
                          "num_attention_heads": 1, "intermediate_size": 8})
def png(colour: int = 128) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_files(files: dict[str, bytes | None], **prepare) -> Callable[[Path], dict]:
    """Files under bad/imgs/ (None: an empty folder); prepare.input the folder, or a table in it."""
    def setup(project: Path) -> dict:
        for name, body in files.items():
            path = project / BAD / "imgs" / name
            if body is None:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        return {"prepare": {"input": str(BAD / "imgs"), "group_column": None, **prepare}}
    return setup


IDX_HEADER = (0x0803).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
IDX_LABELS = (0x0801).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes(10)
PATH_TABLE = "image,label\n" + "".join(f"{c}{i}.png,{c}\n" for c in "ab" for i in range(6))

CASES = [
    # images: the same boundary as text
    Case("image_idx_header_disagrees", image_files({"train-images-idx3-ubyte": IDX_HEADER + bytes(100),
                                                    "train-labels-idx1-ubyte": IDX_LABELS}),
         ["bad/imgs/train-images-idx3-ubyte"]),
    Case("image_class_folder_empty", image_files({"a/1.png": png(), "a/2.png": png(9), "b": None}),
         ["bad/imgs/b", "holds no image files"]),
    Case("image_class_all_unreadable", image_files({**{f"a/{i}.png": png(i) for i in range(6)},
                                                    "b/1.png": NOISE, "b/2.png": png()[:40]}),
         ["bad/imgs/b"]),
    Case("image_table_paths_nowhere", image_files({"list.csv": PATH_TABLE.encode()}, input="bad/imgs/list.csv",
                                                  label_column="label"),
         ["bad/imgs/list.csv", "a0.png"]),
    # data files: compression, encodings, formats
    Case("truncated_bz2", data_file("r.csv.bz2", lambda: bz2.compress(csv_text().encode())[:3000]),
         ["bad/r.csv.bz2", "truncated"]),
    Case("gzip_garbage", data_file("r.csv.gz", b"\x1f\x8b" + NOISE), ["bad/r.csv.gz"]),
    Case("xz_not_compressed", data_file("r.csv.xz", csv_text), ["bad/r.csv.xz"]),
    Case("zip_corrupt", data_file("r.csv.zip", b"PK\x03\x04" + NOISE), ["bad/r.csv.zip"]),
    Case("zstd_garbage", data_file("r.csv.zst", NOISE), ["bad/r.csv.zst"]),
    Case("latin1_encoding", data_file("r.csv", lambda: csv_text().replace("film", "café").encode("latin-1")),
         ["bad/r.csv", "utf-8", "offset"]),
    Case("utf16_encoding", data_file("r.csv", lambda: csv_text().encode("utf-16")), ["bad/r.csv"]),
    Case("binary_noise", data_file("r.csv", NOISE), ["bad/r.csv"]),
    Case("parquet_not_parquet", data_file("r.parquet", csv_text), ["bad/r.parquet"]),
    Case("jsonl_broken_line", data_file("r.jsonl", lambda: make_reviews().to_json(orient="records", lines=True)
                                        + '{"text": oops\n'), ["bad/r.jsonl"]),
    Case("unknown_extension", data_file("r.txt", csv_text), ["bad/r.txt", "prepare.format"]),
    # empty, tiny and ragged files
    Case("empty_file", data_file("r.csv", b""), ["bad/r.csv"]),
    Case("header_only", data_file("r.csv", "text,category,movie_name\n"), ["bad/r.csv", "no data rows"]),
    Case("too_small_to_split", data_file("r.csv", lambda: csv_text(make_reviews().head(8))),
         ["bad/r.csv", "too few to split"]),
    Case("ragged_rows", data_file("r.csv", lambda: csv_text() + "a,b,c,d,e\n"), ["bad/r.csv", "fields"]),
    # wrong columns and column types
    Case("missing_column", data_file("r.csv", csv_text, label_column="sentiment"),
         ["'sentiment'", "prepare.label_column"]),
    Case("numbers_as_text", data_file("r.csv", reviews(text=lambda df: [str(i) for i in range(len(df))])),
         ["bad/r.csv", "only numbers"]),
    Case("nested_text_jsonl", data_file("r.jsonl", lambda: make_reviews().assign(
        text=lambda df: [{"body": t} for t in df["text"]]).to_json(orient="records", lines=True)),
         ["bad/r.jsonl", "prepare.text_column", "dict"]),
    Case("all_texts_empty", data_file("r.csv", reviews(text="   ")), ["bad/r.csv", "no labelled rows"]),
    # labels: missing, single, rare
    Case("labels_missing", data_file("r.csv", reviews(category="")), ["bad/r.csv", "label"]),
    Case("single_label", data_file("r.csv", reviews(category="fresh")), ["bad/r.csv", "at least 2"]),
    Case("rare_label", data_file("r.csv", reviews(category=lambda df: ["meh"] * 2 + list(df["category"][2:]))),
         ["bad/r.csv", "'meh'", "fewer than 3"]),
    # not a file
    Case("input_is_a_directory", lambda project: (project / BAD / "dir.csv").mkdir()
         or {"prepare": {"input": "bad/dir.csv"}}, ["bad/dir.csv", "is a directory"]),
    Case("input_missing", params_change(prepare={"input": "bad/nope.csv"}), ["bad/nope.csv", "not found"]),
    # paths the operating system refuses: DVC's status hashes prepare.input before any reader runs
    Case("input_broken_link", link("r.csv", "gone.csv"), ["bad/r.csv", "broken link", "prepare.input"]),
    Case("input_link_loop", link("r.csv", "r.csv"), ["bad/r.csv", "loop of symbolic links", "prepare.input"]),
    Case("input_under_a_file", data_file("r.csv", csv_text, input="bad/r.csv/rows.csv"),
         ["bad/r.csv/rows.csv", "not a directory", "prepare.input"]),
    Case("input_unreadable", closed(data_file("r.csv", csv_text), "r.csv"),
         ["bad/r.csv", "permission denied", "prepare.input"], permissions=True),
    Case("input_folder_closed", closed(lambda project: (project / BAD / "in").mkdir() or data_file(
        "in/r.csv", csv_text)(project), "in"), ["bad/in/r.csv", "permission denied"], permissions=True),
    # params.yaml
    Case("yaml_syntax_error", params_text("prepare:\n  input: [unclosed\n"), ["params.yaml", "not valid YAML"]),
    Case("yaml_not_a_mapping", params_text("- prepare\n- search\n"), ["params.yaml", "mapping"]),
    Case("params_not_utf8", params_text(b"prepare:\n  input: \xff\xfe\n"), ["params.yaml", "utf-8"]),
    Case("params_is_a_directory", lambda project: (project / "params.yaml").unlink()
         or (project / "params.yaml").mkdir() or {}, ["params.yaml", "is a directory"]),
    Case("params_link_loop", lambda project: (project / "params.yaml").unlink()
         or (project / "params.yaml").symlink_to("params.yaml") or {}, ["params.yaml", "loop of symbolic links"]),
    Case("wrong_type", params_change(search={"n_trials": "many"}), ["search.n_trials", "integer"]),
    Case("impossible_fraction", params_change(prepare={"val_fraction": 1.5}), ["prepare.val_fraction"]),
    Case("lr_range_reversed", params_change(search={"lr_min": 0.1, "lr_max": 0.01}), ["search", "lr_min"]),
    Case("negative_epochs", params_change(finetune={"epochs": -1}), ["finetune.epochs"]),
    Case("unknown_key", params_change(finetune={"epoch": 3}), ["finetune.epoch", "unknown key"]),
    # checkpoints (pretrain.init_from)
    Case("checkpoint_missing", params_change(pretrain={"init_from": "bad/nope"}),
         ["bad/nope", "pretrain.init_from"], stage="pretrain"),
    Case("checkpoint_empty_dir", checkpoint(None), ["bad/ckpt", "no config.json"], stage="pretrain"),
    Case("checkpoint_config_not_json", checkpoint({"config.json": "{oops", "model.safetensors": NOISE}),
         ["bad/ckpt/config.json"], stage="pretrain"),
    Case("checkpoint_weights_garbage", checkpoint({"config.json": BERT_CONFIG, "model.safetensors": NOISE}),
         ["bad/ckpt/model.safetensors"], stage="pretrain"),
    Case("checkpoint_weights_truncated", checkpoint({"config.json": BERT_CONFIG,
                                                     "model.safetensors": truncated_safetensors}),
         ["bad/ckpt/model.safetensors"], stage="pretrain"),
    Case("checkpoint_not_a_masked_lm", checkpoint({"config.json": json.dumps({"model_type": "gpt2"}),
                                                   "model.safetensors": gpt2_checkpoint}),
         ["bad/ckpt", "masked-language-model"], stage="pretrain"),
    Case("checkpoint_package_missing", params_change(pretrain={"init_from": "package:no_such_checkpoint_pkg"}),
         ["pretrain.init_from", "no installed Python package"], stage="pretrain"),
    # checkpoint paths the operating system refuses: DVC hashes them behind models/checkpoint
    Case("checkpoint_link_loop", checkpoint_link("ckpt"), ["bad/ckpt", "loop of symbolic links", "pretrain.init_from"],
         stage="pretrain"),
    Case("checkpoint_is_a_file", checkpoint_link(None), ["bad/ckpt", "not a directory"], stage="pretrain"),
    Case("checkpoint_weights_broken_link", checkpoint({"config.json": BERT_CONFIG, "model.safetensors": lambda path:
                                                       path.symlink_to("gone.safetensors")}),
         ["bad/ckpt/model.safetensors", "broken link", "pretrain.init_from"], stage="pretrain"),
    Case("checkpoint_weights_unreadable", closed(checkpoint({"config.json": BERT_CONFIG,
                                                              "model.safetensors": gpt2_checkpoint}),
                                                  "ckpt/model.safetensors"),
         ["bad/ckpt/model.safetensors", "permission denied"], stage="pretrain", permissions=True),
]

AS_PROCESSES = {"truncated_bz2", "too_small_to_split", "nested_text_jsonl", "yaml_syntax_error",
                "checkpoint_weights_truncated", "checkpoint_not_a_masked_lm", "input_link_loop"}
# Root reads a file of mode 000 all the same: as root, these run as processes without the
# capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as any other user would.
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search"]


def _bypasses_permissions(tmp: Path) -> bool:
    probe = tmp / "mode-000-probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
        return True
    except PermissionError:
        return False
    finally:
        probe.unlink()


def _tree_digest(project: Path) -> dict[str, str]:
    digests = {}
    for name in OUTPUTS:
        root = project / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digests[str(file.relative_to(project))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def _registry(project: Path) -> list:
    with sqlite3.connect(project / "mlflow.db") as db:
        versions = db.execute("SELECT name, version, current_stage FROM model_versions ORDER BY 1, 2").fetchall()
        aliases = db.execute("SELECT name, alias, version FROM registered_model_aliases ORDER BY 1, 2").fetchall()
    return versions + aliases


@pytest.fixture(scope="module")
def finished_project(tmp_path_factory):
    """A tiny project after one complete run: outputs in dvc.lock and a registered version."""
    project = copy_project(tmp_path_factory.mktemp("malformed") / "project")
    (project / "data" / "raw").mkdir(parents=True)
    make_reviews().to_csv(project / "data" / "raw" / "reviews.csv", index=False)
    (project / "params.yaml").write_text(yaml.safe_dump(tiny_params("data/raw/reviews.csv"), sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "flows.training_pipeline"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _registry(project), "the run registered nothing"
    return project, env


def test_there_are_at_least_25_cases():
    names = {c.name for c in CASES}
    assert len(CASES) >= 25 and len(names) == len(CASES) and AS_PROCESSES <= names


@contextmanager
def malformed(project: Path, case: Case):
    """The project with the case's bad input in place; afterwards as it was, and checked unchanged."""
    params_file = project / "params.yaml"
    pristine = params_file.read_text()
    before = (_tree_digest(project), _registry(project))
    (project / BAD).mkdir()
    try:
        changes = case.setup(project)
        if changes:
            params = yaml.safe_load(pristine)
            for section, values in changes.items():
                params[section].update(values)
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        yield
    finally:
        if params_file.is_symlink():
            params_file.unlink()
        elif params_file.is_dir():
            params_file.rmdir()
        params_file.write_text(pristine)
        _open_up(project / BAD)
        shutil.rmtree(project / BAD)
    assert (_tree_digest(project), _registry(project)) == before, "a failed run changed saved outputs"


def _open_up(tree: Path) -> None:
    """Give the owner back what a case's mode 000 took, so that any user can remove the tree."""
    tree.chmod(0o700)
    for folder, dirs, files in os.walk(tree):  # top-down: each folder is opened before it is entered
        for name in dirs + files:
            if not (Path(folder) / name).is_symlink():
                (Path(folder) / name).chmod(0o700)


def check(case: Case, driver: str, code: int, out: str, err: str) -> None:
    shown = f"{driver} exited {code}:\n{err[-3000:]}"
    assert code == 2, shown
    assert "Traceback" not in out + err, shown
    for needle in case.needles:
        assert needle.lower() in err.lower(), f"{needle!r} not named. {shown}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_one_clear_error_and_changes_nothing(finished_project, case, monkeypatch, capsys):
    project, env = finished_project
    if case.permissions and _bypasses_permissions(project):
        pytest.skip("this process reads mode-000 files (root): test_as_processes_too runs it without that power")
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handling
    with malformed(project, case):
        for driver in ("flows.training_pipeline", f"tasks.{case.stage}"):
            code = importlib.import_module(driver).main([])
            captured = capsys.readouterr()
            check(case, driver, code, captured.out, captured.err)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in AS_PROCESSES or c.permissions], ids=lambda c: c.name)
def test_as_processes_too(finished_project, case):
    project, env = finished_project
    prefix = []
    if case.permissions and _bypasses_permissions(project):
        if not shutil.which("setpriv"):
            pytest.skip("root reads mode-000 files, and setpriv (util-linux) is not here to drop that power")
        prefix = UNPRIVILEGED
    with malformed(project, case):
        for driver in ("flows.training_pipeline", f"tasks.{case.stage}"):
            proc = subprocess.run([*prefix, sys.executable, "-m", driver], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=300)
            check(case, driver, proc.returncode, proc.stdout, proc.stderr)
