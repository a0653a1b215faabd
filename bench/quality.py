"""Quality on real data: the pipeline's default recipe against TF-IDF and HF Trainer.

    .venv/bin/python bench/quality.py [--datasets sst2 ag_news_subset trec] [--no-hf] [--threads 2]
        [--set search.optimizers=[adamw] ...] [--keep DIR]

For each dataset of ../shared/datasets (skipped, with a line saying so, when absent):
- (a) the pipeline: the stages prepare, pretrain, search, finetune and evaluate, run in a
  temporary workspace with the default params (mlcore.config defaults) except where the
  data is: prepare reads the dataset's train file (sst2: a seeded 8,000-row sample) with
  `prepare.test_input` = its `test.csv`, so val is carved from train; no grouping, no
  unlabelled rows. MLflow goes to a SQLite file in that workspace. `runtime.profile` applies
  as in the stage commands (gpu-full's budgets on CUDA); `--set` changes any param of (a).
- (b) TF-IDF word 1-2 grams + logistic regression, fit by `evaluate` on the same train
  split and scored on the same test rows (`baseline_*` in reports/metrics.json).
- (c) HF `Trainer` fine-tuning the same checkpoint by its default recipe:
  AutoModelForSequenceClassification, AdamW at 5e-5, linear decay, batch 32, fp32, no
  early stopping, on the same train split (max_length 128, dynamic padding). Its epochs
  give it at least the pipeline's compute, counted in training samples: (a)'s MLM
  sequences + its trials' samples + its fine-tuning's, divided by the train rows, and never
  fewer than the final fine-tune's epochs.

Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.config import Config, parse_config  # noqa: E402
from mlcore.metrics import macro_f1  # noqa: E402
from mlcore.models import modeling  # noqa: E402
from tasks._context import StageContext, stage_context  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
SST2_TRAIN_ROWS = 8000
# Published figures on the same test sets (../shared/datasets/README.md), accuracy %.
PUBLISHED = {"sst2": "MiniLM-L6-H384 91.5 (GLUE dev); DistilBERT 91.3; BERT-base 92.7-93.2"}


def log(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["sst2", "ag_news_subset", "trec"])
    p.add_argument("--no-hf", action="store_true", help="skip (c), HF Trainer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a param for (a) over the defaults, e.g. --set search.lr_max=1e-4 (a YAML value; repeatable)")
    p.add_argument("--keep", type=Path, default=None,
                   help="copy each dataset's workspace (data, models, reports) to KEEP/<dataset> for inspection")
    return p.parse_args(argv)


@contextlib.contextmanager
def workspace():
    """A temporary directory as the working directory: the stages' paths are relative."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)


def train_file(name: str, seed: int, into: Path) -> Path:
    train = pd.read_csv(SHARED / name / "train.csv")
    if name == "sst2":
        train = train.sample(n=SST2_TRAIN_ROWS, random_state=seed)
    path = into / "train.csv"
    train[["text", "label"]].to_csv(path, index=False)
    return path


def config(name: str, train: Path, tmp: Path, overrides: list[str] = ()) -> Config:
    raw = {
        "prepare": {"input": str(train), "test_input": str(SHARED / name / "test.csv"), "text_column": "text",
                    "label_column": "label", "group_column": None, "unlabelled_labels": []},
        "register": {"model_name": f"quality-{name}"},
        "tracking": {"mlflow_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": f"quality-{name}"},
    }
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. --set search.lr_max=1e-4")
        section, _, leaf = key.partition(".")
        raw.setdefault(section, {})[leaf] = yaml.safe_load(value)
    return parse_config(raw, environ={})


def pipeline_samples(cfg: Config) -> dict:
    """Training samples each stage of (a) went through, from its reports."""
    from tasks import _paths as P

    pretrain = json.loads(P.PRETRAIN_REPORT.read_text())
    trials = pd.read_csv(P.SEARCH_TRIALS)
    rows_used = min(len(pd.read_parquet(P.TRAIN)), cfg.search.max_train_rows or 10**12)
    finetune = json.loads(P.FINETUNE_REPORT.read_text())
    epochs = cfg.pretrain.epochs
    return {"pretrain": pretrain["train_sequences"] * epochs,
            "search": int(trials["epochs_trained"].sum() * rows_used),
            "finetune": finetune["epochs_run"] * len(pd.read_parquet(P.TRAIN))}


