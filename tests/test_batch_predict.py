"""Batch scoring (flows/batch_predict.py over mlcore/scoring): every input format keeps its columns
and row order, bad rows get a reason instead of a crash, the output records the model version an
alias named, bad input is one clear error, and a run killed with SIGKILL resumes from its chunks."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from flows import batch_predict as bp
from mlcore.scoring import batch, model_uri, output, rows, store
from mlcore.scoring.plan import chunk_plan
from mlcore.tracking import scoring as tracking_scoring
from tests.conftest import make_reviews
from tests.servers import seed_prefect_home

NAME = "tiny-scorer"
CHAMPION = f"models:/{NAME}@champion"
SCORES = ["score_fresh", "score_rotten"]
ADDED = ["label", *SCORES, "reason"]


@pytest.fixture(scope="module")
def registry(tiny_base_dir, tmp_path_factory):
    """One tiny classifier in a temporary SQLite registry as versions 1 and 2, `champion` on 1
    (so an alias that resolved to the latest version would show), and the model loaded."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    from mlcore.models import modeling
    from mlcore.tracking import registry as reg

    root = tmp_path_factory.mktemp("batch_registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        # Artifacts beside the database: the default, ./mlruns, would be the project's own folder.
        exp = MlflowClient().create_experiment("batch-fixture", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp)
        torch.manual_seed(3)
        model, tokenizer = modeling.load_classifier(tiny_base_dir, {"fresh": 0, "rotten": 1}, pooling="mean")
        with torch.no_grad():
            model.classifier.weight.normal_(0, 1.0)  # scores far from uniform, so a row mix-up shows
        modeling.save(model, tokenizer, root / "classifier")
        with mlflow.start_run():
            first = reg.log_classifier(root / "classifier", ["a great film", "a dull mess"], ["fresh", "rotten"], NAME)
        mlflow.register_model(first.source, NAME)  # version 2, the latest
        MlflowClient().set_registered_model_alias(NAME, "champion", first.version)
        model = tracking_scoring.load(model_uri.parse(f"models:/{NAME}/1"))
        yield SimpleNamespace(uri=uri, version=str(first.version), model=model)


@pytest.fixture
def workdir(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the error log and any default mlflow.db land here, not in the project
    return tmp_path


def expected(registry, texts: list[str]) -> pd.DataFrame:
    """The model's answer for the texts in one call, in their order: what the chunked, sorted,
    reassembled output must equal row for row."""
    return registry.model.predict(pd.DataFrame({"text": texts}), params={"return_scores": True})


def score(model: str, inp, out, text_column: str = "text", chunk_rows: int = 7) -> dict:
    """The flow's tasks in its order, without Prefect (the flow itself is tested below)."""
    ref = bp.resolve_model.fn(model)
    data = bp.read_input.fn(str(inp), text_column)
    results, columns, _ = bp.score.fn(ref, data, str(out), chunk_rows)
    meta = bp.write_output.fn(data, results, columns, ref, str(out))
    store.remove_parts(out)
    return meta


def read_any(path) -> pd.DataFrame:
    fmt, compression = output.output_format(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path, dtype={"id": str}, compression=compression)
    return pd.read_json(path, lines=True, dtype=False, compression=compression)


def reviews(n: int = 30) -> pd.DataFrame:
    """Reviews in an order unlike their lengths', with an id and a numeric column to carry through."""
    data = make_reviews(n=n, n_plots=3).sample(frac=1.0, random_state=1).reset_index(drop=True)
    return data.assign(id=[f"{i:04d}" for i in range(len(data))], stars=np.arange(len(data)) % 5)


WRITERS = {
    "csv": lambda df, p: df.to_csv(p, index=False),
    "tsv": lambda df, p: df.to_csv(p, sep="\t", index=False),
    "jsonl.gz": lambda df, p: df.to_json(p, orient="records", lines=True, compression="gzip"),
    "parquet": lambda df, p: df.to_parquet(p, index=False),
}


@pytest.mark.parametrize(("fmt", "out_name"), [("csv", "scored.parquet"), ("tsv", "scored.csv"),
                                               ("jsonl.gz", "scored.jsonl"), ("parquet", "scored")])
def test_each_format_keeps_the_columns_and_the_row_order(registry, workdir, fmt, out_name):
    data = reviews()
    WRITERS[fmt](data, workdir / f"new.{fmt}")
    meta = score(CHAMPION, workdir / f"new.{fmt}", workdir / out_name)
    got = read_any(workdir / out_name)
    assert list(got.columns) == list(data.columns) + ADDED
    assert list(got["id"].astype(str).str.zfill(4)) == list(data["id"])  # the input's order, every row
    assert list(got["text"]) == list(data["text"]) and list(got["stars"].astype(int)) == list(data["stars"])
    want = expected(registry, data["text"].tolist())
    assert list(got["label"]) == list(want["label"])
    np.testing.assert_allclose(got[SCORES].to_numpy(), want[SCORES].to_numpy(), atol=1e-5)
    assert got["reason"].isna().all()
    assert (meta["rows"], meta["scored"], meta["bad_rows"], meta["labels"]) == (len(data), len(data), 0,
                                                                                ["fresh", "rotten"])
    assert output.read_metadata(workdir / out_name) == meta
    assert not store.parts_dir(workdir / out_name).exists()


BAD = {"": "empty text", "   \t": "whitespace-only text", None: "missing text (null)",
       42: "not text: the int 42", 2.5: "not text: the float 2.5", True: "not text: the bool True"}


def test_bad_rows_get_no_label_and_a_reason_and_never_stop_the_job(registry, workdir):
    texts = ["a great and moving film", "", "   \t", None, 42, {"nested": "object"}, ["a", "list"], 2.5,
             "boring , tedious and dull"]
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)]
    (workdir / "new.jsonl").write_text("\n".join(lines) + "\n")
    meta = score(CHAMPION, workdir / "new.jsonl", workdir / "scored.parquet")
    got = pd.read_parquet(workdir / "scored.parquet")  # a text column mixing types, still written
    assert list(got["id"]) == list(range(len(texts)))
    reasons = got["reason"].tolist()
    assert reasons[1:4] == ["empty text", "whitespace-only text", "missing text (null)"]
    assert reasons[4] == "not text: the int 42" and reasons[7] == "not text: the float 2.5"
    assert reasons[5] == "not text: a nested dict" and reasons[6] == "not text: a nested list"
    good = [0, 8]
    assert got["label"].isna().tolist() == [i not in good for i in range(len(texts))]
    assert got.loc[got["label"].isna(), SCORES].isna().all().all()
    assert got.loc[good, "reason"].isna().all()
    assert list(got.loc[good, "label"]) == list(expected(registry, [texts[0], texts[8]])["label"])
    assert (meta["scored"], meta["bad_rows"]) == (2, 7)


