"""search: an Optuna study (seeded TPE and successive halving by default) over learning rate,
optimizer and the optional dimensions of search.space.

Each trial fine-tunes the pretrained checkpoint for a few epochs and reports the
validation macro-F1 at each evaluation; each is an MLflow run nested under the search run.
The study lives in a file under the project (or PostgreSQL), so a rerun finishes its
budget; search.workers > 1 adds worker processes on the same study (tasks/_search/).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from mlcore import plots
from mlcore.errors import UserError
from mlcore.search import studies
from mlcore.tracking import runs
from tasks import _io
from tasks import _paths as P
from tasks._context import StageContext
from tasks._runner import as_task, cli
from tasks._search import dispatch

STAGE = "search"


def run(ctx: StageContext) -> dict:
    cfg, parent_run_id = ctx.cfg, ctx.parent_run_id
    with runs.stage_run(cfg, STAGE, parent_run_id) as stage:
        study = dispatch.run_budget(cfg, stage.info.run_id if stage else None, ctx.device)
        table = studies.trials_table(study)
        _io.write_csv(P.SEARCH_TRIALS, table)
        counts = table["state"].value_counts().to_dict()
        if "COMPLETE" not in counts:
            raise UserError(f"search: no trial of study {study.study_name} completed ({counts}). "
                            f"Widen search.lr_min/lr_max or add optimizers in params.yaml.")
        best = studies.best_params(study, cfg.search.tie_tolerance)
        kept = P.TRIAL_MODELS / study.study_name
        kept_trial = _io.read_json(kept / "trial.json", STAGE)["trial"] if (kept / "trial.json").is_file() else None
        with _io.replacing(P.SEARCH) as out:
            _io.write_json(out / P.BEST_PARAMS.name, best)
            if kept_trial == best["trial"]:
                shutil.copytree(kept, out / P.BEST_TRIAL_MODEL.name)
        if kept_trial not in (None, best["trial"]):  # e.g. search.tie_tolerance changed after the study ran
            print(f"search: the kept model is trial {kept_trial}'s, the pick is trial {best['trial']}: none is "
                  f"shipped for finetune.reuse_best_trial (finetune retrains with the pick's settings by default)")
        params = studies.best_trial(study, cfg.search.tie_tolerance).params
        runs.log_metrics({"best_val_macro_f1": best["val_macro_f1"],
                          **{f"trials_{k.lower()}": v for k, v in counts.items()}})
        runs.set_tags({"best.learning_rate": params["learning_rate"], "best.optimizer": params["optimizer"]})
        runs.log_params({f"best.{k}": v for k, v in params.items()})
        runs.log_artifact(P.SEARCH_TRIALS)
        with tempfile.TemporaryDirectory() as tmp:
            for path in plots.study_plots(study, Path(tmp)):
                runs.log_artifact(path, "optuna_plots")
    return {"best_val_macro_f1": round(best["val_macro_f1"], 4), **params, "trials": counts}


main = cli(STAGE, run, __doc__)
task = as_task(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
