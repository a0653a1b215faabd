"""How this project's experiments look in MLflow's UI, and the links that open them that way.

What MLflow 3.17's UI reads (its bundle, mlflow/server/js/build):

- **Which view an experiment opens in.** The UI picks its GenAI overview (traces, token usage,
  "Detect Issues") or the runs table from its *workflow type* alone: `workflowType=machine_learning`
  in the page's URL, else what this browser last chose with the sidebar's "GenAI | Model training"
  switch (local storage), else GenAI. The experiment's `mlflow.experimentKind` tag no longer decides
  it (the workflow-type navigation that ignores it is always on), so every link we print carries
  the workflow type. The tag is still set: it says what the experiment is, for other clients.
- **Which columns and order the runs table shows.** The table's own state lives in each browser.
  A saved view is an experiment tag `mlflow.sharedViewState.<key>` (listed in the table's "Views"
  menu); `viewStateShareKey=<key>` in the URL opens it. Ours picks the metric columns and lists
  runs oldest first, so a pipeline's stages read in the order they ran. Whether nested runs start
  expanded is not part of a saved view: the UI leaves that to each browser.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

WORKFLOW_PARAM = "workflowType=machine_learning"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_PARAM = "viewStateShareKey"
LOCAL_UI = "http://127.0.0.1:5000"  # where `make ui-mlflow` serves a local store
KIND = "custom_model_development"  # tags.KIND_TAG's value: a model-training experiment, not a GenAI one

# The description the training experiment was created with before each experiment had its own:
# an experiment still carrying it (batch-scoring did) gets its own; one a person wrote is kept.
OLD_SHARED_NOTE = ("Runs of the fine-tuning pipeline: one `pipeline` run per execution, a child run per stage, "
                   "search trials nested under `search`. The registered model is the product.")


@dataclass(frozen=True)
class View:
    """A saved view of the runs table: its key in the URL, its name in the Views menu, its state."""
    key: str
    name: str
    columns: tuple[str, ...]
    oldest_first: bool = False

    def state(self) -> dict:
        return {"selectedColumns": list(self.columns), "orderByKey": "attributes.start_time",
                "orderByAsc": self.oldest_first}

    def tag(self, created_ms: int | None = None) -> tuple[str, str]:
        """The experiment tag that holds it: MLflow's envelope {name, createdAt, updatedAt, state}."""
        now = int(time.time() * 1000)
        envelope = {"name": self.name, "createdAt": created_ms or now, "updatedAt": now,
                    "state": json.dumps(self.state(), sort_keys=True)}
        return f"{VIEW_TAG_PREFIX}{self.key}", json.dumps(envelope)

    def differs_from(self, value: str | None) -> bool:
        """Whether the stored tag `value` holds another state than this view's (or is not one)."""
        try:
            return json.loads(json.loads(value)["state"]) != self.state()
        except (TypeError, ValueError, KeyError):
            return True


@dataclass(frozen=True)
class Look:
    """What an experiment of this project shows: its description and its saved views."""
    note: str
    views: tuple[View, ...] = field(default=())

    @property
    def main_view(self) -> str | None:
        return self.views[0].key if self.views else None


def _metric(name: str) -> str:
    return f"metrics.`{name}`"


def training(metric: str) -> Look:
    """The training experiment: the search's, the test's and the baseline's value of the gate's
    metric, the settings that were searched, the trial outcomes and the alias the version got."""
    columns = ("attributes.`Dataset`", "attributes.`Models`", _metric("best_val_macro_f1"), _metric(f"test_{metric}"),
               _metric(f"test_baseline_{metric}"), "params.`learning_rate`", "params.`optimizer`",
               "tags.`trial.state`", "tags.`registered.alias`")
    return Look(
        note=("Runs of the fine-tuning pipeline: one `pipeline` run per execution, with a child run per stage "
              "(prepare, pretrain, search, finetune, evaluate, register) and the search's trials nested under "
              "`search` (a pruned trial is FINISHED with tag trial.state PRUNED). The `pipeline` run carries "
              "the test metrics, the baseline's and the gate's decision. The registered model is the product. "
              "The view **Pipeline** (Views menu) shows the metric columns, oldest run first."),
        views=(View("pipeline", "Pipeline", columns, oldest_first=True),))