def test_reasons_for_values_of_every_kind():
    for value, why in BAD.items():
        assert rows.reason(value) == why
    assert rows.reason(np.int64(7)) == "not text: the int 7" and rows.reason(np.nan) == "missing text (null)"
    assert rows.reason(np.array(["x"])) == "not text: a nested ndarray"
    assert rows.reason("fine") is None and rows.reason(" fine ") is None


def test_a_file_with_no_good_rows_still_has_the_score_columns(registry, workdir):
    pd.DataFrame({"text": ["", " "], "id": ["a", "b"]}).to_csv(workdir / "new.csv", index=False)
    score(CHAMPION, workdir / "new.csv", workdir / "scored.csv")
    got = pd.read_csv(workdir / "scored.csv")
    assert list(got.columns) == ["text", "id", *ADDED] and got["label"].isna().all()


def test_model_uris_name_a_version_an_alias_or_nothing():
    assert model_uri.parse("models:/m@champion") == model_uri.ModelRef("models:/m@champion", "m", "champion")
    ref = model_uri.parse("models:/m/3")
    assert (ref.name, ref.version, ref.load_uri) == ("m", "3", "models:/m/3")
    assert model_uri.parse("models:/m@champion").resolved("5").load_uri == "models:/m/5"
    assert model_uri.parse("runs:/abc/model").name is None
    assert model_uri.parse("runs:/abc/model").identity == "runs:/abc/model"


def fake_predict(calls: list):
    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(frame))
        lengths = frame["text"].str.len().to_numpy(dtype=float)
        return pd.DataFrame({"label": np.where(lengths % 2 == 0, "even", "odd"), "score_even": lengths})
    return predict


