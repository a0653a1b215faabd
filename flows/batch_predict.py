"""Batch scoring: label a table of texts, or images, with a registered model, resumably, as a Prefect flow.

    python -m flows.batch_predict --model models:/sentiment@champion --input new.csv --output scored.parquet
    python -m flows.batch_predict --model models:/sentiment/3 --input new.jsonl.gz --output scored.csv \\
        --text-column review --chunk-rows 500
    python -m flows.batch_predict --model models:/sentiment@champion --input inbox/today.csv \\
        --output scored/today.parquet --cron "0 3 * * *"      # serve it: every day at 03:00 UTC

Input: .csv, .tsv, .jsonl or .parquet (.csv, .tsv and .jsonl may end in .gz or .bz2). For an image
model: a folder of images (each file under it is a row, its `path` column relative to the folder),
or a table whose --image-column holds image paths; a missing or unreadable file is a bad row.
Output, by its name: .parquet (also with no extension), .csv or .jsonl (+ .gz/.bz2). It has every
input column, rows in the input's order, then `label`, one `score_<class>` per class and `reason`
(CSV/TSV columns are kept as the text they are: no type guessing, so ids keep leading zeros).
A row whose text is empty, whitespace, null or not text (a number, a nested object) is not
scored: its label and scores are null and `reason` says why; it never stops the job.

Resumable: rows are scored in chunks (shortest texts first) and each finished chunk is saved in
<output>.parts/. A rerun after a kill, even kill -9, keeps the finished chunks when the input, the
model version and --chunk-rows are unchanged (otherwise it starts over), then writes the output
atomically and removes <output>.parts/.

Recorded: the model version (an alias resolved to its version) in the output's metadata (Parquet:
schema metadata key `batch_predict`; CSV/JSONL: <output>.meta.json) and as a run in the MLflow
experiment --experiment. MLflow is $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working
directory (the pipeline's rule, mlcore/tracking/store.py, with no params file). With --cron this
process serves the flow as a Prefect deployment (one run at a time, a timeout) instead of running
it once; point PREFECT_API_URL at a running server.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from flows._hooks import notify_failure, retry_only_transient
from mlcore.errors import entry_point, quiet_user_error_tracebacks
from mlcore.scoring import batch, images, rows, store
from mlcore.scoring import output as scored
from mlcore.scoring.model_uri import ModelRef
from mlcore.scoring.plan import chunk_plan
from mlcore.tracking import scoring as tracking
from mlcore.tracking.scoring import load as _load

CHUNK_ROWS = 1000
EXPERIMENT = tracking.EXPERIMENT
TEXT_COLUMN = "text"
DEPLOYMENT_NAME = "scheduled-scoring"
TIMEOUT_S = 6 * 3600  # a day's file scores in minutes to hours on a CPU; longer than this is stuck
LOGGED_BAD_ROWS = 100  # bad rows named one by one in the log; the output's `reason` column has them all


quiet_user_error_tracebacks()  # bad input inside a flow: its one paragraph, no traceback


# Task run names that say what each did, in the UI's graph and lists (Prefect's default: score-663).
def _reading(parameters: dict) -> str:
    return f"read {Path(parameters['path']).name}"


def _scoring(parameters: dict) -> str:
    data = parameters["data"]
    return f"score {data.path.name}: {len(data.good)} of {len(data.table)} rows"


def _writing(parameters: dict) -> str:
    return f"write {Path(parameters['out']).name}"


@task(name="resolve-model", task_run_name="resolve {uri}", cache_policy=NO_CACHE)
def resolve_model(uri: str, experiment: str = EXPERIMENT) -> ModelRef:
    """The concrete version a models:/ URI names now (other URIs are recorded as given)."""
    tracking.use_experiment(experiment)
    return tracking.resolve(uri)


@task(name="read-input", task_run_name=_reading, cache_policy=NO_CACHE)
def read_input(path: str, text_column: str, image_column: str | None = None) -> rows.Rows:
    """Texts, or images: a folder of them, or a table whose `image_column` names their files."""
    if image_column or Path(path).is_dir():
        return images.read_image_rows(path, image_column or images.PATH_COLUMN)
    return rows.read_rows(path, text_column)


@task(name="score", task_run_name=_scoring, cache_policy=NO_CACHE)
def score(ref: ModelRef, data: rows.Rows, out: str, chunk_rows: int) -> tuple:
    _log_bad_rows(data)
    texts = data.good
    plan = chunk_plan(texts, chunk_rows)
    chunks = store.ChunkStore(store.parts_dir(out), store.manifest(
        data.digest, len(data.table), data.text_column, ref.identity, chunk_rows, len(plan)))
    done = chunks.open()
    if done:
        print(f"resuming: {len(done)} of {len(plan)} chunks were already scored in {chunks.directory}")
    model = functools.cache(lambda: _load(ref))  # loaded once, and only if something is left to score

    def predict(frame):
        return model().predict(frame, params={"return_scores": True})

    frame = batch.text_frame if data.base is None else functools.partial(images.frame_of, base=data.base)
    progress = batch.score_chunks(texts, plan, chunks, predict, ref.uri, frame=frame)
    results = chunks.load()
    return results, batch.result_columns(results, lambda: predict, ref.uri, frame), progress


def _log_bad_rows(data: rows.Rows) -> None:
    """Each row the job skips, with why, in the score task's log: the UI shows them beside the run."""
    try:
        logger = get_run_logger()
    except MissingContextError:  # called as score.fn, outside a flow
        logger = logging.getLogger(__name__)
    for line in rows.bad_rows(data, LOGGED_BAD_ROWS):
        logger.warning(line)


