"""What every search process shares: the encoded data, the study, and the core objective
with its MLflow trial runs and the project's paths. Imports no Prefect, so a worker starts fast."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import optuna
import torch

from mlcore import modality
from mlcore.config import Config, SearchConfig
from mlcore.data.hashing import files_digest
from mlcore.data.sampling import stratified_subsample
from mlcore.engine.device import configure_threads, one_gpu_per_worker, resolve_device
from mlcore.search import objective as O
from mlcore.search import studies
from mlcore.tracking import runs, trial_runs
from mlcore.tracking.tags import STUDY_TAG, TRIAL_TAG
from tasks import _io
from tasks import _paths as P


def inputs_digest() -> str:
    return files_digest([P.TRAIN, P.VAL, P.LABEL_MAP, *sorted(P.PRETRAINED.glob("*"))])


def claim_lock(name: str):
    return P.OPTUNA_DIR / f"{name}.lock"


@dataclass
class Opened:
    """What a search process works on: the device, the data, the study (with its storage) and its name."""
    device: torch.device
    label2id: dict[str, int]
    train: object  # search.max_train_rows of train (stratified, seeded), or all of it; the modality's encoding
    val: object
    handle: studies.StudyHandle
    name: str
    shape: object  # max_length for text (chosen over all of train), the input size for images
    train_rows: int  # rows of the whole train split
    kind: object  # the modality (mlcore.modality)
    processor: object  # the pretrained checkpoint's tokenizer, loaded once for the data and every trial
    datasets: list  # train (as sampled) and val as MLflow dataset inputs: made once, logged on every trial

    @property
    def study(self) -> optuna.Study:
        return self.handle.study

    def report(self) -> dict:
        """What the search run logs about its data."""
        return self.shape.report() | {"train_rows_used": len(self.train), "train_rows": self.train_rows}


def search_data(s: SearchConfig, label2id: dict[str, int], kind, processor):
    """Train (its search.max_train_rows subsample, the same for every trial: from search.seed)
    and val encoded with the shape (max_length) chosen over all of train; the shape; train's row
    count; and the two frames as they were used (the runs' dataset inputs)."""
    train_df = _io.read_split(P.TRAIN)
    shape = kind.choose(s.max_length, P.PRETRAINED, processor, train_df)
    sample = train_df.iloc[stratified_subsample(train_df["label"], s.max_train_rows, s.seed)]
    val_df = _io.read_split(P.VAL)
    train = kind.encode(processor, sample, label2id, shape)
    val = kind.encode(processor, val_df, label2id, shape)
    return train, val, shape, len(train_df), {"train": sample, "val": val_df}


def open_study(cfg: Config, threads: int | None = None, worker: int = 0, trains: bool = True,
               device: torch.device | None = None) -> Opened:
    """Device, label map, encoded train/val, the study and its name. `trains`: this process
    runs trials itself (a pool's dispatcher does not, and takes no GPU). `device`: the stage's,
    already resolved; a worker process resolves its own."""
    s = cfg.search
    configure_threads(threads or cfg.runtime.num_threads)
    device = device or resolve_device(cfg.device())
    if s.workers > 1 and trains:
        device = one_gpu_per_worker(device, P.OPTUNA_DIR / "gpu-slots")
    label2id = _io.label_map()
    kind = modality.of_splits(P.TRAIN)
    processor = kind.processor(_io.require(P.PRETRAINED, "pretrain"))
    train, val, shape, train_rows, frames = search_data(s, label2id, kind, processor)
    name = studies.study_name(s, inputs_digest())
    handle = studies.open_study(s, name, cfg.optuna_storage(), P.OPTUNA_DIR, worker)
    return Opened(device, label2id, train, val, handle, name, shape, train_rows, kind, processor,
                  runs.dataset_inputs(frames, P.SPLITS))


def tracked_objective(cfg: Config, o: Opened, parent_run_id: str | None = None):
    """The core objective, each trial an MLflow run nested under the search run, and the
    study's best model so far kept under optuna/models/<study>."""
    name = o.name

    @contextlib.contextmanager
    def trial_run(trial: optuna.Trial, params: dict):
        tags = {STUDY_TAG: name, TRIAL_TAG: str(trial.number)}
        if "retry_of" in trial.user_attrs:
            tags["optuna.retry_of"] = str(trial.user_attrs["retry_of"])
        with trial_runs.trial_run(
                f"trial-{trial.number}", pruned=(optuna.TrialPruned,), tags=tags, parent_run_id=parent_run_id):
            runs.log_params(params | {"trial_number": trial.number, "epochs": cfg.search.epochs})
            runs.log_inputs(o.datasets)
            yield

    hooks = O.TrialHooks(
        run=trial_run, log=lambda metrics, step=None: runs.log_metrics(metrics, step=step),
        keep=lambda model, number, value, finished: O.keep_if_best(
            o.kind, model, number, value, finished, cfg.search.tie_tolerance, P.PRETRAINED, P.TRIAL_MODELS / name,
            claim_lock(name)),
        echo=lambda line: print(f"search: {line}"))
    return O.make_objective(cfg.search, o.kind, P.PRETRAINED, o.label2id, o.train, o.val, o.device, hooks,
                            o.processor)


def worker_threads(cfg: Config) -> int:
    return max(1, (cfg.runtime.num_threads or os.cpu_count() or 1) // cfg.search.workers)


def start_worker(cfg: Config, worker: int, parent_run_id: str | None):
    """A worker process's start-up (plain worker or pool process): its share of the cores,
    the data and study once, MLflow pointed at the run's store; returns (study handle, objective)."""
    o = open_study(cfg, worker_threads(cfg), worker)
    runs.configure(cfg)
    return o.handle, tracked_objective(cfg, o, parent_run_id)