def test_the_store_resumes_finished_chunks_and_starts_over_when_anything_changed(tmp_path):
    texts = pd.Series([f"text {'x' * (i % 13)} {i}" for i in range(50)])
    plan = chunk_plan(texts, 8)
    assert [len(c) for c in plan] == [8] * 6 + [2]
    assert list(texts.str.len()[np.concatenate(plan)]) == sorted(texts.str.len())
    parts = store.parts_dir(tmp_path / "out.parquet")
    manifest = store.manifest("md5", 50, "text", "models:/m/1", 8, len(plan))

    def run(manifest, predict):
        chunks = store.ChunkStore(parts, manifest)
        done = chunks.open()
        return done, batch.score_chunks(texts, plan, chunks, predict, "m", progress=False), chunks

    before_kill: list = []

    def dies_after_three(frame):
        if len(before_kill) == 3:
            raise KeyboardInterrupt  # as a kill: chunks 0-2 saved, nothing else
        return fake_predict(before_kill)(frame)

    with pytest.raises(KeyboardInterrupt):
        run(manifest, dies_after_three)
    calls: list = []
    done, progress, chunks = run(manifest, fake_predict(calls))
    assert len(done) == 3 and progress.resumed == 3 and len(calls) == 4 and progress.scored_rows == 26
    results = chunks.load()
    assert sorted(results.index) == list(range(50))
    assert (results["score_even"].sort_index() == texts.str.len()).all()
    calls.clear()
    for changed in ({**manifest, "model": "models:/m/2"}, {**manifest, "input_md5": "other"}):
        done, progress, _ = run(changed, fake_predict(calls))
        assert not done and progress.resumed == 0
    assert len(calls) == 2 * len(plan)


def test_bad_input_and_unknown_models_are_one_clear_error(registry, workdir, capsys):
    reviews(5).to_csv(workdir / "new.csv", index=False)
    cases = [
        (["--input", "new.csv", "--text-column", "review"], ["new.csv", "'review'", "--text-column", "'text'"]),
        (["--input", "missing.csv"], ["missing.csv", "not found", "--input"]),
        (["--input", "new.csv", "--model", f"models:/{NAME}@nope"], [f"models:/{NAME}@nope", "MLFLOW_TRACKING_URI"]),
        (["--input", "new.csv", "--model", "models:/no-such-model/1"], ["models:/no-such-model/1", "registry"]),
        (["--input", "new.csv", "--model", "exported/model"], ["exported/model", "no such model directory"]),
        (["--input", "new.csv", "--output", "scored.xlsx"], ["scored.xlsx", ".parquet"]),
    ]
    for args, needles in cases:
        argv = ["--model", CHAMPION, "--output", "scored.parquet", *args]
        argv = argv[2:] if "--model" in args else argv
        assert bp.main(argv) == 2, args
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        err = captured.err.strip()
        assert err.startswith("error: ") and "\n" not in err, err  # one paragraph
        for needle in needles:
            assert needle in err, (needle, err)
    assert not (workdir / "scored.parquet").exists()


def test_help_explains_every_option_with_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        bp.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--input", "--output", "--text-column", "--chunk-rows", "--experiment", "--cron"):
        assert option in text
    assert "python -m flows.batch_predict --model models:/" in text and "resum" in text.lower()


def test_cron_serves_the_flow_one_run_at_a_time_with_a_timeout():
    params = {"model": CHAMPION, "input": "new.csv", "output": "scored.parquet", "text_column": "text",
              "chunk_rows": 1000, "experiment": "batch-scoring"}
    deployment = bp.scheduled(params, "0 3 * * *").to_deployment()
    assert deployment.name == bp.DEPLOYMENT_NAME and deployment.parameters == params
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert deployment.concurrency_limit == 1
    served = bp.scheduled(params, "0 3 * * *", timeout=600).served_flow()
    assert (served.name, served.timeout_seconds) == ("batch-scoring", 600)


