"""One search trial as an Optuna objective: sample the settings, fine-tune the checkpoint,
report every evaluation to the pruner, return the best validation macro-F1.

Tracking and file locations come in as `TrialHooks`, so the search stage (MLflow, project
paths) and bench/search_efficiency.py (neither) run the same objective."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from mlcore import atomic, liveness
from mlcore.config import SearchConfig
from mlcore.config.training import to_settings
from mlcore.search import claims, space, studies


def _no_run(trial: optuna.Trial, params: dict):
    return contextlib.nullcontext()


@dataclass(frozen=True)
class TrialHooks:
    """What the caller adds around a trial. `run(trial, params)` wraps it (an MLflow run);
    `log(metrics, step)` records each evaluation; `keep(model, number, value, finished)` may
    save the model (already at its best evaluation), `finished` being the study's other
    COMPLETE trials' values by number; `echo` prints progress lines."""
    run: Callable[[optuna.Trial, dict], contextlib.AbstractContextManager] = _no_run
    log: Callable[[dict, int | None], None] = lambda metrics, step=None: None
    keep: Callable[[torch.nn.Module, int, float, dict[int, float]], None] = lambda model, number, value, finished: None
    echo: Callable[[str], None] = lambda line: None


def make_objective(cfg: SearchConfig, kind, checkpoint: Path, label2id: dict[str, int], train, val,
                   device: torch.device, hooks: TrialHooks = TrialHooks(), processor=None
                   ) -> Callable[[optuna.Trial], float]:
    """One trial: fine-tune `checkpoint` of the modality `kind` (mlcore.modality; `processor`: its
    tokenizer, when loaded already) with the sampled settings, reporting each evaluation to the
    pruner; returns the best val macro-F1."""
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", liveness.owner())  # lets a later run tell a dead trial from a live one
        params = space.suggest(trial, cfg)
        trial.set_user_attr("settings", params)  # what finetune reuses (freeze_layers implies a strategy)
        label = f"trial {trial.number}: {params['optimizer']} lr={params['learning_rate']:.2e}"
        with hooks.run(trial, params):
            def on_evaluation(e: dict) -> None:
                hooks.log(e, e["evaluation"])
                trial.set_user_attr("epochs_trained", e["epoch"])
                trial.report(e["val_macro_f1"], e["evaluation"])
                if trial.should_prune():
                    hooks.echo(f"{label} pruned at epoch {e['epoch']} (val macro-F1 {e['val_macro_f1']:.4f})")
                    raise optuna.TrialPruned(f"pruned at epoch {e['epoch']}")

            settings = to_settings(cfg, **params)
            model, result = kind.finetune(checkpoint, label2id, train, val, settings, device, on_evaluation,
                                          processor=processor)
            trial.set_user_attr("best_epoch", result.best_epoch)
            complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            finished = {t.number: t.value for t in complete}
            hooks.keep(model, trial.number, result.best_score, finished)
            hooks.log({"best_val_macro_f1": result.best_score, "best_epoch": result.best_epoch}, None)
            hooks.echo(f"{label} -> val macro-F1 {result.best_score:.4f} (epoch {result.best_epoch})")
            return result.best_score

    return objective


def keep_if_best(kind, model: torch.nn.Module, number: int, value: float, finished: dict[int, float],
                 tolerance: float, checkpoint: Path, best_dir: Path, lock: Path) -> bool:
    """Save the trial's model when it is the study's best so far by the rule the search's
    result uses (studies.pick_best over `finished`, the kept trial and this one), so finetune
    can reuse it instead of retraining. One copy per study, written under the claim lock
    (parallel workers never interleave their saves) to a temporary folder swapped into place.
    Trials run one at a time keep exactly the trial the search then picks; parallel trials
    that finish out of order rarely may not, and the search stage then ships no kept model."""
    with claims.locked(lock):
        info = best_dir / "trial.json"
        kept = json.loads(info.read_text()) if info.is_file() else None
        values = finished | ({kept["trial"]: kept["value"]} if kept else {}) | {number: value}
        if studies.pick_best(values, tolerance) != number:
            return False
        with atomic.directory(best_dir) as tmp:
            kind.save(model.cpu(), kind.processor(checkpoint), tmp, extra={"stage": "search", "trial": number})
            (tmp / "trial.json").write_text(json.dumps({"trial": number, "value": value}))
    return True