@task(name="write-output", task_run_name=_writing, cache_policy=NO_CACHE)
def write_output(data: rows.Rows, results, columns: list[str], ref: ModelRef, out: str) -> dict:
    meta = scored.metadata(data, ref, out, columns)
    scored.write_scored(scored.assemble(data, results, columns), out, meta)
    return meta


@task(name="record-run", task_run_name="record the run in MLflow ({experiment})", cache_policy=NO_CACHE)
def record_run(meta: dict, progress: batch.Progress, chunk_rows: int, experiment: str) -> str:
    return tracking.record(meta, progress, chunk_rows, experiment)


@flow(name="batch-scoring", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
@retry_only_transient
def batch_scoring(model: str, input: str, output: str, text_column: str = TEXT_COLUMN,
                  chunk_rows: int = CHUNK_ROWS, experiment: str = EXPERIMENT, image_column: str | None = None) -> dict:
    ref = resolve_model(model, experiment)
    data = read_input(input, text_column, image_column)
    results, columns, progress = score(ref, data, output, chunk_rows)
    meta = write_output(data, results, columns, ref, output)
    run_id = record_run(meta, progress, chunk_rows, experiment)
    store.remove_parts(output)  # only now: a run that fails to record reruns from its chunks
    return {**meta, "mlflow_run_id": run_id, "rows_per_s": progress.rows_per_s}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.batch_predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="URI",
                        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<logged model name> "
                             "or a path")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="the table to score (.csv/.tsv/.jsonl/.parquet), or a folder of images")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the scored table; its extension picks the format (.parquet, .csv or .jsonl)")
    parser.add_argument("--text-column", default=TEXT_COLUMN, metavar="NAME",
                        help=f"the column to score (default: {TEXT_COLUMN})")
    parser.add_argument("--image-column", metavar="NAME",
                        help="images: the table column of image file paths (relative to the table's folder); "
                             "a folder as --input is scored image by image without it")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, metavar="N",
                        help=f"rows per saved chunk: the most a kill can lose (default: {CHUNK_ROWS})")
    parser.add_argument("--experiment", default=EXPERIMENT, metavar="NAME",
                        help=f"MLflow experiment of the scoring runs (default: {EXPERIMENT})")
    parser.add_argument("--cron", metavar="SCHEDULE",
                        help="serve as a Prefect deployment on this cron schedule (UTC), e.g. '0 3 * * *'; "
                             "without it, score once and exit")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"with --cron: deployment name (default: "
                                                                f"{DEPLOYMENT_NAME})")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, metavar="SECONDS",
                        help=f"with --cron: fail a run that takes longer (default: {TIMEOUT_S}, 6 h)")
    return parser


def scheduled(parameters: dict, cron: str, name: str = DEPLOYMENT_NAME, timeout: int = TIMEOUT_S):
    """The flow on a cron schedule, with the policy of flows/deploy.py: one run at a time (an
    overlapping run is cancelled), retries of transient failures only (a retry resumes from the
    chunks), and a timeout."""
    from flows.deploy import Scheduled

    return Scheduled(batch_scoring, name=name, cron=cron, parameters=parameters, tags=["batch-scoring"],
                     description=f"Score {parameters['input']} with {parameters['model']} into "
                                 f"{parameters['output']}.", timeout=timeout)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.chunk_rows < 1 or args.timeout <= 0:
        parser.error("--chunk-rows and --timeout must be positive")
    scored.output_format(args.output)  # a name with no format fails now, not after the scoring
    parameters = dict(model=args.model, input=args.input, output=args.output, text_column=args.text_column,
                      chunk_rows=args.chunk_rows, experiment=args.experiment, image_column=args.image_column)
    if args.cron:
        from flows.deploy import serve_all

        serve_all(scheduled(parameters, args.cron, args.name, args.timeout))
        return 0
    from tasks._process import exit_on_sigterm

    exit_on_sigterm()
    # Checked before Prefect starts: bad input, a missing column or an unknown model costs
    # seconds and leaves no flow run. The flow checks again, as a deployment runs it directly.
    read_input.fn(args.input, args.text_column, args.image_column)
    resolve_model.fn(args.model, args.experiment)
    meta = batch_scoring(**parameters)
    version = f" (version {meta['model_version']})" if meta["model_version"] else ""
    print(f"scored {meta['scored']} of {meta['rows']} rows ({meta['bad_rows']} not scored: see `reason`) with "
          f"{meta['model_uri']}{version} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