def batch_scoring() -> Look:
    columns = (_metric("rows"), _metric("bad_rows"), _metric("rows_per_s"), "params.`model_uri`",
               "params.`model_version`", "params.`input`", "params.`output`")
    return Look(
        note=("Batch-scoring jobs (flows/batch_predict.py): one run per scored table, with the model version "
              "it used, its input and output as params, and rows, rows not scored and rows/s as metrics; "
              "batch_predict.json holds the output's metadata. The view **Scoring jobs** (Views menu) shows "
              "those columns."),
        views=(View("scoring", "Scoring jobs", columns),))


def wanted_tags(current: dict[str, str], look: Look) -> dict[str, str]:
    """The experiment tags to set so that an experiment with tags `current` looks as `look` says:
    the kind, a description (one a person wrote stays), and each saved view whose state is not ours."""
    from mlcore.tracking.tags import KIND_TAG, NOTE_TAG

    wanted = {} if current.get(KIND_TAG) == KIND else {KIND_TAG: KIND}
    if look.note and current.get(NOTE_TAG) in (None, "", OLD_SHARED_NOTE) and current.get(NOTE_TAG) != look.note:
        wanted[NOTE_TAG] = look.note
    for view in look.views:
        key, _ = view.tag()
        if view.differs_from(current.get(key)):
            wanted[key] = view.tag(_created(current.get(key)))[1]
    return wanted


def _created(value: str | None) -> int | None:
    try:
        return int(json.loads(value)["createdAt"])
    except (TypeError, ValueError, KeyError):
        return None


def runs_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The experiment's runs table as model training (and in `view`), on the UI at `base`."""
    query = WORKFLOW_PARAM + (f"&{VIEW_PARAM}={view}" if view else "")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def home_url(base: str) -> str:
    return f"{base.rstrip('/')}/#/experiments?{WORKFLOW_PARAM}"


def links(store: str, experiments: dict[str, Look], base: str = LOCAL_UI) -> list[str]:
    """One line per experiment of `experiments` (name: look) that `store` holds: its runs in its main
    view, as model training. Each is given its look first (an experiment an older release made).
    A store that does not exist yet is not created by asking: then the experiments list's link."""
    from mlcore.tracking.store import local_path

    path = local_path(store)
    if path is not None and not path.exists():
        return [f"{home_url(base)}   (no runs yet)"]
    from mlflow import MlflowClient

    client, lines = MlflowClient(tracking_uri=store), []
    for name, look in experiments.items():
        exp = client.get_experiment_by_name(name)
        if exp is None:
            continue
        for key, value in wanted_tags(exp.tags, look).items():
            client.set_experiment_tag(exp.experiment_id, key, value)
        lines.append(f"{runs_url(base, exp.experiment_id, look.main_view)}   ({name})")
    return lines or [f"{home_url(base)}   (no runs yet)"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mlcore.config import load_config
    from mlcore.tracking.scoring import EXPERIMENT as SCORING
    from mlcore.tracking.store import resolve_store

    parser = argparse.ArgumentParser(prog="python -m mlcore.tracking.ui", description=(
        "Print the links that open the pipeline's experiments in MLflow's UI as model training, in their "
        "saved views (and give experiments an older release made their description and views)."))
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--base", default=LOCAL_UI, help=f"the UI's address (default: {LOCAL_UI})")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    experiments = {cfg.tracking.experiment: training(cfg.register.metric), SCORING: batch_scoring()}
    print("MLflow UI, open:\n" + "\n".join(f"  {line}" for line in links(resolve_store(cfg), experiments, args.base)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