def run_pipeline(ctx: StageContext) -> dict:
    from tasks import _paths as P
    from tasks import evaluate, finetune, prepare, pretrain, search

    times = {}
    for stage in (prepare, pretrain, search, finetune, evaluate):
        start = time.perf_counter()
        stage.run(ctx)
        times[stage.STAGE] = round(time.perf_counter() - start, 1)
        log(f"{stage.STAGE}: {times[stage.STAGE]} s")
    metrics = json.loads(P.METRICS.read_text())
    data = json.loads(P.DATA_REPORT.read_text())
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "baseline": {"accuracy": metrics["baseline_accuracy"], "macro_f1": metrics["baseline_macro_f1"]},
            "seconds": times, "rows": {k: v["rows"] for k, v in data["splits"].items()},
            "best": json.loads(P.BEST_PARAMS.read_text()), "samples": pipeline_samples(ctx.cfg),
            "max_length": json.loads(P.FINETUNE_REPORT.read_text())["max_length"]}


def run_hf(cfg: Config, epochs: int, seed: int) -> dict:
    """(c): HF Trainer's default recipe on the pipeline's own train split, scored on its test split."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tasks import _paths as P

    train, test = pd.read_parquet(P.TRAIN), pd.read_parquet(P.TEST)
    label2id = json.loads(P.LABEL_MAP.read_text())
    checkpoint = str(modeling.resolve_checkpoint(cfg.pretrain.init_from, "pretrain.init_from"))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tok = tokenizer(train["text"].tolist(), truncation=True, max_length=128)
    rows = [{k: tok[k][i] for k in tok.keys()} | {"labels": label2id[y]} for i, y in enumerate(train["label"])]
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=len(label2id), label2id=label2id, id2label={i: k for k, i in label2id.items()})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=32, num_train_epochs=epochs,
                                 learning_rate=5e-5, lr_scheduler_type="linear", seed=seed, report_to="none",
                                 save_strategy="no", eval_strategy="no", use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model.eval()
    preds = []
    with torch.inference_mode():
        texts = test["text"].tolist()
        for i in range(0, len(texts), 256):
            batch = tokenizer(texts[i:i + 256], truncation=True, max_length=128, padding=True, return_tensors="pt")
            preds.append(model(**batch).logits.argmax(1).numpy())
    y = test["label"].map(label2id).to_numpy()
    pred = np.concatenate(preds)
    return {"accuracy": float((pred == y).mean()), "macro_f1": macro_f1(y, pred), "epochs": epochs,
            "samples": epochs * len(train), "seconds": round(seconds, 1)}


def one_dataset(name: str, args) -> dict:
    with workspace() as tmp:
        # runtime.profile as the stage commands apply it: gpu-full's budgets on CUDA, the params
        # as written on a CPU (`--set runtime.profile=cpu-quick` measures the CPU recipe on a GPU)
        ctx = stage_context(config(name, train_file(name, args.seed, tmp), tmp, args.overrides))
        cfg = ctx.cfg
        log(f"{name}: (a) the pipeline")
        a = run_pipeline(ctx)
        out = {"pipeline": {k: v for k, v in a.items() if k != "baseline"}, "tfidf_lr": a["baseline"]}
        if args.keep:
            shutil.copytree(tmp, args.keep / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".checkpoints"))
        if not args.no_hf:
            total = sum(a["samples"].values())
            epochs = max(cfg.finetune.epochs, math.ceil(total / a["rows"]["train"]))
            log(f"{name}: (c) HF Trainer, {epochs} epochs ({epochs * a['rows']['train']} samples; ours {total})")
            out["hf_trainer"] = run_hf(cfg, epochs, args.seed)
    out["pipeline_minus_tfidf_points"] = round(100 * (out["pipeline"]["accuracy"] - out["tfidf_lr"]["accuracy"]), 2)
    if "hf_trainer" in out:
        out["pipeline_minus_hf_points"] = round(100 * (out["pipeline"]["accuracy"] - out["hf_trainer"]["accuracy"]), 2)
    if name in PUBLISHED:
        out["published"] = PUBLISHED[name]
    log(f"{name}: {json.dumps({k: v for k, v in out.items() if k != 'pipeline'})}")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"setup": setup | {"sst2_train_rows": SST2_TRAIN_ROWS}, "datasets": {}}
    for name in args.datasets:
        if not (SHARED / name / "train.csv").is_file():
            log(f"{name}: skipped ({SHARED / name} is absent)")
            result["datasets"][name] = "skipped: ../shared/datasets absent"
            continue
        result["datasets"][name] = one_dataset(name, args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
