"""search: an Optuna study (seeded TPE, median pruner) over learning rate and optimizer.

Each trial fine-tunes the pretrained checkpoint for a few epochs and reports the
validation macro-F1 each epoch; each is an MLflow run nested under the search run.
The study lives in a file under the project, so a rerun continues it.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd

from mlcore import liveness, plots
from mlcore import search_space as S
from mlcore.config import Config
from mlcore.device import configure_threads, resolve_device
from mlcore.errors import UserError
from mlcore.hashing import files_digest
from mlcore.finetuning import encode_split, finetune, load_tokenizer
from mlcore.tracking import runs
from mlcore.settings import TrainSettings
from tasks import _io
from tasks import _paths as P
from tasks._runner import as_task, cli

STAGE = "search"


def _inputs_digest() -> str:
    files = [P.TRAIN, P.VAL, P.LABEL_MAP, *sorted(P.PRETRAINED.glob("*"))]
    return files_digest(files)


def make_objective(cfg: Config, label2id, train, val, device, study_label: str):
    s = cfg.search

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", liveness.owner())  # lets a later run tell a dead trial from a live one
        params = S.suggest(trial, s)
        trial.set_user_attr("settings", params)  # what finetune reuses (freeze_layers implies a strategy)
        tags = {"optuna.study": study_label, "optuna.trial": str(trial.number)}
        if "retry_of" in trial.user_attrs:
            tags["optuna.retry_of"] = str(trial.user_attrs["retry_of"])
        with runs.trial_run(f"trial-{trial.number}", pruned=(optuna.TrialPruned,), tags=tags):
            runs.log_params(params | {"trial_number": trial.number, "epochs": s.epochs})

            def on_epoch(e: dict):
                runs.log_metrics(e, step=e["epoch"])
                trial.report(e["val_macro_f1"], e["epoch"])
                if trial.should_prune():
                    print(f"search: trial {trial.number}: {params['optimizer']} lr={params['learning_rate']:.2e} "
                          f"pruned at epoch {e['epoch']} (val macro-F1 {e['val_macro_f1']:.4f})")
                    raise optuna.TrialPruned(f"pruned at epoch {e['epoch']}")

            settings = TrainSettings.from_section(s, **params)
            _, result = finetune(P.PRETRAINED, label2id, train, val, settings, device, on_epoch)
            trial.set_user_attr("best_epoch", result.best_epoch)
            runs.log_metrics({"best_val_macro_f1": result.best_val_macro_f1, "best_epoch": result.best_epoch})
            print(f"search: trial {trial.number}: {params['optimizer']} lr={params['learning_rate']:.2e} "
                  f"-> val macro-F1 {result.best_val_macro_f1:.4f} (epoch {result.best_epoch})")
            return result.best_val_macro_f1

    return objective


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with every searched setting, for `dvc plots` and the MLflow run."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.user_attrs.get("settings", t.params)} - {"learning_rate", "optimizer"})
    columns = ["trial", "state", "val_macro_f1", "epochs_trained", "learning_rate", "optimizer", *keys]
    rows = [{"trial": t.number, "state": t.state.name, "val_macro_f1": t.value,
             "epochs_trained": len(t.intermediate_values), **t.user_attrs.get("settings", t.params)} for t in trials]
    return pd.DataFrame(rows, columns=columns)


def log_study_plots(study: optuna.Study) -> None:
    """Optuna's own plots, as PNG artifacts of the search run."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in plots.study_plots(study, Path(tmp)):
            runs.log_artifact(path, "optuna_plots")


def run(cfg: Config, parent_run_id: str | None = None) -> dict:
    s = cfg.search
    configure_threads(cfg.runtime.num_threads)
    device = resolve_device(cfg.device())
    label2id = _io.label_map()
    tokenizer = load_tokenizer(_io.require(P.PRETRAINED, "pretrain"))
    train = encode_split(tokenizer, _io.read_split(P.TRAIN), label2id, s.max_length)
    val = encode_split(tokenizer, _io.read_split(P.VAL), label2id, s.max_length)
    name = S.study_name(s, _inputs_digest())
    study = optuna.create_study(
        study_name=name, storage=S.make_storage(cfg.optuna_storage(), P.OPTUNA_DIR, s.study_name),
        direction="maximize", sampler=S.make_sampler(s), pruner=S.make_pruner(s), load_if_exists=True,
    )
    orphans = runs.close_orphans(cfg)
    stale = S.reap_stale_trials(study)
    if stale or orphans:
        print(f"search: trials {stale} of a process that died were failed and queued again; "
              f"MLflow runs closed as FAILED: {orphans}")
    with runs.stage_run(cfg, STAGE, parent_run_id):
        todo = S.remaining_budget(study, s.n_trials)
        runs.log_params(s.model_dump() | {"study": name, "device": str(device), "trials_to_run": todo})
        print(f"search: study {name}: {S.finished_trials(study)} trials done, {todo} to run")
        # A diverging learning rate fails its trial, not the search.
        study.optimize(make_objective(cfg, label2id, train, val, device, name), n_trials=todo, catch=(FloatingPointError,))
        table = trials_table(study)
        P.SEARCH_TRIALS.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(P.SEARCH_TRIALS, index=False)
        complete = table[table["state"] == "COMPLETE"]
        if complete.empty:
            raise UserError(f"search: no trial of study {name} completed ({table['state'].value_counts().to_dict()}). "
                            f"Widen search.lr_min/lr_max or add optimizers in params.yaml.")
        best = study.best_trial
        best_params = {**best.user_attrs.get("settings", best.params), "val_macro_f1": best.value, "trial": best.number,
                       "best_epoch": best.user_attrs.get("best_epoch"), "study": name}
        _io.fresh_dir(P.SEARCH)
        _io.write_json(P.BEST_PARAMS, best_params)
        counts = table["state"].value_counts().to_dict()
        runs.log_metrics({"best_val_macro_f1": best.value, **{f"trials_{k.lower()}": v for k, v in counts.items()}})
        runs.set_tags({"best.learning_rate": best.params["learning_rate"], "best.optimizer": best.params["optimizer"]})
        runs.log_artifact(P.SEARCH_TRIALS)
        runs.log_params({f"best.{k}": v for k, v in best.params.items()})
        log_study_plots(study)
    return {"best_val_macro_f1": round(best.value, 4), **best.params, "trials": counts}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
