"""Self-distillation from an ensemble against HF Trainer given the same training passes (issue 22's quality goal).

    .venv/bin/python bench/self_distill.py [--n-train 2000] [--n-unlabelled 4000] [--epochs 3] [--student-epochs N]
        [--augment S] [--seeds 42 1 2]

Data as bench/compression.py's (SST-2 from ../shared/datasets, skipped with a line saying so when
absent): a seeded sample of --n-train labelled train rows, --n-unlabelled more train texts without
their labels, 500 validation rows, the 872 test rows. Per seed s:
  (a) teacher: all-MiniLM-L6-v2, mean pooling, fine-tuned in full (seed s), as compression's (a);
  members: --members - 1 more fine-tunes like (a), seeds s + 100, s + 200, ... (the distill stage's
      members differ by seed and by the search's next-best settings; here by seed alone);
  ensemble: the members' mean logits, (a) included: what the student is taught by (reported, not a product);
  (e) self-distilled from the ensemble: every layer of (a), distilled on the labelled and unlabelled texts
      (alpha 0.5, T 2), as `distill.teacher: ensemble` with `student: same` trains it;
  (f) HF Trainer's default recipe (AutoModelForSequenceClassification: CLS pooler and head, AdamW 5e-5,
      linear decay, batch 32, fp32) on the labelled rows, for as many training-sample passes as (e) cost
      in all: every member's epochs over the labelled rows plus the student's over the transfer set. The
      teachers' forward passes during distillation are not counted (they train nothing).
Our models are picked at their best validation macro-F1, as the pipeline does; HF Trainer keeps its last
epoch (its default). Reported: test accuracy and macro-F1 per seed and mean, training seconds and samples,
and the goal: (e) at least 1 point above (f) on the mean of the seeds.
Prints progress to stderr and one JSON object on its last stdout line.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _sst2  # noqa: E402
import compression  # noqa: E402

from mlcore.metrics import macro_f1  # noqa: E402
from mlcore.models import distillation  # noqa: E402
from mlcore.models.classifier import predict_logits  # noqa: E402

CPU = compression.CPU


def log(msg: str) -> None:
    print(f"[self_distill] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-unlabelled", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3, help="every member's epochs over the labelled rows")
    p.add_argument("--student-epochs", type=int, default=None, help="the student's epochs over the transfer set "
                   "(default: --epochs)")
    p.add_argument("--augment", type=float, default=0.0, help="augmentation strength of the student's batches "
                   "(mask, span and swap, as bench/compression.py's --student-augment); the teachers score the "
                   "augmented texts")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="every member's and the student's learning rate")
    p.add_argument("--members", type=int, default=3, help="the ensemble's size, (a) included")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--max-length", type=int, default=66, help="SST-2's 99th percentile is under 64 tokens")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    args.student_lr = None  # compression.settings: the student's learning rate is the members'
    return args


def test_scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    preds = logits.argmax(1)
    return {"test_acc": float((preds == labels).mean()), "test_macro_f1": macro_f1(labels, preds)}


def ensemble_self_distilled(args, members: list, tokenizer, data: dict, seed: int):
    """Every layer of the first member, distilled from all members' mean logits."""
    torch.manual_seed(seed)
    student = distillation.make_student(members[0], list(range(members[0].config.num_hidden_layers)))
    transfer = distillation.transfer_set(data["train"], data["unlabelled"])
    start = time.perf_counter()
    distillation.distill(student, members, transfer, data["val"],
                         compression.settings(args, seed, student=True, augment=args.augment), CPU, args.alpha,
                         args.temperature, tokenizer)
    return student.eval(), time.perf_counter() - start


def hf_trainer(model_dir, tokenizer, texts: list[str], labels: np.ndarray, epochs: int, seed: int,
               args, test: pd.DataFrame) -> dict:
    """HF Trainer's default recipe, as bench/quality.py's (c), on the same labelled rows and max_length."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    tok = tokenizer(texts, truncation=True, max_length=args.max_length)
    rows = [{k: tok[k][i] for k in tok.keys()} | {"labels": int(y)} for i, y in enumerate(labels)]
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=epochs,
                                  learning_rate=5e-5, lr_scheduler_type="linear", seed=seed, report_to="none",
                                  save_strategy="no", eval_strategy="no", use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model.eval()
    logits = []
    with torch.inference_mode():
        for i in range(0, len(test), 256):
            batch = tokenizer(test["text"].tolist()[i:i + 256], truncation=True, max_length=args.max_length,
                              padding=True, return_tensors="pt")
            logits.append(model(**batch).logits.numpy())
    return test_scores(np.concatenate(logits), test["label"].to_numpy()) | {
        "epochs": epochs, "samples": epochs * len(texts), "train_s": round(seconds, 1)}


def one_seed(args, model_dir, tokenizer, data: dict, frames: dict, seed: int) -> dict:
    pad, y = tokenizer.pad_token_id, data["test"].labels
    members, seconds = [], 0.0
    for i in range(args.members):
        log(f"seed {seed}: member {i + 1}/{args.members}")
        model, s = compression.train_teacher(args, model_dir, tokenizer, data, seed + 100 * i)
        members.append(model)
        seconds += s
    logits = [predict_logits(m, data["test"], CPU, pad_id=pad) for m in members]
    out = {"teacher": test_scores(logits[0], y),
           "members": [test_scores(x, y)["test_acc"] for x in logits],
           "ensemble": test_scores(np.mean(logits, axis=0), y), "members_train_s": round(seconds, 1)}
    log(f"seed {seed}: self-distilling from the ensemble")
    student, s = ensemble_self_distilled(args, members, tokenizer, data, seed)
    out["self_distilled"] = test_scores(predict_logits(student, data["test"], CPU, pad_id=pad), y) | {
        "train_s": round(s, 1)}
    transfer_rows = len(data["train"]) + len(data["unlabelled"])
    samples = args.members * args.epochs * len(data["train"]) + (args.student_epochs or args.epochs) * transfer_rows
    epochs = max(args.epochs, math.ceil(samples / len(data["train"])))
    out["our_samples"] = samples
    log(f"seed {seed}: HF Trainer, {epochs} epochs ({epochs * len(data['train'])} samples; ours {samples})")
    out["hf_trainer"] = hf_trainer(model_dir, tokenizer, frames["texts"], frames["labels"], epochs, seed, args,
                                   frames["test"])
    log(f"seed {seed}: {json.dumps(out)}")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if _sst2.missing(log):
        return {}
    torch.set_num_threads(args.threads)
    model_dir, tokenizer = _sst2.minilm()
    data = compression.load_data(args, tokenizer)
    train = pd.read_csv(compression.SST2 / "train.csv").sample(frac=1.0, random_state=42).iloc[: args.n_train]
    frames = {"texts": train["text"].tolist(), "labels": train["label"].to_numpy(),
              "test": pd.read_csv(compression.SST2 / "test.csv")}  # the rows compression.load_data encodes
    runs = {seed: one_seed(args, model_dir, tokenizer, data, frames, seed) for seed in args.seeds}
    names = ("teacher", "ensemble", "self_distilled", "hf_trainer")
    mean = {n: round(float(np.mean([r[n]["test_acc"] for r in runs.values()])), 4) for n in names}
    std = {n: round(float(np.std([r[n]["test_acc"] for r in runs.values()])), 4) for n in names}
    gap = round(100 * (mean["self_distilled"] - mean["hf_trainer"]), 2)
    out = {"mean_test_acc": mean, "std_test_acc": std, "per_seed": runs,
           "goal": {"self_distilled_minus_hf_trainer_points": gap, "met": gap >= 1.0},
           "setup": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
