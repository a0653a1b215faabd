"""The search's trials, shared by the search stage and its extra worker processes.

Kept apart from tasks/search.py so that a worker starts without importing Prefect.
"""
from __future__ import annotations

import json
import os
import shutil

import optuna

from mlcore.search import liveness
from mlcore.models import modeling
from mlcore.search import claims, space, studies
from mlcore.config import Config
from mlcore.engine.device import configure_threads, one_gpu_per_worker, resolve_device
from mlcore.errors import UserError
from mlcore.models.classifier import encode_split, finetune, load_tokenizer
from mlcore.data.hashing import files_digest
from mlcore.engine.settings import TrainSettings
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P


def _inputs_digest() -> str:
    files = [P.TRAIN, P.VAL, P.LABEL_MAP, *sorted(P.PRETRAINED.glob("*"))]
    return files_digest(files)


def make_objective(cfg: Config, label2id, train, val, device, study_label: str, parent_run_id: str | None = None):
    s = cfg.search

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", liveness.owner())  # lets a later run tell a dead trial from a live one
        params = space.suggest(trial, s)
        trial.set_user_attr("settings", params)  # what finetune reuses (freeze_layers implies a strategy)
        tags = {"optuna.study": study_label, "optuna.trial": str(trial.number)}
        if "retry_of" in trial.user_attrs:
            tags["optuna.retry_of"] = str(trial.user_attrs["retry_of"])
        with runs.trial_run(f"trial-{trial.number}", pruned=(optuna.TrialPruned,), tags=tags, parent_run_id=parent_run_id):
            runs.log_params(params | {"trial_number": trial.number, "epochs": s.epochs})

            def on_epoch(e: dict):
                # Reported at each evaluation: each epoch, or every search.eval_every_steps steps.
                runs.log_metrics(e, step=e["evaluation"])
                trial.set_user_attr("epochs_trained", e["epoch"])
                trial.report(e["val_macro_f1"], e["evaluation"])
                if trial.should_prune():
                    print(f"search: trial {trial.number}: {params['optimizer']} lr={params['learning_rate']:.2e} "
                          f"pruned at epoch {e['epoch']} (val macro-F1 {e['val_macro_f1']:.4f})")
                    raise optuna.TrialPruned(f"pruned at epoch {e['epoch']}")

            settings = TrainSettings.from_section(s, **params)
            model, result = finetune(P.PRETRAINED, label2id, train, val, settings, device, on_epoch)
            trial.set_user_attr("best_epoch", result.best_epoch)
            keep_if_best(model, trial.number, result.best_score, study_label)
            runs.log_metrics({"best_val_macro_f1": result.best_score, "best_epoch": result.best_epoch})
            print(f"search: trial {trial.number}: {params['optimizer']} lr={params['learning_rate']:.2e} "
                  f"-> val macro-F1 {result.best_score:.4f} (epoch {result.best_epoch})")
            return result.best_score

    return objective


def keep_if_best(model, number: int, value: float, study_label: str) -> bool:
    """Save the trial's model (already at its best epoch) when it beats the study's best so
    far, so finetune can reuse it instead of retraining. One copy per study, under the
    claim lock: parallel workers never interleave their saves."""
    best_dir = P.TRIAL_MODELS / study_label
    with claims.locked(P.OPTUNA_DIR / f"{study_label}.lock"):
        info = best_dir / "trial.json"
        if info.is_file() and json.loads(info.read_text())["value"] >= value:
            return False
        tmp = best_dir.with_name(best_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        modeling.save(model.cpu(), load_tokenizer(P.PRETRAINED), tmp, extra={"stage": "search", "trial": number})
        (tmp / "trial.json").write_text(json.dumps({"trial": number, "value": value}))
        shutil.rmtree(best_dir, ignore_errors=True)
        tmp.rename(best_dir)
    return True


def open_study(cfg: Config, threads: int | None = None, worker: int = 0, trains: bool = True):
    """What every worker needs: device, data, the study and its name. `trains`: this
    process runs trials itself (a pool's dispatcher does not, and takes no GPU)."""
    s = cfg.search
    configure_threads(threads or cfg.runtime.num_threads)
    device = resolve_device(cfg.device())
    if s.workers > 1 and trains:
        device = one_gpu_per_worker(device, P.OPTUNA_DIR / "gpu-slots")
    label2id = _io.label_map()
    tokenizer = load_tokenizer(_io.require(P.PRETRAINED, "pretrain"))
    train = encode_split(tokenizer, _io.read_split(P.TRAIN), label2id, s.max_length)
    val = encode_split(tokenizer, _io.read_split(P.VAL), label2id, s.max_length)
    name = studies.study_name(s, _inputs_digest())
    storage = cfg.optuna_storage()
    if s.workers > 1 and storage and storage.startswith("sqlite"):
        raise UserError(f"search.workers is {s.workers} but the Optuna storage is SQLite ({storage}), which locks "
                        f"under parallel writers. Unset OPTUNA_STORAGE / search.storage (JournalFile) or use postgresql://.")
    study = optuna.create_study(
        study_name=name, storage=studies.make_storage(storage, P.OPTUNA_DIR, s.study_name),
        direction="maximize", sampler=studies.make_sampler(s, worker), pruner=studies.make_pruner(s), load_if_exists=True,
    )
    return device, label2id, train, val, study, name


def worker_threads(cfg: Config) -> int:
    return max(1, (cfg.runtime.num_threads or os.cpu_count() or 1) // cfg.search.workers)