@pytest.fixture
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def flow_run_record() -> tuple[list[str], list[str]]:
    """The latest flow run's task run names, in the order they started, and its log messages."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort, LogSort, TaskRunSort
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()  # logs reach the API in batches: send what is still queued
        async with get_client() as client:
            [latest] = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[latest.id])),
                                                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=20)
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[latest.id])),
                                          sort=LogSort.TIMESTAMP_ASC, limit=200, offset=0)
            return [t.name for t in tasks], [log.message for log in logs]

    return asyncio.run(read())


@pytest.mark.slow
def test_the_flow_records_the_version_the_alias_named_in_the_output_and_mlflow(registry, workdir, prefect_api,
                                                                              capsys):
    from mlflow import MlflowClient

    data = reviews(20)
    data.loc[4, "text"] = "   "  # one bad row: the score task's log names it
    data.to_csv(workdir / "new.csv", index=False)
    assert bp.main(["--model", CHAMPION, "--input", "new.csv", "--output", "scored.parquet"]) == 0
    meta = output.read_metadata(workdir / "scored.parquet")
    assert (meta["model_uri"], meta["model_name"], meta["model_version"]) == (CHAMPION, NAME, registry.version)
    assert registry.version == "1" and (meta["rows"], meta["bad_rows"]) == (23, 1)
    assert f"with {CHAMPION} (version 1)" in capsys.readouterr().out
    names, logs = flow_run_record()
    assert names == ["resolve models:/tiny-scorer@champion", "read new.csv", "score new.csv: 22 of 23 rows",
                     "write scored.parquet", "record the run in MLflow (batch-scoring)"]
    assert "row 5 not scored: whitespace-only text" in logs
    client = MlflowClient(registry.uri)
    [run] = client.search_runs([client.get_experiment_by_name("batch-scoring").experiment_id])
    assert run.data.params["model_version"] == "1" and run.data.params["model_uri"] == CHAMPION
    assert run.data.params["input"] == "new.csv" and run.data.params["chunk_rows"] == "1000"
    assert run.data.metrics["rows"] == 23 and run.data.metrics["bad_rows"] == 1 and run.data.metrics["rows_per_s"] > 0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["batch_predict.json"]
    assert not store.parts_dir(workdir / "scored.parquet").exists()


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_chunk_and_matches_a_clean_run(registry, workdir):
    make_reviews(n=2000, n_plots=0).assign(id=range(2000)).to_csv(workdir / "big.csv", index=False)
    out, parts = workdir / "scored.parquet", store.parts_dir(workdir / "scored.parquet")
    command = [sys.executable, "-m", "flows.batch_predict", "--model", CHAMPION, "--input", "big.csv",
               "--output", out.name, "--chunk-rows", "50"]
    # Its own Prefect database (migrated already); the chunks and the output in this test's directory.
    home = seed_prefect_home(workdir / "prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "MLFLOW_TRACKING_URI": registry.uri}
    with open(workdir / "killed.log", "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 180
        while not list(parts.glob("chunk-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, (workdir / "killed.log").read_text()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the flow and its Prefect server
        proc.wait()
    finished = len(list(parts.glob("chunk-*.parquet")))
    assert 1 <= finished < 40 and not out.exists()

    rerun = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    said = re.search(r"resuming: (\d+) of (\d+) chunks were already scored", rerun.stdout + rerun.stderr)
    assert said and (int(said[1]), int(said[2])) == (finished, 40), rerun.stdout + rerun.stderr
    assert not parts.exists()

    score(CHAMPION, workdir / "big.csv", workdir / "clean.parquet", chunk_rows=50)
    resumed, clean = pd.read_parquet(out), pd.read_parquet(workdir / "clean.parquet")
    assert list(resumed["id"]) == [str(i) for i in range(2000)]  # CSV columns are read as the text they are
    pd.testing.assert_frame_equal(resumed, clean, check_exact=False, rtol=1e-5)


def test_input_columns_named_like_the_outputs_are_kept_under_another_name(tmp_path, capsys):
    """A labelled file (its own `label`, even a `score_*`) is scored, its columns kept as input_<name>."""
    path = tmp_path / "labelled.csv"
    pd.DataFrame({"text": ["good film", ""], "label": ["fresh", "rotten"], "score_fresh": ["1", "0"],
                  "input_label": ["x", "y"]}).to_csv(path, index=False)
    data = rows.read_rows(path)
    assert set(data.table.columns) == {"text", "input_label", "input_score_fresh", "input_input_label"}
    assert list(data.table["input_input_label"]) == ["fresh", "rotten"]  # `input_label` was taken: prefixed again
    assert list(data.table["input_label"]) == ["x", "y"] and list(data.good) == ["good film"]
    assert "'label' is kept as 'input_input_label'" in capsys.readouterr().out
    (tmp_path / "t.csv").write_text("label\nawful\n")
    named_label = rows.read_rows(tmp_path / "t.csv", "label")  # the text column itself named `label`
    assert named_label.text_column == "input_label" and list(named_label.good) == ["awful"]
